"""Device profiles: the schema of `device_profiles/*.yaml`, strict loading, and the latency model.

A profile says what a device allows (weight bits, model and peak memory, a real-time-factor budget) and how
fast it runs a system: latency_ms = overhead_ms + block_ms_per_s * blocks * audio_s
+ MACs / (throughput_gmacs[precision] * workload_factor * 1e6) [+ size_term_ms[precision] * size_feature], and which CPU features (`isa`) those figures
assume. Format 2 added `isa`, `latency_model.block_ms_per_s`, `latency_model.device` and `latency_model.fit`;
format 3 added `latency_model.size_term_ms`, which bends the MAC cost with the system's size (`mac_ms`);
format 1 and 2 files are still read.
Units live in key names (`_mib`, `_ms`, `_s`, `_gmacs`, `_pct`), so every value is a plain number.
Loading is strict: an unknown key, a wrong type, a missing key or an out-of-range value raises
`BadInputError` with one line `FILE: KEY: what was wrong; what was expected`.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from allinone.errors import BadInputError
from allinone.files import check_size, check_yaml_nesting
from allinone.isa import isa_problem
# The schema machinery (fields with meaning and unit, the strict walk, did-you-mean) is shared: allinone.validation.
from allinone.validation import Invalid as _Invalid, in_range as _range, key as _key, nonempty as _nonempty
from allinone.validation import parse as _parse, plain as _plain, schema_rows as _schema_rows, show as _show

__all__ = [
    "FORMAT_VERSION", "READABLE_VERSIONS", "MIB", "PRECISION_OF_BITS", "DeviceProfile", "MemoryBudget",
    "LatencyBudget", "LatencyModel", "Throughput", "SizeTerm", "size_feature", "mac_ms", "MeasuredDevice", "FitQuality", "load_profile", "list_profiles", "validate_profile_file", "profile_from_dict",
    "predict_latency_ms", "predict_rtf", "schema_rows",
]

FORMAT_VERSION = 3  # what allinone writes
READABLE_VERSIONS = (1, 2, 3)
# Keys each format added: an older-version file using them is refused (an older allinone would not read it).
_ADDED_IN = {2: ("isa", "latency_model.block_ms_per_s", "latency_model.device", "latency_model.fit"),
             3: ("latency_model.size_term_ms",)}
MIB = 1 << 20  # profiles count memory in MiB (2**20 bytes): unambiguous, unlike "MB"
PRECISION_OF_BITS = {32: "fp32", 8: "int8", 4: "int4"}

Target = Literal["android-arm64", "ios-arm64", "linux-arm64", "linux-x86_64"]
Backend = Literal["xnnpack", "portable"]
Source = Literal["measured", "calibrated", "published", "estimated"]

def _weight_bits_check(bits: tuple[int, ...]) -> str | None:
    if not bits or len(set(bits)) != len(bits) or not set(bits) <= set(PRECISION_OF_BITS):
        return "a non-empty list of distinct values from 32, 8, 4"
    return None


def _name_check(name: str) -> str | None:
    ok = re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name)
    return None if ok else "lower-case letters, digits, '.', '_' or '-' (like pixel-8)"


def _date_check(text: str | None) -> str | None:
    return None if text is None or re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else "a date YYYY-MM-DD"


def size_feature(macs: float, audio_s: float) -> float:
    """audio_s * sqrt(GMAC per second of audio): the size term's regressor. It scales with the audio like the
    MACs do, but grows as the square root of the system's size, so its coefficient bends the MAC cost:
    negative when small systems run more MACs per ms (weights in cache), positive when they run fewer
    (per-token activation quantization is paid per linear, not per MAC)."""
    return audio_s * math.sqrt(macs / audio_s / 1e9) if audio_s > 0 else 0.0


def mac_ms(macs: float, audio_s: float, gmacs: float, size_ms: float) -> float:
    """Milliseconds of the MAC-dependent work: MACs / throughput, bent by the size term. Floored at 0: with a
    negative size term the curve dips below zero only for systems far smaller than any measured (a fraction
    of a millisecond at most), where no cost is the honest extrapolation."""
    return max(0.0, macs / (gmacs * 1e6) + size_ms * size_feature(macs, audio_s))


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
class SizeTerm:
    """Per precision, how a system's size bends its MAC cost (either sign; see `size_feature`)."""

    fp32: float | None = _key("fp32 systems", "ms per audio second per sqrt(GMAC/s)", default=None)
    int8: float | None = _key("int8 (8da8w) systems", "ms per audio second per sqrt(GMAC/s)",
                              default=None)
    int4: float | None = _key("int4 (8da4w) systems", "ms per audio second per sqrt(GMAC/s)",
                              default=None)

    def get(self, weight_bits: int, default: float = 0.0) -> float:
        value = getattr(self, PRECISION_OF_BITS.get(weight_bits, ""), None)
        return default if value is None else value


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
    size_term_ms: SizeTerm | None = _key("per precision, how system size bends the MAC cost (negative: small "
                                         "systems run more MACs per ms, e.g. weights in cache); fitted by allinone "
                                         "profiles measure when it predicts untimed systems better",
                                         default=None)
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
        size = self.size_term_ms.get(weight_bits) if self.size_term_ms is not None else 0.0
        if size and audio_s <= 0:
            raise BadInputError("audio_s: expected the audio length in seconds (> 0); this latency model's size "
                                "term needs it")
        return self.overhead_ms + per_block + mac_ms(macs, audio_s, self.effective_gmacs(weight_bits), size)


@dataclass(frozen=True)
class DeviceProfile:
    format_version: int = _key(f"the schema version ({FORMAT_VERSION}; "
                               f"{' and '.join(map(str, READABLE_VERSIONS[:-1]))} are still read)",
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
    return ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" or {READABLE_VERSIONS[-1]}"


def _known_precisions(throughput: Throughput) -> str:
    known = [p for p in PRECISION_OF_BITS.values() if getattr(throughput, p) is not None]
    return ", ".join(known) or "none"


# ---- loading and validation ------------------------------------------------------------------------------


def _check_profile(profile: DeviceProfile, data: dict) -> None:
    """Rules that span keys."""
    model = profile.latency_model
    for added, keys in _ADDED_IN.items():
        if profile.format_version >= added:
            continue
        for key in keys:
            head, _, leaf = key.partition(".")
            if (leaf in data.get(head, {})) if leaf else (key in data):
                raise _Invalid(key, f"not in format_version {profile.format_version}; expected format_version: "
                               f"{added} or later in a profile that uses it")
    if profile.isa is not None:
        problem = isa_problem(profile.isa, profile.target)
        if problem is not None:
            raise _Invalid(f"isa[{problem[0]}]", problem[1])
    for precision in PRECISION_OF_BITS.values():
        if model.size_term_ms is not None and getattr(model.size_term_ms, precision) is not None \
                and getattr(model.throughput_gmacs, precision) is None:
            raise _Invalid(f"latency_model.size_term_ms.{precision}", f"given without "
                           f"latency_model.throughput_gmacs.{precision}; expected both or neither")
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
    return _schema_rows(cls, prefix)
