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

Host measurements time programs in a fresh Python process, so the thread-pool size set for them cannot leak
into the caller; several programs are timed interleaved in one process (comparable on a shared machine) and
each program's peak resident memory is measured in a process of its own.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from allinone.errors import BadInputError
from allinone.profiles import MIB, PRECISION_OF_BITS, DeviceProfile, LatencyModel, Throughput, profile_from_dict
from allinone_runtime.schema import REPORT_FORMAT_VERSION

__all__ = [
    "REPORT_FORMAT_VERSION", "LatencyPoint", "Timing", "LatencyFit", "LatencyReport", "Calibration",
    "planned_activation_bytes", "predict_peak_bytes", "time_program", "time_programs", "runtime_overhead_bytes",
    "fit_latency_model", "fitted_latency_model", "read_report", "report_points", "target_mismatch", "check_report_device",
    "calibrate_profile", "save_profile", "lowered_program", "HostSystem", "measure_host",
    "tiny_program", "measured_profile",
]

MIN_UNCERTAINTY_PCT = 10  # run-to-run spread of a timed call on a busy CPU; a fit never claims better


# ---- memory ----------------------------------------------------------------------------------------------------


def planned_activation_bytes(pte: bytes | str | Path, method: str = "forward") -> int:
    """Bytes ExecuTorch's memory planner reserves for `method`'s non-constant tensors (activations).

    The runtime's Python MethodMeta does not expose the planned buffers, so the figure is read from the
    serialized program: `execution_plan[].non_const_buffer_sizes`, whose entry 0 is reserved for constants.
    A program with a dynamic audio length is planned for its upper bound (30 s), so this is the worst case.
    Memory the XNNPACK delegate allocates for itself (its workspace, packed weights) is not in it."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    data = pte if isinstance(pte, (bytes, bytearray)) else Path(pte).read_bytes()
    where = "program" if isinstance(pte, (bytes, bytearray)) else str(pte)
    try:
        program = deserialize_pte_binary(bytes(data)).program
    except Exception as err:  # the flatbuffer reader raises assorted errors on a damaged file
        raise BadInputError(f"{where}: not an ExecuTorch program ({err.__class__.__name__}); expected a .pte") from None
    plans = {plan.name: plan for plan in program.execution_plan}
    if method not in plans:
        raise BadInputError(f"{where}: no method {method!r}; expected one of {', '.join(sorted(plans))}")
    return int(sum(plans[method].non_const_buffer_sizes[1:]))


def predict_peak_bytes(model_bytes: int, activation_bytes: int | None, profile: DeviceProfile) -> int:
    """Peak resident memory of a system on `profile`'s device: model (.pte) + planned activations + the
    runtime's own overhead. Unmeasured activations count as 0, so the figure is then a lower bound."""
    return int(model_bytes) + int(activation_bytes or 0) + int(profile.memory.runtime_overhead_mib * MIB)


# ---- timing on the host ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One program timed in a fresh process at one audio length."""

    audio_s: float
    threads: int
    load_ms: float  # program load + method init
    first_run_ms: float  # the cold call, not counted in times_ms
    times_ms: tuple[float, ...]  # the timed calls after it
    peak_rss_bytes: int  # of the whole process: Python, the runtime, the program(s) and their runs

    @property
    def p50_ms(self) -> float:
        ordered = sorted(self.times_ms)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)


def time_programs(ptes: Sequence[bytes | str | Path], *, threads: int, audio_s: float, runs: int = 10,
                  timeout_s: float = 1800) -> list[Timing]:
    """Time each program's `forward` on `audio_s` seconds of 16 kHz noise with `threads` threads, all in one
    fresh Python process: one cold call each, then `runs` rounds of one call per program, interleaved.

    Interleaving matters on a shared machine: a burst of other work slows every program's calls alike, so
    their medians stay comparable, where timing one program after another would hand a quiet spell to some
    and a busy one to others. Each Timing's peak_rss_bytes is the whole process's (all programs loaded)."""
    if runs < 1 or threads < 1 or not 0.5 <= audio_s <= 30 or not ptes:
        raise BadInputError(f"time_programs: expected programs, runs >= 1, threads >= 1 and audio_s in 0.5-30, "
                            f"got {len(ptes)} programs, runs={runs}, threads={threads}, audio_s={audio_s}")
    with tempfile.TemporaryDirectory(prefix="allinone-timing-") as tmp:
        paths = []
        for k, pte in enumerate(ptes):
            if isinstance(pte, (bytes, bytearray)):
                paths.append(Path(tmp) / f"program{k}.pte")
                paths[-1].write_bytes(pte)
            else:
                paths.append(Path(pte))
        out = Path(tmp) / "timing.json"
        args = json.dumps({"ptes": [str(p) for p in paths], "threads": threads, "audio_s": audio_s, "runs": runs,
                           "out": str(out)})
        code = "import sys; from allinone.latency import _timing_child; _timing_child(sys.argv[1])"
        proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                              timeout=timeout_s, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"timing {', '.join(p.name for p in paths)} failed (exit {proc.returncode}): {tail[0]}")
        data = json.loads(out.read_text())
    return [Timing(audio_s, threads, d["load_ms"], d["first_run_ms"], tuple(d["times_ms"]), data["peak_rss_bytes"])
            for d in data["programs"]]


def time_program(pte: bytes | str | Path, *, threads: int, audio_s: float, runs: int = 10,
                 timeout_s: float = 900) -> Timing:
    """`time_programs` for one program: its process's peak RSS is then that program's alone."""
    return time_programs([pte], threads=threads, audio_s=audio_s, runs=runs, timeout_s=timeout_s)[0]


def _timing_child(args_json: str) -> None:
    """Body of the timing process; loads programs through the runtime's one loading path
    (`allinone_runtime.engine`), so its memory is what the runtime costs on a device."""
    import time

    import numpy as np

    from allinone_runtime.device import peak_rss_bytes
    from allinone_runtime.engine import Engine, set_threads

    args = json.loads(args_json)
    set_threads(int(args["threads"]))  # XNNPACK runs on ExecuTorch's shared thread pool: its only setting
    # Low-level noise, not silence: every kernel does its full work whatever the values, but noise keeps
    # dynamic quantization scales realistic.
    noise = (np.random.default_rng(0).standard_normal(int(args["audio_s"] * 16000)) * 0.05).astype(np.float32)

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1000

    programs = []
    for path in args["ptes"]:
        engine = Engine(path)
        programs.append({"engine": engine, "load_ms": engine.load_ms, "times_ms": [],
                         "first_run_ms": timed(lambda: engine.run(noise))})
    for _ in range(int(args["runs"])):
        for program in programs:
            program["times_ms"].append(timed(lambda: program["engine"].run(noise)))
    # VmHWM (peak_rss_bytes), not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
    Path(args["out"]).write_text(json.dumps({
        "peak_rss_bytes": peak_rss_bytes(),
        "programs": [{k: v for k, v in program.items() if k != "engine"} for program in programs]}, allow_nan=False))


def runtime_overhead_bytes(pte: bytes, *, threads: int, audio_s: float) -> tuple[int, Timing]:
    """The runtime's own memory: peak RSS of a process that ran the (tiny) program `pte`, minus the program
    and its planned activations. Returns (bytes, the timing it came from)."""
    timing = time_program(pte, threads=threads, audio_s=audio_s, runs=1)
    return timing.peak_rss_bytes - len(pte) - planned_activation_bytes(pte), timing


# ---- measuring systems on the host -----------------------------------------------------------------------------


def lowered_program(model, spec, work_dir: str | Path | None = None) -> bytes:
    """The .pte of `spec` cut from `model`, lowered once and cached in `work_dir` when given.

    The cache is keyed by the architecture, the ExecuTorch version and the source of the code that builds the
    program (models, quantization, export), not by the weights: timing and memory planning do not depend on
    weight values, so random-initialised weights time like trained ones."""
    import hashlib
    from importlib.metadata import version

    import allinone
    from allinone.files import atomic_write_bytes
    from allinone.export import export_subnet

    if work_dir is None:
        return export_subnet(model, spec).pte
    digest = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    package = Path(allinone.__file__).parent
    for source in sorted([package / "export.py", package / "quantize.py", *package.glob("nn/*.py"),
                          *package.glob("models/*.py")]):
        digest.update(source.read_bytes())
    path = Path(work_dir) / f"{digest.hexdigest()[:12]}-executorch{version('executorch')}" / f"{spec.id}.pte"
    if path.is_file():
        return path.read_bytes()
    pte = export_subnet(model, spec).pte
    atomic_write_bytes(path, pte)
    return pte


@dataclass(frozen=True)
class HostSystem:
    """A lowered system timed on this machine, interleaved with the others, and its own peak memory."""

    subnet: str
    weight_bits: int
    macs_per_second: float
    weight_bytes: int
    pte_bytes: int
    activation_bytes: int
    timing: Timing  # interleaved calls in the shared timing process
    peak_rss_bytes: int  # of a process that ran this program alone

    @property
    def ms(self) -> float:
        return self.timing.p50_ms

    def point(self) -> LatencyPoint:
        from allinone.spec import SubnetSpec

        return LatencyPoint(self.subnet, self.weight_bits, self.macs_per_second, self.timing.audio_s, self.ms,
                            SubnetSpec.from_id(self.subnet).depth)


def measure_host(model, specs: Sequence[Any], *, threads: int, audio_s: float, runs: int = 30,
                 work_dir: str | Path | None = None, log=None) -> list[HostSystem]:
    """Lower each spec of `model` (cached in `work_dir`), time them here interleaved in one process
    (`time_programs`), and run each once alone in its own process for its peak memory."""
    from allinone.size import subnet_size

    programs = []
    for spec in specs:
        if log:
            log(f"lowering {spec.id}" + (f" (cached in {work_dir})" if work_dir else ""))
        pte = lowered_program(model, spec, work_dir)
        programs.append((spec, subnet_size(model, spec), pte, planned_activation_bytes(pte)))
    if log:
        log(f"timing {len(programs)} programs interleaved, {runs} calls each")
    timings = time_programs([pte for _, _, pte, _ in programs], threads=threads, audio_s=audio_s, runs=runs)
    out = []
    for (spec, size, pte, act), timing in zip(programs, timings):
        alone = time_program(pte, threads=threads, audio_s=audio_s, runs=1)
        if log:
            log(f"{spec.id}: p50 {timing.p50_ms:.1f} ms (min {timing.min_ms:.1f}), peak RSS alone "
                f"{alone.peak_rss_bytes / MIB:.1f} MiB")
        out.append(HostSystem(spec.id, spec.weight_bits, float(size.macs_per_second), size.weight_bytes, len(pte),
                              act, timing, alone.peak_rss_bytes))
    return out


def tiny_program(work_dir: str | Path | None = None) -> bytes:
    """The smallest float system of an untrained conformer_tiny, lowered: the program whose process
    measures the runtime's own memory (it is small, so the runtime dominates)."""
    import torch

    from allinone.data.tokenizer import CharTokenizer
    from allinone.models.conformer import conformer_tiny

    torch.manual_seed(0)
    model = conformer_tiny(len(CharTokenizer())).eval()
    return lowered_program(model, model.search_space.smallest().with_bits(32), work_dir)


def measured_profile(profile: DeviceProfile, fit: LatencyFit, *, overhead_bytes: int | None, date: str,
                     citations: Sequence[str], uncertainty_pct: float | None = None,
                     notes: str | None = None) -> tuple[DeviceProfile, list[str]]:
    """`profile` with its latency model (and runtime overhead, when given) replaced by host measurements;
    source `measured`; `notes` replace the profile's. Returns the profile and where each figure came from."""
    model, sources = fitted_latency_model(fit, profile.latency_model, source="measured", date=date,
                                          citations=citations, uncertainty_pct=uncertainty_pct)
    memory = profile.memory
    if overhead_bytes is not None:
        memory = dataclasses.replace(memory, runtime_overhead_mib=math.ceil(overhead_bytes / MIB))
    out = dataclasses.replace(profile, latency_model=model, memory=memory,
                              notes=profile.notes if notes is None else notes)
    return profile_from_dict(out.to_dict(), "measured profile"), sources


# ---- the fit ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyPoint:
    """One measured call: a system of `macs_per_second` at `weight_bits` took `ms` on `audio_s` seconds."""

    subnet: str
    weight_bits: int
    macs_per_second: float
    audio_s: float
    ms: float
    blocks: int = 0  # encoder blocks (depth); only the per-block fit reads it

    @property
    def macs(self) -> float:
        # macs_per_second is quoted at 10 s; attention's share grows with length, a small effect at 0.5-30 s.
        return self.macs_per_second * self.audio_s


@dataclass(frozen=True)
class LatencyFit:
    """Fitted latency-model parameters and how well they explain the points they came from."""

    overhead_ms: float
    effective_gmacs: dict[int, float]  # weight bits -> GMAC/s the encoder reached
    overhead_fitted: bool  # False: the points could not separate it, the prior profile's value was kept
    points: tuple[LatencyPoint, ...]
    # ms per encoder block per second of audio, for work MACs do not count (element-wise ops, dispatch);
    # 0 unless fitted with per_block=True. Profiles have no key for it yet.
    block_ms_per_s: float = 0.0

    def predict_ms(self, macs: float, weight_bits: int, *, blocks: int = 0, audio_s: float = 0.0) -> float:
        return (self.overhead_ms + self.block_ms_per_s * blocks * audio_s
                + macs / (self.effective_gmacs[weight_bits] * 1e6))

    def predict(self, point: LatencyPoint) -> float:
        return self.predict_ms(point.macs, point.weight_bits, blocks=point.blocks, audio_s=point.audio_s)

    def relative_errors(self) -> list[float]:
        """(predicted - measured) / measured for every point."""
        return [(self.predict(p) - p.ms) / p.ms for p in self.points]

    @property
    def max_abs_error(self) -> float:
        return max(abs(e) for e in self.relative_errors())


def _columns(points: Sequence[LatencyPoint], bits: list[int], free_overhead: bool, per_block: bool) -> list[list[float]]:
    """Design matrix columns of y = [o] + [c * blocks * audio_s] + M * x_b, one MAC column per precision."""
    cols = [[1.0] * len(points)] if free_overhead else []
    if per_block:
        cols.append([float(p.blocks) * p.audio_s for p in points])
    return cols + [[p.macs if p.weight_bits == b else 0.0 for p in points] for b in bits]


def _solve(points: Sequence[LatencyPoint], bits: list[int], overhead_ms: float | None,
           per_block: bool) -> tuple[float, float, list[float]]:
    """Weighted least squares; `overhead_ms` given = overhead fixed. Returns (overhead, block term, [x_b])."""
    import numpy as np

    y = np.array([p.ms for p in points])
    a = np.array(_columns(points, bits, overhead_ms is None, per_block)).T / y[:, None]  # rows / y: relative
    x, *_ = np.linalg.lstsq(a, (y - (overhead_ms or 0.0)) / y, rcond=None)
    values = [float(v) for v in x]
    overhead = values.pop(0) if overhead_ms is None else overhead_ms
    block = values.pop(0) if per_block else 0.0
    return overhead, block, values


def _rank(points: Sequence[LatencyPoint], bits: list[int], per_block: bool) -> int:
    import numpy as np

    a = np.array(_columns(points, bits, True, per_block)).T
    return int(np.linalg.matrix_rank(a / np.abs(a).max(axis=0)))  # columns scaled: MACs are ~1e9, the rest ~1


def fit_latency_model(points: Iterable[LatencyPoint], *, prior_overhead_ms: float = 0.0,
                      per_block: bool = False) -> LatencyFit:
    """Fit overhead_ms and one effective throughput per precision present in `points` (and, with `per_block`,
    a cost per encoder block per second of audio).

    The overhead is fitted only when the points can separate it from the rest (two different MAC counts at
    some precision) and it comes out non-negative; otherwise `prior_overhead_ms` is kept, or 0 when the calls
    were faster than that overhead alone."""
    points = tuple(points)
    if not points:
        raise BadInputError("latency fit: no measurements; expected at least one timed call")
    bad = [p for p in points if p.ms <= 0 or p.macs <= 0]
    if bad:
        raise BadInputError(f"latency fit: {bad[0].subnet}: expected positive latency and MACs, got "
                            f"{bad[0].ms} ms and {bad[0].macs:.3g} MACs")
    bits = sorted({p.weight_bits for p in points}, reverse=True)
    n_unknowns = 1 + per_block + len(bits)
    fitted = False
    if _rank(points, bits, per_block) == n_unknowns:
        overhead, block, inverse = _solve(points, bits, None, per_block)
        fitted = overhead >= 0 and all(v > 0 for v in inverse)
    if not fitted:
        overhead, block, inverse = _solve(points, bits, prior_overhead_ms, per_block)
        if any(v <= 0 for v in inverse) and prior_overhead_ms > 0:
            # Calls faster than the prior overhead: that prior is wrong for this device, so assume none.
            overhead, block, inverse = _solve(points, bits, 0.0, per_block)
    if any(v <= 0 for v in inverse):
        worst = bits[min(range(len(bits)), key=lambda i: inverse[i])]
        raise BadInputError(f"latency fit: {worst}-bit measurements are faster than the overhead alone allows; "
                            f"expected latencies above overhead_ms {overhead:g}")
    return LatencyFit(overhead, {b: 1.0 / (x * 1e6) for b, x in zip(bits, inverse)}, fitted, points, block)


def fitted_latency_model(fit: LatencyFit, prior: LatencyModel, *, source: str, date: str,
                         citations: Sequence[str], uncertainty_pct: float | None = None) -> tuple[LatencyModel, list[str]]:
    """A profile latency model from `fit`; precisions the fit did not measure keep the prior's effective
    throughput scaled by the geometric-mean ratio fitted / prior of the measured ones. `uncertainty_pct`
    defaults to the fit's largest error (at least MIN_UNCERTAINTY_PCT).

    Returns the model and one note per precision saying where its figure came from."""
    if fit.block_ms_per_s:
        raise ValueError("a fit with a per-block term has no place in a device profile; fit without per_block")
    ratios = []
    for bits, gmacs in fit.effective_gmacs.items():
        try:
            ratios.append(gmacs / prior.effective_gmacs(bits))
        except BadInputError:  # the prior had no figure for these bits
            pass
    scale = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
    throughput, notes = {}, []
    for bits, precision in PRECISION_OF_BITS.items():
        if bits in fit.effective_gmacs:
            throughput[precision] = round(fit.effective_gmacs[bits], 2)
            n = sum(p.weight_bits == bits for p in fit.points)
            notes.append(f"{precision}: fitted to {n} timed call{'s' if n != 1 else ''}")
        elif getattr(prior.throughput_gmacs, precision) is not None and scale is not None:
            throughput[precision] = round(prior.effective_gmacs(bits) * scale, 2)
            notes.append(f"{precision}: not measured; prior figure scaled by {scale:.2f} like the measured ones")
        elif getattr(prior.throughput_gmacs, precision) is not None:
            throughput[precision] = getattr(prior.throughput_gmacs, precision)
    uncertainty = uncertainty_pct if uncertainty_pct is not None else \
        max(MIN_UNCERTAINTY_PCT, math.ceil(100 * fit.max_abs_error))
    model = LatencyModel(overhead_ms=round(fit.overhead_ms, 2), throughput_gmacs=Throughput(**throughput),
                         workload_factor=1.0, source=source, citations=tuple(citations),
                         uncertainty_pct=uncertainty, date=date)
    if not fit.overhead_fitted:
        notes.append(f"overhead_ms: kept at {fit.overhead_ms:g} (the measurements cannot separate it)")
    return model, notes


# ---- latency reports (report.json) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyReport:
    """The fields of a runtime latency report (docs/formats.md, report.json) that calibration uses."""

    path: str
    date: str
    machine: str
    system: str
    cpu: str
    runner: str
    subnet: str
    weight_bits: int
    macs_per_second: float
    pte_bytes: int
    profile: str | None  # the profile the bundle was built for (None: `allinone export`, no profile)
    threads: int
    latency: tuple[tuple[float, float], ...]  # (audio_s, p50_ms) per measured length
    peak_rss_bytes: int


def read_report(path: str | Path) -> LatencyReport:
    """A runtime latency report, read and validated by the runtime's one report reader
    (`allinone_runtime.schema.read_report`), as the fields calibration uses; BadInputError with one line
    naming the file and key."""
    from allinone_runtime.errors import RuntimeInputError
    from allinone_runtime.schema import read_report as read_report_json

    try:
        data = read_report_json(path)
    except RuntimeInputError as err:
        raise BadInputError(str(err)) from None
    where, device, bundle = str(path), data["device"], data["bundle"]
    if device.get("emulator"):  # an emulator's speed is the host's, not the device's
        raise BadInputError(f"{where}: device.emulator: measured under emulation ({device['emulator']}); expected "
                            f"a report measured on the device itself (emulated timings are no latency source)")
    if bundle["macs_per_second"] is None or bundle["macs_per_second"] <= 0:  # the format allows null; a fit cannot
        raise BadInputError(f"{where}: bundle.macs_per_second: expected a positive number (calibration needs the "
                            f"system's MACs), got {bundle['macs_per_second']!r}")
    return LatencyReport(
        path=where, date=data["date"], machine=device["machine"], system=device["system"], cpu=device["cpu"],
        runner=data["runner"], subnet=bundle["subnet"], weight_bits=bundle["weight_bits"],
        macs_per_second=float(bundle["macs_per_second"]), pte_bytes=bundle["pte_bytes"], profile=bundle["profile"],
        threads=data["threads"], latency=tuple((float(r["audio_s"]), float(r["p50_ms"])) for r in data["latency"]),
        peak_rss_bytes=data["peak_rss_bytes"])


def report_points(report: LatencyReport) -> list[LatencyPoint]:
    return [LatencyPoint(report.subnet, report.weight_bits, report.macs_per_second, audio_s, ms)
            for audio_s, ms in report.latency]


# uname -m of each target; iOS reports the device model ("iPhone15,4") or arm64.
_MACHINES = {"linux-x86_64": ("x86_64", "amd64"), "linux-arm64": ("aarch64", "arm64"),
             "android-arm64": ("aarch64", "arm64"), "ios-arm64": ("arm64", "iphone", "ipad")}
_SYSTEMS = {"linux-x86_64": ("linux",), "linux-arm64": ("linux",), "android-arm64": ("linux", "android"),
            "ios-arm64": ("darwin", "ios", "iphone")}


def target_mismatch(machine: str, system: str, profile: DeviceProfile) -> str | None:
    """Why a device (`uname -m`, OS name) cannot be the profile's, or None when its CPU architecture and OS
    match the profile's target."""
    machines, systems = _MACHINES[profile.target], _SYSTEMS[profile.target]
    if not machine.lower().startswith(machines):
        return (f"device.machine {machine!r} does not match profile {profile.name} "
                f"(target {profile.target} runs on {' or '.join(machines[:2])})")
    if not system.lower().startswith(systems):
        return f"device.system {system!r} does not match profile {profile.name} (target {profile.target})"
    return None


def check_report_device(report: LatencyReport, profile: DeviceProfile) -> None:
    """BadInputError unless the report plausibly comes from the profile's device: its CPU architecture and OS
    match the profile's target and it ran with the profile's thread count (the throughputs are per count)."""
    mismatch = target_mismatch(report.machine, report.system, profile)
    if mismatch is not None:
        raise BadInputError(f"{report.path}: {mismatch}; pass --force if the report really comes from this device")
    if report.threads != profile.threads:
        raise BadInputError(f"{report.path}: threads {report.threads} differs from profile {profile.name}'s threads "
                            f"{profile.threads} (its throughputs are for that count); rerun with "
                            f"--threads {profile.threads} or pass --force")


@dataclass(frozen=True)
class Calibration:
    profile: DeviceProfile
    fit: LatencyFit
    notes: tuple[str, ...]


def calibrate_profile(profile: DeviceProfile, reports: Sequence[LatencyReport], *, force: bool = False,
                      today: datetime.date | None = None) -> Calibration:
    """Refit `profile`'s latency model from reports measured on its device; source becomes `calibrated`.

    Every report's device must match the profile (`check_report_device`) unless `force`."""
    if not reports:
        raise BadInputError("calibrate: no reports; expected at least one report.json")
    if not force:
        for report in reports:
            check_report_device(report, profile)
    points = [p for report in reports for p in report_points(report)]
    fit = fit_latency_model(points, prior_overhead_ms=profile.latency_model.overhead_ms)
    date = (today or datetime.date.today()).isoformat()
    citations = [f"calibrated by allinone calibrate on {date} from {r.path}: {r.subnet} ({r.runner} runner, "
                 f"{r.threads} threads) on {r.cpu or r.machine}, measured {r.date[:10]}; p50 at "
                 + ", ".join(f"{a:g} s = {ms:.1f} ms" for a, ms in r.latency) for r in reports]
    model, notes = fitted_latency_model(fit, profile.latency_model, source="calibrated", date=date,
                                        citations=citations)
    old = profile.latency_model
    notes = [f"refitted from {len(points)} measured call(s) in {len(reports)} report(s); largest fit error "
             f"{fit.max_abs_error:.1%}; before: overhead_ms {old.overhead_ms:g}, effective GMAC/s "
             + ", ".join(f"{PRECISION_OF_BITS[b]} {old.effective_gmacs(b):.1f}" for b in profile.weight_bits
                         if getattr(old.throughput_gmacs, PRECISION_OF_BITS[b]) is not None)] + notes
    if force:
        notes.append("device checks skipped (--force)")
    # A recalibration replaces the previous calibration's line rather than piling up stale ones.
    kept = [line for line in profile.notes.splitlines() if not line.startswith("Calibration: ")]
    calibrated = dataclasses.replace(profile, latency_model=model,
                                     notes="\n".join(kept + ["Calibration: " + "; ".join(notes)]))
    # Round-trip through the validator: a calibrated profile must load like any other.
    return Calibration(profile_from_dict(calibrated.to_dict(), "calibrated profile"), fit, tuple(notes))


def save_profile(profile: DeviceProfile, path: str | Path, *, header: str = "") -> Path:
    """Write `profile` as YAML atomically (temp file in the same folder, then renamed)."""
    import yaml

    from allinone.files import atomic_write_text

    path = Path(path)
    lines = [f"# {line}" for line in header.splitlines()]
    lines.append("# Units are in key names: _mib = MiB (2**20 bytes), _ms = milliseconds, _s = seconds, "
                 "_gmacs = GMAC/s.")
    body = yaml.safe_dump(profile.to_dict(), sort_keys=False, allow_unicode=True, width=110)
    atomic_write_text(path, "\n".join(lines) + "\n" + body)
    return path
