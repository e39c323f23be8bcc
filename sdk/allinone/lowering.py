"""Nested systems -> lowered programs, through the lowering cache, several at once in worker processes.

Each system is extracted and quantized here (the eager program verification compares against, and the
weights its cache key hashes). A system whose key is in the cache is read back; the others are lowered, in
this process when one worker is all there is to use, else in worker processes. Workers are started with
"spawn" (torch's thread pools do not survive a fork) and get the checkpoint's path and a spec id, not the
model: each loads the checkpoint itself, checks it still has the key the build computed, lowers, and sends
back the program's bytes, which this process stores in the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from allinone.errors import AllinoneError, BadInputError
from allinone.export import ExportedProgram, WaveformToLogProbs, example_input, input_lengths, lower_to_pte
from allinone.lowering_cache import LoweringCache, program_key
from allinone.notices import quiet_library_notices
from allinone.quantize import quantize_subnet_
from allinone.spec import SubnetSpec

__all__ = ["LoweredSystem", "lower_cached", "lower_systems", "check_jobs", "worker_count"]

log = logging.getLogger(__name__)

EXAMPLE_SECONDS = 2.0  # length of the example input torch.export traces with (a size hint; the length is dynamic)
EXPORT_OPTIONS = {"example_seconds": EXAMPLE_SECONDS, "partitioner": "xnnpack"}  # + the model's input lengths
# Memory of one lowering process, estimated high on purpose: a tiny system's lowering peaks at ~0.4 GiB of
# RSS (Python, torch, ExecuTorch), and export, edge and serialization each hold a copy of the weights.
WORKER_BASE_BYTES = 1 << 30
WORKER_BYTES_PER_WEIGHT_BYTE = 20  # per float byte of the system lowered
MEMORY_SHARE = 0.8  # of the memory available now, what lowering workers may take together


@dataclass
class LoweredSystem:
    """A system's program and how this build got it."""

    program: ExportedProgram
    cache: str  # "hit" (read back), "miss" (lowered, stored) or "off" (lowered, nothing stored)
    seconds: float  # wall seconds this build spent on it: reading it back, or lowering it (worker start included)
    path: Path | None = None  # its cache entry

    def to_dict(self) -> dict[str, Any]:
        return {"cache": self.cache, "seconds": round(self.seconds, 2)}


@dataclass
class _Prepared:
    """A system extracted and quantized as `allinone.export.export_subnet` does, with its cache key."""

    spec: SubnetSpec
    key: str
    program: nn.Module  # WaveformToLogProbs of the quantized subnet
    float_layers: list[str]
    float_bytes: int  # the extracted weights before quantization (sizes a lowering's memory)
    seconds: float  # extract + quantize
    weights: bool  # the key hashes the weights (else the architecture alone: a timing program)


def _inputs_digest(model: nn.Module, subnet: nn.Module | None) -> str:
    """sha256 of the architecture and, given the extracted `subnet`, its tensors' bytes in key order."""
    digest = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted((subnet.state_dict() if subnet is not None else {}).items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())  # uint8 view: bfloat16 has no numpy dtype
    return digest.hexdigest()


def _prepare(model: nn.Module, spec: SubnetSpec, *, weights: bool = True) -> _Prepared:
    """Extract and quantize `spec`; the key hashes the extracted float weights (or, with `weights` False, the
    architecture alone: a timing program, whose speed does not depend on weight values)."""
    start = time.perf_counter()
    subnet = model.extract_subnet(spec)
    float_bytes = sum(t.numel() * t.element_size() for t in subnet.state_dict().values())
    key = program_key(spec, _inputs_digest(model, subnet if weights else None),
                      {**EXPORT_OPTIONS, **input_lengths(model).to_dict()})
    float_layers = quantize_subnet_(subnet, spec.quant_scheme)
    return _Prepared(spec, key, WaveformToLogProbs(subnet).eval(), float_layers, float_bytes,
                     time.perf_counter() - start, weights)


def _lower(model: nn.Module, prepared: _Prepared,
           on_step: Callable[[str], None] | None = None) -> tuple[bytes, dict[str, Any]]:
    """The .pte of a prepared system and what lowering reported (as entry.json keeps it)."""
    example, lengths = example_input(model, EXAMPLE_SECONDS)
    with torch.no_grad():
        pte, delegated, portable, partitions, seconds = lower_to_pte(prepared.program, example, on_step,
                                                                     lengths=lengths)
    return pte, {"seconds": {"extract_quantize": prepared.seconds, **seconds}, "delegated_ops": dict(delegated),
                 "portable_ops": dict(portable), "partitions": partitions}


def _exported(prepared: _Prepared, pte: bytes, report: dict[str, Any]) -> ExportedProgram:
    return ExportedProgram(prepared.spec, pte, prepared.program, prepared.float_layers,
                           Counter(report["delegated_ops"]), Counter(report["portable_ops"]),
                           int(report["partitions"]), dict(report["seconds"]))


def _from_cache(cache: LoweringCache, prepared: _Prepared, start: float) -> LoweredSystem | None:
    found = cache.load(prepared.key, prepared.spec.id)
    if found is None:
        return None
    pte, meta = found
    path = cache.path(prepared.key)
    log.info("lowering cache hit %s (%s)", prepared.spec.id, path)
    return LoweredSystem(_exported(prepared, pte, meta["lowering"]), "hit", time.perf_counter() - start, path)


def _stored(cache: LoweringCache, prepared: _Prepared, pte: bytes, report: dict[str, Any],
            start: float) -> LoweredSystem:
    path = cache.store(prepared.key, pte, {"subnet": prepared.spec.id, "scheme": prepared.spec.quant_scheme.name,
                                           "inputs": "weights" if prepared.weights else "architecture",
                                           "lowering": report})
    seconds = time.perf_counter() - start
    log.info("lowered %s in %.1f s (%d bytes)%s", prepared.spec.id, seconds, len(pte),
             f"; cached in {path}" if path is not None else "")
    return LoweredSystem(_exported(prepared, pte, report), "miss" if path is not None else "off", seconds, path)


def lower_cached(model: nn.Module, spec: SubnetSpec, cache: LoweringCache, *, weights: bool = True,
                 on_step: Callable[[str], None] | None = None) -> LoweredSystem:
    """`spec` of `model` lowered in this process, or read back from `cache`; a lowering is stored there.
    `weights` False keys the program by architecture alone (programs that are only timed)."""
    start = time.perf_counter()
    prepared = _prepare(model, spec, weights=weights)
    found = _from_cache(cache, prepared, start)
    if found is not None:
        return found
    log.info("lowering %s ...", spec.id)
    pte, report = _lower(model, prepared, on_step)
    return _stored(cache, prepared, pte, report, start)


# ---- several systems at once -----------------------------------------------------------------------------------


def check_jobs(jobs: int | None) -> None:
    """Refuse a --jobs that is not a positive number of processes (before any work starts)."""
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise BadInputError(f"--jobs {jobs}: expected a number of lowering processes >= 1")


def _available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(jobs: int | None, systems: int, worker_bytes: int, *, available_bytes: int | None = None) -> int:
    """Lowering processes for `systems` lowerings of up to `worker_bytes` each: `jobs`, or by default as many as
    there are cores; never more than systems, nor than MEMORY_SHARE of the available memory holds (a `jobs`
    over that is cut, with a warning)."""
    check_jobs(jobs)
    available = _available_memory_bytes() if available_bytes is None else available_bytes
    by_memory = max(1, int(available * MEMORY_SHARE) // max(1, worker_bytes))
    wanted = _cores() if jobs is None else jobs
    if jobs is not None and jobs > by_memory and systems > by_memory:
        log.warning("--jobs %d: memory allows %d lowering processes (%.1f GiB available, about %.1f GiB each); "
                    "using %d", jobs, by_memory, available / 2**30, worker_bytes / 2**30, by_memory)
    return max(1, min(wanted, systems, by_memory))


def _worker_lower(checkpoint: str, spec_id: str, key: str, threads: int,
                  weights: bool = True) -> tuple[bytes, dict[str, Any]]:
    """Body of a lowering process: load the checkpoint, prepare `spec_id`, check its key, lower it."""
    from allinone.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint).model
    prepared = _prepare(model, SubnetSpec.from_id(spec_id), weights=weights)
    if prepared.key != key:  # the cache entry must hold what the build's key promises
        raise BadInputError(f"{checkpoint}: changed while building (the weights of {spec_id} differ); "
                            f"expected the checkpoint to stay as it was")
    return _lower(model, prepared)


def lower_systems(model: nn.Module, specs: Sequence[SubnetSpec], cache: LoweringCache, *,
                  checkpoint: str | Path | None = None, jobs: int | None = None,
                  on_step: Callable[[SubnetSpec, str], None] | None = None,
                  on_done: Callable[[SubnetSpec], None] | None = None, weights: bool = True,
                  ) -> tuple[dict[SubnetSpec, LoweredSystem], dict[SubnetSpec, AllinoneError]]:
    """Each of `specs` read back from `cache` or lowered: with more than one to lower and `checkpoint` (the
    directory `model` was loaded from), in `worker_count` processes. Logs one line when each lowering starts
    and one when it ends (with seconds); `on_step` hears the steps of lowerings run here, `on_done` each system.
    `weights` False keys the programs by architecture alone (timing programs, as `lower_cached`).
    Returns (programs, errors a user can cause), by spec."""
    check_jobs(jobs)
    lowered: dict[SubnetSpec, LoweredSystem] = {}
    failed: dict[SubnetSpec, AllinoneError] = {}
    todo: list[tuple[_Prepared, float]] = []
    for spec in specs:
        start = time.perf_counter()
        prepared = _prepare(model, spec, weights=weights)
        found = _from_cache(cache, prepared, start)
        if found is None:
            todo.append((prepared, start))
            continue
        lowered[spec] = found
        if on_done:
            on_done(spec)
    worker_bytes = WORKER_BASE_BYTES + WORKER_BYTES_PER_WEIGHT_BYTE * max((p.float_bytes for p, _ in todo), default=0)
    workers = worker_count(jobs, len(todo), worker_bytes) if checkpoint is not None else 1
    if workers <= 1:
        for prepared, _ in todo:
            spec, start = prepared.spec, time.perf_counter()
            log.info("lowering %s ...", spec.id)
            try:
                pte, report = _lower(model, prepared, (lambda step, spec=spec: on_step(spec, step)) if on_step else None)
            except AllinoneError as err:
                failed[spec] = err
            else:
                lowered[spec] = _stored(cache, prepared, pte, report, start)
            if on_done:
                on_done(spec)
        return lowered, failed
    _lower_in_workers(todo, cache, str(checkpoint), workers, lowered, failed, on_done)
    return lowered, failed


def _lower_in_workers(todo: list[tuple[_Prepared, float]], cache: LoweringCache, checkpoint: str, workers: int,
                      lowered: dict, failed: dict, on_done: Callable[[SubnetSpec], None] | None) -> None:
    """Lower `todo` in `workers` spawned processes, starting one when another ends, so each start line is
    logged when its lowering really begins."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    log.info("lowering %d systems in %d processes", len(todo), workers)
    threads = max(1, _cores() // workers)
    # Longest first, so the last one to start is a short one: lowering time grows with the exported nodes,
    # about depth x (2 for a quantized system: each dynamically quantized linear is several nodes).
    queue = sorted(todo, key=lambda item: item[0].spec.depth * (2 if item[0].spec.is_quantized else 1), reverse=True)
    running = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=quiet_library_notices) as pool:
        def submit() -> None:
            prepared, _ = queue.pop(0)
            log.info("lowering %s ...", prepared.spec.id)
            future = pool.submit(_worker_lower, checkpoint, prepared.spec.id, prepared.key, threads,
                                 prepared.weights)
            running[future] = (prepared, time.perf_counter())

        for _ in range(min(workers, len(queue))):
            submit()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                prepared, start = running.pop(future)
                try:
                    pte, report = future.result()
                except AllinoneError as err:
                    failed[prepared.spec] = err
                else:
                    lowered[prepared.spec] = _stored(cache, prepared, pte, report, start)
                if on_done:
                    on_done(prepared.spec)
                if queue:
                    submit()
