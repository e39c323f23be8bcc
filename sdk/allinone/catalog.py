"""The catalog: per-subnet facts (size, compute, accuracy) that selection reads, stored as catalog.json.

This module holds the data and its file format only; computing the facts from a checkpoint lives elsewhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from allinone.errors import BadInputError

__all__ = ["CATALOG_FORMAT_VERSION", "CatalogEntry", "Catalog", "load_catalog", "save_catalog"]

CATALOG_FORMAT_VERSION = 1


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
    activation_bytes: int | None = None  # ExecuTorch's planned (non-constant) buffer bytes, once built

    @property
    def model_bytes(self) -> int:
        """What the device stores and maps: the .pte when built, else the weights alone (a lower bound)."""
        return self.pte_bytes if self.pte_bytes is not None else self.weight_bytes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "catalog entry") -> CatalogEntry:
        """Validate one entry; BadInputError naming `where` and the key otherwise."""
        if not isinstance(data, dict):
            raise BadInputError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
        _check_keys(data, _ENTRY_KEYS, _REQUIRED_ENTRY_KEYS, where)
        values = {key: _entry_value(key, data[key], where) for key in data}
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
_REQUIRED_ENTRY_KEYS = [f.name for f in dataclasses.fields(CatalogEntry) if f.default is dataclasses.MISSING]


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
        meta = data.get("meta", {})
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise BadInputError(f"{where}: meta: expected an object of string values")
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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file; expected a catalog (catalog.json)") from None
    except json.JSONDecodeError as err:
        raise BadInputError(f"{path}: not valid JSON at line {err.lineno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: cannot read ({err.__class__.__name__}); expected a UTF-8 JSON file") from None
    return Catalog.from_dict(data, str(path))


def save_catalog(catalog: Catalog, path: str | Path) -> None:
    """Write catalog.json atomically: a reader never sees half a file, an interrupted write leaves the old one."""
    path = Path(path)
    text = json.dumps(catalog.to_dict(), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a catalog is an ordinary shared file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
