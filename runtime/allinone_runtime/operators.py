"""Per-operator time from an ETDump, via ExecuTorch's devtools Inspector (imported only when asked for).

Events are grouped by operator: XNNPACK's own op names inside the delegate (`Fully Connected (NC, QDU8, F32,
QB4W) GEMM`, numbering `#3` dropped), and the portable/optimized kernels outside it (`native_call_X.out`
-> `X`). Envelopes that contain other events (`DELEGATE_CALL`, `OPERATOR_CALL`, `Method::execute`) are left
out so nothing is counted twice. The first run is a warm-up and is dropped when later runs exist.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import defaultdict
from pathlib import Path

__all__ = ["operator_breakdown", "inspector_available"]

log = logging.getLogger(__name__)

_ENVELOPES = {"DELEGATE_CALL", "OPERATOR_CALL", "Method::execute", "Method::init", "Program::load_method"}


def inspector_available() -> bool:
    try:
        import executorch.devtools.inspector  # noqa: F401
    except Exception as err:  # pandas or another devtools dependency missing
        log.warning("ExecuTorch devtools Inspector unavailable (%s); no per-operator breakdown", err)
        return False
    return True


def _op_name(event) -> str:
    name = re.sub(r"\s*#\d+$", "", event.name)
    if not event.is_delegated_op:
        name = re.sub(r"^native_call_", "", name)
        name = re.sub(r"\.out$", "", name)
    return name


def operator_breakdown(etdump_path: str | Path, top: int | None = None) -> list[dict]:
    """Operators of the profiled runs, most time first: `name`, `delegated`, `calls` and `total_ms` per run."""
    from executorch.devtools.inspector import Inspector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Output Buffer not found": we ask for times, not tensors
        inspector = Inspector(etdump_path=str(etdump_path))
    calls: dict[tuple[str, bool], int] = defaultdict(int)
    total_ms: dict[tuple[str, bool], float] = defaultdict(float)
    for block in inspector.event_blocks:
        for event in block.events:
            if event.name in _ENVELOPES or event.perf_data is None:
                continue
            raw = list(event.perf_data.raw)
            runs = raw[1:] if len(raw) > 1 else raw  # drop the warm-up
            key = (_op_name(event), bool(event.is_delegated_op))
            calls[key] += 1
            total_ms[key] += sum(runs) / len(runs)
    rows = [{"name": name, "delegated": delegated, "calls": calls[(name, delegated)],
             "total_ms": round(total_ms[(name, delegated)], 4)} for name, delegated in calls]
    rows.sort(key=lambda r: -r["total_ms"])
    return rows[:top] if top else rows
