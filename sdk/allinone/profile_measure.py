"""`allinone profiles measure`: a device profile for the machine in front of you, measured in one command.

A small design of systems from the checkpoint's search space (per precision: the largest, the smallest, a deep
narrow and a shallow wide one, so depth, width and all three precisions vary) is lowered (cached), timed
here interleaved, and fitted with the latency model (overhead, throughput per precision and the per-block
term). The profile written records the machine (`latency_model.device`, `isa`), the fit's errors (in sample
and leave-one-out) and the runtime's measured memory overhead.

Timings are cached under the user's cache directory (`timing_cache_path`), one file per machine, thread
count and audio length, keyed by each program's sha256, and saved after every round of calls: an interrupted
run, rerun, times only what it had not; a rerun of a finished one times nothing. The profile itself is
written atomically, at the end.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from allinone.errors import BadInputError
from allinone.files import atomic_write_text
from allinone.lowering_cache import cache_root  # re-exported: the cache root lives with the lowering cache

__all__ = ["cache_root", "design", "timing_cache_path", "MeasuredProfile", "measure_profile", "default_base",
           "host_profile_path", "cached_host_profile", "ROUND_RUNS"]

log = logging.getLogger(__name__)

ROUND_RUNS = 5  # timed calls per program per round; the cache is saved after each round
TIMING_CACHE_VERSION = 1


def design(space) -> list:
    """Per precision (largest first): the largest, the smallest, a deep narrow and a shallow wide system.
    Deep-narrow vs shallow-wide is what separates the per-block cost from MACs; duplicates (a search space
    with one depth or one width) are dropped."""
    from allinone.spec import SubnetSpec

    d, f, h = space.depths, space.ffn_dims, space.heads
    shapes = [(d[-1], f[-1], h[-1]), (d[0], f[0], h[0]), (d[-1], f[0], h[0]), (d[0], f[-1], h[-1])]
    out = []
    for bits in sorted(space.weight_bits, reverse=True):
        for shape in shapes:
            spec = SubnetSpec(*shape, bits)
            if spec not in out:
                out.append(spec)
    return out


def default_base(device: dict):
    """The shipped profile whose target this machine is (a linux-* one first): where budgets come from."""
    from allinone.calibration import target_mismatch
    from allinone.profiles import list_profiles, load_profile

    profiles = [load_profile(name) for name in list_profiles()]
    matches = [p for p in profiles if target_mismatch(device["machine"], device["system"], p) is None]
    matches.sort(key=lambda p: (not p.target.startswith("linux"), p.name != "host-x86_64"))
    if not matches:
        raise BadInputError(f"no shipped profile has this machine's target ({device['machine']}, {device['system']}); "
                            f"pass --base PROFILE (a .yaml whose budgets the measured profile keeps)")
    return matches[0]


# ---- the timing cache ------------------------------------------------------------------------------------------


def timing_cache_path(device: dict, threads: int, audio_s: float) -> Path:
    """One cache file per machine (CPU, its features, OS), thread count, audio length and ExecuTorch version."""
    from importlib.metadata import version

    key = json.dumps([device["hostname"], device["cpu"], device["machine"], device.get("isa"), device["system"],
                      threads, audio_s, version("executorch")])
    return cache_root() / "timings" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        if data.get("format_version") == TIMING_CACHE_VERSION and isinstance(data.get("programs"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"format_version": TIMING_CACHE_VERSION, "kind": "allinone-timing-cache", "programs": {}}


def _write_cache(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False))


def _time_with_cache(programs: Sequence[tuple[str, bytes]], *, threads: int, audio_s: float, runs: int,
                     cache: Path) -> dict[str, list[float]]:
    """{subnet: timed calls} with `runs` calls each, taking what the cache holds and timing the rest in rounds
    of ROUND_RUNS interleaved calls (one fresh process per round), saving the cache after each round."""
    from allinone.host_timing import time_programs

    data = _read_cache(cache)
    shas = {subnet: hashlib.sha256(pte).hexdigest() for subnet, pte in programs}
    for subnet, sha in shas.items():
        data["programs"].setdefault(sha, {"subnet": subnet, "times_ms": []})
    cached = sum(min(runs, len(data["programs"][sha]["times_ms"])) for sha in shas.values())
    if cached:
        log.info("timing cache %s: %d of %d calls already timed", cache, cached, runs * len(programs))
    while True:
        todo = [(subnet, pte) for subnet, pte in programs if len(data["programs"][shas[subnet]]["times_ms"]) < runs]
        if not todo:
            break
        n = min(ROUND_RUNS, max(runs - len(data["programs"][shas[s]]["times_ms"]) for s, _ in todo))
        log.info("timing %d programs interleaved, %d calls each (%d threads, %g s of audio)", len(todo), n, threads,
                 audio_s)
        timings = time_programs([pte for _, pte in todo], threads=threads, audio_s=audio_s, runs=n)
        for (subnet, _), timing in zip(todo, timings):
            data["programs"][shas[subnet]]["times_ms"].extend(timing.times_ms)
        _write_cache(cache, data)
    return {subnet: data["programs"][sha]["times_ms"][:runs] for subnet, sha in shas.items()}


def _runtime_overhead_bytes(threads: int, audio_s: float, cache: Path) -> int:
    """The runtime's own memory (`host_timing.runtime_overhead_bytes` on the tiny program), cached like timings."""
    from allinone.host_timing import runtime_overhead_bytes, tiny_program

    pte = tiny_program(cache_root() / "programs")
    key = "runtime_overhead:" + hashlib.sha256(pte).hexdigest()
    data = _read_cache(cache)
    if key not in data:
        data[key], _ = runtime_overhead_bytes(pte, threads=threads, audio_s=audio_s)
        _write_cache(cache, data)
    return int(data[key])


# ---- the command ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredProfile:
    path: Path
    profile: object  # DeviceProfile
    systems: tuple[tuple[str, float], ...]  # (subnet, median ms) per timed system
    loo_errors: tuple[float, ...]  # leave-one-out (predicted - measured) / measured, same order
    notes: tuple[str, ...]  # where each figure came from


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _best_fit(points: Sequence, prior_overhead_ms: float) -> tuple[Any, list[float], str]:
    """The latency model that best predicts systems it never timed: of the forms the points can separate
    (with a per-block term, then also a size term per precision), the one with the smallest leave-one-out
    max error. Returns the fit, its leave-one-out errors and one line saying what was chosen and why."""
    from allinone.latency_fit import fit_latency_model, leave_one_out_errors

    tried = []
    for per_block, size_term in ((False, False), (True, False), (True, True)):
        try:
            fit = fit_latency_model(points, prior_overhead_ms=prior_overhead_ms, per_block=per_block,
                                    size_term=size_term)
            loo = leave_one_out_errors(points, per_block=fit.block_fitted, prior_overhead_ms=prior_overhead_ms,
                                       size_term=size_term)
        except BadInputError:  # the design cannot separate this term (too few or too alike systems)
            continue
        name = "overhead + MACs" + (" + per-block term" if fit.block_fitted else "") + \
            (" + size term" if size_term else "")
        tried.append((max(map(abs, loo)), len(tried), fit, loo, name))
    if not tried:
        raise BadInputError(f"latency fit: {len(points)} timed systems cannot be fitted; expected two or more "
                            f"systems of different sizes per precision")
    best = min(tried)
    others = ", ".join(f"{name} {err:.1%}" for err, _, _, _, name in tried if name != best[4])
    return best[2], best[3], (f"latency model: {best[4]} (leave-one-out max {best[0]:.1%}"
                              + (f"; {others}" if others else "") + ")")


def measure_profile(checkpoint: str | Path, out: str | Path, *, threads: int | None = None, runs: int = 10,
                    base: str | Path | None = None, name: str | None = None, audio_s: float | None = None,
                    specs: Sequence | None = None, today: datetime.date | None = None,
                    progress: Callable[[str], None] | None = None, jobs: int | None = None) -> MeasuredProfile:
    """Measure a profile for this machine from `checkpoint`'s systems and write it to `out` (YAML, atomically).

    `threads` defaults to every CPU this process may use; `base` (a profile name or path, default
    `default_base`) gives the budgets, backend and reference length; `name` defaults to `out`'s stem;
    `specs` replaces the design (tests); `jobs` lowering processes (default: one per core, as `build`)."""
    from allinone.calibration import save_profile, target_mismatch
    from allinone.checkpoint import load_checkpoint
    from allinone.host_timing import lowered_programs
    from allinone.latency_fit import MIN_UNCERTAINTY_PCT, LatencyPoint, fitted_latency_model
    from allinone.lowering import check_jobs
    from allinone.profiles import (FORMAT_VERSION, PRECISION_OF_BITS, FitQuality, MeasuredDevice, load_profile,
                                   profile_from_dict)
    from allinone.size import subnet_size
    from allinone_runtime.device import device_info

    say = progress or log.info
    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise BadInputError(f"--out {out}: expected a .yaml file to write the profile to")
    if runs < 3:
        raise BadInputError(f"--runs: expected at least 3 timed calls per system (a median), got {runs}")
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = available if threads is None else threads
    if not 1 <= threads <= 256:
        raise BadInputError(f"--threads: expected 1-256, got {threads}")
    check_jobs(jobs)
    device = device_info()
    if base is None:
        base_profile = default_base(device)
    else:  # a DeviceProfile (the demo's), a shipped name or a path
        base_profile = base if hasattr(base, "latency_model") else load_profile(base)
        base = getattr(base, "name", base)
    mismatch = target_mismatch(device["machine"], device["system"], base_profile)
    if mismatch is not None:
        raise BadInputError(f"--base {base}: {mismatch}; expected a profile for this machine's target")
    name = name or out.stem
    profile_from_dict({**base_profile.to_dict(), "name": name}, f"--name {name}")  # a bad name fails before lowering
    audio_s = audio_s or base_profile.latency.reference_audio_s

    model = load_checkpoint(checkpoint).model
    specs = list(specs) if specs is not None else design(model.search_space)
    say(f"lowering {len(specs)} systems to time ({', '.join(s.id for s in specs)}; cached in "
        f"{cache_root() / 'programs'})")
    done = iter(range(1, len(specs) + 1))
    ptes = lowered_programs(model, specs, cache_root() / "programs", checkpoint=checkpoint, jobs=jobs,
                            on_done=lambda spec: say(f"lowered {spec.id} ({next(done)}/{len(specs)})"))
    programs = [(spec.id, ptes[spec.id]) for spec in specs]
    points_meta = [(spec, subnet_size(model, spec).macs_per_second) for spec in specs]
    cache = timing_cache_path(device, threads, audio_s)
    times = _time_with_cache(programs, threads=threads, audio_s=audio_s, runs=runs, cache=cache)
    points = [LatencyPoint(spec.id, spec.weight_bits, float(macs), audio_s, _median(times[spec.id]), spec.depth)
              for spec, macs in points_meta]
    overhead_bytes = _runtime_overhead_bytes(threads, audio_s, cache)

    fit, loo, chosen = _best_fit(points, base_profile.latency_model.overhead_ms)
    say(chosen)
    loo_max = max(abs(e) for e in loo)
    date = (today or datetime.date.today()).isoformat()
    isa = tuple(device["isa"])
    citation = (f"allinone profiles measure on {date}: {len(points)} lowered systems of {checkpoint} "
                f"({', '.join(p.subnet for p in points)}), ExecuTorch XNNPACK, {threads} threads, {audio_s:g} s of "
                f"audio, median of {runs} interleaved calls each, on {device['cpu']} "
                f"({', '.join(isa) or 'none of the recorded CPU features'}); weighted least squares on relative "
                f"error; fit max error {fit.max_abs_error:.1%}, leave-one-out max {loo_max:.1%}, mean "
                f"{sum(map(abs, loo)) / len(loo):.1%}")
    quality = FitQuality(systems=len(points), max_error_pct=round(100 * fit.max_abs_error, 1),
                         loo_max_error_pct=round(100 * loo_max, 1),
                         loo_mean_error_pct=round(100 * sum(map(abs, loo)) / len(loo), 1))
    measured_device = MeasuredDevice(cpu=device["cpu"], machine=device["machine"], system=device["system"],
                                     cores=device["cores"])
    latency_model, notes = fitted_latency_model(
        fit, base_profile.latency_model, source="measured", date=date, citations=[citation],
        uncertainty_pct=max(MIN_UNCERTAINTY_PCT, math.ceil(100 * loo_max)), device=measured_device,
        quality=quality)
    measured_bits = tuple(b for b in base_profile.weight_bits if b in fit.effective_gmacs)
    order = sorted(fit.effective_gmacs, key=fit.effective_gmacs.get, reverse=True)
    ranking = " > ".join(f"{PRECISION_OF_BITS[b]} {fit.effective_gmacs[b]:.1f}" for b in order)
    profile = dataclasses.replace(
        base_profile, format_version=FORMAT_VERSION, name=name,
        description=f"{device['cpu']} ({device['cores']} cores, {device['machine']}), measured here",
        threads=threads, weight_bits=measured_bits or base_profile.weight_bits, isa=isa,
        memory=dataclasses.replace(base_profile.memory, runtime_overhead_mib=math.ceil(overhead_bytes / (1 << 20))),
        latency_model=latency_model,
        notes=(f"Measured by `allinone profiles measure` on {date}; budgets (memory, latency, weight bits) copied "
               f"from {base_profile.name}. {chosen[0].upper() + chosen[1:]}. Effective GMAC/s on the speech encoder: "
               f"{ranking}{' (before the size term)' if fit.size_term_ms else ''}. Uncertainty is the "
               f"leave-one-out error (a system never timed). Runtime overhead {overhead_bytes / (1 << 20):.0f} MiB "
               f"(Python runtime). Timed on a machine others may share: rerun when it is idle."))
    profile = profile_from_dict(profile.to_dict(), f"measured profile for {out}")
    save_profile(profile, out, header=f"Measured by `allinone profiles measure --checkpoint {checkpoint}` on {date}.")
    return MeasuredProfile(out, profile, tuple((p.subnet, p.ms) for p in points), tuple(loo), tuple(notes))


def host_profile_path(checkpoint: str | Path, base, threads: int) -> Path:
    """Where the demo keeps the profile measured for this machine from `checkpoint`'s architecture, `base`'s
    budgets and `threads`: one file per (architecture, machine, thread count, ExecuTorch), measured once."""
    from importlib.metadata import version

    from allinone_runtime.device import device_info

    device = device_info()
    config = json.loads((Path(checkpoint) / "config.json").read_text())
    key = json.dumps([config.get("architecture"), base.name, device["hostname"], device["cpu"], device["isa"],
                      device["system"], threads, version("executorch")], sort_keys=True)
    return cache_root() / "profiles" / f"{base.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.yaml"


def cached_host_profile(checkpoint: str | Path, base, threads: int, jobs: int | None = None):
    """(profile, path, measured now?): the profile measured for this machine (`host_profile_path`), measured
    now (keeping `base`'s name and budgets) when the cache has none or an unreadable one."""
    from allinone.profiles import validate_profile_file

    path = host_profile_path(checkpoint, base, threads)
    if path.is_file():
        try:
            return validate_profile_file(path), path, False
        except BadInputError as err:  # written by an older allinone: measure again
            log.info("%s: %s; measuring again", path, err)
    result = measure_profile(checkpoint, path, threads=threads, base=base, name=base.name, jobs=jobs)
    return result.profile, path, True
