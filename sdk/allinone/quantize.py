"""Apply deployment quantization (torchao `quantize_`) to an extracted nested system."""

from __future__ import annotations

import logging

from torch import nn

from allinone.nn.quant import quantizable_width, torchao_config

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


def quantize_subnet_(module: nn.Module, bits: int) -> list[str]:
    """Quantize every linear of `module` in place to `bits`-bit weights with dynamic int8 activations.

    Returns the weight layers left in float (logged)."""
    if bits == 32:
        return []
    from torchao.quantization import quantize_

    def is_quantizable(child: nn.Module, fqn: str) -> bool:
        return isinstance(child, nn.Linear) and quantizable_width(child.in_features, bits)

    quantize_(module, torchao_config(bits), filter_fn=is_quantizable)
    left_float = float_weight_layers(module, bits)
    for name in left_float:
        log.info("%d-bit: layer %s stays float", bits, name)
    return left_float
