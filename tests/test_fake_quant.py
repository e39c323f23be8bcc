"""Fake quantization (`allinone.nn.quant`) gives bit-for-bit what torchao's own primitives give, which are what
the deployed torchao config computes: the trained model must be the deployed model."""

import pytest
import torch

from allinone.nn import quant
from allinone.quant_scheme import QuantScheme


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit patterns (so +0.0 and -0.0 differ, and NaNs compare)."""
    ints = {torch.float32: torch.int32, torch.bfloat16: torch.int16}[a.dtype]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(ints), b.view(ints))


def awkward(shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    """Values of mixed scale with rows that are all zero, all positive, all negative and one huge outlier."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.logspace(-4, 1, shape[-1])[torch.randperm(shape[-1], generator=g)]
    rows = x.reshape(-1, shape[-1])
    if len(rows) >= 5:
        rows[0] = 0.0
        rows[1] = rows[1].abs()
        rows[2] = -rows[2].abs()
        rows[3, 5] = 1e4
        rows[4] = 1e-30  # below the scale's floor (smallest normal)
    return x.to(dtype)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("shape", [(64, 256), (96, 1152), (8, 32)])
def test_weight_matches_torchao(bits, shape):
    scheme = QuantScheme.for_bits(bits)
    for seed in range(3):
        weight = awkward(shape, seed=seed)
        assert same_bits(quant._quant_dequant_weight(weight, scheme), quant.torchao_quant_dequant_weight(weight, scheme))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 50, 256), (2, 7, 1152), (16, 96)])
def test_activation_matches_torchao(dtype, shape):
    for seed in range(3):
        x = awkward(shape, dtype, seed)
        assert same_bits(quant._quant_dequant_activation(x), quant.torchao_quant_dequant_activation(x))


def test_straight_through_gradient():
    weight = awkward((16, 64)).requires_grad_()
    x = awkward((8, 64), seed=1).requires_grad_()
    x_q, weight_q = quant.fake_quantize_activation(x), quant.fake_quantize_weight(weight, 4)
    assert not torch.equal(weight_q, weight) and not torch.equal(x_q, x)  # the forward did quantize
    torch.nn.functional.linear(x_q, weight_q).sum().backward()
    # the gradient of sum(x_q W_q^T) reaches the float tensors unchanged (straight through the rounding)
    assert torch.equal(weight.grad, x_q.detach().sum(0).expand(16, 64))
    assert torch.equal(x.grad, weight_q.detach().sum(0).expand(8, 64))
