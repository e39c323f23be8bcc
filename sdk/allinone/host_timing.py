"""Timing and memory of programs on the host: programs run in a fresh Python process, so the thread-pool
size set for them cannot leak into the caller; several programs are timed interleaved in one process
(comparable on a shared machine) and each program's peak resident memory is measured in a process of its own."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from allinone.errors import BadInputError
from allinone.latency_fit import LatencyFit, LatencyPoint, fitted_latency_model
from allinone.memory import planned_activation_bytes
from allinone.profiles import MIB, DeviceProfile, profile_from_dict

__all__ = ["Timing", "time_program", "time_programs", "runtime_overhead_bytes", "lowered_program", "lowered_programs",
           "HostSystem", "measure_host", "tiny_program", "measured_profile"]

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
        code = "import sys; from allinone.host_timing import _timing_child; _timing_child(sys.argv[1])"
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
    """The .pte of `spec` cut from `model`, lowered once and kept in the lowering cache `work_dir` when given.

    The entry is keyed by the architecture, not the weights (`allinone.lowering.lower_cached` with `weights`
    False; the export code and library versions count as for every entry): timing and memory planning do not
    depend on weight values, so random-initialised weights time like trained ones."""
    from allinone.lowering import lower_cached
    from allinone.lowering_cache import LoweringCache

    return lower_cached(model, spec, LoweringCache(work_dir), weights=False).program.pte


def lowered_programs(model, specs: Sequence[Any], work_dir: str | Path, *, checkpoint: str | Path | None = None,
                     jobs: int | None = None, on_done: Callable[[Any], None] | None = None) -> dict[str, bytes]:
    """`lowered_program` for several systems at once: with `checkpoint` (the directory `model` was loaded
    from), the ones not cached are lowered in parallel processes (`allinone.lowering.lower_systems`).
    Returns the .pte bytes by subnet id; the first lowering that failed is raised."""
    from allinone.lowering import lower_systems
    from allinone.lowering_cache import LoweringCache

    lowered, failed = lower_systems(model, specs, LoweringCache(work_dir), checkpoint=checkpoint, jobs=jobs,
                                    on_done=on_done, weights=False)
    for spec in specs:
        if spec in failed:
            raise failed[spec]
    return {spec.id: lowered[spec].program.pte for spec in specs}


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
