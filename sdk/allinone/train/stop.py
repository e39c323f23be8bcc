"""Stopping a training run between steps: Ctrl-C or SIGTERM finishes the step in hand, saves, and exits.

Without this, an interruption loses every step since the last timed save (up to `checkpoint_minutes`). The first
SIGINT or SIGTERM only sets a flag that the training loop reads after each step; a second one interrupts at
once, as before. Data-loader workers ignore both signals (`ignore_stop_signals`), so a Ctrl-C sent to the
whole process group does not kill them mid-batch: the main process ends them when it stops.
"""

from __future__ import annotations

import logging
import signal
import threading

__all__ = ["StopRequest", "ignore_stop_signals"]

log = logging.getLogger(__name__)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: leave SIGINT/SIGTERM to the main process."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StopRequest:
    """Context manager; `requested` turns true on the first SIGINT/SIGTERM. Inactive (signals keep their
    handlers) when `enabled` is false or outside the main thread, where Python cannot set handlers."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, _frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s: finishing this step and saving; send it again to stop at once",
                    signal.Signals(signum).name)

    def __enter__(self) -> "StopRequest":
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
