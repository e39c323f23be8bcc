"""The latency report (report.json, format_version 3; 1 and 2 still read): its one reader and validator (`read_report`,
`validate_report`), used by the runtime, by `allinone calibrate`/`catalog --report` and by the tests; and
`read_json_file`, the runtime's one way to read JSON (bundle manifests, reports) within size and depth limits.

See docs/formats.md, "Latency report". `validate_report` stops at the first problem and raises
RuntimeInputError with one line `SOURCE: KEY: what was wrong; what was expected`.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
from pathlib import Path
from typing import Any

from allinone_runtime.errors import RuntimeInputError

__all__ = ["REPORT_FORMAT_VERSION", "READABLE_REPORT_VERSIONS", "REPORT_KIND", "read_report", "validate_report", "read_json_file", "MAX_JSON_BYTES",
           "MAX_NESTING"]

MAX_JSON_BYTES = 16 * 2**20  # manifests and reports are kilobytes; a bigger file is not one
MAX_NESTING = 32  # they nest 5 levels; the parser recurses per level, so deeper input is refused, not crashed on

REPORT_FORMAT_VERSION = 3  # 2 added device.isa (the CPU features that decide kernel choice); 3 added decoding
READABLE_REPORT_VERSIONS = (1, 2, 3)  # a version-1 report has no device.isa, so it cannot be matched on ISA
REPORT_KIND = "allinone-latency-report"

_NUM = "number"
_INT = "integer"
_STR = "string"
_BOOL = "boolean"

_DEVICE = {"hostname": _STR, "machine": _STR, "system": _STR, "cpu": _STR, "cores": _INT}
# Optional keys of nested objects. device.emulator: the emulator a cross-built runner ran under (qemu-user);
# such timings are no device's, and calibration refuses them.
_NESTED_OPTIONAL = {"device": {"emulator": _STR}}
_ISA = {"isa": [_STR]}  # required in device from format_version 2 (an empty list is allowed: see _check_isa)
_BUNDLE = {"path": _STR, "subnet": _STR, "weight_bits": _INT, "macs_per_second": (_NUM, None), "pte_bytes": _INT,
           "pte_sha256": _STR, "profile": (_STR, None)}
_LATENCY = {"audio_s": _NUM, "p50_ms": _NUM, "p90_ms": _NUM, "min_ms": _NUM, "max_ms": _NUM, "mean_ms": _NUM,
            "rtf": _NUM}
_OPERATOR = {"name": _STR, "delegated": _BOOL, "calls": _INT, "total_ms": _NUM}
_ETDUMP = {"audio_s": _NUM, "runs": _INT}
# required from format_version 3: the decoding of each timed call's log-probs, timed apart from the network
# (`latency`); decoder "greedy" (beam and lm_bytes null) or "ctc_prefix_beam" (the bundle's LM, its files' bytes)
_DECODING = {"decoder": _STR, "beam": (_INT, None), "lm_bytes": (_INT, None), "latency": [_LATENCY]}
_TOP = {"format_version": _INT, "kind": _STR, "measured": _BOOL, "date": _STR, "device": _DEVICE, "runner": _STR,
        "bundle": _BUNDLE, "threads": _INT, "runs": _INT, "load_ms": _NUM, "first_run_ms": _NUM,
        "latency": [_LATENCY], "peak_rss_bytes": _INT}
_OPTIONAL = {"operators": [_OPERATOR], "transcript": _STR, "audio": _STR, "rss_before_load_bytes": _INT,
             "executorch": _STR, "etdump": _ETDUMP}


def _depth(data: Any) -> int:
    deepest, stack = 0, [(data, 1)]
    while stack:  # no recursion: the input may be hostile
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")  # Python's json extension, which no other reader accepts


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float")
    return value


def read_json_file(path: str | Path, what: str) -> Any:
    """Parse a UTF-8 JSON file, refusing more than MAX_JSON_BYTES, nesting deeper than MAX_NESTING and
    non-finite numbers with one-line RuntimeInputErrors naming the file; FileNotFoundError is left to the caller."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise RuntimeInputError(f"{path}: {size:,} bytes; expected {what} of at most {MAX_JSON_BYTES:,} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        raise RuntimeInputError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:  # deeper than the interpreter's stack, so deeper than MAX_NESTING too
        raise RuntimeInputError(f"{path}: nested more than {MAX_NESTING} levels deep; expected {what}") from None
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as err:  # NaN/Infinity or an overflowing number, not UTF-8, a directory
        raise RuntimeInputError(f"{path}: {str(err).splitlines()[0]}; expected {what} (UTF-8 JSON, finite "
                                f"numbers)") from None
    if _depth(data) > MAX_NESTING:
        raise RuntimeInputError(f"{path}: nested more than {MAX_NESTING} levels deep; expected {what}")
    return data


def _is(value, kind: str) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == _INT:
        return isinstance(value, numbers.Integral)
    if kind == _NUM:
        return isinstance(value, numbers.Real)
    return isinstance(value, str)


def _check(value, schema, key: str, source: str, optional: dict | None = None) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise RuntimeInputError(f"{source}: {key or 'report'}: expected an object, got {type(value).__name__}")
        allowed = {**schema, **(optional or {})}
        prefix = f"{key}." if key else ""
        for name in value:
            if name not in allowed:
                near = difflib.get_close_matches(name, allowed, n=1)
                hint = f"; did you mean {prefix}{near[0]}?" if near else ""
                raise RuntimeInputError(f"{source}: {prefix}{name}: unknown key{hint}")
        for name, sub in schema.items():
            if name not in value:
                raise RuntimeInputError(f"{source}: {prefix}{name}: missing")
        for name, sub in allowed.items():
            if name in value:
                _check(value[name], sub, prefix + name, source, _NESTED_OPTIONAL.get(prefix + name))
    elif isinstance(schema, list):
        # device.isa may be empty (a CPU with none of the recorded features); every other list holds something.
        if not isinstance(value, list) or (not value and key != "device.isa"):
            raise RuntimeInputError(f"{source}: {key}: expected a {'' if key == 'device.isa' else 'non-empty '}list")
        for i, item in enumerate(value):
            _check(item, schema[0], f"{key}[{i}]", source)
    elif isinstance(schema, tuple):  # (kind, None): nullable
        if value is not None and not _is(value, schema[0]):
            raise RuntimeInputError(f"{source}: {key}: expected {_article(schema[0])} or null, got {value!r}")
    elif not _is(value, schema):
        raise RuntimeInputError(f"{source}: {key}: expected {_article(schema)}, got {value!r}")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def validate_report(report: dict, source: str = "report.json") -> dict:
    """Check a latency report against its format_version (1, 2 or 3); returns it unchanged, or raises RuntimeInputError."""
    if not isinstance(report, dict):
        raise RuntimeInputError(f"{source}: expected a JSON object, got {type(report).__name__}")
    if report.get("kind") != REPORT_KIND:  # first: another allinone file given as a report says what it is not
        raise RuntimeInputError(f"{source}: kind: expected \"{REPORT_KIND}\" (a report written by allinone bench or "
                                f"the native runner), got {report.get('kind')!r}")
    version = report.get("format_version")
    if version not in READABLE_REPORT_VERSIONS or isinstance(version, bool):
        *older, newest = READABLE_REPORT_VERSIONS
        raise RuntimeInputError(f"{source}: format_version: expected {', '.join(map(str, older))} or {newest}, "
                                f"got {version!r}")
    top = _TOP if version == 1 else {**_TOP, "device": {**_DEVICE, **_ISA}}
    if version >= 3:
        top["decoding"] = _DECODING
    _check(report, top, "", source, _OPTIONAL)
    if report["measured"] is not True:
        raise RuntimeInputError(f"{source}: measured: expected true (reports hold measurements only)")
    if report["runner"] not in ("python", "cpp"):
        raise RuntimeInputError(f"{source}: runner: expected 'python' or 'cpp', got {report['runner']!r}")
    if report["bundle"]["weight_bits"] not in (32, 8, 4):
        raise RuntimeInputError(f"{source}: bundle.weight_bits: expected 32, 8 or 4, "
                                f"got {report['bundle']['weight_bits']}")
    for key in ("threads", "runs"):
        if report[key] < 1:
            raise RuntimeInputError(f"{source}: {key}: expected >= 1, got {report[key]}")
    for key in ("load_ms", "first_run_ms", "peak_rss_bytes"):
        if report[key] < 0:
            raise RuntimeInputError(f"{source}: {key}: expected >= 0, got {report[key]}")
    if version >= 2:
        _check_isa(report["device"], source)
    if version >= 3:
        _check_decoding(report, source)
    rows = [("latency", row) for row in report["latency"]]
    rows += [("decoding.latency", row) for row in report["decoding"]["latency"]] if version >= 3 else []
    for n, (key, row) in enumerate(rows):
        i = n if key == "latency" else n - len(report["latency"])
        where = f"{key}[{i}]"
        if row["audio_s"] <= 0:
            raise RuntimeInputError(f"{source}: {where}.audio_s: expected > 0, got {row['audio_s']}")
        if not 0 <= row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["max_ms"]:
            raise RuntimeInputError(f"{source}: {where}: expected 0 <= min_ms <= p50_ms <= p90_ms <= max_ms, got "
                                    f"{row['min_ms']}, {row['p50_ms']}, {row['p90_ms']}, {row['max_ms']}")
        if not row["min_ms"] <= row["mean_ms"] <= row["max_ms"]:
            raise RuntimeInputError(f"{source}: {where}.mean_ms: expected between min_ms and max_ms, "
                                    f"got {row['mean_ms']}")
        rtf = row["p50_ms"] / (row["audio_s"] * 1e3)
        if abs(row["rtf"] - rtf) > 1e-3 * max(rtf, 1e-3):
            raise RuntimeInputError(f"{source}: {where}.rtf: {row['rtf']} is not p50_ms / audio duration ({rtf:.6g})")
    return report


def _check_decoding(report: dict, source: str) -> None:
    """decoding names a decoder this runtime knows, with a beam and LM bytes exactly when it searches, and times
    the same audio lengths as `latency`."""
    dec = report["decoding"]
    if dec["decoder"] not in ("greedy", "ctc_prefix_beam"):
        raise RuntimeInputError(f"{source}: decoding.decoder: expected 'greedy' or 'ctc_prefix_beam', "
                                f"got {dec['decoder']!r}")
    searched = dec["decoder"] == "ctc_prefix_beam"
    for key in ("beam", "lm_bytes"):
        if (dec[key] is None) == searched:
            raise RuntimeInputError(f"{source}: decoding.{key}: expected {'a number' if searched else 'null'} for "
                                    f"decoder {dec['decoder']!r}, got {dec[key]!r}")
        if searched and dec[key] < 1:
            raise RuntimeInputError(f"{source}: decoding.{key}: expected >= 1, got {dec[key]}")
    lengths = [row["audio_s"] for row in report["latency"]]
    if [row["audio_s"] for row in dec["latency"]] != lengths:
        raise RuntimeInputError(f"{source}: decoding.latency: expected one row per length of latency "
                                f"({', '.join(f'{x:g}' for x in lengths)} s)")


def _check_isa(device: dict, source: str) -> None:
    """device.isa holds distinct names the device probe records for some architecture (ISA_FEATURES)."""
    from allinone_runtime.device import ISA_FEATURES

    known = [name for names in ISA_FEATURES.values() for name in names]
    for i, name in enumerate(device["isa"]):
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; expected one of {', '.join(known)}"
            raise RuntimeInputError(f"{source}: device.isa[{i}]: unknown CPU feature {name!r}{hint}")
    if len(set(device["isa"])) != len(device["isa"]):
        raise RuntimeInputError(f"{source}: device.isa: expected distinct feature names, got {device['isa']}")


def read_report(path: str | Path) -> dict:
    """Read and validate the report.json at `path`; RuntimeInputError with one line naming the file and key."""
    path = Path(path)
    try:
        data = read_json_file(path, "a latency report (report.json)")
    except FileNotFoundError:
        raise RuntimeInputError(f"{path}: report not found") from None
    return validate_report(data, str(path))
