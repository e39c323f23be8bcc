"""The all-in-one Conformer CTC supernet and the plain module a nested system is extracted to.

Every nested system shares the supernet's weights: depth keeps the first k blocks, width keeps the leading
feed-forward units and attention heads, precision fake-quantizes the shared float weights. The block
computation is written once (the `_feed_forward`, `_self_attention` (models/layers.py, shared with
wav2vec2), `_convolution` functions) and used by both the supernet (elastic linears bound to a spec) and the
extracted system (plain `nn.Linear`s).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from allinone.errors import BadInputError
from allinone.models.frontend import FrontendConfig, LogMelFrontend, num_frames
# Shared with wav2vec2.py; imported under this module's former private names, so the code below reads as before.
from allinone.models.layers import MIN_SAMPLES, check_elastic_choices
from allinone.models.layers import ExportableLayerNorm as _ExportableLayerNorm
from allinone.models.layers import check_inputs as _check_inputs
from allinone.models.layers import masks as _masks
from allinone.models.layers import self_attention as _self_attention
from allinone.nn.elastic import ElasticLinear
from allinone.spec import SearchSpace, SubnetSpec

__all__ = ["ConformerConfig", "ConformerSupernet", "ConformerSubnet", "conformer_small", "conformer_tiny",
           "MIN_SAMPLES", "input_length_step"]

# Time strides of the subsampling conv2d layers for each subsampling factor (frequency takes the same strides).
SUBSAMPLING_STRIDES = {4: (2, 2), 6: (2, 3), 8: (2, 2, 2)}


@dataclass(frozen=True)
class ConformerConfig:
    vocab_size: int  # CTC vocabulary including the blank at index 0
    d_model: int = 128  # encoder width (not elastic): a multiple of 32 so 4-bit groups divide it
    n_layers: int = 12  # encoder blocks of the largest system
    n_heads: int = 4  # attention heads of the largest system; head_dim = d_model // n_heads
    ffn_dim: int = 512  # feed-forward hidden units of the largest system
    conv_kernel: int = 15  # depthwise convolution kernel (frames at 25 fps)
    subsampling_channels: int = 64  # channels of the subsampling conv2d layers; float weights, so kept
    # small: they and the frontend constants bound the compression of the smallest systems
    subsampling_factor: int = 4  # time reduction of the conv2d stack: 4 (40 ms frames, characters), 6 or 8
    # (60/80 ms frames, for subword units: fewer frames make every block cheaper)
    dropout: float = 0.1
    depths: tuple[int, ...] = (4, 6, 8, 10, 12)  # elastic depth choices
    ffn_dims: tuple[int, ...] = (128, 256, 384, 512)  # elastic feed-forward widths
    head_choices: tuple[int, ...] = (2, 3, 4)  # elastic head counts
    weight_bits: tuple[int, ...] = (32, 8, 4)
    # True: the Conformer paper's LayerNorm closing every block (post-norm residual stream). False: pre-norm
    # blocks and one shared LayerNorm before the output layer, which deep stacks train through from a short
    # warm-up (docs/benchmarks.md, the CTC plateau); every depth's output still passes one LayerNorm.
    block_output_norm: bool = True
    frontend: FrontendConfig = field(default_factory=FrontendConfig)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def subsampled_freq(self) -> int:
        f = self.frontend.n_mels
        for stride in SUBSAMPLING_STRIDES[self.subsampling_factor]:
            f = (f - 3) // stride + 1
        return f

    @property
    def frame_shift_s(self) -> float:
        """Seconds of audio per output frame (the manifest's io.output.frame_shift_s)."""
        return self.frontend.hop_length * self.subsampling_factor / self.frontend.sample_rate

    def search_space(self) -> SearchSpace:
        return SearchSpace(self.depths, self.ffn_dims, self.head_choices, self.weight_bits)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "ffn_dims", tuple(self.ffn_dims))
        object.__setattr__(self, "head_choices", tuple(self.head_choices))
        object.__setattr__(self, "weight_bits", tuple(self.weight_bits))
        if isinstance(self.frontend, dict):
            object.__setattr__(self, "frontend", FrontendConfig(**self.frontend))
        if self.subsampling_factor not in SUBSAMPLING_STRIDES:
            raise BadInputError(f"conformer config: subsampling_factor must be one of {sorted(SUBSAMPLING_STRIDES)}, "
                                f"got {self.subsampling_factor}")
        if self.d_model % self.n_heads:
            raise BadInputError(f"conformer config: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        # XNNPACK's 4-bit kernels need every quantized input width to be a multiple of the group size.
        check_elastic_choices("conformer", self, {"d_model": self.d_model,
                                                  "subsampling output": self.subsampling_channels * self.subsampled_freq})

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("depths", "ffn_dims", "head_choices", "weight_bits"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ConformerConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise BadInputError(f"conformer config: unknown key(s) {sorted(unknown)}")
        return cls(**data)


def conformer_medium(vocab_size: int, subsampling_factor: int = 4) -> "ConformerSupernet":
    """About 33M parameters: d_model 256, 20 pre-norm blocks, 8 heads of 32, FFN 1152, 40 ms frames (x4) for
    characters. Its largest system costs about 5.4x conformer_small's MACs per second of audio and its smallest
    (2 blocks, FFN 256, 2 heads) about a thirteenth of its largest: real device budgets bind in between. Pre-norm
    blocks with one final LayerNorm, because the post-norm stack stayed on the CTC plateau (docs/benchmarks.md)."""
    return ConformerSupernet(ConformerConfig(
        vocab_size=vocab_size, d_model=256, n_layers=20, n_heads=8, ffn_dim=1152, conv_kernel=15,
        subsampling_channels=64, subsampling_factor=subsampling_factor, dropout=0.1, block_output_norm=False,
        depths=(2, 4, 8, 12, 16, 20), ffn_dims=(256, 512, 768, 1152), head_choices=(2, 4, 8)))


def conformer_small(vocab_size: int, subsampling_factor: int = 4) -> "ConformerSupernet":
    """About 5M parameters: d_model 128, 12 blocks, 4 heads of 32, FFN 512 — sized to train on 2 CPU cores
    (d_model 192 with head_dim 48 would leave only 2 or 4 heads at 4-bit-compatible widths)."""
    return ConformerSupernet(ConformerConfig(vocab_size=vocab_size, subsampling_factor=subsampling_factor))


def conformer_tiny(vocab_size: int, subsampling_factor: int = 4) -> "ConformerSupernet":
    """A few hundred thousand parameters, for tests: d_model 64, 2 blocks, 2 heads of 32, FFN 128."""
    return ConformerSupernet(ConformerConfig(
        vocab_size=vocab_size, d_model=64, n_layers=2, n_heads=2, ffn_dim=128, conv_kernel=7,
        subsampling_channels=32, subsampling_factor=subsampling_factor, dropout=0.0, depths=(1, 2),
        ffn_dims=(64, 128), head_choices=(1, 2)))


# ---- the block computation, shared by the supernet and extracted systems ----

def _sinusoidal_positions(length: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """(T, D) absolute sinusoidal position encoding computed in-graph (no length-limited table)."""
    position = torch.arange(length, device=like.device, dtype=like.dtype).unsqueeze(1)  # (T, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=like.device, dtype=like.dtype) * (-math.log(10000.0) / dim))
    angle = position * inv_freq  # (T, D/2)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).reshape(-1, dim)


def _feed_forward(x, norm, up, down, dropout):
    """(B, T, D) -> (B, T, D): LayerNorm, up-projection, SiLU, down-projection."""
    return dropout(down(dropout(F.silu(up(norm(x))))))


def _convolution(x, norm, pointwise_glu, depthwise, conv_norm, pointwise_out, pad_mask, dropout):
    """(B, T, D) -> (B, T, D): pointwise GLU, depthwise conv over time, LayerNorm, SiLU, pointwise."""
    y = pointwise_glu(norm(x))  # (B, T, D)
    if pad_mask is not None:  # padded frames must not leak into real ones through the kernel
        y = y.masked_fill(~pad_mask.unsqueeze(-1), 0.0)
    y = depthwise(y.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
    return dropout(pointwise_out(F.silu(conv_norm(y))))


class _GatedPointwise(nn.Module):
    """GLU(linear(x)) with the value and gate halves as two linears, so no tensor is sliced in two
    (XNNPACK cannot slice a dynamic-length tensor). Same outputs as F.glu over one (2D, D) linear."""

    def __init__(self, source: nn.Linear):
        super().__init__()
        half = source.out_features // 2
        self.value, self.gate = nn.Linear(source.in_features, half), nn.Linear(source.in_features, half)
        with torch.no_grad():
            self.value.weight.copy_(source.weight[:half]), self.value.bias.copy_(source.bias[:half])
            self.gate.weight.copy_(source.weight[half:]), self.gate.bias.copy_(source.bias[half:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x) * torch.sigmoid(self.gate(x))  # (..., D)


def input_length_step(cfg: "ConformerConfig") -> tuple[int, int]:
    """(step, offset): the audio lengths whose every sample reaches an output frame are offset + k * step
    (k >= 1), one output frame apart. A longer input's extra samples (under `step`) change no output, which
    lets the exported program's length be linear in k (a cheaper lowering, docs/formats.md 'Bundle')."""
    front = cfg.frontend

    def shortest_input(frames_out: int) -> int:
        frames = frames_out
        for stride in reversed(SUBSAMPLING_STRIDES[cfg.subsampling_factor]):
            frames = (frames - 1) * stride + 3  # kernel-3 convolutions, no padding
        return (frames - 1) * front.hop_length + front.n_fft

    step = shortest_input(2) - shortest_input(1)
    return step, shortest_input(1) - step


def _subsampled_lengths(frame_lengths: torch.Tensor, factor: int) -> torch.Tensor:
    """Frames after the subsampling stack's kernel-3 convolutions (no padding)."""
    for stride in SUBSAMPLING_STRIDES[factor]:
        frame_lengths = (frame_lengths - 3) // stride + 1
    return frame_lengths


class _ConvSubsampling(nn.Module):
    """(B, T, F) log-mel -> (B, T', C * F') with kernel-3 conv2d + ReLU layers (time reduced x4, x6 or x8)."""

    def __init__(self, channels: int, factor: int = 4):
        super().__init__()
        strides = SUBSAMPLING_STRIDES[factor]
        self.conv1 = nn.Conv2d(1, channels, kernel_size=3, stride=strides[0])
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=strides[1])
        if len(strides) > 2:  # x8: a third stride-2 layer (conv1/conv2 keep the names of x4 checkpoints)
            self.conv3 = nn.Conv2d(channels, channels, kernel_size=3, stride=strides[2])

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # Views of contiguous tensors with time as -1 rather than unsqueeze(1) / reshape of a transposed
        # tensor: XNNPACK takes these (see _self_attention), so the frontend and subsampling join the
        # encoder's partition instead of splitting the program.
        batch, _, n_mels = feats.shape
        y = F.relu(self.conv2(F.relu(self.conv1(feats.contiguous().view(batch, 1, -1, n_mels)))))  # (B, C, T', F')
        if hasattr(self, "conv3"):
            y = F.relu(self.conv3(y))  # (B, C, T'', F'')
        channels, freq = y.shape[1], y.shape[3]
        return y.transpose(1, 2).contiguous().view(batch, -1, channels * freq)  # (B, T', C * F')


class _Block(nn.Module):
    """Parameters of one Conformer block; the supernet holds elastic linears, an extracted system plain ones."""

    def __init__(self, d_model: int, conv_kernel: int, dropout: float, linear, output_norm: bool = True):
        super().__init__()
        self.ffn1_norm, self.attn_norm, self.conv_norm_in = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.conv_norm_mid, self.ffn2_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.out_norm = nn.LayerNorm(d_model) if output_norm else nn.Identity()
        self.ffn1_up, self.ffn1_down = linear("ffn1_up"), linear("ffn1_down")
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = linear("q"), linear("k"), linear("v"), linear("out")
        self.conv_pointwise_in, self.conv_pointwise_out = linear("pw_in"), linear("pw_out")
        self.conv_depthwise = nn.Conv1d(d_model, d_model, conv_kernel, padding=conv_kernel // 2, groups=d_model)
        self.ffn2_up, self.ffn2_down = linear("ffn2_up"), linear("ffn2_down")
        self.dropout = nn.Dropout(dropout)

    def run(self, x, lin, heads, head_dim, attn_mask, pad_mask):
        """x: (B, T, D). `lin(name)` returns the callable applying that linear for this system."""
        p = self.dropout.p if self.training else 0.0
        x = x + 0.5 * _feed_forward(x, self.ffn1_norm, lin("ffn1_up"), lin("ffn1_down"), self.dropout)
        x = x + _self_attention(x, self.attn_norm, lin("q"), lin("k"), lin("v"), lin("out"), heads, head_dim,
                                attn_mask, self.dropout, p)
        x = x + _convolution(x, self.conv_norm_in, lin("glu"), self.conv_depthwise, self.conv_norm_mid,
                             lin("pw_out"), pad_mask, self.dropout)
        x = x + 0.5 * _feed_forward(x, self.ffn2_norm, lin("ffn2_up"), lin("ffn2_down"), self.dropout)
        return self.out_norm(x)


_LINEAR_ATTR = {"ffn1_up": "ffn1_up", "ffn1_down": "ffn1_down", "q": "q_proj", "k": "k_proj", "v": "v_proj",
                "out": "out_proj", "pw_in": "conv_pointwise_in", "pw_out": "conv_pointwise_out",
                "ffn2_up": "ffn2_up", "ffn2_down": "ffn2_down"}


class ConformerSupernet(nn.Module):
    """All-in-one Conformer CTC model. `model(waveform, lengths, spec)` runs the nested system `spec`.

    waveform: (B, N) float32, 16 kHz, in [-1, 1]; lengths: (B,) valid samples per row (None = all N).
    Returns log_probs (B, T, V) (CTC blank = 0, T = frames after x4/x6/x8 subsampling) and out_lengths (B,).
    """

    family = "conformer"

    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        self.cfg = cfg
        d, f = cfg.d_model, cfg.ffn_dim
        shapes = {"ffn1_up": (d, f), "ffn1_down": (f, d), "ffn2_up": (d, f), "ffn2_down": (f, d),
                  "q": (d, d), "k": (d, d), "v": (d, d), "out": (d, d), "pw_in": (d, 2 * d), "pw_out": (d, d)}
        self.frontend = LogMelFrontend(cfg.frontend)
        self.subsampling = _ConvSubsampling(cfg.subsampling_channels, cfg.subsampling_factor)
        self.input_proj = ElasticLinear(cfg.subsampling_channels * cfg.subsampled_freq, d)
        self.blocks = nn.ModuleList(
            _Block(d, cfg.conv_kernel, cfg.dropout, lambda name: ElasticLinear(*shapes[name]), cfg.block_output_norm)
            for _ in range(cfg.n_layers))
        # Pre-norm blocks leave the residual stream unnormalised: one LayerNorm, shared by every depth, closes it.
        self.final_norm = nn.Identity() if cfg.block_output_norm else nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = ElasticLinear(d, cfg.vocab_size)

    @property
    def search_space(self) -> SearchSpace:
        return self.cfg.search_space()

    @property
    def frame_shift_s(self) -> float:
        return self.cfg.frame_shift_s

    @property
    def input_length_step(self) -> tuple[int, int]:
        """(step, offset) of the input lengths the exported program takes (`input_length_step`)."""
        return input_length_step(self.cfg)

    def _linear_for(self, block: _Block, spec: SubnetSpec):
        """name -> callable running that elastic linear at the spec's width and precision."""
        d, f, a = self.cfg.d_model, spec.ffn_dim, spec.heads * self.cfg.head_dim
        dims = {"ffn1_up": (d, f), "ffn1_down": (f, d), "ffn2_up": (d, f), "ffn2_down": (f, d),
                "q": (d, a), "k": (d, a), "v": (d, a), "out": (a, d), "pw_in": (d, 2 * d), "pw_out": (d, d)}

        def lin(name):
            if name == "glu":
                pointwise = lin("pw_in")
                return lambda y: F.glu(pointwise(y), dim=-1)
            layer = getattr(block, _LINEAR_ATTR[name])
            return partial(layer, in_features=dims[name][0], out_features=dims[name][1], bits=spec.weight_bits)
        return lin

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None, spec: SubnetSpec):
        self.search_space.validate(spec)
        return self.forward_front(*self.front(waveform, lengths), spec)

    def front(self, waveform: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The work every nested system shares (log-mel and the float subsampling convolutions), so a
        training step over several systems computes it once: (B, N) -> ((B, T', C * F'), out_lengths (B,))."""
        lengths = _check_inputs(waveform, lengths)
        feats = self.frontend(waveform)  # (B, T, F)
        out_lengths = _subsampled_lengths(num_frames(lengths, self.cfg.frontend), self.cfg.subsampling_factor)
        return self.subsampling(feats), out_lengths  # (B, T', C * F'), (B,)

    def forward_front(self, shared: torch.Tensor, out_lengths: torch.Tensor, spec: SubnetSpec):
        """The rest of system `spec` on the output of `front`; returns (log_probs (B, T', V), out_lengths)."""
        bits = spec.weight_bits
        x = self.input_proj(shared, bits=bits)  # (B, T', D)
        x = self.dropout(x + _sinusoidal_positions(x.shape[1], x.shape[2], x))
        pad_mask, attn_mask = _masks(out_lengths, x.shape[1])
        for block in self.blocks[: spec.depth]:
            x = block.run(x, self._linear_for(block, spec), spec.heads, self.cfg.head_dim, attn_mask, pad_mask)
        logits = self.output(self.final_norm(x), bits=bits)  # (B, T', V)
        return F.log_softmax(logits, dim=-1), out_lengths

    def zero_init_residual(self) -> None:
        """Zero the last linear of every residual branch (both FFNs, attention, convolution). Each block then
        starts as its output LayerNorm, which is the identity on the previous block's normalised output, so
        every depth starts as the same function and a deeper system begins from what the shallow ones learn
        (SkipInit/Fixup-style; measured in docs/benchmarks.md). The branch inputs still get gradients once
        the outputs move off zero, after the first step."""
        with torch.no_grad():
            for block in self.blocks:
                for name in ("ffn1_down", "out_proj", "conv_pointwise_out", "ffn2_down"):
                    layer = getattr(block, name)
                    layer.weight.zero_()
                    layer.bias.zero_()

    def extract_subnet(self, spec: SubnetSpec) -> "ConformerSubnet":
        """A plain module holding copies of only the weights `spec` keeps (float; quantize it with torchao)."""
        self.search_space.validate(spec)
        return ConformerSubnet(self, spec).eval()


class ConformerSubnet(nn.Module):
    """One nested system as a static module: plain nn.Linear / LayerNorm / Conv layers, no spec logic.

    forward(waveform (B, N), lengths (B,) or None) -> (log_probs (B, T, V), out_lengths (B,)).
    With lengths None every row is full length and no masks are built (the exported, batch-1 case).
    """

    def __init__(self, supernet: ConformerSupernet, spec: SubnetSpec):
        super().__init__()
        cfg = supernet.cfg
        self.spec, self.frontend_cfg = spec, cfg.frontend
        self.heads, self.head_dim = spec.heads, cfg.head_dim
        d, f, a = cfg.d_model, spec.ffn_dim, spec.heads * cfg.head_dim
        dims = {"ffn1_up": (d, f), "ffn1_down": (f, d), "ffn2_up": (d, f), "ffn2_down": (f, d),
                "q": (d, a), "k": (d, a), "v": (d, a), "out": (a, d), "pw_in": (d, 2 * d), "pw_out": (d, d)}
        self.frontend = LogMelFrontend(cfg.frontend, persistent_constants=True)
        self.frontend.load_state_dict(supernet.frontend.state_dict(), strict=False)
        self.subsampling_factor = cfg.subsampling_factor
        self.subsampling = _ConvSubsampling(cfg.subsampling_channels, cfg.subsampling_factor)
        self.subsampling.load_state_dict(supernet.subsampling.state_dict())
        self.input_proj = supernet.input_proj.extract()
        blocks = []
        for source in supernet.blocks[: spec.depth]:
            block = _Block(d, cfg.conv_kernel, 0.0,
                           lambda name, src=source: getattr(src, _LINEAR_ATTR[name]).extract(*dims[name]),
                           cfg.block_output_norm)
            shared = {k: v for k, v in source.state_dict().items() if not k.split(".")[0] in _LINEAR_ATTR.values()}
            block.load_state_dict(shared, strict=False)
            for name, child in list(block.named_children()):
                if isinstance(child, nn.LayerNorm):
                    setattr(block, name, _ExportableLayerNorm(child))
            block.conv_pointwise_in = _GatedPointwise(block.conv_pointwise_in)
            blocks.append(block)
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = (nn.Identity() if cfg.block_output_norm
                           else _ExportableLayerNorm(supernet.final_norm))
        self.output = supernet.output.extract()

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None):
        # The frame count from the input's length, not from an intermediate's shape: exported, the position
        # table is then computed before the network, which stays one XNNPACK partition.
        frames = _subsampled_lengths(num_frames(waveform.shape[1], self.frontend_cfg), self.subsampling_factor)
        feats = self.frontend(waveform)  # (B, T, F)
        x = self.input_proj(self.subsampling(feats))  # (B, T', D)
        x = x + _sinusoidal_positions(frames, x.shape[2], x)
        if lengths is None:
            out_lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
            pad_mask = attn_mask = None
        else:
            out_lengths = _subsampled_lengths(num_frames(lengths, self.frontend_cfg), self.subsampling_factor)
            pad_mask, attn_mask = _masks(out_lengths, x.shape[1])
        for block in self.blocks:
            x = block.run(x, lambda name, b=block: getattr(b, _LINEAR_ATTR["pw_in" if name == "glu" else name]),
                          self.heads, self.head_dim, attn_mask, pad_mask)
        return F.log_softmax(self.output(self.final_norm(x)), dim=-1), out_lengths
