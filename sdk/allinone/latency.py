"""Latency and peak memory of nested systems: measured on the host, predicted for every profile, calibrated
from latency reports measured on a device.

The latency model lives in each device profile (see `allinone.profiles`):

    latency_ms = overhead_ms + MACs / (throughput_gmacs[precision] * workload_factor * 1e6)

It is linear in (overhead_ms, 1 / effective GMAC/s per precision), so measurements fit it by least squares.
Residuals are weighted by 1 / measured latency, which minimises the relative error: a 30 ms system and a
900 ms system count alike, as they do for a real-time-factor budget. A fitted model stores the throughput it
measured on the speech encoder itself, so its `workload_factor` is 1.

Peak memory of a system is predicted as .pte bytes + the program's planned activation bytes (ExecuTorch's
non-constant buffers, read from the .pte) + the runtime's own overhead (measured on the host by running a
tiny program in a fresh process).

The work is split by job: `allinone.memory` (peak memory; what selection reads), `allinone.host_timing`
(timing and measuring programs on the host), `allinone.latency_fit` (the least-squares fit) and
`allinone.calibration` (device reports and refitting a profile). This module gathers their public names for
existing callers.
"""

from __future__ import annotations

from allinone.calibration import (Calibration, LatencyReport, calibrate_profile, check_report_device, read_report,
                                  report_points, save_profile, target_mismatch)
from allinone.host_timing import (HostSystem, Timing, lowered_program, measure_host, measured_profile,
                                  runtime_overhead_bytes, time_program, time_programs, tiny_program)
from allinone.latency_fit import MIN_UNCERTAINTY_PCT, LatencyFit, LatencyPoint, fit_latency_model, fitted_latency_model
from allinone.memory import planned_activation_bytes, predict_peak_bytes
from allinone_runtime.schema import REPORT_FORMAT_VERSION

__all__ = [
    "REPORT_FORMAT_VERSION", "LatencyPoint", "Timing", "LatencyFit", "LatencyReport", "Calibration",
    "planned_activation_bytes", "predict_peak_bytes", "time_program", "time_programs", "runtime_overhead_bytes",
    "fit_latency_model", "fitted_latency_model", "read_report", "report_points", "target_mismatch", "check_report_device",
    "calibrate_profile", "save_profile", "lowered_program", "HostSystem", "measure_host",
    "tiny_program", "measured_profile", "MIN_UNCERTAINTY_PCT",
]
