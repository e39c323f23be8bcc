"""The lowering cache: lowered programs kept on disk, keyed by everything that decides their bytes.

Lowering one system takes minutes; reading it back takes milliseconds. An entry is a directory

    DIR/<key>/program.pte   the lowered program
    DIR/<key>/entry.json    format version, kind, key, subnet, sha256 and size of program.pte, creation time,
                            what the lowering reported (seconds per stage, operator counts), versions

where DIR defaults to `cache_root() / "programs"` and <key> is `program_key`: a sha256 over the extracted
system's weights (or its architecture only, for programs that are only timed), the spec, the quantization
scheme, the export options, the versions of torch/torchao/executorch and the source of this package's export
code (`export_code_digest`). Anything else that changes the bytes changes one of those.

An entry is written in a staging directory and renamed into place whole, so a reader sees a complete entry or
none, and two builds storing the same key at once both succeed (the second rename finds the first's entry and
discards its own). entry.json vouches for program.pte by hash: a damaged or foreign entry is reported with
one warning line, removed and lowered again, never used. A cache that cannot be written (read-only, not a
directory, a full disk) costs one warning line; the build goes on without caching.

Plain data and the standard library: importing this module loads no torch (`allinone cache list` stays quick).
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from allinone.errors import BadInputError
from allinone.files import parse_json

__all__ = ["CACHE_FORMAT_VERSION", "ENTRY_KIND", "cache_root", "default_cache_dir", "export_code_digest",
           "program_key", "CacheEntry", "LoweringCache", "format_listing"]

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
ENTRY_KIND = "allinone-lowering-cache-entry"
PROGRAM, SIDECAR = "program.pte", "entry.json"
# The code that turns weights into a program; the same set the timing programs were keyed by before.
EXPORT_SOURCES = ("export.py", "quantize.py", "nn/*.py", "models/*.py")
_KEY = re.compile(r"^[0-9a-f]{64}$")
_STAGING_PREFIX = ".staging-"
_LEGACY = re.compile(r"^[0-9a-f]{12}-executorch.+$")  # the timing programs' folders before this cache
MAX_SIDECAR_BYTES = 1 << 20  # entry.json is about a kilobyte; anything far larger is not ours


def cache_root() -> Path:
    """allinone's cache: $ALLINONE_CACHE_DIR, else $XDG_CACHE_HOME/allinone, else ~/.cache/allinone."""
    if os.environ.get("ALLINONE_CACHE_DIR"):
        return Path(os.environ["ALLINONE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "allinone"


def default_cache_dir() -> Path:
    return cache_root() / "programs"


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "torchao", "executorch")}


@lru_cache(maxsize=1)
def export_code_digest() -> str:
    """sha256 over the versions of torch/torchao/executorch and the source of this package's export code
    (EXPORT_SOURCES): what decides a program's bytes besides the system's own inputs. Shared by the build's
    programs and the weights-independent timing programs (`allinone.host_timing.lowered_program`)."""
    import allinone

    package = Path(allinone.__file__).parent
    digest = hashlib.sha256(json.dumps(_versions(), sort_keys=True).encode())
    for source in sorted(path for pattern in EXPORT_SOURCES for path in package.glob(pattern)):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0")
        digest.update(source.read_bytes())
    return digest.hexdigest()


def program_key(spec, inputs_digest: str, options: dict[str, Any]) -> str:
    """The cache key of `spec` lowered from inputs hashing to `inputs_digest` (weights + architecture, or the
    architecture alone) with export `options`, under this package's export code and library versions."""
    parts = {"format_version": CACHE_FORMAT_VERSION, "code": export_code_digest(), "subnet": spec.id,
             "scheme": asdict(spec.quant_scheme), "inputs": inputs_digest, "options": options}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One entry as `LoweringCache.entries` lists it (its contents are not checked until loaded)."""

    key: str
    path: Path
    subnet: str
    inputs: str  # "weights" (a build's program) or "architecture" (a timing program, any weights)
    bytes: int  # program.pte + entry.json
    created: float  # seconds since the epoch (the directory's mtime when entry.json is unreadable)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "path": str(self.path), "subnet": self.subnet, "inputs": self.inputs,
                "bytes": self.bytes, "created": datetime.datetime.fromtimestamp(
                    self.created, datetime.timezone.utc).isoformat(timespec="seconds")}


def _read_sidecar(path: Path) -> Any:
    """entry.json parsed; ValueError when it is too large, not UTF-8 or not JSON (BadInputError is one)."""
    data = path.read_bytes()
    if len(data) > MAX_SIDECAR_BYTES:
        raise ValueError(f"{len(data):,} bytes")
    return parse_json(data.decode("utf-8"), str(path), "a lowering cache entry")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _remove(path: Path) -> None:
    """Remove an entry directory: renamed aside first, so no reader sees it half-deleted."""
    try:
        aside = path.with_name(f"{_STAGING_PREFIX}removed-{path.name[:12]}-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(path, aside)
        shutil.rmtree(aside, ignore_errors=True)
    except OSError:
        pass  # gone already, or a read-only cache: the caller lowers again either way


class LoweringCache:
    """Lowered programs under `directory`; `LoweringCache(None)` caches nothing (`--no-cache`)."""

    def __init__(self, directory: str | Path | None):
        self.directory = Path(directory) if directory is not None else None
        self.unwritable = False  # set after the first failed write: one warning, then no more tries

    @classmethod
    def default(cls) -> LoweringCache:
        return cls(default_cache_dir())

    @classmethod
    def from_options(cls, cache_dir: str | Path | None, no_cache: bool) -> LoweringCache:
        """The cache a command's --cache-dir / --no-cache ask for (the default directory when neither)."""
        if no_cache:
            return cls(None)
        return cls(cache_dir) if cache_dir is not None else cls.default()

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / key

    def load(self, key: str, subnet: str) -> tuple[bytes, dict[str, Any]] | None:
        """(program bytes, entry.json) of `key`, or None on a miss. An entry whose entry.json is unreadable,
        of another format or key, or whose program.pte does not match its sha256 is reported (one warning
        line), removed and treated as a miss."""
        if self.directory is None:
            return None
        entry = self.directory / key
        if not (entry / SIDECAR).is_file():
            return None
        problem, pte, meta = None, b"", {}
        try:
            meta = _read_sidecar(entry / SIDECAR)
            if not isinstance(meta, dict) or meta.get("kind") != ENTRY_KIND:
                problem = f"{SIDECAR} is not a lowering cache entry"
            elif meta.get("format_version") != CACHE_FORMAT_VERSION or meta.get("key") != key:
                problem = (f"{SIDECAR} has format {meta.get('format_version')!r} and key "
                           f"{str(meta.get('key'))[:12]}...; expected format {CACHE_FORMAT_VERSION} and this key")
            else:
                pte = (entry / PROGRAM).read_bytes()
                if hashlib.sha256(pte).hexdigest() != meta.get("pte_sha256"):
                    problem = f"{PROGRAM} does not match the sha256 in {SIDECAR}"
        except ValueError:
            problem = f"{SIDECAR} is not valid JSON"
        except OSError as err:
            problem = f"cannot read it ({err.strerror})"
        if problem is not None:
            log.warning("lowering cache %s: corrupt entry (%s); lowering %s again", entry, problem, subnet)
            _remove(entry)
            return None
        return pte, meta

    def store(self, key: str, pte: bytes, meta: dict[str, Any]) -> Path | None:
        """Write the entry of `key` (program + entry.json with `meta`) atomically; its path, or None when the
        cache is off or cannot be written (one warning line, the first time)."""
        if self.directory is None or self.unwritable:
            return None
        final, staging = self.directory / key, None
        sidecar = {"format_version": CACHE_FORMAT_VERSION, "kind": ENTRY_KIND, "key": key, **meta,
                   "pte_sha256": hashlib.sha256(pte).hexdigest(), "pte_bytes": len(pte),
                   "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "versions": _versions()}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.directory, prefix=f"{_STAGING_PREFIX}{key[:12]}-"))
            _write_synced(staging / PROGRAM, pte)
            _write_synced(staging / SIDECAR, json.dumps(sidecar, indent=1, allow_nan=False).encode())
            os.chmod(staging, 0o755)  # mkdtemp makes 0700; the cache is an ordinary shared folder
            try:
                os.replace(staging, final)
            except OSError as err:
                # Another build stored this key first: its entry has the same bytes, so keep it.
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST) and final.is_dir():
                    return final
                raise
            staging = None
            return final
        except OSError as err:
            self.unwritable = True
            log.warning("lowering cache %s: cannot write (%s); building without caching", self.directory,
                        err.strerror or type(err).__name__)
            return None
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)

    def entries(self) -> list[CacheEntry]:
        """The entries in the cache, oldest first (their programs' hashes are checked only when loaded)."""
        if self.directory is None or not self.directory.is_dir():
            return []
        out = []
        for entry in self.directory.iterdir():
            if not _KEY.match(entry.name) or not entry.is_dir():
                continue
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
            try:
                meta = _read_sidecar(entry / SIDECAR)
                created = datetime.datetime.fromisoformat(meta["created"]).timestamp()
                subnet, inputs = str(meta["subnet"]), str(meta.get("inputs", "?"))
            except (OSError, ValueError, KeyError, TypeError):
                created, subnet, inputs = entry.stat().st_mtime, "?", "unreadable"
            out.append(CacheEntry(entry.name, entry, subnet, inputs, size, created))
        return sorted(out, key=lambda e: (e.created, e.key))

    def clear(self) -> tuple[int, int]:
        """Remove every entry (and what an interrupted write or the older timing-program layout left);
        returns (entries removed, bytes freed). Files the cache did not make are left alone."""
        if self.directory is None:
            raise BadInputError("cache clear: caching is off (--no-cache); expected a cache directory")
        if not self.directory.is_dir():
            return 0, 0
        removed = freed = 0
        for path in self.directory.iterdir():
            ours = _KEY.match(path.name) or path.name.startswith(_STAGING_PREFIX) or _LEGACY.match(path.name)
            if not ours or not path.is_dir():
                continue
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            if _KEY.match(path.name):
                removed += 1
                _remove(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
        return removed, freed


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(0.0, seconds):.0f} s"


def format_listing(cache: LoweringCache, now: float | None = None) -> str:
    """`allinone cache list`: one line per entry (key, subnet, what it is keyed by, size, age), then the total."""
    entries = cache.entries()
    now = time.time() if now is None else now
    lines = [f"{e.key[:12]}  {e.subnet:<16} {e.inputs:<12} {e.bytes / 2**20:8.2f} MiB  {_age(now - e.created):>6} old"
             for e in entries]
    total = sum(e.bytes for e in entries)
    lines.append(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {total / 2**20:.2f} MiB in {cache.directory}")
    return "\n".join(lines)
