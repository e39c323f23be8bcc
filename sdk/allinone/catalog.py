"""The catalog: per-subnet facts (size, compute, accuracy, memory, measured latency) that selection reads,
stored as catalog.json beside its checkpoint.

This module is the format only: the data types, reading, validating and writing catalog.json, and a text
table of it. Selection reads it; `allinone.catalog_compute` (what `allinone catalog` runs) fills it from a
checkpoint and a dev manifest, so selecting never imports evaluation or lowering.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from allinone.errors import BadInputError
from allinone.files import atomic_write_text, read_json
from allinone.validation import check_keys

__all__ = ["CATALOG_FORMAT_VERSION", "CATALOG_FILE", "MeasuredLatency", "CatalogEntry", "Catalog", "load_catalog",
           "save_catalog", "format_catalog"]

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
        check_keys(data, cls, where)
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
        check_keys(data, cls, where)
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


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadInputError(f"{where}: expected an object of string values")
    return dict(value)


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
        check_keys(data, cls, where, required=("format_version", "entries"))  # a hand-written catalog names its version
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
