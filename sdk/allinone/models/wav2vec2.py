"""The all-in-one wav2vec2.0 CTC supernet and the plain module a nested system is extracted to.

Architecture as Hugging Face's `Wav2Vec2ForCTC` (so an imported model gives the same log-probs): per-utterance
waveform normalisation, a convolutional feature encoder (group-norm or layer-norm variant), feature projection,
a convolutional positional embedding, a post-norm (`do_stable_layer_norm=False`) or pre-norm Transformer
encoder and a linear CTC head. Nesting as the Conformer's: depth keeps the first k layers, width the leading
feed-forward units and attention heads, precision fake-quantizes the shared weights of every linear. The
layer computation (`_Layer.run`) is written once for the supernet and the extracted system.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from allinone.errors import BadInputError
from allinone.models.layers import (MIN_SAMPLES, ExportableLayerNorm, check_elastic_choices, check_inputs, masks,
                                    self_attention)
from allinone.nn.elastic import ElasticLinear
from allinone.spec import SearchSpace, SubnetSpec

__all__ = ["WaveformFrontend", "Wav2Vec2Config", "Wav2Vec2Supernet", "Wav2Vec2Subnet", "wav2vec2_tiny",
           "wav2vec2_small", "MIN_SAMPLES"]

# Hugging Face activation names -> functions (`gelu` is the exact erf form, `gelu_new` the tanh one).
_ACTIVATIONS = {"gelu": F.gelu, "gelu_new": partial(F.gelu, approximate="tanh"),
                "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"), "relu": F.relu}


@dataclass(frozen=True)
class WaveformFrontend:
    """What the program does to raw samples before the feature encoder (inside the exported program)."""

    sample_rate: int = 16000  # Hz; the .pte signature fixes 16 kHz input
    do_normalize: bool = True  # zero mean, unit variance per utterance (HF Wav2Vec2FeatureExtractor.do_normalize)
    eps: float = 1e-7  # HF's zero_mean_unit_var_norm: (x - mean) / sqrt(var + 1e-7)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Wav2Vec2Config:
    vocab_size: int  # CTC vocabulary including the blank at index 0
    hidden_size: int = 768  # encoder width (not elastic)
    n_layers: int = 12  # Transformer layers of the largest system
    n_heads: int = 12  # attention heads of the largest system; head_dim = hidden_size // n_heads
    ffn_dim: int = 3072  # feed-forward units of the largest system (HF intermediate_size)
    conv_dim: tuple[int, ...] = (512,) * 7  # feature encoder channels per conv layer
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)  # product 320: one frame per 20 ms
    conv_bias: bool = False
    feat_extract_norm: str = "group"  # "group": one group norm after the first conv; "layer": a LayerNorm each
    feat_extract_activation: str = "gelu"
    num_conv_pos_embeddings: int = 128  # kernel of the convolutional positional embedding
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False  # False: post-norm layers (wav2vec2-base); True: pre-norm (large-lv60)
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1  # hidden, attention-output and feed-forward dropout while training
    depths: tuple[int, ...] = (6, 9, 12)  # elastic depth choices
    ffn_dims: tuple[int, ...] = (768, 1536, 2304, 3072)  # elastic feed-forward widths
    head_choices: tuple[int, ...] = (6, 9, 12)  # elastic head counts
    weight_bits: tuple[int, ...] = (32, 8, 4)
    frontend: WaveformFrontend = field(default_factory=WaveformFrontend)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    def search_space(self) -> SearchSpace:
        return SearchSpace(self.depths, self.ffn_dims, self.head_choices, self.weight_bits)

    def __post_init__(self) -> None:
        for key in ("conv_dim", "conv_kernel", "conv_stride", "depths", "ffn_dims", "head_choices", "weight_bits"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if isinstance(self.frontend, dict):
            object.__setattr__(self, "frontend", WaveformFrontend(**self.frontend))
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise BadInputError("wav2vec2 config: conv_dim, conv_kernel and conv_stride must have the same length")
        if self.feat_extract_norm not in ("group", "layer"):
            raise BadInputError(f"wav2vec2 config: feat_extract_norm {self.feat_extract_norm!r} is not supported "
                                "(expected 'group' or 'layer')")
        for key in ("hidden_act", "feat_extract_activation"):
            if getattr(self, key) not in _ACTIVATIONS:
                raise BadInputError(f"wav2vec2 config: {key} {getattr(self, key)!r} is not supported "
                                    f"(expected one of {sorted(_ACTIVATIONS)})")
        if self.hidden_size % self.n_heads or self.hidden_size % self.num_conv_pos_embedding_groups:
            raise BadInputError(f"wav2vec2 config: hidden_size {self.hidden_size} is not divisible by n_heads "
                                f"{self.n_heads} and num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}")
        check_elastic_choices("wav2vec2", self, {"hidden_size": self.hidden_size, "conv_dim[-1]": self.conv_dim[-1]})

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("conv_dim", "conv_kernel", "conv_stride", "depths", "ffn_dims", "head_choices", "weight_bits"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Wav2Vec2Config":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise BadInputError(f"wav2vec2 config: unknown key(s) {sorted(unknown)}")
        return cls(**data)


def wav2vec2_small(vocab_size: int) -> "Wav2Vec2Supernet":
    """About 4M parameters sized for 2 CPU cores: hidden 192 (6 heads of 32), 8 layers, FFN 768, and a
    7-layer feature encoder of 128 channels (the encoder's convolutions dominate the CPU cost)."""
    return Wav2Vec2Supernet(Wav2Vec2Config(
        vocab_size=vocab_size, hidden_size=192, n_layers=8, n_heads=6, ffn_dim=768, conv_dim=(128,) * 7,
        num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16, depths=(4, 6, 8),
        ffn_dims=(192, 384, 576, 768), head_choices=(3, 4, 6)))


def wav2vec2_tiny(vocab_size: int) -> "Wav2Vec2Supernet":
    """Tens of thousands of parameters, for tests: hidden 64, 2 layers, 2 heads of 32, FFN 128."""
    return Wav2Vec2Supernet(Wav2Vec2Config(
        vocab_size=vocab_size, hidden_size=64, n_layers=2, n_heads=2, ffn_dim=128, conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, dropout=0.0, depths=(1, 2),
        ffn_dims=(64, 128), head_choices=(1, 2)))


# ---- pieces shared by the supernet and extracted systems ----

def _normalize(waveform: torch.Tensor, lengths: torch.Tensor | None, eps: float) -> torch.Tensor:
    """(B, N) -> (B, N) zero mean, unit (population) variance over each row's valid samples."""
    if lengths is None:
        mean = waveform.mean(dim=1, keepdim=True)  # (B, 1)
        centred = waveform - mean
        return centred * torch.rsqrt((centred * centred).mean(dim=1, keepdim=True) + eps)
    valid = (torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None]).float()  # (B, N)
    count = lengths[:, None].float()
    mean = (waveform * valid).sum(1, keepdim=True) / count
    centred = (waveform - mean) * valid
    return centred * torch.rsqrt((centred * centred).sum(1, keepdim=True) / count + eps)


def _conv_lengths(lengths: torch.Tensor, kernels, strides) -> torch.Tensor:
    """Frames after each unpadded strided convolution of the feature encoder."""
    for k, s in zip(kernels, strides):
        lengths = (lengths - k) // s + 1
    return lengths


class _TimeNorm(nn.Module):
    """HF's first-layer GroupNorm(C groups of 1 channel): each channel normalised over time, with padded frames
    left out of the statistics (so a padded batch row gives the outputs it gives alone). Same state dict."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, C, T); frame_mask: (B, 1, T) float, 1 = valid frame, or None (every frame valid)."""
        if frame_mask is None:
            mean = x.mean(dim=-1, keepdim=True)  # (B, C, 1)
            var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
        else:
            count = frame_mask.sum(-1, keepdim=True)  # (B, 1, 1)
            mean = (x * frame_mask).sum(-1, keepdim=True) / count
            var = (((x - mean) * frame_mask) ** 2).sum(-1, keepdim=True) / count
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None] + self.bias[:, None]


class _FeatureEncoder(nn.Module):
    """(B, N) samples -> (B, T, C) frames: strided Conv1d stack with the config's norm and activation."""

    def __init__(self, cfg: Wav2Vec2Config):
        super().__init__()
        self.cfg = cfg
        channels = (1, *cfg.conv_dim)
        self.convs = nn.ModuleList(nn.Conv1d(channels[i], channels[i + 1], k, stride=s, bias=cfg.conv_bias)
                                   for i, (k, s) in enumerate(zip(cfg.conv_kernel, cfg.conv_stride)))
        if cfg.feat_extract_norm == "group":
            self.norms = nn.ModuleList([_TimeNorm(cfg.conv_dim[0])])
        else:
            self.norms = nn.ModuleList(nn.LayerNorm(c) for c in cfg.conv_dim)
        self.act = _ACTIVATIONS[cfg.feat_extract_activation]

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        x = waveform.unsqueeze(1)  # (B, 1, N)
        for i, conv in enumerate(self.convs):
            x = conv(x)  # (B, C, T_i)
            if self.cfg.feat_extract_norm == "group" and i == 0:
                mask = None
                if lengths is not None:
                    valid = _conv_lengths(lengths, self.cfg.conv_kernel[:1], self.cfg.conv_stride[:1])
                    mask = (torch.arange(x.shape[-1], device=x.device)[None, :] < valid[:, None]).float()[:, None]
                x = self.norms[0](x, mask)
            elif self.cfg.feat_extract_norm == "layer":
                x = self.norms[i](x.transpose(1, 2)).transpose(1, 2)
            x = self.act(x)
        return x.transpose(1, 2)  # (B, T, C)


class _PositionalConv(nn.Module):
    """(B, T, D) -> (B, T, D): grouped conv over time + activation (HF's weight norm folded into the weight).

    HF pads k//2 on both sides and drops the last frame for an even kernel; padding k//2 left and k//2 - 1 right
    computes the same frames without slicing a dynamic-length tensor (which XNNPACK cannot take)."""

    def __init__(self, dim: int, kernel: int, groups: int, act):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, groups=groups)
        self.pad = (kernel // 2, kernel // 2 - 1 if kernel % 2 == 0 else kernel // 2)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.pad(x.transpose(1, 2), self.pad))  # (B, D, T)
        return self.act(y).transpose(1, 2)


class _Layer(nn.Module):
    """Parameters of one Transformer layer; the supernet holds elastic linears, an extracted system plain ones."""

    def __init__(self, cfg: Wav2Vec2Config, linear):
        super().__init__()
        d = cfg.hidden_size
        self.attn_norm, self.ffn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps), nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = linear("q"), linear("k"), linear("v"), linear("out")
        self.ffn_up, self.ffn_down = linear("ffn_up"), linear("ffn_down")
        self.dropout = nn.Dropout(cfg.dropout)
        self.act, self.pre_norm = _ACTIVATIONS[cfg.hidden_act], cfg.do_stable_layer_norm

    def run(self, x, lin, heads, head_dim, attn_mask):
        """x: (B, T, D). `lin(name)` returns the callable applying that linear for this system."""
        p = self.dropout.p if self.training else 0.0
        attn_in_norm = self.attn_norm if self.pre_norm else nn.Identity()
        attn = self_attention(x, attn_in_norm, lin("q"), lin("k"), lin("v"), lin("out"), heads, head_dim,
                              attn_mask, self.dropout, p)  # (B, T, D)
        if self.pre_norm:
            x = x + attn
            return x + self._feed_forward(self.ffn_norm(x), lin)
        x = self.attn_norm(x + attn)
        return self.ffn_norm(x + self._feed_forward(x, lin))

    def _feed_forward(self, x, lin):
        """(B, T, D) -> (B, T, D): up-projection, activation, down-projection (HF Wav2Vec2FeedForward)."""
        return self.dropout(lin("ffn_down")(self.dropout(self.act(lin("ffn_up")(x)))))


_LINEAR_ATTR = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj", "ffn_up": "ffn_up",
                "ffn_down": "ffn_down"}


def _linear_dims(cfg: Wav2Vec2Config, spec: SubnetSpec) -> dict[str, tuple[int, int]]:
    d, f, a = cfg.hidden_size, spec.ffn_dim, spec.heads * cfg.head_dim
    return {"q": (d, a), "k": (d, a), "v": (d, a), "out": (a, d), "ffn_up": (d, f), "ffn_down": (f, d)}


class Wav2Vec2Supernet(nn.Module):
    """All-in-one wav2vec2.0 CTC model. `model(waveform, lengths, spec)` runs the nested system `spec`.

    waveform: (B, N) float32, 16 kHz, in [-1, 1]; lengths: (B,) valid samples per row (None = all N).
    Returns log_probs (B, T, V) (CTC blank = 0, T = frames of 20 ms) and out_lengths (B,).
    """

    family = "wav2vec2"

    def __init__(self, cfg: Wav2Vec2Config):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.feature_encoder = _FeatureEncoder(cfg)
        self.feature_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.feature_proj = ElasticLinear(cfg.conv_dim[-1], d)
        self.pos_conv = _PositionalConv(d, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups,
                                        _ACTIVATIONS[cfg.feat_extract_activation])
        self.encoder_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)  # before the layers (post-norm) or after
        shapes = _linear_dims(cfg, cfg.search_space().largest())
        self.layers = nn.ModuleList(_Layer(cfg, lambda name: ElasticLinear(*shapes[name]))
                                    for _ in range(cfg.n_layers))
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = ElasticLinear(d, cfg.vocab_size)

    @property
    def search_space(self) -> SearchSpace:
        return self.cfg.search_space()

    @property
    def frame_shift_s(self) -> float:
        """Seconds of audio between output frames (the feature encoder's total stride)."""
        stride = 1
        for s in self.cfg.conv_stride:
            stride *= s
        return stride / self.cfg.frontend.sample_rate

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None, spec: SubnetSpec):
        self.search_space.validate(spec)
        lengths = check_inputs(waveform, lengths)
        bits, cfg = spec.weight_bits, self.cfg
        if cfg.frontend.do_normalize:
            waveform = _normalize(waveform, lengths, cfg.frontend.eps)
        feats = self.feature_encoder(waveform, lengths)  # (B, T, C)
        x = self.dropout(self.feature_proj(self.feature_norm(feats), bits=bits))  # (B, T, D)
        out_lengths = _conv_lengths(lengths, cfg.conv_kernel, cfg.conv_stride)
        pad_mask, attn_mask = masks(out_lengths, x.shape[1])
        x = x.masked_fill(~pad_mask.unsqueeze(-1), 0.0)  # padding must not reach real frames via the pos conv
        x = x + self.pos_conv(x)
        if not cfg.do_stable_layer_norm:
            x = self.encoder_norm(x)
        x = self.dropout(x)
        dims = _linear_dims(cfg, spec)
        for layer in self.layers[: spec.depth]:
            def lin(name, layer=layer):
                return partial(getattr(layer, _LINEAR_ATTR[name]), in_features=dims[name][0],
                               out_features=dims[name][1], bits=bits)
            x = layer.run(x, lin, spec.heads, cfg.head_dim, attn_mask)
        if cfg.do_stable_layer_norm:
            x = self.encoder_norm(x)
        logits = self.output(self.dropout(x), bits=bits)  # (B, T, V)
        return F.log_softmax(logits, dim=-1), out_lengths

    def extract_subnet(self, spec: SubnetSpec) -> "Wav2Vec2Subnet":
        """A plain module holding copies of only the weights `spec` keeps (float; quantize it with torchao)."""
        self.search_space.validate(spec)
        return Wav2Vec2Subnet(self, spec).eval()


def _exportable_norms_(module: nn.Module) -> None:
    """Swap every nn.LayerNorm child of `module` (recursively) for the XNNPACK-friendly equivalent."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.LayerNorm) and not isinstance(child, ExportableLayerNorm):
            setattr(module, name, ExportableLayerNorm(child))
        else:
            _exportable_norms_(child)


class Wav2Vec2Subnet(nn.Module):
    """One nested system as a static module: plain nn.Linear / LayerNorm / Conv layers, no spec logic.

    forward(waveform (B, N), lengths (B,) or None) -> (log_probs (B, T, V), out_lengths (B,)).
    With lengths None every row is full length and no masks are built (the exported, batch-1 case).
    """

    def __init__(self, supernet: Wav2Vec2Supernet, spec: SubnetSpec):
        super().__init__()
        cfg = self.cfg = supernet.cfg
        self.spec, self.heads = spec, spec.heads
        dims = _linear_dims(cfg, spec)
        self.feature_encoder = _FeatureEncoder(cfg)
        self.feature_encoder.load_state_dict(supernet.feature_encoder.state_dict())
        self.feature_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.feature_norm.load_state_dict(supernet.feature_norm.state_dict())
        self.feature_proj = supernet.feature_proj.extract()
        self.pos_conv = _PositionalConv(cfg.hidden_size, cfg.num_conv_pos_embeddings,
                                        cfg.num_conv_pos_embedding_groups, _ACTIVATIONS[cfg.feat_extract_activation])
        self.pos_conv.load_state_dict(supernet.pos_conv.state_dict())
        self.encoder_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder_norm.load_state_dict(supernet.encoder_norm.state_dict())
        layers = []
        for source in supernet.layers[: spec.depth]:
            layer = _Layer(cfg, lambda name, src=source: getattr(src, _LINEAR_ATTR[name]).extract(*dims[name]))
            layer.attn_norm.load_state_dict(source.attn_norm.state_dict())
            layer.ffn_norm.load_state_dict(source.ffn_norm.state_dict())
            layer.dropout.p = 0.0
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.output = supernet.output.extract()
        _exportable_norms_(self)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None):
        cfg = self.cfg
        if cfg.frontend.do_normalize:
            waveform = _normalize(waveform, lengths, cfg.frontend.eps)
        x = self.feature_proj(self.feature_norm(self.feature_encoder(waveform, lengths)))  # (B, T, D)
        if lengths is None:
            out_lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
            attn_mask = None
        else:
            out_lengths = _conv_lengths(lengths, cfg.conv_kernel, cfg.conv_stride)
            pad_mask, attn_mask = masks(out_lengths, x.shape[1])
            x = x.masked_fill(~pad_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x)
        if not cfg.do_stable_layer_norm:
            x = self.encoder_norm(x)
        for layer in self.layers:
            x = layer.run(x, lambda name, l=layer: getattr(l, _LINEAR_ATTR[name]), self.heads, cfg.head_dim, attn_mask)
        if cfg.do_stable_layer_norm:
            x = self.encoder_norm(x)
        return F.log_softmax(self.output(x), dim=-1), out_lengths
