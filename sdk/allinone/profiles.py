"""Device profiles: the schema of `device_profiles/*.yaml`, strict loading, and the latency model.

A profile says what a device allows (weight bits, model and peak memory, a real-time-factor budget) and how
fast it runs a system: latency_ms = overhead_ms + block_ms_per_s * blocks * audio_s
+ MACs / (throughput_gmacs[precision] * workload_factor * 1e6), and which CPU features (`isa`) those figures
assume. Format 2 added `isa`, `latency_model.block_ms_per_s`, `latency_model.device` and `latency_model.fit`;
format 1 files are still read.
Units live in key names (`_mib`, `_ms`, `_s`, `_gmacs`, `_pct`), so every value is a plain number.
Loading is strict: an unknown key, a wrong type, a missing key or an out-of-range value raises
`BadInputError` with one line `FILE: KEY: what was wrong; what was expected`.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import re
import types
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from allinone.errors import BadInputError
from allinone.files import check_size, check_yaml_nesting
from allinone.isa import isa_problem

__all__ = [
    "FORMAT_VERSION", "READABLE_VERSIONS", "MIB", "PRECISION_OF_BITS", "DeviceProfile", "MemoryBudget",
    "LatencyBudget", "LatencyModel", "Throughput", "MeasuredDevice", "FitQuality", "load_profile", "list_profiles", "validate_profile_file", "profile_from_dict",
    "predict_latency_ms", "predict_rtf", "schema_rows",
]

FORMAT_VERSION = 2  # what allinone writes
READABLE_VERSIONS = (1, 2)
# Keys format 1 did not have: a version-1 file using them is refused (an older allinone would not read it).
_ADDED_IN_2 = ("isa", "latency_model.block_ms_per_s", "latency_model.device", "latency_model.fit")
MIB = 1 << 20  # profiles count memory in MiB (2**20 bytes): unambiguous, unlike "MB"
PRECISION_OF_BITS = {32: "fp32", 8: "int8", 4: "int4"}

Target = Literal["android-arm64", "ios-arm64", "linux-arm64", "linux-x86_64"]
Backend = Literal["xnnpack", "portable"]
Source = Literal["measured", "calibrated", "published", "estimated"]

Check = Callable[[Any], Union[str, None]]  # returns what was expected when the value is out of range


def _key(meaning: str, unit: str = "", *, check: Check | None = None, default: Any = dataclasses.MISSING):
    """A schema field: its meaning and unit feed error messages and the docs table."""
    meta = {"meaning": meaning, "unit": unit, "check": check}
    return field(metadata=meta) if default is dataclasses.MISSING else field(default=default, metadata=meta)


def _range(lo: float, hi: float = math.inf, *, lo_open: bool = False) -> Check:
    def check(value: float) -> str | None:
        above = value > lo if lo_open else value >= lo
        if above and value <= hi:
            return None
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        return low if hi == math.inf else f"{low} and <= {hi:g}"
    return check


def _weight_bits_check(bits: tuple[int, ...]) -> str | None:
    if not bits or len(set(bits)) != len(bits) or not set(bits) <= set(PRECISION_OF_BITS):
        return "a non-empty list of distinct values from 32, 8, 4"
    return None


def _name_check(name: str) -> str | None:
    ok = re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name)
    return None if ok else "lower-case letters, digits, '.', '_' or '-' (like pixel-8)"


def _nonempty(text: str) -> str | None:
    return None if text.strip() else "a non-empty string"


def _date_check(text: str | None) -> str | None:
    return None if text is None or re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else "a date YYYY-MM-DD"


@dataclass(frozen=True)
class MemoryBudget:
    max_model_mib: float = _key("largest model (.pte file) the app may ship", "MiB", check=_range(0, lo_open=True))
    max_peak_rss_mib: float = _key("peak resident memory while running: model + planned activations + runtime",
                                   "MiB", check=_range(0, lo_open=True))
    runtime_overhead_mib: float = _key("memory the runtime itself adds (code, kernels, buffers)", "MiB",
                                       check=_range(0))


@dataclass(frozen=True)
class LatencyBudget:
    max_rtf: float = _key("largest real-time factor allowed (processing time / audio duration)", "ratio",
                          check=_range(0, lo_open=True))
    reference_audio_s: float = _key("utterance length the budget applies to; the .pte takes 0.5-30 s", "s",
                                    check=_range(0.5, 30))


@dataclass(frozen=True)
class Throughput:
    """Dense GEMM throughput per weight precision at the profile's thread count; omit precisions never run."""

    fp32: float | None = _key("fp32 weights and activations", "GMAC/s", check=_range(0, lo_open=True), default=None)
    int8: float | None = _key("int8 weights, dynamic int8 activations (8da8w)", "GMAC/s",
                              check=_range(0, lo_open=True), default=None)
    int4: float | None = _key("int4 grouped weights, dynamic int8 activations (8da4w)", "GMAC/s",
                              check=_range(0, lo_open=True), default=None)


@dataclass(frozen=True)
class MeasuredDevice:
    """The machine a measured or calibrated latency model was timed on (as its latency reports record it)."""

    cpu: str = _key("CPU model name", check=_nonempty)
    machine: str = _key("CPU architecture (uname -m)", check=_nonempty)
    system: str = _key("operating system and kernel", check=_nonempty)
    cores: int = _key("CPU cores the machine has (threads says how many were used)", check=_range(1, 4096))


@dataclass(frozen=True)
class FitQuality:
    """How well the latency model explains the timed systems it was fitted to."""

    systems: int = _key("timed systems the model was fitted to", check=_range(1))
    max_error_pct: float = _key("largest |predicted - measured| / measured over those systems", "%", check=_range(0))
    loo_max_error_pct: float | None = _key("largest leave-one-out error: each system predicted by a fit to the "
                                           "others, what to expect for a system never timed", "%",
                                           check=_range(0), default=None)
    loo_mean_error_pct: float | None = _key("mean leave-one-out error", "%", check=_range(0), default=None)


@dataclass(frozen=True)
class LatencyModel:
    overhead_ms: float = _key("fixed cost per call (dispatch, frontend, small ops)", "ms", check=_range(0))
    throughput_gmacs: Throughput = _key("dense throughput per precision, keys fp32 / int8 / int4", "GMAC/s")
    workload_factor: float = _key("fraction of dense throughput a speech encoder reaches", "ratio",
                                  check=_range(0, 1, lo_open=True))
    source: Source = _key("where the numbers come from: measured on the device, calibrated from a report, "
                          "published figures, or estimated from related devices")
    citations: tuple[str, ...] = _key("where each number comes from (publication, report file, command)")
    uncertainty_pct: float = _key("expected prediction error", "%", check=_range(0))
    date: str | None = _key("when measured or calibrated (required for those sources)", "YYYY-MM-DD",
                            check=_date_check, default=None)
    block_ms_per_s: float | None = _key("cost per encoder block per second of audio that MACs do not count "
                                        "(element-wise ops, dispatch); fitted by allinone profiles measure",
                                        "ms", check=_range(0), default=None)
    device: MeasuredDevice | None = _key("the machine the figures were timed on (measured / calibrated)", default=None)
    fit: FitQuality | None = _key("fit errors of a measured or calibrated model", default=None)

    def effective_gmacs(self, weight_bits: int) -> float:
        """GMAC/s a speech encoder reaches at this precision; BadInputError when the profile has no figure."""
        precision = PRECISION_OF_BITS.get(weight_bits)
        dense = getattr(self.throughput_gmacs, precision) if precision else None
        if dense is None:
            raise BadInputError(f"latency_model.throughput_gmacs: no figure for {weight_bits}-bit weights; "
                                f"expected one of {_known_precisions(self.throughput_gmacs)}")
        return dense * self.workload_factor

    def predict_ms(self, macs: float, weight_bits: int, *, blocks: int = 0, audio_s: float = 0.0) -> float:
        """Predicted latency of one call doing `macs` multiply-accumulates with `weight_bits` weights on
        `audio_s` seconds through `blocks` encoder blocks (the last two feed only the per-block term)."""
        if macs < 0:
            raise BadInputError(f"macs: expected a count >= 0, got {macs}")
        per_block = (self.block_ms_per_s or 0.0) * blocks * audio_s
        return self.overhead_ms + per_block + macs / (self.effective_gmacs(weight_bits) * 1e6)  # GMAC/s*1e6 = MAC/ms


@dataclass(frozen=True)
class DeviceProfile:
    format_version: int = _key(f"the schema version ({FORMAT_VERSION}; {READABLE_VERSIONS[0]} is still read)",
                               check=lambda v: None if v in READABLE_VERSIONS else _versions())
    name: str = _key("profile name, same as the file name without .yaml", check=_name_check)
    description: str = _key("the device in one line", check=_nonempty)
    target: Target = _key("operating system and CPU architecture of the device")
    backend: Backend = _key("ExecuTorch backend the program is lowered to")
    threads: int = _key("CPU threads the runtime uses; the throughput figures are for this count",
                        check=_range(1, 256))
    weight_bits: tuple[int, ...] = _key("weight precisions the device may run (subset of 32, 8, 4)",
                                        check=_weight_bits_check)
    memory: MemoryBudget = _key("memory budgets")
    latency: LatencyBudget = _key("latency budget")
    latency_model: LatencyModel = _key("parameters of the latency prediction and their source")
    # Optional so that format-1 files load; every shipped profile has it (tests), `profiles measure` writes it.
    isa: tuple[str, ...] | None = _key("CPU features the latency figures assume, as /proc/cpuinfo names them "
                                       "(x86: fma, avx2, avx512f, avx512bw, avx512_vnni, avx_vnni, amx_int8; arm64: "
                                       "asimd, asimdhp, asimddp, i8mm, bf16, sve, sve2, sme); [] for none of them",
                                       default=None)
    notes: str = _key("anything a reader should know about the numbers", default="")

    def predict_latency_ms(self, macs: float, weight_bits: int, *, blocks: int = 0, audio_s: float = 0.0) -> float:
        return self.latency_model.predict_ms(macs, weight_bits, blocks=blocks, audio_s=audio_s)

    def predict_rtf(self, macs_per_second: float, weight_bits: int, *, blocks: int = 0) -> float:
        """Predicted real-time factor at the profile's reference utterance length (`blocks`: encoder depth)."""
        seconds = self.latency.reference_audio_s
        return self.predict_latency_ms(macs_per_second * seconds, weight_bits, blocks=blocks,
                                       audio_s=seconds) / (seconds * 1000.0)

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain YAML/JSON data; `profile_from_dict(p.to_dict())` gives `p` back."""
        return _plain(self)


def predict_latency_ms(profile: DeviceProfile, macs: float, weight_bits: int, *, blocks: int = 0,
                       audio_s: float = 0.0) -> float:
    """Latency of one call of `macs` MACs at `weight_bits`, from the profile's latency model."""
    return profile.predict_latency_ms(macs, weight_bits, blocks=blocks, audio_s=audio_s)


def predict_rtf(profile: DeviceProfile, macs_per_second: float, weight_bits: int, *, blocks: int = 0) -> float:
    return profile.predict_rtf(macs_per_second, weight_bits, blocks=blocks)


def _versions() -> str:
    return " or ".join(map(str, READABLE_VERSIONS))


def _known_precisions(throughput: Throughput) -> str:
    known = [p for p in PRECISION_OF_BITS.values() if getattr(throughput, p) is not None]
    return ", ".join(known) or "none"


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {k: v for k, v in out.items() if v is not None}  # optional keys left out, not written as null
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


# ---- loading and validation ------------------------------------------------------------------------------


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, for did-you-mean across levels."""
    hints, keys = get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        dotted = prefix + f.name
        keys.append(dotted)
        tp = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, dotted + ".")
    return keys


def _unwrap(tp: Any) -> Any:
    """`X | None` -> X; anything else unchanged."""
    if get_origin(tp) in _UNIONS:
        return next(a for a in get_args(tp) if a is not type(None))
    return tp


def _show(value: Any) -> str:
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


def _describe(tp: Any, unit: str) -> str:
    """What a value of this type looks like, in words, for 'expected ...'."""
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) in _UNIONS:
        return _describe(args[0], unit)
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(get_args(tp))
    if get_origin(tp) is tuple:
        return f"a list of {_describe(args[0], '').removeprefix('a ').removeprefix('an ')}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    words = {int: "an integer", float: "a number", str: "a string"}[tp]
    unit = _UNIT_WORDS.get(unit, unit)
    return f"{words} of {unit}" if unit and tp in (int, float) else words


class _Invalid(Exception):
    """A problem with one key; the caller adds the file name."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")


def _parse(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise _Invalid(prefix.rstrip(".") or "(top level)", f"expected a mapping of keys, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:  # before 'missing': a misspelt key also leaves its correct one missing
            raise _Invalid(prefix + str(key), "unknown key" + _did_you_mean(str(key), prefix, cls))
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING:
            unit = f" ({f.metadata['unit']})" if f.metadata.get("unit") not in ("", "ratio") else ""
            raise _Invalid(prefix + name, f"missing; expected {f.metadata['meaning']}{unit}")
    hints = get_type_hints(cls)
    values = {name: _convert(hints[name], data[name], prefix + name, fields[name].metadata)
              for name in fields if name in data}
    return cls(**values)


def _did_you_mean(key: str, prefix: str, cls: type) -> str:
    local = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, local, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    # A right key at the wrong level (max_rtf at the top instead of under latency) is a common slip.
    everywhere = _all_keys(DeviceProfile)
    leaves = {k.rsplit(".", 1)[-1]: k for k in everywhere}
    close = difflib.get_close_matches(key, list(leaves), n=1, cutoff=0.75)
    if close:
        return f"; did you mean {leaves[close[0]]}?"
    return f"; expected one of {', '.join(local)}"


def _convert(tp: Any, value: Any, key: str, meta: dict) -> Any:
    unit = meta.get("unit", "")
    if get_origin(tp) in _UNIONS:
        if value is None:
            return None
        tp = next(a for a in get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return _parse(tp, value, key + ".")
    if get_origin(tp) is Literal:
        choices = get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise _Invalid(key, f"expected one of {', '.join(choices)}, got {_show(value)}{hint}")
        return value
    if get_origin(tp) is tuple:
        if not isinstance(value, list):
            raise _Invalid(key, f"expected {_describe(tp, unit)}, got {_show(value)}")
        item_type = get_args(tp)[0]
        out = tuple(_convert(item_type, v, f"{key}[{i}]", {}) for i, v in enumerate(value))
    else:
        out = _scalar(tp, value, key, unit)
    check = meta.get("check")
    expected = check(out) if check else None
    if expected:
        if expected[0] in "<>":  # a range: say the type too ("an integer >= 1 and <= 256")
            expected = f"{_describe(tp, unit)} {expected}"
        raise _Invalid(key, f"expected {expected}, got {_show(value)}")
    return out


def _scalar(tp: type, value: Any, key: str, unit: str) -> Any:
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
    raise _Invalid(key, f"expected {_describe(tp, unit)}, got {_show(value)}{hint}")


def _check_profile(profile: DeviceProfile, data: dict) -> None:
    """Rules that span keys."""
    model = profile.latency_model
    if profile.format_version == 1:
        for key in _ADDED_IN_2:
            head, _, leaf = key.partition(".")
            if (leaf in data.get(head, {})) if leaf else (key in data):
                raise _Invalid(key, f"not in format_version 1; expected format_version: {FORMAT_VERSION} in a "
                               f"profile that uses it")
    if profile.isa is not None:
        problem = isa_problem(profile.isa, profile.target)
        if problem is not None:
            raise _Invalid(f"isa[{problem[0]}]", problem[1])
    for bits in profile.weight_bits:
        precision = PRECISION_OF_BITS[bits]
        if getattr(model.throughput_gmacs, precision) is None:
            raise _Invalid(f"latency_model.throughput_gmacs.{precision}",
                           f"missing; weight_bits allows {bits}, so the latency model needs its throughput (GMAC/s)")
    mem = profile.memory
    if mem.max_model_mib > mem.max_peak_rss_mib:
        raise _Invalid("memory.max_model_mib", f"expected at most memory.max_peak_rss_mib ({mem.max_peak_rss_mib:g}), "
                       f"got {mem.max_model_mib:g}")
    if mem.runtime_overhead_mib >= mem.max_peak_rss_mib:
        raise _Invalid("memory.runtime_overhead_mib", f"expected less than memory.max_peak_rss_mib "
                       f"({mem.max_peak_rss_mib:g}), got {mem.runtime_overhead_mib:g}")
    if not model.citations or not all(c.strip() for c in model.citations):
        raise _Invalid("latency_model.citations", "expected a non-empty list of non-empty strings")
    if model.source in ("measured", "calibrated") and model.date is None:
        raise _Invalid("latency_model.date", f"missing; expected the date (YYYY-MM-DD) the numbers were {model.source}")


def profile_from_dict(data: Any, where: str = "<profile>") -> DeviceProfile:
    """Validate parsed YAML/JSON data; `where` names the input in error messages."""
    try:
        version = data.get("format_version") if isinstance(data, dict) else None
        if isinstance(data, dict) and "format_version" in data and (version not in READABLE_VERSIONS
                                                                      or isinstance(version, bool)):
            # Checked first: a newer file's unknown keys would otherwise hide the real problem.
            raise _Invalid("format_version", f"expected {_versions()} (the versions this allinone reads), "
                           f"got {_show(data['format_version'])}")
        profile = _parse(DeviceProfile, data, "")
        _check_profile(profile, data)
    except _Invalid as err:
        raise BadInputError(f"{where}: {err}") from None
    return profile


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would otherwise resolve silently (last wins)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)):  # other keys are unhashable or exotic; left to PyYAML
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(text: str, where: str) -> Any:
    try:
        check_yaml_nesting(text, where, "a device profile")
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BadInputError(f"{where}: not valid YAML{line}: {problem}") from None


def _shipped() -> dict[str, Any]:
    folder = resources.files("allinone.device_profiles")
    return {item.name[: -len(".yaml")]: item for item in folder.iterdir() if item.name.endswith(".yaml")}


def list_profiles() -> list[str]:
    """Names of the profiles shipped with allinone, sorted."""
    return sorted(_shipped())


def validate_profile_file(path: str | Path) -> DeviceProfile:
    """Load and validate one profile file; BadInputError with one line naming the file and key otherwise."""
    path = Path(path)
    try:
        check_size(path, "a device profile")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file; expected a device profile (.yaml)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: cannot read ({err.__class__.__name__}); expected a UTF-8 YAML file") from None
    return profile_from_dict(_read_yaml(text, str(path)), str(path))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name (`pixel-8`) or a profile file by path (anything with a '/' or a .yaml suffix)."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or "\\" in text or text.endswith((".yaml", ".yml")):
        return validate_profile_file(name_or_path)
    shipped = _shipped()
    if text not in shipped:
        close = difflib.get_close_matches(text, list(shipped), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise BadInputError(f"unknown device profile {text!r}; {hint}expected one of {', '.join(sorted(shipped))} "
                            f"or a path to a .yaml file")
    item = shipped[text]
    profile = profile_from_dict(_read_yaml(item.read_text(encoding="utf-8"), str(item)), str(item))
    if profile.name != text:
        raise BadInputError(f"{item}: name: expected {text!r} (the file name), got {profile.name!r}")
    return profile


def schema_rows(cls: type = DeviceProfile, prefix: str = "") -> list[tuple[str, str, str, bool, str]]:
    """(key, type, unit, required, meaning) for every key of the schema; docs/formats.md is checked against it."""
    hints, rows = get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        required = f.default is dataclasses.MISSING
        rows.append((key, _describe(tp, ""), f.metadata.get("unit", ""), required, f.metadata.get("meaning", "")))
        if dataclasses.is_dataclass(_unwrap(tp)):
            rows += schema_rows(_unwrap(tp), key + ".")
    return rows
