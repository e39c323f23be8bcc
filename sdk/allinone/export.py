"""Extract -> quantize -> torch.export -> ExecuTorch/XNNPACK lowering -> .pte bytes.

The exported program's signature (method `forward`) is fixed by the bundle contract:
input `waveform` float32 (1, N), 16 kHz, N in [MIN_SAMPLES, MAX_SAMPLES]; output `log_probs` float32 (1, T, V).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.fx.experimental._config  # noqa: F401  (size-oblivious switch used while lowering)
from torch import nn

from allinone.models.conformer import MIN_SAMPLES
from allinone.quantize import quantize_subnet_
from allinone.spec import SubnetSpec

__all__ = ["MAX_SAMPLES", "ExportedProgram", "WaveformToLogProbs", "export_subnet", "lower_to_pte"]

log = logging.getLogger(__name__)

MAX_SAMPLES = 480_000  # 30 s at 16 kHz; the runtime chunks longer audio


class WaveformToLogProbs(nn.Module):
    """The program an app runs: waveform (1, N) -> log_probs (1, T, V); the batch is one full-length row."""

    def __init__(self, subnet: nn.Module):
        super().__init__()
        self.subnet = subnet

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        log_probs, _ = self.subnet(waveform, None)
        return log_probs


@dataclass
class ExportedProgram:
    """A lowered nested system and what the build needs to know about it."""

    spec: SubnetSpec
    pte: bytes
    module: nn.Module  # the eager (quantized) program the .pte must reproduce
    float_layers: list[str]  # weight layers left in float at this precision
    delegated_ops: Counter = field(default_factory=Counter)  # ops XNNPACK runs, by name
    portable_ops: Counter = field(default_factory=Counter)  # ops left to ExecuTorch's portable kernels
    partitions: int = 0  # XNNPACK delegate calls in the program (each one is lowered and run separately)
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage


def _count_ops(edge_program) -> tuple[Counter, Counter, int]:
    """Ops inside XNNPACK delegate blobs vs ops left outside, and the number of delegate calls."""
    from executorch.exir.lowered_backend_module import get_lowered_submodules

    graph_module = edge_program.exported_program().graph_module
    delegated, portable = Counter(), Counter()
    lowered_modules = get_lowered_submodules(graph_module)
    for _, lowered, _ in lowered_modules:
        for node in lowered.original_module.graph.nodes:
            if node.op == "call_function":
                delegated[_op_name(node.target)] += 1
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and "executorch_call_delegate" not in str(node.target) \
                and "getitem" not in str(node.target):
            portable[_op_name(node.target)] += 1
    return delegated, portable, len(lowered_modules)


def _op_name(target) -> str:
    name = getattr(target, "__name__", str(target))
    return name.replace("aten.", "").split(".default")[0]


def lower_to_pte(program: nn.Module, example: torch.Tensor,
                 on_step: Callable[[str], None] | None = None, *,
                 check_ir: bool = False) -> tuple[bytes, Counter, Counter, int, dict]:
    """torch.export with a dynamic audio length, lower to XNNPACK, serialize; return the .pte bytes.
    `on_step` is told the name of each step as it starts (a progress display). `check_ir` runs ExecuTorch's
    edge-dialect verifier, off by default: it re-traces the whole graph with fake tensors each time a program
    is built, costs 15 % of lowering and changes no byte of the program (tests/test_export.py), which is why
    XNNPACK's own edge config turns it off too."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from torch.export import Dim, export

    step = on_step or (lambda name: None)
    seconds = {}
    step("torch.export")
    start = time.perf_counter()
    # Dim.AUTO with bounds: a named Dim fails on the framing/subsampling length arithmetic.
    samples = Dim.AUTO(min=MIN_SAMPLES, max=MAX_SAMPLES)
    exported = export(program, (example,), dynamic_shapes={"waveform": {1: samples}}, strict=False)
    seconds["export"] = time.perf_counter() - start
    # Re-tracing in to_edge evaluates convolution-backend heuristics (e.g. input numel <= 20480) on the
    # example's size hint and would narrow the audio-length range to the example's side of that threshold;
    # size-oblivious reasoning keeps the exported range (0.5-30 s) intact.
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        step("XNNPACK lowering")
        start = time.perf_counter()
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=check_ir))
        seconds["lower"] = time.perf_counter() - start
        delegated, portable, partitions = _count_ops(edge)
        step("serialize")
        start = time.perf_counter()
        pte = edge.to_executorch().buffer
        seconds["serialize"] = time.perf_counter() - start
    bounds = edge.exported_program().range_constraints
    if any(r.upper < MAX_SAMPLES for r in bounds.values()):
        raise RuntimeError(f"lowering narrowed the audio-length range to {bounds}; expected up to {MAX_SAMPLES}")
    return pte, delegated, portable, partitions, seconds


def export_subnet(model: nn.Module, spec: SubnetSpec, example_seconds: float = 2.0, *,
                  on_step: Callable[[str], None] | None = None) -> ExportedProgram:
    """Cut `spec` out of the supernet, quantize it as deployed, and lower it to a .pte. `on_step` is told
    each step's name as it starts (extract + quantize, torch.export, XNNPACK lowering, serialize)."""
    if on_step is not None:
        on_step("extract + quantize")
    start = time.perf_counter()
    subnet = model.extract_subnet(spec)
    float_layers = quantize_subnet_(subnet, spec.quant_scheme)
    program = WaveformToLogProbs(subnet).eval()
    extract_seconds = time.perf_counter() - start
    example = torch.zeros(1, int(example_seconds * model.cfg.frontend.sample_rate))
    with torch.no_grad():
        pte, delegated, portable, partitions, seconds = lower_to_pte(program, example, on_step)
    seconds = {"extract_quantize": extract_seconds, **seconds}
    log.info("%s: lowered in %.1f s (%d bytes, %d XNNPACK partitions, %d ops delegated, %d not)", spec.id,
             sum(seconds.values()), len(pte), partitions, sum(delegated.values()), sum(portable.values()))
    return ExportedProgram(spec, pte, program, float_layers, delegated, portable, partitions, seconds)
