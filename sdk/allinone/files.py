"""Files the SDK writes and reads: atomic writes (whole or absent, never half-written), hashing, and
JSON reading with one-line errors that name the file and what it should have been."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from allinone.errors import BadInputError

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_files_atomically", "sha256_file", "read_json"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary shared files
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_files_atomically(directory: Path, files: list[tuple[str, bytes]]) -> None:
    """Write every file to a temporary name first (fsynced), then rename them in the given order.

    All slow writing happens before the first rename, so an interruption leaves either the old set or a
    set whose last-renamed file (the one that vouches for the others by hash) is still the old one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, data in files:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            staged.append((tmp, directory / name))
            os.chmod(tmp, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def read_json(path: str | Path, expected: str) -> Any:
    """Parse `path` as UTF-8 JSON; `expected` names the file kind for the error (e.g. 'a catalog (catalog.json)')."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file; expected {expected}") from None
    except json.JSONDecodeError as err:
        raise BadInputError(f"{path}: not valid JSON at line {err.lineno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: cannot read ({err.__class__.__name__}); expected a UTF-8 JSON file") from None
