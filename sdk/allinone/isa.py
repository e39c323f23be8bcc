"""CPU features (ISA extensions) that decide which kernels a device runs, as profiles and reports name them.

The vocabulary is the device probe's (`allinone_runtime.device.ISA_FEATURES`, Linux's /proc/cpuinfo
spelling), so a profile's `isa` and a report's `device.isa` compare name for name. Why it matters: XNNPACK
picks its int8 / int4 GEMM kernels by these features, so two CPUs of one architecture can rank precisions in
opposite orders (docs/profiles.md, "Why two x86-64 hosts differ").
"""

from __future__ import annotations

import difflib
from typing import Sequence

from allinone_runtime.device import ISA_FEATURES

__all__ = ["ISA_FEATURES", "TARGET_ARCH", "ALIASES", "isa_problem", "isa_difference"]

TARGET_ARCH = {"linux-x86_64": "x86_64", "linux-arm64": "arm64", "android-arm64": "arm64", "ios-arm64": "arm64"}

# Names people write for a feature that Linux spells otherwise (Arm's FEAT_ names, compiler flags, x86 marketing).
ALIASES = {"dotprod": "asimddp", "dot": "asimddp", "sdot": "asimddp", "neon": "asimd", "fp16": "asimdhp",
           "fphp": "asimdhp", "matmul": "i8mm", "smmla": "i8mm", "avx512vnni": "avx512_vnni",
           "vnni": "avx512_vnni", "avxvnni": "avx_vnni", "amx": "amx_int8", "amx-int8": "amx_int8",
           "avx512": "avx512f", "fma3": "fma"}


def isa_problem(features: Sequence[str], target: str) -> tuple[int, str] | None:
    """(index, what is wrong with that entry) for the first feature `target`'s CPUs cannot name, or a repeat;
    None when every name is in the target architecture's vocabulary."""
    arch = TARGET_ARCH[target]
    known = ISA_FEATURES[arch]
    seen: set[str] = set()
    for i, name in enumerate(features):
        if name in seen:
            return i, f"{name!r} is listed twice"
        seen.add(name)
        if name in known:
            continue
        alias = ALIASES.get(name.lower())
        if alias in known:
            return i, f"unknown feature {name!r}; did you mean {alias}? (Linux's name, as reports record it)"
        other = next((a for a, names in ISA_FEATURES.items() if name in names and a != arch), None)
        if other is not None:
            return i, f"{name!r} is an {other} feature, but target {target} is {arch}; expected one of {', '.join(known)}"
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        return i, f"unknown feature {name!r}; {hint}expected one of {', '.join(known)}"
    return None


def isa_difference(expected: Sequence[str], found: Sequence[str]) -> str | None:
    """'lacks X, Y; has Z too' when `found` differs from `expected`; None when they hold the same features."""
    lacks = [f for f in expected if f not in found]
    extra = [f for f in found if f not in expected]
    parts = ([f"lacks {', '.join(lacks)}"] if lacks else []) + ([f"has {', '.join(extra)} too"] if extra else [])
    return "; ".join(parts) or None
