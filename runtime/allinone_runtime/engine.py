"""The one place that talks to ExecuTorch's Python runtime: load a .pte, run `forward` on numpy audio.

ExecuTorch's Python bindings take and return torch tensors, so torch is imported here, lazily, and
nowhere else in allinone_runtime. The public `executorch.runtime` module imports `executorch.exir`
(the whole export stack, ~10 s on a small CPU) only to issue an "experimental API" warning; the compiled
extension it wraps is imported directly when present, so loading a bundle costs the torch import alone.

ExecuTorch's bindings print every runtime log line to stderr as `[file.cpp:line] message`, without its level,
so its errors and its chatter look alike. The chatter comes from the process-wide thread pool: creating it
probes the CPU and logs each /sys file it tries ("Failed to open midr file ..." on any non-ARM machine), and
each resize logs a line. Only those two calls run with the process's stderr (file descriptor 2, where C++
writes) pointed at a temporary file; the known chatter goes to this module's debug log (shown when the
application logs at DEBUG, as `allinone demo --verbose` does) and every other line is written back to stderr. Program loads and runs are never
redirected, so their errors reach stderr as they happen, even when the process then aborts.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from allinone_runtime.errors import RuntimeInputError

__all__ = ["Engine", "set_threads", "start_threadpool", "thread_count"]

log = logging.getLogger(__name__)

# The thread pool's informational lines: the CPU probe (cpuinfo_utils.cpp, every line) and a resize.
_POOL_CHATTER = re.compile(r"\[cpuinfo_utils\.cpp:\d+\] |\[threadpool\.cpp:\d+\] Resetting threadpool to \d+ threads\.$")
_pool_started = False


@contextmanager
def _pool_chatter_to_debug_log():
    """Run the body with fd 2 in a temporary file; then log the pool's chatter at debug, re-emit the rest."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines():
                if _POOL_CHATTER.match(line):
                    log.debug("executorch: %s", line)
                else:
                    print(line, file=sys.stderr)


def _bindings():
    global _pool_started
    import torch  # noqa: F401  (the extension resolves its tensor types from libtorch)

    try:
        from executorch.extension.pybindings import _C
    except ImportError:  # another packaging of the bindings: go through the public wrapper
        from executorch.extension.pybindings import portable_lib as _C
    if not _pool_started:  # asking for the size creates the pool, before any program can create it loudly
        with _pool_chatter_to_debug_log():
            _C._threadpool_get_thread_count()
        _pool_started = True
    return _C


def start_threadpool() -> None:
    """Create ExecuTorch's process-wide thread pool now, its start-up chatter kept to the debug log. Call it
    before loading a program through another API (`executorch.runtime`), which would create it loudly."""
    _bindings()


def set_threads(threads: int | None) -> None:
    """Size ExecuTorch's process-wide thread pool (XNNPACK and the optimized kernels use it); None keeps it.

    Call it before loading programs: ExecuTorch rebuilds the pool, and a program already loaded may still
    hold the old one (its API is `_unsafe_reset_threadpool`; a crash was seen resetting under a loaded
    conformer_small). A request for the size already in use changes nothing."""
    if threads is None:
        return
    if threads < 1:
        raise RuntimeInputError(f"threads: expected >= 1, got {threads}")
    bindings = _bindings()
    if bindings._threadpool_get_thread_count() != threads:
        with _pool_chatter_to_debug_log():
            bindings._unsafe_reset_threadpool(int(threads))


def thread_count() -> int:
    return int(_bindings()._threadpool_get_thread_count())


class Engine:
    """A loaded `forward` method of one .pte (a path, or the program's bytes straight from lowering);
    `run` maps (N,) float32 samples to (T, V) log-probs."""

    def __init__(self, pte_path: str | Path | bytes, *, etdump: bool = False, debug_buffer_bytes: int = 0):
        bindings = _bindings()
        in_memory = isinstance(pte_path, (bytes, bytearray))
        load, source = (bindings._load_program_from_buffer, bytes(pte_path)) if in_memory else \
            (bindings._load_program, str(pte_path))
        start = time.perf_counter()
        try:
            # The program must outlive its method (the method runs in the program's memory): both are kept.
            self._program = load(source, enable_etdump=etdump, debug_buffer_size=debug_buffer_bytes,
                                 program_verification=bindings.Verification.InternalConsistency, data_path=None)
            self._method = self._program.load_method("forward")
        except RuntimeError as err:
            where = "program" if in_memory else str(pte_path)
            raise RuntimeInputError(f"{where}: ExecuTorch could not load the program ({err})") from None
        self.load_ms = (time.perf_counter() - start) * 1e3  # program load + method init (planning, delegate init)

    def run(self, samples: np.ndarray) -> np.ndarray:
        import torch

        waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]  # (1, N)
        return self._method([waveform])[0][0].numpy()  # (T, V)

    def write_etdump(self, etdump_path: str | Path, debug_path: str | Path) -> None:
        self._program.write_etdump_result_to_file(str(etdump_path), str(debug_path))
