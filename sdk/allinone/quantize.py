"""Apply deployment quantization (torchao `quantize_`) to an extracted nested system."""

from __future__ import annotations

import logging
from collections import Counter

from torch import nn

from allinone.nn.quant import GROUP_SIZE_INT4, quantizable_width, torchao_config

__all__ = ["quantize_subnet_", "float_weight_layers"]

log = logging.getLogger(__name__)


def float_weight_layers(module: nn.Module, bits: int) -> list[str]:
    """Names of weight-holding layers that stay float at `bits` (convolutions, norms, and any linear whose
    input width the integer kernels cannot take). Recorded in the manifest, never skipped silently."""
    if bits == 32:
        return []
    names = []
    for name, child in module.named_modules():
        if isinstance(child, nn.Linear):
            if not quantizable_width(child.in_features, bits):
                names.append(name)
        elif isinstance(child, (nn.Conv1d, nn.Conv2d)):
            names.append(name)
    return names


def _float_kind(layer: nn.Module) -> tuple[str, str]:
    """(singular, plural) of what a layer left in float is, for the one-line summary."""
    if isinstance(layer, nn.Linear):
        return (f"linear whose input width is not a multiple of {GROUP_SIZE_INT4}",
                f"linears whose input width is not a multiple of {GROUP_SIZE_INT4}")
    if layer.groups > 1 and layer.groups == layer.in_channels:
        return "depthwise convolution", "depthwise convolutions"
    return "convolution", "convolutions"


def quantize_subnet_(module: nn.Module, bits: int) -> list[str]:
    """Quantize every linear of `module` in place to `bits`-bit weights with dynamic int8 activations.

    Returns the weight layers left in float: one summary line at INFO, each layer at DEBUG."""
    if bits == 32:
        return []
    from torchao.quantization import quantize_

    def is_quantizable(child: nn.Module, fqn: str) -> bool:
        return isinstance(child, nn.Linear) and quantizable_width(child.in_features, bits)

    quantized = sum(is_quantizable(child, name) for name, child in module.named_modules())
    left_float = float_weight_layers(module, bits)
    quantize_(module, torchao_config(bits), filter_fn=is_quantizable)
    layers = dict(module.named_modules())
    kinds = Counter()
    for name in left_float:
        kind = _float_kind(layers[name])
        kinds[kind] += 1
        log.debug("%d-bit: layer %s stays float (%s)", bits, name, kind[0])
    summary = f"{bits}-bit: {quantized} linear layers quantized"
    if left_float:  # expected, not a problem: the integer kernels take linears only
        what = ", ".join(f"{n} {plural if n > 1 else singular}" for (singular, plural), n in kinds.items())
        summary += f"; {len(left_float)} layers stay float ({what}), named in a bundle's manifest"
    log.info("%s", summary)
    return left_float
