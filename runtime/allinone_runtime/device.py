"""What machine a measurement was taken on (including the CPU features that decide which kernels XNNPACK
runs), and how much memory this process holds."""

from __future__ import annotations

import functools
import os
import platform
import re
import resource
import socket
from pathlib import Path

__all__ = ["device_info", "cpu_model_from_cpuinfo", "isa_features", "ISA_FEATURES", "CPUINFO_ENV", "peak_rss_bytes",
           "current_rss_bytes"]

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


# Device records read /proc/cpuinfo, or the file ALLINONE_CPUINFO names: tests point both runtimes at real
# cpuinfo texts of other machines (tests/fixtures/cpuinfo) this way. The C++ runner reads the same variable.
CPUINFO_ENV = "ALLINONE_CPUINFO"
# The one table of Arm Ltd core names, shared with the C++ runner (which #includes it).
_ARM_CORES_FILE = Path(__file__).with_name("arm_cores.inc")
_ARM_IMPLEMENTER = 0x41
_HEX = re.compile(r"0x[0-9a-fA-F]{1,8}")


def _cpuinfo_text() -> str:
    """/proc/cpuinfo (or $ALLINONE_CPUINFO); empty where there is none (macOS)."""
    try:
        # newline="": bytes as the C++ runner reads them (no newline translation), so both name the same CPU
        with open(os.environ.get(CPUINFO_ENV) or "/proc/cpuinfo", newline="", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@functools.cache
def _arm_core_names() -> dict[int, str]:
    """CPU part -> core name of Arm Ltd cores, from arm_cores.inc (its `{0xd0b, "Cortex-A76"},` lines)."""
    names = {}
    for line in _ARM_CORES_FILE.read_text().splitlines():
        if line.startswith("{"):
            entry = re.fullmatch(r'\{(0x[0-9a-fA-F]+), "([^"]+)"\},', line.strip())
            if entry is None:
                raise ValueError(f'{_ARM_CORES_FILE}: expected lines like {{0xd0b, "Cortex-A76"}}, got {line!r}')
            names[int(entry[1], 16)] = entry[2]
    return names


def _core_name(implementer: str, part: str) -> str:
    """The core's name for an Arm Ltd core the table knows (Cortex-A76), else the raw pair: "implementer 0x51 part
    0x805"."""
    if not (_HEX.fullmatch(implementer) and _HEX.fullmatch(part)):
        return f"implementer {implementer} part {part}"
    implementer_id, part_id = int(implementer, 16), int(part, 16)
    if implementer_id == _ARM_IMPLEMENTER and part_id in _arm_core_names():
        return _arm_core_names()[part_id]
    return f"implementer 0x{implementer_id:02x} part 0x{part_id:03x}"


def cpu_model_from_cpuinfo(cpuinfo: str) -> str:
    """The CPU as a device record names it, from the text of /proc/cpuinfo; "" when the text names none.

    arm64 kernels print no model name, only each core's "CPU implementer" and "CPU part"; those become core names
    with their counts in order of first appearance, joined by " + " ("4x Cortex-A55 + 2x Cortex-A76 + 2x Cortex-X1"),
    followed by the board ("Model", Raspberry Pi) or SoC ("Hardware", vendor kernels) in parentheses where the
    kernel prints one: "4x Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)". Elsewhere the first "model name" (x86),
    else "Model", else "Hardware". The C++ runner (runtime/cpp/src/device.cpp) returns the same string."""
    cores: dict[str, int] = {}  # core name -> count, in order of first appearance
    fields: dict[str, str] = {}  # first non-empty "model name", "Model", "Hardware"
    implementer = "?"
    for line in cpuinfo.split("\n"):
        key, colon, value = line.partition(":")
        key, value = key.strip(" \t"), value.strip(" \t")
        if not colon:
            continue
        if key == "processor":  # a new core: its implementer line follows
            implementer = "?"
        elif key == "CPU implementer":
            implementer = value
        elif key == "CPU part":
            name = _core_name(implementer, value)
            cores[name] = cores.get(name, 0) + 1
        elif key in ("model name", "Model", "Hardware") and value and key not in fields:
            fields[key] = value
    board = fields.get("Model") or fields.get("Hardware")
    if cores:
        names = " + ".join(f"{count}x {name}" for name, count in cores.items())
        return f"{names} ({board})" if board else names
    return fields.get("model name") or board or ""


def _cpu_model() -> str:
    # macOS has no /proc/cpuinfo: the architecture, as platform names it. Linux: "unknown", as the C++ runner says.
    darwin = platform.processor() if platform.system() == "Darwin" else ""
    return cpu_model_from_cpuinfo(_cpuinfo_text()) or darwin or "unknown"


def _cpuinfo_features() -> set[str]:
    """Every feature flag of the first CPU in /proc/cpuinfo (empty when there is none)."""
    for line in _cpuinfo_text().split("\n"):
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / arm64
            return set(value.split())
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
