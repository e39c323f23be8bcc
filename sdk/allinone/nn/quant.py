"""Fake quantization with the arithmetic of torchao's primitives, matching the torchao config used at export.

Deployment numerics are the `allinone.quant_scheme.QuantScheme` of each precision (torchao
`Int8DynamicActivationIntxWeightConfig`, lowered to XNNPACK):
  * 8-bit weights: symmetric int8, one scale per output channel;
  * 4-bit weights: symmetric int4, one bfloat16 scale per group of 32 input features (XNNPACK's blockwise
    kernels store group scales in bfloat16, so the scale is rounded to bfloat16 before the weights are
    quantized with it, as torchao does with `weight_scale_dtype=torch.bfloat16`);
  * activations of a quantized linear: dynamic asymmetric int8, one scale/zero-point per token.
Training applies exactly these quantize->dequantize steps with a straight-through estimator, so the
gradient reaches the shared float weights and the trained model is the deployed model. The steps are
torchao's (`choose_qparams_affine`, `quantize_affine`, `dequantize_affine`) written as a few fused tensor
ops: the generic primitives' reshapes and integer round trips cost more than the arithmetic, once per
quantized linear per training step; tests/test_fake_quant.py holds both to identical results. Functions take a
`QuantScheme` or a SubnetSpec's weight bits (the deployed scheme of that precision).
"""

from __future__ import annotations

import torch
from torchao.quantization.granularity import PerAxis, PerGroup
from torchao.quantization.quant_primitives import (
    MappingType,
    choose_qparams_affine,
    dequantize_affine,
    quantize_affine,
)

from allinone.quant_scheme import GROUP_SIZE_INT4, QuantScheme

__all__ = ["GROUP_SIZE_INT4", "weight_qrange", "weight_block_size", "fake_quantize_weight",
           "fake_quantize_activation", "torchao_config", "quantizable_width"]


def weight_qrange(scheme: QuantScheme | int) -> tuple[int, int]:
    return QuantScheme.of(scheme).qrange


def weight_block_size(scheme: QuantScheme | int, in_features: int) -> tuple[int, int]:
    """Block over which one weight scale is shared: a whole row (8-bit) or one group of inputs (4-bit)."""
    return QuantScheme.of(scheme).block_size(in_features)


def quantizable_width(in_features: int, scheme: QuantScheme | int) -> bool:
    """True if a linear reading `in_features` inputs can take the scheme's integer weights on XNNPACK."""
    return QuantScheme.of(scheme).takes_width(in_features)


def _quant_dequant_weight(weight: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """torchao's symmetric choose_qparams -> quantize -> dequantize of `weight`, the same float operations in
    the same order, fused into a few whole-tensor ops (tests/test_fake_quant.py proves the results identical to
    torchao's primitives). Symmetric: the zero-point is 0, so it drops out of every step."""
    qmin, qmax = scheme.qrange
    out_features, in_features = weight.shape
    group = scheme.block_size(in_features)[1]
    blocks = weight.reshape(out_features, in_features // group, group)
    # torchao: max(-min(amin, 0), max(amax, 0)), which is the largest magnitude in the block.
    largest = blocks.abs().amax(dim=-1, keepdim=True)
    scale = (largest / (float(qmax - qmin) / 2)).clamp(min=torch.finfo(weight.dtype).smallest_normal)
    scale = scale.to(getattr(torch, scheme.scale_dtype))  # how the deployed kernels store weight scales
    q = torch.clamp(torch.round(blocks * (1.0 / scale)), qmin, qmax)
    q += 0.0  # torchao adds the zero-point (0) here, which turns round()'s -0.0 into +0.0: bit-identical
    return (q * scale).to(weight.dtype).reshape(out_features, in_features)


def _quant_dequant_activation(x: torch.Tensor) -> torch.Tensor:
    """torchao's asymmetric per-token int8 choose_qparams -> quantize -> dequantize of `x`, fused like the
    weights' (identical results, tests/test_fake_quant.py); the zero-point stays a float holding an integer."""
    low, high = torch.aminmax(x, dim=-1, keepdim=True)  # one scale and zero-point per token
    low, high = torch.clamp(low, max=0), torch.clamp(high, min=0)
    scale = ((high - low) / 255.0).clamp(min=torch.finfo(x.dtype).smallest_normal)
    zero_point = torch.clamp(-128 - torch.round(low / scale), -128, 127)
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, -128, 127)
    return (q - zero_point) * scale


def torchao_quant_dequant_weight(weight: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """`_quant_dequant_weight` through torchao's generic primitives: the reference it is tested against."""
    qmin, qmax = scheme.qrange
    block = scheme.block_size(weight.shape[-1])
    scale, zero_point = choose_qparams_affine(
        weight, MappingType.SYMMETRIC, block, target_dtype=torch.int8, quant_min=qmin, quant_max=qmax,
        zero_point_dtype=torch.int8, keepdim=True)
    scale = scale.to(getattr(torch, scheme.scale_dtype))
    q = quantize_affine(weight, block, scale, zero_point, output_dtype=torch.int8, quant_min=qmin, quant_max=qmax)
    return dequantize_affine(q, block, scale, zero_point, torch.int8, qmin, qmax, output_dtype=weight.dtype)


def torchao_quant_dequant_activation(x: torch.Tensor) -> torch.Tensor:
    """`_quant_dequant_activation` through torchao's generic primitives: the reference it is tested against."""
    block = (1,) * (x.dim() - 1) + (x.shape[-1],)
    scale, zero_point = choose_qparams_affine(
        x, MappingType.ASYMMETRIC, block, target_dtype=torch.int8, quant_min=-128, quant_max=127,
        zero_point_dtype=torch.int8)
    q = quantize_affine(x, block, scale, zero_point, output_dtype=torch.int8, quant_min=-128, quant_max=127)
    return dequantize_affine(q, block, scale, zero_point, torch.int8, -128, 127, output_dtype=x.dtype)


def fake_quantize_weight(weight: torch.Tensor, scheme: QuantScheme | int) -> torch.Tensor:
    """(out, in) float weight -> the same weight as the deployed integer weight dequantizes to.

    Straight-through estimator: forward gives the quantized values, backward passes the gradient as is."""
    scheme = QuantScheme.of(scheme)
    if not scheme.is_quantized:
        return weight
    with torch.no_grad():
        quantized = _quant_dequant_weight(weight.detach(), scheme)
    return weight + (quantized - weight).detach()


def fake_quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """(..., in) activations -> dynamic per-token int8 quantize/dequantize, straight-through in backward."""
    with torch.no_grad():
        quantized = _quant_dequant_activation(x.detach())
    return x + (quantized - x).detach()


_WEIGHT_DTYPE = {8: torch.int8, 4: torch.int4}


def torchao_config(scheme: QuantScheme | int):
    """The torchao config that deploys the scheme's integer weights with the numerics above."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig

    scheme = QuantScheme.of(scheme)
    if not scheme.is_quantized:
        raise ValueError(f"no torchao config for {scheme.weight_bits}-bit weights (expected 8 or 4)")
    granularity = PerAxis(0) if scheme.group_size is None else PerGroup(scheme.group_size)
    # float32 scales are torchao's default (the weights' own dtype), so only another dtype is passed.
    scales = {} if scheme.scale_dtype == "float32" else {"weight_scale_dtype": getattr(torch, scheme.scale_dtype)}
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=_WEIGHT_DTYPE[scheme.weight_bits],
                                                 weight_granularity=granularity,
                                                 weight_mapping_type=MappingType.SYMMETRIC, **scales)
