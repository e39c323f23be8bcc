"""Size accounting of a nested system: parameters, exact weight bytes at its precision, and MACs.

Bytes are what the deployed program stores, as the precision's `QuantScheme` says: every quantized linear's
weight at `bits` per value (4-bit values packed two per byte) plus one float32 scale per output channel
(8-bit) or one bfloat16 scale per group of 32 inputs (4-bit, as XNNPACK stores them); symmetric quantization
stores no zero-points. Everything else (biases, norms, convolutions, the frontend's DFT kernels, mel filters
and feature statistics) is float32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from allinone.quant_scheme import QuantScheme
from allinone.spec import SubnetSpec

__all__ = ["SubnetSize", "subnet_size", "subnet_weight_bytes", "module_weight_bytes", "macs_per_second"]


@dataclass(frozen=True)
class SubnetSize:
    subnet: str
    params: int  # trainable parameters kept by the system
    weight_bytes: int  # bytes of every stored tensor at its deployed precision (constants included)
    macs_per_second: int  # multiply-accumulates per second of audio (at a 10 s utterance)

    def to_dict(self) -> dict:
        return asdict(self)


def _linear_bytes(linear: nn.Linear, scheme: QuantScheme) -> int:
    out_f, in_f = linear.out_features, linear.in_features
    bias = out_f * 4 if linear.bias is not None else 0
    if not scheme.is_quantized or not scheme.takes_width(in_f):
        return out_f * in_f * 4 + bias
    scale_bytes = scheme.scale_count(out_f, in_f) * scheme.scale_bytes
    return (out_f * in_f * scheme.weight_bits + 7) // 8 + scale_bytes + bias


def module_weight_bytes(module: nn.Module, scheme: QuantScheme | int) -> int:
    """Bytes the float `module` will store once its linears are quantized as `scheme` (or to that many bits)."""
    scheme = QuantScheme.of(scheme)
    total, linear_tensors = 0, set()
    for child in module.modules():
        if isinstance(child, nn.Linear):
            total += _linear_bytes(child, scheme)
            linear_tensors.update(id(t) for t in (child.weight, child.bias) if t is not None)
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in linear_tensors:
            total += tensor.numel() * tensor.element_size()
    return total


def macs_per_second(subnet: nn.Module, sample_rate: int = 16000, seconds: float = 10.0) -> int:
    """Multiply-accumulates per second of audio, counted by running `seconds` of input once.

    Attention grows with length, so the figure is quoted at a fixed 10 s reference utterance."""
    from torch.utils.flop_counter import FlopCounterMode

    waveform = torch.zeros(1, int(seconds * sample_rate))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        subnet(waveform, None)
    return int(counter.get_total_flops() / 2 / seconds)


def subnet_size(model: nn.Module, spec: SubnetSpec) -> SubnetSize:
    """Parameters, deployed weight bytes and MACs/s of the nested system `spec` of `model`."""
    subnet = model.extract_subnet(spec)
    params = sum(p.numel() for p in subnet.parameters())
    return SubnetSize(spec.id, params, module_weight_bytes(subnet, spec.quant_scheme),
                      macs_per_second(subnet, model.cfg.frontend.sample_rate))


def subnet_weight_bytes(model: nn.Module, spec: SubnetSpec) -> int:
    """`subnet_size(model, spec).weight_bytes` without counting MACs (which runs 10 s of audio)."""
    return module_weight_bytes(model.extract_subnet(spec), spec.quant_scheme)
