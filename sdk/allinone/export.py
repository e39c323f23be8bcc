"""Extract -> quantize -> torch.export -> ExecuTorch/XNNPACK lowering -> .pte bytes.

The exported program's signature (method `forward`) is fixed by the bundle contract:
input `waveform` float32 (1, N), 16 kHz, N = min_samples + k * length_step up to max_samples (`InputLengths`);
output `log_probs` float32 (1, T, V).
"""

from __future__ import annotations

import logging
import math
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

__all__ = ["MAX_SAMPLES", "ExportedProgram", "InputLengths", "WaveformToLogProbs", "example_input", "export_subnet",
           "input_lengths", "lower_to_pte"]

log = logging.getLogger(__name__)

MAX_SAMPLES = 480_000  # 30 s at 16 kHz; the runtime chunks longer audio


@dataclass(frozen=True)
class InputLengths:
    """The input lengths a program takes: min_samples + k * step up to max_samples. With step 1 (a model whose
    output depends on every sample, e.g. wav2vec2's utterance normalisation) any length in range; otherwise
    the length is linear in k, which spares lowering the symbolic framing arithmetic (0.7-0.8x its time,
    docs/benchmarks.md) and changes no output: the runtime cuts audio to the longest such length, and the
    samples cut (under one output frame) are ones the network never reads."""

    min_samples: int
    max_samples: int
    step: int = 1

    def fit(self, n_samples: int) -> int:
        """The length one call takes for `n_samples` of audio (padded up to min_samples, else cut down): the
        runtime's rule, `allinone_runtime.bundle.fit_length`."""
        from allinone_runtime.bundle import fit_length

        return fit_length(n_samples, self.min_samples, self.max_samples, self.step)

    def to_dict(self) -> dict:
        return {"min_samples": self.min_samples, "max_samples": self.max_samples, "length_step": self.step}


def input_lengths(model: nn.Module) -> InputLengths:
    """The input lengths of programs cut from `model`: 0.5-30 s, on the model's length grid if it has one
    (`input_length_step`, the Conformer's)."""
    rule = getattr(model, "input_length_step", None)
    if rule is None:
        return InputLengths(MIN_SAMPLES, MAX_SAMPLES)
    step, offset = rule
    return InputLengths(offset + math.ceil((MIN_SAMPLES - offset) / step) * step,
                        offset + (MAX_SAMPLES - offset) // step * step, step)


def example_input(model: nn.Module, seconds: float) -> tuple[torch.Tensor, InputLengths]:
    """The silent waveform torch.export traces programs of `model` with (about `seconds` long, on the model's
    length grid), and the input lengths those programs take."""
    lengths = input_lengths(model)
    return torch.zeros(1, lengths.fit(int(seconds * model.cfg.frontend.sample_rate))), lengths


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
                 on_step: Callable[[str], None] | None = None, *, check_ir: bool = False,
                 lengths: InputLengths = InputLengths(MIN_SAMPLES, MAX_SAMPLES)) -> tuple[bytes, Counter, Counter, int, dict]:
    """torch.export with a dynamic audio length (`lengths`; `example` must be one of them), lower to XNNPACK,
    serialize; return the .pte bytes.
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
    if lengths.fit(example.shape[1]) != example.shape[1]:
        raise ValueError(f"example of {example.shape[1]} samples is not a length the program takes ({lengths})")
    if lengths.step > 1:  # N = min + k * step: the framing arithmetic stays linear in one symbol
        frames = Dim("frames", min=0, max=(lengths.max_samples - lengths.min_samples) // lengths.step)
        samples, top = lengths.step * frames + lengths.min_samples, frames.max
    else:  # Dim.AUTO with bounds: a named Dim fails on the framing/subsampling length arithmetic.
        samples, top = Dim.AUTO(min=lengths.min_samples, max=lengths.max_samples), lengths.max_samples
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
    if any(r.upper < top for r in bounds.values()):
        raise RuntimeError(f"lowering narrowed the audio-length range to {bounds}; expected up to {top}")
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
    example, lengths = example_input(model, example_seconds)
    with torch.no_grad():
        pte, delegated, portable, partitions, seconds = lower_to_pte(program, example, on_step, lengths=lengths)
    seconds = {"extract_quantize": extract_seconds, **seconds}
    log.info("%s: lowered in %.1f s (%d bytes, %d XNNPACK partitions, %d ops delegated, %d not)", spec.id,
             sum(seconds.values()), len(pte), partitions, sum(delegated.values()), sum(portable.values()))
    return ExportedProgram(spec, pte, program, float_layers, delegated, portable, partitions, seconds)
