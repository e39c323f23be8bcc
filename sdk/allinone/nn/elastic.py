"""Elastic layers: hold the largest system's weights and run any leading slice of them."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from allinone.nn.quant import fake_quantize_activation, fake_quantize_weight

__all__ = ["ElasticLinear"]


class ElasticLinear(nn.Module):
    """A linear layer whose kept inputs, outputs and weight precision are chosen per call.

    Nested systems share the leading `[:out_features, :in_features]` block of one full-size weight.
    With `bits` < 32 the sliced weight is fake-quantized and the input goes through dynamic per-token
    int8 fake quantization, as the deployed torchao/XNNPACK kernel computes it.
    """

    def __init__(self, max_in: int, max_out: int, bias: bool = True):
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        self.weight = nn.Parameter(torch.empty(max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default init

    def sliced(self, in_features: int | None = None, out_features: int | None = None):
        """The kept (weight, bias) as views of the shared parameters."""
        n_in = self.max_in if in_features is None else in_features
        n_out = self.max_out if out_features is None else out_features
        bias = None if self.bias is None else self.bias[:n_out]
        return self.weight[:n_out, :n_in], bias

    def forward(self, x: torch.Tensor, in_features: int | None = None, out_features: int | None = None,
                bits: int = 32) -> torch.Tensor:
        """x: (..., in_features) -> (..., out_features)."""
        weight, bias = self.sliced(in_features, out_features)
        if bits < 32:
            weight = fake_quantize_weight(weight, bits)
            x = fake_quantize_activation(x)
        return F.linear(x, weight, bias)

    def extract(self, in_features: int | None = None, out_features: int | None = None) -> nn.Linear:
        """A plain nn.Linear holding copies of the kept weights (no slicing logic left)."""
        weight, bias = self.sliced(in_features, out_features)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        return linear

    def extra_repr(self) -> str:
        return f"max_in={self.max_in}, max_out={self.max_out}, bias={self.bias is not None}"
