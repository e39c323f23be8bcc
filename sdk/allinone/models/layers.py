"""Layers and checks shared by the model families (conformer.py, wav2vec2.py): the multi-head self-attention
written for XNNPACK, a LayerNorm XNNPACK can take, input validation and padding masks, and the config checks
every elastic model shares. Written once so both families export the same way and refuse the same inputs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from allinone.errors import BadInputError
from allinone.nn.quant import GROUP_SIZE_INT4

__all__ = ["MIN_SAMPLES", "check_elastic_choices", "self_attention", "ExportableLayerNorm", "check_inputs", "masks"]

MIN_SAMPLES = 8000  # 0.5 s at 16 kHz: the shortest input the exported program accepts


def check_elastic_choices(family: str, cfg, fixed_widths: dict[str, int]) -> None:
    """The checks every elastic model config shares: with 4-bit weights, every quantized input width (the
    family's fixed ones, each FFN choice, each head count's attention width) is a multiple of the int4 group
    size (XNNPACK's kernels need it); and the largest depth/FFN/heads choices are the full model's."""
    widths = dict(fixed_widths)
    widths.update({f"ffn_dim {f}": f for f in cfg.ffn_dims})
    widths.update({f"attention width of {h} heads": h * cfg.head_dim for h in cfg.head_choices})
    if 4 in cfg.weight_bits:
        for name, width in widths.items():
            if width % GROUP_SIZE_INT4:
                raise BadInputError(f"{family} config: {name} = {width} is not a multiple of "
                                    f"{GROUP_SIZE_INT4}, which 4-bit weights need")
    if max(cfg.depths) != cfg.n_layers or max(cfg.ffn_dims) != cfg.ffn_dim or max(cfg.head_choices) != cfg.n_heads:
        raise BadInputError(f"{family} config: the largest depth, ffn_dim and heads choices must equal "
                            "n_layers, ffn_dim and n_heads")


def self_attention(x, norm, q_proj, k_proj, v_proj, out_proj, heads, head_dim, attn_mask, dropout, dropout_p):
    """(B, T, D) -> (B, T, D) multi-head self-attention over `heads` heads of `head_dim`."""
    # Reshapes name the time axis -1, never T, and only ever view a contiguous tensor: XNNPACK takes a
    # reshape with one inferred dimension but not one with a symbolic size, and torch.export writes the
    # symbolic size T into a reshape of a transposed (non-contiguous) tensor. `.contiguous().view(-1 ...)`
    # computes the same values as `.reshape`, but keeps the -1, so the whole block stays inside XNNPACK
    # (every op left outside the delegate splits the program, and each piece costs lowering time).
    batch = x.shape[0]
    y = norm(x)
    q = q_proj(y).reshape(batch, -1, heads, head_dim).transpose(1, 2)  # (B, H, T, hd)
    k = k_proj(y).reshape(batch, -1, heads, head_dim).transpose(1, 2)
    v = v_proj(y).reshape(batch, -1, heads, head_dim).transpose(1, 2)
    if attn_mask is None:
        # Unpadded (exported) case: 3-D bmm + softmax, which XNNPACK takes whole; SDPA's decomposition adds
        # guard ops (any/where for fully masked rows) and 4-D matmul adds expands, all outside the delegate.
        q3, k3, v3 = (t.contiguous().view(batch * heads, -1, head_dim) for t in (q, k, v))  # (B*H, T, hd)
        scores = torch.bmm(q3, k3.transpose(1, 2)) * (head_dim ** -0.5)  # (B*H, T, T)
        o = torch.bmm(F.dropout(torch.softmax(scores, dim=-1), dropout_p), v3)  # (B*H, T, hd)
        o = o.view(batch, heads, -1, head_dim)  # (B, H, T, hd)
    else:
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)  # (B, H, T, hd)
    return dropout(out_proj(o.transpose(1, 2).contiguous().view(batch, -1, heads * head_dim)))  # (B, T, D)


class ExportableLayerNorm(nn.LayerNorm):
    """LayerNorm over the last dim computed with a linear (the mean) and elementwise ops.

    XNNPACK has no layer-norm kernel; a LayerNorm left outside the delegate splits the program into many
    small partitions (slower to lower and to run). Averaging through F.linear with a constant 1/D vector
    keeps the whole block inside XNNPACK. Same parameters and state dict as nn.LayerNorm.
    """

    def __init__(self, source: nn.LayerNorm):
        super().__init__(source.normalized_shape, eps=source.eps)
        self.load_state_dict(source.state_dict())
        dim = self.normalized_shape[0]
        self.register_buffer("_averager", torch.full((1, dim), 1.0 / dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - F.linear(x, self._averager)  # (..., D)
        variance = F.linear(centred * centred, self._averager)  # (..., 1)
        return centred * torch.rsqrt(variance + self.eps) * self.weight + self.bias


def check_inputs(waveform: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Validate (B, N) float32 audio and its per-row lengths in samples; return the lengths."""
    if not isinstance(waveform, torch.Tensor) or waveform.dim() != 2:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise BadInputError(f"waveform: expected a (batch, samples) tensor, got shape {shape}")
    if waveform.dtype != torch.float32:
        raise BadInputError(f"waveform: expected float32 samples in [-1, 1], got {waveform.dtype}")
    batch, n = waveform.shape
    if lengths is None:
        lengths = torch.full((batch,), n, dtype=torch.long, device=waveform.device)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise BadInputError(f"lengths: expected shape ({batch},), got {tuple(lengths.shape)}")
    if bool((lengths > n).any()):
        raise BadInputError(f"lengths: {int(lengths.max())} samples is longer than the input ({n} samples)")
    if bool((lengths < MIN_SAMPLES).any()):
        raise BadInputError(f"lengths: {int(lengths.min())} samples is shorter than the minimum {MIN_SAMPLES} (0.5 s)")
    return lengths


def masks(out_lengths: torch.Tensor, time: int):
    """Padding mask (B, T) and attention mask (B, 1, 1, T), built from T (not from lengths.max())."""
    pad_mask = torch.arange(time, device=out_lengths.device).unsqueeze(0) < out_lengths.unsqueeze(1)
    return pad_mask, pad_mask[:, None, None, :]
