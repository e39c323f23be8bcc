"""Fake quantization with torchao's own primitives, matching the torchao config used at export.

Deployment numerics (torchao `Int8DynamicActivationIntxWeightConfig`, lowered to XNNPACK):
  * 8-bit weights: symmetric int8, one scale per output channel;
  * 4-bit weights: symmetric int4, one bfloat16 scale per group of 32 input features (XNNPACK's blockwise
    kernels store group scales in bfloat16, so the scale is rounded to bfloat16 before the weights are
    quantized with it, as torchao does with `weight_scale_dtype=torch.bfloat16`);
  * activations of a quantized linear: dynamic asymmetric int8, one scale/zero-point per token.
Training applies exactly these quantize->dequantize steps with a straight-through estimator, so the
gradient reaches the shared float weights and the trained model is the deployed model.
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

__all__ = ["GROUP_SIZE_INT4", "SCALE_DTYPE", "weight_qrange", "weight_block_size", "fake_quantize_weight",
           "fake_quantize_activation", "torchao_config", "quantizable_width"]

GROUP_SIZE_INT4 = 32  # XNNPACK's 4-bit kernels need a group size that is a multiple of 32
_QRANGE = {8: (-128, 127), 4: (-8, 7)}
SCALE_DTYPE = {8: torch.float32, 4: torch.bfloat16}  # how the deployed kernels store weight scales


def weight_qrange(bits: int) -> tuple[int, int]:
    return _QRANGE[bits]


def weight_block_size(bits: int, in_features: int) -> tuple[int, int]:
    """Block over which one weight scale is shared: a whole row (8-bit) or 32 inputs (4-bit)."""
    return (1, in_features) if bits == 8 else (1, GROUP_SIZE_INT4)


def quantizable_width(in_features: int, bits: int) -> bool:
    """True if a linear reading `in_features` inputs can take `bits`-bit weights on XNNPACK."""
    return bits == 8 or in_features % GROUP_SIZE_INT4 == 0


def _quant_dequant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    qmin, qmax = _QRANGE[bits]
    block = weight_block_size(bits, weight.shape[-1])
    scale, zero_point = choose_qparams_affine(
        weight, MappingType.SYMMETRIC, block, target_dtype=torch.int8, quant_min=qmin, quant_max=qmax,
        zero_point_dtype=torch.int8, keepdim=True)
    scale = scale.to(SCALE_DTYPE[bits])
    q = quantize_affine(weight, block, scale, zero_point, output_dtype=torch.int8, quant_min=qmin, quant_max=qmax)
    return dequantize_affine(q, block, scale, zero_point, torch.int8, qmin, qmax, output_dtype=weight.dtype)


def _quant_dequant_activation(x: torch.Tensor) -> torch.Tensor:
    block = (1,) * (x.dim() - 1) + (x.shape[-1],)  # one scale and zero-point per token
    scale, zero_point = choose_qparams_affine(
        x, MappingType.ASYMMETRIC, block, target_dtype=torch.int8, quant_min=-128, quant_max=127,
        zero_point_dtype=torch.int8)
    q = quantize_affine(x, block, scale, zero_point, output_dtype=torch.int8, quant_min=-128, quant_max=127)
    return dequantize_affine(q, block, scale, zero_point, torch.int8, -128, 127, output_dtype=x.dtype)


def fake_quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """(out, in) float weight -> the same weight as the deployed integer weight dequantizes to.

    Straight-through estimator: forward gives the quantized values, backward passes the gradient as is."""
    if bits == 32:
        return weight
    with torch.no_grad():
        quantized = _quant_dequant_weight(weight.detach(), bits)
    return weight + (quantized - weight).detach()


def fake_quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """(..., in) activations -> dynamic per-token int8 quantize/dequantize, straight-through in backward."""
    with torch.no_grad():
        quantized = _quant_dequant_activation(x.detach())
    return x + (quantized - x).detach()


def torchao_config(bits: int):
    """The torchao config that deploys `bits`-bit weights with the numerics above."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig

    if bits == 8:
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int8, weight_granularity=PerAxis(0), weight_mapping_type=MappingType.SYMMETRIC)
    if bits == 4:
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP_SIZE_INT4),
            weight_mapping_type=MappingType.SYMMETRIC, weight_scale_dtype=SCALE_DTYPE[4])
    raise ValueError(f"no torchao config for {bits}-bit weights (expected 8 or 4)")
