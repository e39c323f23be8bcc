"""Files the SDK writes and reads: atomic writes (whole or absent, never half-written), hashing, and
JSON/YAML reading with one-line errors that name the file and what it should have been.

Inputs are read with a size and a nesting limit: the parsers recurse per nesting level, so a small file
nested a few hundred levels deep would otherwise end in a RecursionError instead of an error message."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from allinone.errors import BadInputError

__all__ = ["atomic_write_bytes", "replace_dir_atomically", "atomic_write_text", "write_files_atomically", "sha256_file", "read_json",
           "parse_json", "check_size", "check_yaml_nesting", "MAX_INPUT_BYTES", "MAX_NESTING"]

MAX_INPUT_BYTES = 16 * 2**20  # JSON/YAML inputs are kilobytes (a 180-system catalog.json is ~100 KB)
MAX_NESTING = 32  # the deepest file allinone writes nests 5 levels; deeper input is damaged or hostile


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_dir_atomically(staging: Path, directory: Path) -> None:
    """fsync every file under `staging` (a sibling of `directory`), then swap it in for `directory`: an old
    directory is moved aside first and removed after, so readers see the old folder or the new one."""
    for path in staging.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    os.chmod(staging, 0o755)
    if directory.exists():
        old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old."))
        os.replace(directory, old / "bundle")
        os.replace(staging, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, directory)


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


def check_size(path: Path, expected: str) -> None:
    """Refuse a file over MAX_INPUT_BYTES before reading it into memory."""
    size = Path(path).stat().st_size
    if size > MAX_INPUT_BYTES:
        raise BadInputError(f"{path}: {size:,} bytes; expected {expected} of at most {MAX_INPUT_BYTES:,} bytes")


def _nesting(data: Any) -> int:
    """Levels of list/dict nesting of parsed JSON (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")  # Python's json accepts NaN/Infinity; JSON does not


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float")
    return value


def parse_json(text: str, where: str, expected: str = "a JSON document") -> Any:
    """Parse JSON text, refusing NaN/Infinity, numbers that overflow and nesting deeper than MAX_NESTING;
    BadInputError names `where` (a file, or FILE:LINE)."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        raise BadInputError(f"{where}: not valid JSON at line {err.lineno}: {err.msg}") from None
    except RecursionError:  # deeper than the interpreter's stack, so deeper than MAX_NESTING too
        raise BadInputError(f"{where}: nested more than {MAX_NESTING} levels deep; expected {expected}") from None
    except ValueError as err:  # from the hooks above, or an integer of thousands of digits
        raise BadInputError(f"{where}: {err}; expected {expected} with finite numbers") from None
    if _nesting(data) > MAX_NESTING:
        raise BadInputError(f"{where}: nested more than {MAX_NESTING} levels deep; expected {expected}")
    return data


def read_json(path: str | Path, expected: str) -> Any:
    """Parse `path` as UTF-8 JSON; `expected` names the file kind for the error (e.g. 'a catalog (catalog.json)')."""
    path = Path(path)
    try:
        check_size(path, expected)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file; expected {expected}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: cannot read ({err.__class__.__name__}); expected a UTF-8 JSON file") from None
    return parse_json(text, str(path), expected)


def check_yaml_nesting(text: str, where: str, expected: str = "a YAML mapping") -> None:
    """Refuse YAML text over MAX_INPUT_BYTES or nested deeper than MAX_NESTING before PyYAML builds it.

    PyYAML's parser is a state machine (safe at any depth); its composer recurses once per level. yaml.YAMLError
    from a malformed document propagates for the caller to word."""
    import yaml

    if len(text) > MAX_INPUT_BYTES:
        raise BadInputError(f"{where}: {len(text):,} characters; expected {expected} of at most "
                            f"{MAX_INPUT_BYTES:,} bytes")
    level = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            level += 1
            if level > MAX_NESTING:
                line = f" at line {event.start_mark.line + 1}" if event.start_mark else ""
                raise BadInputError(f"{where}: nested more than {MAX_NESTING} levels deep{line}; expected {expected}")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            level -= 1
