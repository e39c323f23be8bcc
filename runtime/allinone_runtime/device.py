"""What machine a measurement was taken on, and how much memory this process holds."""

from __future__ import annotations

import os
import platform
import resource
import socket
from pathlib import Path

__all__ = ["device_info", "peak_rss_bytes", "current_rss_bytes"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model"):  # x86 / older ARM kernels / Raspberry Pi
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_info() -> dict:
    """`hostname`, `machine`, `system`, `cpu`, `cores` as the latency report records them."""
    return {"hostname": socket.gethostname(), "machine": platform.machine(),
            "system": f"{platform.system()} {platform.release()}", "cpu": _cpu_model(), "cores": os.cpu_count() or 1}


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
