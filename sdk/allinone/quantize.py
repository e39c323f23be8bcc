"""Apply deployment quantization (torchao `quantize_`) to an extracted nested system, as its `QuantScheme`
says (a SubnetSpec's weight bits name the deployed scheme of that precision)."""

from __future__ import annotations

import logging
from collections import Counter

from torch import nn

from allinone.nn.quant import torchao_config
from allinone.quant_scheme import QuantScheme

__all__ = ["quantize_subnet_", "float_weight_layers"]

log = logging.getLogger(__name__)


def float_weight_layers(module: nn.Module, scheme: QuantScheme | int) -> list[str]:
    """Names of weight-holding layers that stay float under `scheme` (convolutions, norms, and any linear whose
    input width the integer kernels cannot take). Recorded in the manifest, never skipped silently."""
    scheme = QuantScheme.of(scheme)
    if not scheme.is_quantized:
        return []
    names = []
    for name, child in module.named_modules():
        if isinstance(child, nn.Linear):
            if not scheme.takes_width(child.in_features):
                names.append(name)
        elif isinstance(child, (nn.Conv1d, nn.Conv2d)):
            names.append(name)
    return names


def _float_kind(layer: nn.Module, scheme: QuantScheme) -> tuple[str, str]:
    """(singular, plural) of what a layer left in float is, for the one-line summary."""
    if isinstance(layer, nn.Linear):
        return (f"linear whose input width is not a multiple of {scheme.group_size}",
                f"linears whose input width is not a multiple of {scheme.group_size}")
    if layer.groups > 1 and layer.groups == layer.in_channels:
        return "depthwise convolution", "depthwise convolutions"
    return "convolution", "convolutions"


def quantize_subnet_(module: nn.Module, scheme: QuantScheme | int) -> list[str]:
    """Quantize every linear of `module` in place to the scheme's integer weights with dynamic int8 activations
    (`scheme`: a QuantScheme, or weight bits 32, 8 or 4 for the deployed scheme of that precision).

    Returns the weight layers left in float: one summary line at INFO, each layer at DEBUG."""
    scheme = QuantScheme.of(scheme)
    if not scheme.is_quantized:
        return []
    from torchao.quantization import quantize_

    bits = scheme.weight_bits

    def is_quantizable(child: nn.Module, fqn: str) -> bool:
        return isinstance(child, nn.Linear) and scheme.takes_width(child.in_features)

    quantized = sum(is_quantizable(child, name) for name, child in module.named_modules())
    left_float = float_weight_layers(module, scheme)
    quantize_(module, torchao_config(scheme), filter_fn=is_quantizable)
    layers = dict(module.named_modules())
    kinds = Counter()
    for name in left_float:
        kind = _float_kind(layers[name], scheme)
        kinds[kind] += 1
        log.debug("%d-bit: layer %s stays float (%s)", bits, name, kind[0])
    summary = f"{bits}-bit: {quantized} linear layers quantized"
    if left_float:  # expected, not a problem: the integer kernels take linears only
        what = ", ".join(f"{n} {plural if n > 1 else singular}" for (singular, plural), n in kinds.items())
        summary += f"; {len(left_float)} layers stay float ({what}), named in a bundle's manifest"
    log.info("%s", summary)
    return left_float
