"""The catalog: per-subnet facts (size, compute, accuracy, memory, measured latency) that selection reads,
stored as catalog.json beside its checkpoint.

The data types and the file format come first; `compute_catalog` (what `allinone catalog` runs) fills them
from a checkpoint and a dev manifest. It is incremental: WERs are reused while the checkpoint's weights and
the manifest are unchanged (both sha256s are in the catalog's meta), and planned activation memory, a
property of the architecture and the ExecuTorch version rather than the weights, is reused while those are.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from allinone.errors import BadInputError
from allinone.files import atomic_write_text, read_json, sha256_file

__all__ = ["CATALOG_FORMAT_VERSION", "CATALOG_FILE", "MeasuredLatency", "CatalogEntry", "Catalog", "load_catalog",
           "save_catalog", "CatalogRun", "compute_catalog", "manifest_sha256", "add_reports", "format_catalog"]

log = logging.getLogger(__name__)

CATALOG_FORMAT_VERSION = 1
CATALOG_FILE = "catalog.json"  # inside the checkpoint directory


@dataclass(frozen=True)
class MeasuredLatency:
    """A latency measured on a device (from its report.json); selection calls it measured only for `profile`."""

    profile: str  # the device profile whose device ran it
    machine: str  # uname -m of that device
    cpu: str
    runner: str  # python or cpp
    threads: int
    audio_s: float
    p50_ms: float
    date: str  # when measured (the report's date)
    report: str  # the report file it came from

    @property
    def rtf(self) -> float:
        return self.p50_ms / (self.audio_s * 1000.0)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> MeasuredLatency:
        if not isinstance(data, dict):
            raise BadInputError(f"{where}: expected an object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        _check_keys(data, names, names, where)
        values = {}
        for f in dataclasses.fields(cls):
            value = data[f.name]
            if f.type == "str" and isinstance(value, str):
                values[f.name] = value
            elif f.type == "int" and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                values[f.name] = value
            elif f.type == "float" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value) and value > 0:
                values[f.name] = float(value)
            else:
                kind = {"str": "a string", "int": "an integer >= 1", "float": "a number > 0"}[f.type]
                raise BadInputError(f"{where}: {f.name}: expected {kind}, got {value!r}")
        return cls(**values)


@dataclass(frozen=True)
class CatalogEntry:
    """Facts about one nested system. Bytes are exact byte counts; `wer` is a fraction (0.073 = 7.3%)."""

    subnet: str  # SubnetSpec id, e.g. d12-f768-h4-w8; unique within a catalog
    weight_bits: int  # 32, 8 or 4
    params: int  # parameters the extracted system keeps
    weight_bytes: int  # bytes of those weights at weight_bits (scales and zero points included)
    macs_per_second: float  # multiply-accumulates per second of 16 kHz audio
    wer: float | None  # dev-set WER as a fraction; None until measured
    pte_bytes: int | None = None  # size of the lowered .pte, once built
    activation_bytes: int | None = None  # ExecuTorch's planned (non-constant) buffer bytes, once known
    # how each fact was obtained, e.g. {"evaluated": "2026-11-25T23:40:00Z", "activation_bytes": "measured"}
    provenance: dict[str, str] = field(default_factory=dict)
    measured_latency: tuple[MeasuredLatency, ...] = ()  # from device reports, one per (profile, audio length)

    @property
    def model_bytes(self) -> int:
        """What the device stores and maps: the .pte when built, else the weights alone (a lower bound)."""
        return self.pte_bytes if self.pte_bytes is not None else self.weight_bytes

    def measured_on(self, profile: str, audio_s: float) -> MeasuredLatency | None:
        """The latency measured on `profile`'s device at `audio_s` seconds, if a report supplied one."""
        return next((m for m in self.measured_latency
                     if m.profile == profile and abs(m.audio_s - audio_s) < 1e-6), None)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        # Optional facts are left out when absent, so hand-written catalogs stay short.
        for key in ("provenance", "measured_latency"):
            if not out[key]:
                del out[key]
        if "measured_latency" in out:
            out["measured_latency"] = [dataclasses.asdict(m) for m in self.measured_latency]
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "catalog entry") -> CatalogEntry:
        """Validate one entry; BadInputError naming `where` and the key otherwise."""
        if not isinstance(data, dict):
            raise BadInputError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
        _check_keys(data, _ENTRY_KEYS, _REQUIRED_ENTRY_KEYS, where)
        values = {key: _entry_value(key, data[key], where) for key in data if key in _ENTRY_TYPES}
        if "provenance" in data:
            values["provenance"] = _string_map(data["provenance"], f"{where}: provenance")
        if "measured_latency" in data:
            rows = data["measured_latency"]
            if not isinstance(rows, list):
                raise BadInputError(f"{where}: measured_latency: expected a list, got {type(rows).__name__}")
            values["measured_latency"] = tuple(MeasuredLatency.from_dict(m, f"{where}: measured_latency[{i}]")
                                               for i, m in enumerate(rows))
        return cls(**values)


# key -> (type, allows None, lowest value); the schema of one entry in catalog.json
_ENTRY_TYPES: dict[str, tuple[type, bool, float | None]] = {
    "subnet": (str, False, None),
    "weight_bits": (int, False, None),
    "params": (int, False, 1),
    "weight_bytes": (int, False, 1),
    "macs_per_second": (float, False, 0),
    "wer": (float, True, 0),
    "pte_bytes": (int, True, 1),
    "activation_bytes": (int, True, 0),
}
_ENTRY_KEYS = [f.name for f in dataclasses.fields(CatalogEntry)]
_REQUIRED_ENTRY_KEYS = [f.name for f in dataclasses.fields(CatalogEntry)
                        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadInputError(f"{where}: expected an object of string values")
    return dict(value)


def _check_keys(data: dict, known: list[str], required: list[str], where: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"expected one of {', '.join(known)}"
            raise BadInputError(f"{where}: {key}: unknown key; {hint}")
    for key in required:
        if key not in data:
            raise BadInputError(f"{where}: {key}: missing")


def _entry_value(key: str, value: Any, where: str) -> Any:
    tp, nullable, lowest = _ENTRY_TYPES[key]
    if value is None and nullable:
        return None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        if isinstance(value, str) and value.strip():
            return value
        raise BadInputError(f"{where}: {key}: expected a non-empty string, got {value!r}")
    if tp is int and is_number and float(value).is_integer():
        value = int(value)
    elif tp is float and is_number and math.isfinite(value):
        value = float(value)
    else:
        kind = "an integer" if tp is int else "a number"
        raise BadInputError(f"{where}: {key}: expected {kind}{' or null' if nullable else ''}, got {value!r}")
    if key == "weight_bits" and value not in (32, 8, 4):
        raise BadInputError(f"{where}: weight_bits: expected 32, 8 or 4, got {value}")
    if lowest is not None and value < lowest:
        raise BadInputError(f"{where}: {key}: expected a value >= {lowest:g}, got {value}")
    return value


@dataclass(frozen=True)
class Catalog:
    """All measured systems of one checkpoint. `meta` holds free-form provenance (checkpoint, dev set)."""

    entries: tuple[CatalogEntry, ...]
    format_version: int = CATALOG_FORMAT_VERSION
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [e.subnet for e in self.entries]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise BadInputError(f"catalog: subnet {dup!r} appears twice; expected unique subnet ids")

    def get(self, subnet: str) -> CatalogEntry | None:
        return next((e for e in self.entries if e.subnet == subnet), None)

    def merged(self, entries: Iterable[CatalogEntry]) -> Catalog:
        """A catalog with `entries` added, replacing any with the same subnet id (for incremental updates)."""
        new = {e.subnet: e for e in entries}
        kept = [new.pop(e.subnet, e) for e in self.entries]
        return dataclasses.replace(self, entries=tuple(kept) + tuple(new.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "meta": dict(self.meta),
                "entries": [e.to_dict() for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "catalog") -> Catalog:
        if not isinstance(data, dict):
            raise BadInputError(f"{where}: expected a JSON object, got {type(data).__name__}")
        _check_keys(data, ["format_version", "meta", "entries"], ["format_version", "entries"], where)
        if data["format_version"] != CATALOG_FORMAT_VERSION:
            raise BadInputError(f"{where}: format_version: expected {CATALOG_FORMAT_VERSION}, "
                                f"got {data['format_version']!r}")
        meta = _string_map(data.get("meta", {}), f"{where}: meta")
        if not isinstance(data["entries"], list):
            raise BadInputError(f"{where}: entries: expected a list, got {type(data['entries']).__name__}")
        entries = tuple(CatalogEntry.from_dict(e, f"{where}: entries[{i}]") for i, e in enumerate(data["entries"]))
        try:
            return cls(entries=entries, meta=dict(meta))
        except BadInputError as err:
            raise BadInputError(f"{where}: {str(err).removeprefix('catalog: ')}") from None

    def save(self, path: str | Path) -> None:
        save_catalog(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        return load_catalog(path)


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate catalog.json; BadInputError with one line naming the file otherwise."""
    path = Path(path)
    data = read_json(path, "a catalog (catalog.json)")
    return Catalog.from_dict(data, str(path))


def save_catalog(catalog: Catalog, path: str | Path) -> None:
    """Write catalog.json atomically: a reader never sees half a file, an interrupted write leaves the old one."""
    path = Path(path)
    atomic_write_text(path, json.dumps(catalog.to_dict(), indent=2, allow_nan=False) + "\n")


# ---- computing a catalog from a checkpoint ---------------------------------------------------------------------

_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".sph")


def manifest_sha256(path: str | Path) -> str:
    """Fingerprint of a dev set: a manifest file's sha256; for a Kaldi or LibriSpeech folder, the sha256 of
    every listing and transcript file in it (audio files are named by those, and hashing hours of audio on
    every run would cost more than the evaluation it saves)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise BadInputError(f"{path}: not found; expected a manifest file or a Kaldi/LibriSpeech folder")
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() not in _AUDIO_SUFFIXES):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def _architecture_sha256(config: dict) -> str:
    return hashlib.sha256(json.dumps(config["architecture"], sort_keys=True).encode()).hexdigest()


def _executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class CatalogRun:
    """What `compute_catalog` did: the catalog it saved and which systems it evaluated, reused and lowered."""

    catalog: Catalog
    path: Path
    evaluated: tuple[str, ...]
    reused: tuple[str, ...]
    lowered: tuple[str, ...]  # systems lowered to measure planned activations and .pte size
    dropped: tuple[str, ...]  # WERs discarded because the weights or the dev set changed


ACTIVATION_RULE = ("planned activations measured on the smallest system of each weight precision; every other "
                   "system of that precision is predicted to need the same (the planner's peak is the 30 s input and "
                   "the tensors entering and leaving the one XNNPACK partition, set by d_model and the vocabulary, "
                   "not by depth or width)")


def _activation_probes(entries: Sequence[CatalogEntry]) -> list[CatalogEntry]:
    """The cheapest system to lower of each precision: fewest MACs, then fewest bytes, then id."""
    probes = {}
    for e in sorted(entries, key=lambda e: (e.macs_per_second, e.weight_bytes, e.subnet)):
        probes.setdefault(e.weight_bits, e)
    return [probes[b] for b in sorted(probes, reverse=True)]


def _with_activations(entries: list[CatalogEntry], model) -> tuple[list[CatalogEntry], list[str]]:
    """Measure planned activations on the probes not yet measured and predict the rest (ACTIVATION_RULE)."""
    from allinone.export import export_subnet
    from allinone.memory import planned_activation_bytes
    from allinone.spec import SubnetSpec

    by_id = {e.subnet: e for e in entries}
    lowered = []
    for probe in _activation_probes(entries):
        if any(e.provenance.get("activation_bytes") == "measured" and e.weight_bits == probe.weight_bits
               for e in entries):
            continue  # this precision already has a measurement
        log.info("lowering %s to measure its planned activation memory", probe.subnet)
        pte = export_subnet(model, SubnetSpec.from_id(probe.subnet)).pte
        by_id[probe.subnet] = dataclasses.replace(
            probe, pte_bytes=len(pte), activation_bytes=planned_activation_bytes(pte),
            provenance={**probe.provenance, "activation_bytes": "measured", "pte_bytes": "measured"})
        lowered.append(probe.subnet)
    measured: dict[int, list[CatalogEntry]] = {}
    for e in by_id.values():
        if e.provenance.get("activation_bytes") == "measured":
            measured.setdefault(e.weight_bits, []).append(e)
    out = []
    for e in by_id.values():
        same_bits = measured.get(e.weight_bits, [])
        if e.provenance.get("activation_bytes") != "measured" and same_bits:
            worst = max(same_bits, key=lambda m: (m.activation_bytes, m.subnet))
            e = dataclasses.replace(e, activation_bytes=worst.activation_bytes,
                                    provenance={**e.provenance, "activation_bytes": f"predicted from {worst.subnet}"})
        out.append(e)
    return out, lowered


def add_reports(catalog: Catalog, reports: Sequence[Any], *, force: bool = False) -> Catalog:
    """Record latencies measured on devices (`allinone.calibration.LatencyReport`s) in the entries they measured,
    labelled with the profile the bundle was built for. The report's device must match that profile (a
    shipped one) unless `force`; a newer measurement of the same profile and length replaces an older one."""
    from allinone.calibration import check_report_device
    from allinone.profiles import list_profiles, load_profile

    updated: dict[str, CatalogEntry] = {}
    for report in reports:
        entry = updated.get(report.subnet) or catalog.get(report.subnet)
        if entry is None:
            raise BadInputError(f"{report.path}: bundle.subnet {report.subnet} is not in the catalog; expected one "
                                f"of its systems (`allinone catalog --all` adds every system)")
        if report.profile is None:
            raise BadInputError(f"{report.path}: the bundle was exported without a device profile, so the catalog "
                                f"cannot say which device measured it; build it with `allinone build --profile P`")
        if not force:
            if report.profile not in list_profiles():
                raise BadInputError(f"{report.path}: bundle.profile {report.profile!r} is not a shipped profile, so "
                                    f"the report's device cannot be checked; pass --force to record it as measured "
                                    f"on {report.profile}")
            check_report_device(report, load_profile(report.profile))
        rows = [MeasuredLatency(report.profile, report.machine, report.cpu, report.runner, report.threads,
                                float(audio_s), float(ms), report.date, report.path) for audio_s, ms in report.latency]
        fresh = {(m.profile, m.audio_s) for m in rows}
        kept = tuple(m for m in entry.measured_latency if (m.profile, m.audio_s) not in fresh)
        updated[report.subnet] = dataclasses.replace(entry, measured_latency=kept + tuple(rows))
    return catalog.merged(updated.values())


EVAL_CHUNK = 20  # systems evaluated between two saves of catalog.json


def _evaluated_entry(result, prior: CatalogEntry | None, now: str) -> CatalogEntry:
    """The catalog entry of a freshly evaluated system; lowered and on-device facts of `prior` are kept (they
    do not depend on the weights)."""
    from allinone.spec import SubnetSpec

    fresh = CatalogEntry(subnet=result.subnet, weight_bits=SubnetSpec.from_id(result.subnet).weight_bits,
                         params=result.params, weight_bytes=result.bytes,
                         macs_per_second=float(result.macs_per_second), wer=result.wer,
                         provenance={"evaluated": now})
    if prior is None:
        return fresh
    return dataclasses.replace(fresh, pte_bytes=prior.pte_bytes, activation_bytes=prior.activation_bytes,
                               measured_latency=prior.measured_latency,
                               provenance={**prior.provenance, "evaluated": now})


def compute_catalog(checkpoint: str | Path, manifest: str | Path, *, all_systems: bool = False,
                    activations: bool = True, reports: Sequence[Any] = (), force: bool = False,
                    progress: bool = True, now: str | None = None) -> CatalogRun:
    """Measure the checkpoint's target systems (or every system, `all_systems`) and save CHECKPOINT/catalog.json.

    Per system: parameters, exact weight bytes, MACs per second of audio, dev-set WER (greedy CTC on
    `manifest`) and, with `activations`, planned activation memory (ACTIVATION_RULE; the probes' .pte sizes
    come with it); `reports` add latencies measured on devices (`add_reports`). Entries already in the
    catalog are reused while the weights' and the manifest's sha256 match its meta; their provenance keeps the
    time they were evaluated. Hypotheses go to CHECKPOINT/eval/MANIFEST-NAME/SUBNET.hyps.jsonl, as
    `allinone eval` writes them."""
    from allinone.checkpoint import load_checkpoint
    from allinone.data.manifest import read_manifest
    from allinone.eval_run import default_hyps_dir
    from allinone.evaluate import evaluate, save_hypotheses

    now = now or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    ckpt = load_checkpoint(checkpoint)
    path = Path(checkpoint) / CATALOG_FILE
    old = load_catalog(path) if path.exists() else Catalog(())
    meta = {"checkpoint": str(checkpoint), "weights_sha256": ckpt.config["weights_sha256"],
            "manifest": str(manifest), "manifest_sha256": manifest_sha256(manifest),
            "architecture_sha256": _architecture_sha256(ckpt.config), "executorch": _executorch_version()}
    same_data = all(old.meta.get(k) == meta[k] for k in ("weights_sha256", "manifest_sha256"))
    same_program = all(old.meta.get(k) == meta[k] for k in ("architecture_sha256", "executorch"))

    specs = ckpt.model.search_space.enumerate() if all_systems else list(ckpt.targets)
    wanted = {s.id for s in specs}
    entries, dropped = [], []
    for e in old.entries:
        if not same_program:  # lowered facts belong to another architecture or ExecuTorch version
            e = dataclasses.replace(e, pte_bytes=None, activation_bytes=None, provenance={
                k: v for k, v in e.provenance.items() if k not in ("activation_bytes", "pte_bytes")})
        if not same_data and e.wer is not None:
            dropped.append(e.subnet)
            if e.subnet not in wanted:
                continue  # measured on other weights or another dev set, and not asked for now
            e = dataclasses.replace(e, wer=None)
        entries.append(e)
    known = {e.subnet: e for e in entries}
    todo = [s for s in specs if known.get(s.id) is None or known[s.id].wer is None]
    reused = tuple(s.id for s in specs if s not in todo)
    if todo:
        tokenizer = ckpt.tokenizer()
        read = read_manifest(manifest, tokenizer=tokenizer)
        if not read.utterances:
            raise BadInputError(f"{manifest}: no usable utterances ({read.skipped} skipped); expected a dev set")
        hyps_dir = default_hyps_dir(checkpoint, manifest)
        order = {e.subnet: None for e in entries}  # catalog order, with fast membership
        # Systems are evaluated a chunk at a time and the catalog saved after each chunk, so an interrupted
        # `--all` run (180 systems, tens of minutes) resumes where it stopped: saved WERs are reused.
        for first in range(0, len(todo), EVAL_CHUNK):
            chunk = todo[first:first + EVAL_CHUNK]
            if len(todo) > EVAL_CHUNK:
                log.info("evaluating systems %d-%d of %d", first + 1, first + len(chunk), len(todo))
            for r in evaluate(ckpt.model, chunk, read.utterances, tokenizer, progress=progress):
                save_hypotheses(r, hyps_dir / f"{r.subnet}.hyps.jsonl", checkpoint=str(checkpoint),
                                manifest=str(manifest))
                known[r.subnet] = _evaluated_entry(r, known.get(r.subnet), now)
            partial = [known[s] for s in order] + [e for s, e in known.items() if s not in order]
            save_catalog(Catalog(tuple(partial), meta={**old.meta, **meta} if same_program else meta), path)
    entries = [known.pop(e.subnet) for e in entries] + list(known.values())
    lowered: list[str] = []
    if activations:
        entries, lowered = _with_activations(entries, ckpt.model)
        meta["activation_rule"] = ACTIVATION_RULE
    meta["updated"] = now
    catalog = add_reports(Catalog(tuple(entries), meta=meta), reports, force=force)
    save_catalog(catalog, path)
    return CatalogRun(catalog, path, tuple(s.id for s in todo), reused, tuple(lowered), tuple(dropped))




def format_catalog(catalog: Catalog) -> str:
    """A text table of the catalog, one system per line, most accurate first."""
    mib = float(1 << 20)
    rows = [("subnet", "bits", "params", "weights MiB", "MMAC/s", "WER", "act MiB", "evaluated")]
    for e in sorted(catalog.entries, key=lambda e: (e.wer is None, e.wer or 0.0, e.weight_bytes, e.subnet)):
        act = "-" if e.activation_bytes is None else f"{e.activation_bytes / mib:.1f}" + (
            "" if e.provenance.get("activation_bytes") == "measured" else "~")
        rows.append((e.subnet, str(e.weight_bits), f"{e.params:,}", f"{e.weight_bytes / mib:.2f}",
                     f"{e.macs_per_second / 1e6:.1f}", "-" if e.wer is None else f"{e.wer:.2%}", act,
                     e.provenance.get("evaluated", "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    lines.append("act MiB: planned activation memory; ~ predicted from the system lowered at that precision.")
    return "\n".join(lines)
