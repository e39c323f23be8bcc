"""Filling the catalog (catalog.json, whose format lives in allinone.catalog) from a checkpoint and a dev
manifest: what `allinone catalog` runs.

`compute_catalog` is incremental: WERs are reused while the checkpoint's weights and the manifest are unchanged
(both sha256s are in the catalog's meta), and planned activation memory, a property of the architecture and the
ExecuTorch version rather than the weights, is reused while those are. Evaluation and lowering are imported
inside the functions that need them; selection imports only allinone.catalog, never this module.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from allinone.catalog import CATALOG_FILE, Catalog, CatalogEntry, MeasuredLatency, load_catalog, save_catalog
from allinone.errors import BadInputError
from allinone.files import sha256_file

__all__ = ["CatalogRun", "compute_catalog", "manifest_sha256", "add_reports", "ACTIVATION_RULE", "EVAL_CHUNK"]

log = logging.getLogger(__name__)

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
    """What `compute_catalog` did: the catalog it saved and which systems it evaluated, reused and measured."""

    catalog: Catalog
    path: Path
    evaluated: tuple[str, ...]
    reused: tuple[str, ...]
    measured: tuple[str, ...]  # systems whose planned activations and .pte size were measured on their program
    from_cache: tuple[str, ...]  # of those, the ones whose program was read back from the lowering cache
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


def _with_activations(entries: list[CatalogEntry], model) -> tuple[list[CatalogEntry], list[str], list[str]]:
    """Measure planned activations on the probes not yet measured and predict the rest (ACTIVATION_RULE).
    Also returns which systems were measured and which of their programs came from the lowering cache."""
    from allinone.lowering import lower_cached
    from allinone.lowering_cache import LoweringCache
    from allinone.memory import planned_activation_bytes
    from allinone.spec import SubnetSpec

    by_id = {e.subnet: e for e in entries}
    measured_ids, from_cache = [], []
    for probe in _activation_probes(entries):
        if any(e.provenance.get("activation_bytes") == "measured" and e.weight_bits == probe.weight_bits
               for e in entries):
            continue  # this precision already has a measurement
        log.info("measuring the planned activation memory of %s (lowered, or read from the cache)", probe.subnet)
        # Keyed by architecture (weights=False): the program's size and activation plan do not depend on weight
        # values, so a new pack of the same supernet reuses the lowering instead of spending minutes on it.
        lowering = lower_cached(model, SubnetSpec.from_id(probe.subnet), LoweringCache.default(), weights=False)
        pte = lowering.program.pte
        by_id[probe.subnet] = dataclasses.replace(
            probe, pte_bytes=len(pte), activation_bytes=planned_activation_bytes(pte),
            provenance={**probe.provenance, "activation_bytes": "measured", "pte_bytes": "measured"})
        measured_ids.append(probe.subnet)
        if lowering.cache == "hit":
            from_cache.append(probe.subnet)
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
    return out, measured_ids, from_cache


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
    measured, from_cache = [], []
    if activations:
        entries, measured, from_cache = _with_activations(entries, ckpt.model)
        meta["activation_rule"] = ACTIVATION_RULE
    meta["updated"] = now
    catalog = add_reports(Catalog(tuple(entries), meta=meta), reports, force=force)
    save_catalog(catalog, path)
    return CatalogRun(catalog, path, tuple(s.id for s in todo), reused, tuple(measured), tuple(from_cache),
                      tuple(dropped))
