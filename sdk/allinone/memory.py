"""Peak memory of a nested system on a device: .pte bytes + the program's planned activation bytes
(ExecuTorch's non-constant buffers, read from the .pte) + the runtime's own overhead (`allinone.host_timing`
measures it on the host). Selection reads this; it never lowers anything."""

from __future__ import annotations

from pathlib import Path

from allinone.errors import BadInputError
from allinone.profiles import MIB, DeviceProfile

__all__ = ["planned_activation_bytes", "predict_peak_bytes"]

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
