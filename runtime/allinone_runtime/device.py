"""What machine a measurement was taken on (including the CPU features that decide which kernels XNNPACK
runs), and how much memory this process holds."""

from __future__ import annotations

import os
import platform
import resource
import socket
from pathlib import Path

__all__ = ["device_info", "isa_features", "ISA_FEATURES", "peak_rss_bytes", "current_rss_bytes"]

# The CPU features that decide which GEMM kernels XNNPACK picks for fp32, 8-bit and 4-bit weights, per
# architecture, spelt as Linux's /proc/cpuinfo spells them (`flags` on x86, `Features` on arm64). Only these
# are recorded: the rest (aes, crc32, ...) do not change a speech encoder's speed. The C++ runner
# (runtime/cpp/src/device.cpp) records the same list.
ISA_FEATURES = {
    # fma/avx2: fp32 and int8 kernels; avx512f(+bw): wider ones; avx512_vnni / avx_vnni: int8 dot products
    # (VPDPBUSD), which make 8- and 4-bit weights fast; amx_int8: int8 tile multiply (Sapphire Rapids and later).
    "x86_64": ("fma", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"),
    # asimd: NEON (every arm64 core); asimdhp: fp16 arithmetic; asimddp: SDOT/UDOT (the "dotprod" of
    # Armv8.2: Cortex-A55/A76/A78 and later, not A53); i8mm: SMMLA (Armv8.6: A510/A710/X2 and later);
    # bf16; sve/sve2: scalable vectors; sme: matrix extension (Armv9.2).
    "arm64": ("asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme"),
}
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
# macOS has no /proc/cpuinfo: sysctl names of the same features (Apple silicon; Intel Macs list AVX ones).
_DARWIN = {"asimd": "hw.optional.AdvSIMD", "asimdhp": "hw.optional.arm.FEAT_FP16",
           "asimddp": "hw.optional.arm.FEAT_DotProd", "i8mm": "hw.optional.arm.FEAT_I8MM",
           "bf16": "hw.optional.arm.FEAT_BF16", "sme": "hw.optional.arm.FEAT_SME",
           "fma": "hw.optional.fma", "avx2": "hw.optional.avx2_0", "avx512f": "hw.optional.avx512f",
           "avx512bw": "hw.optional.avx512bw", "avx512_vnni": "hw.optional.avx512vnni"}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model"):  # x86 / older ARM kernels / Raspberry Pi
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpuinfo_features() -> set[str]:
    """Every feature flag of the first CPU in /proc/cpuinfo (empty when there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):  # x86 / arm64
                return set(value.split())
    except OSError:
        pass
    return set()


def _darwin_features() -> set[str]:
    import subprocess

    found = set()
    for name, key in _DARWIN.items():
        try:
            out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out == "1":
            found.add(name)
    return found


def isa_features(machine: str | None = None) -> list[str]:
    """The features of ISA_FEATURES this CPU has, in ISA_FEATURES order; [] on an unknown architecture."""
    arch = _ARCH.get((machine or platform.machine()).lower())
    if arch is None:
        return []
    have = _darwin_features() if platform.system() == "Darwin" else _cpuinfo_features()
    return [name for name in ISA_FEATURES[arch] if name in have]


def device_info() -> dict:
    """`hostname`, `machine`, `system`, `cpu`, `cores` and `isa` as the latency report records them."""
    machine = platform.machine()
    return {"hostname": socket.gethostname(), "machine": machine,
            "system": f"{platform.system()} {platform.release()}", "cpu": _cpu_model(), "cores": os.cpu_count() or 1,
            "isa": isa_features(machine)}


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (VmHWM on Linux, ru_maxrss elsewhere)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def current_rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()
