"""One validation mechanism for the SDK's input files: a schema is a frozen dataclass whose fields carry their
meaning, unit and range check (`key(...)`), and data is checked against it with one line per problem.

Two entry points:
  * `parse(cls, data)`: the whole strict walk the device profiles use (unknown keys with a did-you-mean at the
    same level or across levels, missing keys with what was expected, types described in words with their unit,
    range checks, hints for numbers written as text);
  * `check_keys(data, schema, where)`: the key checks alone (unknown keys with a did-you-mean, then missing
    keys), driven by the same dataclass fields, for formats that check their values themselves (catalog,
    recipe, hypotheses, checkpoint config). `quoted=True` keeps those formats' wording
    (`unknown key 'max_step' (did you mean 'max_steps'?)`, `missing key 'name'`).
Problems are `Invalid(key, message)` inside `parse` (the caller adds the file name) and `BadInputError` from
`check_keys`.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import types
from dataclasses import field
from typing import Any, Callable, Literal, Sequence, Union, get_args, get_origin, get_type_hints

from allinone.errors import BadInputError

__all__ = ["Check", "Invalid", "key", "in_range", "nonempty", "parse", "check_keys", "close_match", "describe",
           "show", "plain", "schema_rows", "all_keys"]

Check = Callable[[Any], Union[str, None]]  # returns what was expected when the value is out of range


def key(meaning: str, unit: str = "", *, check: Check | None = None, default: Any = dataclasses.MISSING):
    """A schema field: its meaning and unit feed error messages and the docs table."""
    meta = {"meaning": meaning, "unit": unit, "check": check}
    return field(metadata=meta) if default is dataclasses.MISSING else field(default=default, metadata=meta)


def in_range(lo: float, hi: float = math.inf, *, lo_open: bool = False) -> Check:
    def check(value: float) -> str | None:
        above = value > lo if lo_open else value >= lo
        if above and value <= hi:
            return None
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        return low if hi == math.inf else f"{low} and <= {hi:g}"
    return check


def nonempty(text: str) -> str | None:
    return None if text.strip() else "a non-empty string"


def plain(obj: Any) -> Any:
    """A schema object as plain YAML/JSON data; optional keys left out, not written as null."""
    if dataclasses.is_dataclass(obj):
        out = {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(obj, tuple):
        return [plain(v) for v in obj]
    return obj


def close_match(name: str, choices: Sequence[str], cutoff: float = 0.6) -> str | None:
    """The did-you-mean of a misspelt key or value, if one is close enough."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def check_keys(data: dict, schema: type | Sequence[str], where: str, *, required: Sequence[str] | None = None,
               quoted: bool = False, allow_unknown: bool = False) -> None:
    """Refuse unknown keys (with a did-you-mean; first, since a misspelt key also leaves its right one missing),
    then missing ones. `schema`: a dataclass (its fields are the keys; those without a default are required)
    or a list of keys, all required; `required` overrides which are. BadInputError naming `where` and the key."""
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        fields = dataclasses.fields(schema)
        known = [f.name for f in fields]
        needed = [f.name for f in fields if _required(f)] if required is None else list(required)
        meanings = {f.name: f.metadata.get("meaning", "") for f in fields}
    else:
        known = list(schema)
        needed = known if required is None else list(required)
        meanings = {}
    if not allow_unknown:
        for name in data:
            if name in known:
                continue
            close = close_match(str(name), known)
            if quoted:
                hint = f" (did you mean {close!r}?)" if close else f"; expected only {', '.join(known)}"
                raise BadInputError(f"{where}: unknown key {name!r}{hint}")
            hint = f"did you mean {close}?" if close else f"expected one of {', '.join(known)}"
            raise BadInputError(f"{where}: {name}: unknown key; {hint}")
    for name in needed:
        if name not in data:
            if quoted:
                raise BadInputError(f"{where}: missing key {name!r}")
            meaning = f"; expected {meanings[name]}" if meanings.get(name) else ""
            raise BadInputError(f"{where}: {name}: missing{meaning}")


# ---- the strict walk (device profiles) ----------------------------------------------------------------------


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, for did-you-mean across levels."""
    hints, keys = get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        dotted = prefix + f.name
        keys.append(dotted)
        tp = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, dotted + ".")
    return keys


def _unwrap(tp: Any) -> Any:
    """`X | None` -> X; anything else unchanged."""
    if get_origin(tp) in _UNIONS:
        return next(a for a in get_args(tp) if a is not type(None))
    return tp


def show(value: Any) -> str:
    """A value as an error message quotes it: short, one line, saying what kind of thing it is."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        flat = all(isinstance(v, (int, float, str)) for v in value) and len(str(value)) <= 60
        return str(value) if flat else "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value) if isinstance(value, str) else str(value)
    text = text.replace("\n", " ")
    return f"the string {text[:60]}" if isinstance(value, str) else text[:60]


_UNIONS = (Union, types.UnionType)  # `float | None` and `Optional[float]`
_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "%": "percent", "ratio": ""}


def describe(tp: Any, unit: str) -> str:
    """What a value of this type looks like, in words, for 'expected ...'."""
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) in _UNIONS:
        return describe(args[0], unit)
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(get_args(tp))
    if get_origin(tp) is tuple:
        return f"a list of {describe(args[0], '').removeprefix('a ').removeprefix('an ')}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    words = {int: "an integer", float: "a number", str: "a string"}[tp]
    unit = _UNIT_WORDS.get(unit, unit)
    return f"{words} of {unit}" if unit and tp in (int, float) else words


class Invalid(Exception):
    """A problem with one key; the caller adds the file name."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")


def parse(cls: type, data: Any, prefix: str = "", root: type | None = None) -> Any:
    """`data` checked against the dataclass `cls` and built into one; Invalid(key, problem) otherwise. `root` is
    the top-level schema, searched for a right key given at the wrong level (default: `cls`)."""
    root = root or cls
    if not isinstance(data, dict):
        raise Invalid(prefix.rstrip(".") or "(top level)", f"expected a mapping of keys, got {show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:  # before 'missing': a misspelt key also leaves its correct one missing
            raise Invalid(prefix + str(name), "unknown key" + _did_you_mean(str(name), prefix, cls, root))
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING:
            unit = f" ({f.metadata['unit']})" if f.metadata.get("unit") not in ("", "ratio") else ""
            raise Invalid(prefix + name, f"missing; expected {f.metadata['meaning']}{unit}")
    hints = get_type_hints(cls)
    values = {name: _convert(hints[name], data[name], prefix + name, fields[name].metadata, root)
              for name in fields if name in data}
    return cls(**values)


def _did_you_mean(name: str, prefix: str, cls: type, root: type) -> str:
    local = [f.name for f in dataclasses.fields(cls)]
    close = close_match(name, local, cutoff=0.6)
    if close:
        return f"; did you mean {prefix}{close}?"
    # A right key at the wrong level (max_rtf at the top instead of under latency) is a common slip.
    leaves = {k.rsplit(".", 1)[-1]: k for k in all_keys(root)}
    close = close_match(name, list(leaves), cutoff=0.75)
    if close:
        return f"; did you mean {leaves[close]}?"
    return f"; expected one of {', '.join(local)}"


def _convert(tp: Any, value: Any, name: str, meta: dict, root: type) -> Any:
    unit = meta.get("unit", "")
    if get_origin(tp) in _UNIONS:
        if value is None:
            return None
        tp = next(a for a in get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, name + ".", root)
    if get_origin(tp) is Literal:
        choices = get_args(tp)
        if value not in choices:
            close = close_match(str(value), choices)
            hint = f"; did you mean {close}?" if close else ""
            raise Invalid(name, f"expected one of {', '.join(choices)}, got {show(value)}{hint}")
        return value
    if get_origin(tp) is tuple:
        if not isinstance(value, list):
            raise Invalid(name, f"expected {describe(tp, unit)}, got {show(value)}")
        item_type = get_args(tp)[0]
        out = tuple(_convert(item_type, v, f"{name}[{i}]", {}, root) for i, v in enumerate(value))
    else:
        out = _scalar(tp, value, name, unit)
    check = meta.get("check")
    expected = check(out) if check else None
    if expected:
        if expected[0] in "<>":  # a range: say the type too ("an integer >= 1 and <= 256")
            expected = f"{describe(tp, unit)} {expected}"
        raise Invalid(name, f"expected {expected}, got {show(value)}")
    return out


def _scalar(tp: type, value: Any, name: str, unit: str) -> Any:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str and isinstance(value, str):
        return value
    if tp is str and isinstance(value, datetime.date):  # YAML reads an unquoted 2026-11-25 as a date
        return value.isoformat()
    if tp is int and is_number and float(value).is_integer():
        return int(value)
    if tp is float and is_number and math.isfinite(value):
        return float(value)
    hint = ""
    if tp in (int, float) and isinstance(value, str):
        try:
            float(value)
            # YAML 1.1 reads an exponent without a dot (5e-1) as text.
            hint = "; write the number unquoted, with a decimal point (0.5, not 5e-1)"
        except ValueError:  # "300 MB", "0.3x": the unit belongs in the key name
            hint = "; write a plain number, the unit is in the key name" if _UNIT_WORDS.get(unit, unit) else \
                "; write a plain number"
    raise Invalid(name, f"expected {describe(tp, unit)}, got {show(value)}{hint}")


def schema_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, bool, str]]:
    """(key, type, unit, required, meaning) for every key of the schema, nested ones dotted (the docs tables)."""
    hints, rows = get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        tp, name = hints[f.name], prefix + f.name
        required = f.default is dataclasses.MISSING
        rows.append((name, describe(tp, ""), f.metadata.get("unit", ""), required, f.metadata.get("meaning", "")))
        if dataclasses.is_dataclass(_unwrap(tp)):
            rows += schema_rows(_unwrap(tp), name + ".")
    return rows
