"""`allinone import-hf`: a local Hugging Face `Wav2Vec2ForCTC` directory -> an all-in-one wav2vec2 checkpoint.

Reads config.json, model.safetensors (or pytorch_model.bin, only with `torch.load(weights_only=True)`),
vocab.json (+ tokenizer_config.json, preprocessor_config.json when present). Needs neither transformers nor
network access. Three things change on the way, none of which changes what the full system computes:

  * the vocabulary: the CTC blank (HF's pad token) moves to index 0, `|` becomes " ", letters are lower-cased
    when that merges nothing (allinone's transcripts are lower-case), and the rows of the CTC head follow;
  * feed-forward units and attention heads are reordered, most important first, so that the leading units
    and heads a narrower nested system keeps are the most useful ones (`reorder_by_importance_`);
  * the positional convolution's weight norm is folded into a plain weight.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from allinone.errors import BadInputError
from allinone.files import read_json
from allinone.spec import ALLOWED_WEIGHT_BITS, SubnetSpec

__all__ = ["import_hf", "hf_architecture", "hf_vocabulary", "reorder_by_importance_", "default_search_space"]

log = logging.getLogger(__name__)

_PREFIX = "wav2vec2."
_IGNORED = ("wav2vec2.masked_spec_embed",)  # SpecAugment's mask embedding: used by HF training only


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise BadInputError(f"{path}: missing ({what})")
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a JSON object")
    return data


def _hf_config(directory: Path) -> dict:
    if not directory.is_dir():
        raise BadInputError(f"{directory}: not a directory (expected a Hugging Face Wav2Vec2ForCTC model folder)")
    config = _read_json(directory / "config.json", "a Hugging Face model folder holds config.json")
    architectures = config.get("architectures") or []
    if config.get("model_type") != "wav2vec2" or "Wav2Vec2ForCTC" not in architectures:
        raise BadInputError(f"{directory / 'config.json'}: model_type {config.get('model_type')!r}, architectures "
                            f"{architectures}; expected a wav2vec2 model saved as Wav2Vec2ForCTC")
    unsupported = {"add_adapter": False, "use_weighted_layer_sum": False}
    for key, supported in unsupported.items():
        if config.get(key, supported) != supported:
            raise BadInputError(f"{directory / 'config.json'}: {key}={config[key]!r} is not supported "
                                f"(expected {supported!r})")
    return config


def default_search_space(n_layers: int, n_heads: int, ffn_dim: int, head_dim: int) -> dict:
    """Depths 1/2, 3/4 and all of the layers; widths 1/4..4/4 of the FFN (multiples of 32); 1/2, 3/4 and all
    heads whose attention width is a multiple of 32 (4-bit groups)."""
    depths = sorted({max(1, round(n_layers * r)) for r in (0.5, 0.75, 1.0)})
    ffn_dims = sorted(({ffn_dim * k // 4 // 32 * 32 for k in (1, 2, 3)} - {0}) | {ffn_dim})
    heads = sorted({h for h in (max(1, round(n_heads * r)) for r in (0.5, 0.75)) if h * head_dim % 32 == 0}
                   | {n_heads})
    return {"depths": depths, "ffn_dims": ffn_dims, "head_choices": heads}


def hf_architecture(config: dict, vocab_size: int, do_normalize: bool, search: dict | None = None,
                    where: str = "config.json") -> dict:
    """The allinone Wav2Vec2Config (as a dict) of a Hugging Face wav2vec2 config."""
    from allinone.models.wav2vec2 import Wav2Vec2Config

    hidden, heads = config.get("hidden_size", 768), config.get("num_attention_heads", 12)
    space = default_search_space(config.get("num_hidden_layers", 12), heads, config.get("intermediate_size", 3072),
                                 hidden // heads)
    space.update(search or {})
    arch = {
        "vocab_size": vocab_size, "hidden_size": hidden, "n_layers": config.get("num_hidden_layers", 12),
        "n_heads": heads, "ffn_dim": config.get("intermediate_size", 3072),
        "conv_dim": list(config.get("conv_dim", [512] * 7)), "conv_kernel": list(config.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2])),
        "conv_stride": list(config.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])), "conv_bias": bool(config.get("conv_bias", False)),
        "feat_extract_norm": config.get("feat_extract_norm", "group"),
        "feat_extract_activation": config.get("feat_extract_activation", "gelu"),
        "num_conv_pos_embeddings": config.get("num_conv_pos_embeddings", 128),
        "num_conv_pos_embedding_groups": config.get("num_conv_pos_embedding_groups", 16),
        "do_stable_layer_norm": bool(config.get("do_stable_layer_norm", False)),
        "hidden_act": config.get("hidden_act", "gelu"), "layer_norm_eps": config.get("layer_norm_eps", 1e-5),
        "dropout": config.get("hidden_dropout", 0.1),
        "depths": space["depths"], "ffn_dims": space["ffn_dims"], "head_choices": space["head_choices"],
        "frontend": {"sample_rate": 16000, "do_normalize": do_normalize, "eps": 1e-7},
    }
    arch["weight_bits"] = list(space.get("weight_bits") or ALLOWED_WEIGHT_BITS)
    try:
        Wav2Vec2Config.from_dict({**arch, "weight_bits": [32]})
    except BadInputError as err:
        raise BadInputError(f"{where}: {err}") from None
    try:  # 4-bit only where every quantized width fits XNNPACK's groups of 32
        Wav2Vec2Config.from_dict(arch)
    except BadInputError as err:
        if 4 not in arch["weight_bits"] or search and "weight_bits" in search:
            raise BadInputError(f"{where}: {err}") from None
        log.warning("%s: %s; importing without 4-bit systems", where, err)
        arch["weight_bits"] = [b for b in arch["weight_bits"] if b != 4]
    return arch


def _is_special(token: str) -> bool:
    return len(token) > 2 and token.startswith("<") and token.endswith(">")


def hf_vocabulary(directory: Path, config: dict) -> tuple[list[str], list[int]]:
    """(allinone vocabulary, HF id of each entry): blank first, `|` -> " ", letters lower-cased if unambiguous.

    Symbols are single characters or special tokens written `<...>` (which print nothing)."""
    vocab_path = directory / "vocab.json"
    vocab = _read_json(vocab_path, "the CTC vocabulary of the model's Wav2Vec2CTCTokenizer")
    added = directory / "added_tokens.json"
    if added.is_file():
        vocab.update(_read_json(added, "tokens added to the vocabulary"))
    tok_config_path = directory / "tokenizer_config.json"
    tok_config = _read_json(tok_config_path, "tokenizer settings") if tok_config_path.is_file() else {}
    delimiter = tok_config.get("word_delimiter_token", "|")
    size, blank = config.get("vocab_size"), config.get("pad_token_id", 0)
    tokens = {i: t for t, i in vocab.items()}
    if not isinstance(blank, int) or blank not in tokens or len(tokens) != len(vocab) or max(tokens) >= size:
        raise BadInputError(f"{vocab_path}: {len(vocab)} tokens do not fit config.json (vocab_size {size}, "
                            f"pad_token_id {blank} = the CTC blank)")
    symbols = []
    for i in range(size):
        token = tokens.get(i, f"<unused{i}>")
        if token == delimiter:
            token = " "
        elif len(token) != 1 and not _is_special(token):
            raise BadInputError(f"{vocab_path}: token {token!r} is neither one character nor a special <...> "
                                "token; only character vocabularies are supported")
        symbols.append(token)
    lowered = [s if _is_special(s) else s.lower() for s in symbols]
    if len(set(lowered)) == len(lowered):
        symbols = lowered
    order = [blank] + [i for i in range(size) if i != blank]
    vocabulary = ["<blank>"] + [symbols[i] for i in order[1:]]
    if len(set(vocabulary)) != len(vocabulary):
        raise BadInputError(f"{vocab_path}: the vocabulary has duplicate symbols")
    return vocabulary, order


def _load_weights(directory: Path) -> dict[str, torch.Tensor]:
    safetensors_path, bin_path = directory / "model.safetensors", directory / "pytorch_model.bin"
    if safetensors_path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_path))
        except (SafetensorError, OSError) as err:
            raise BadInputError(f"{safetensors_path}: unreadable safetensors file ({err})") from None
    if bin_path.is_file():
        try:  # weights_only: a pickle that would run code is refused, never executed
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise BadInputError(f"{bin_path}: not a plain tensor state dict ({str(err).splitlines()[0]})") from None
        return state
    if (directory / "model.safetensors.index.json").is_file():
        raise BadInputError(f"{directory}: sharded weights are not supported (save with a larger max_shard_size)")
    raise BadInputError(f"{directory}: missing weights (expected model.safetensors or pytorch_model.bin)")


def _pos_conv_weight(hf: dict, where: Path) -> torch.Tensor:
    """The positional convolution's weight with HF's weight norm (over dim 2) folded in."""
    base = _PREFIX + "encoder.pos_conv_embed.conv."
    names = [("parametrizations.weight.original0", "parametrizations.weight.original1"), ("weight_g", "weight_v")]
    for g_name, v_name in names:
        if base + g_name in hf and base + v_name in hf:
            g, v = hf.pop(base + g_name).float(), hf.pop(base + v_name).float()
            return g * v / v.norm(dim=(0, 1), keepdim=True)
    if base + "weight" in hf:
        return hf.pop(base + "weight")
    raise BadInputError(f"{where}: missing {base}weight (or its weight-norm parts)")


def _state_from_hf(hf: dict, cfg, order: list[int], where: Path) -> dict[str, torch.Tensor]:
    hf = {k: v.float() if v.is_floating_point() else v for k, v in hf.items()}
    state = {"pos_conv.conv.weight": _pos_conv_weight(hf, where)}
    names = {"feature_norm": "feature_projection.layer_norm", "feature_proj": "feature_projection.projection",
             "pos_conv.conv": "encoder.pos_conv_embed.conv", "encoder_norm": "encoder.layer_norm"}
    for i in range(len(cfg.conv_dim)):
        names[f"feature_encoder.convs.{i}"] = f"feature_extractor.conv_layers.{i}.conv"
        if cfg.feat_extract_norm == "layer" or i == 0:
            names[f"feature_encoder.norms.{i}"] = f"feature_extractor.conv_layers.{i}.layer_norm"
    for i in range(cfg.n_layers):
        layer = f"encoder.layers.{i}."
        names.update({f"layers.{i}.attn_norm": layer + "layer_norm", f"layers.{i}.ffn_norm": layer + "final_layer_norm",
                      f"layers.{i}.ffn_up": layer + "feed_forward.intermediate_dense",
                      f"layers.{i}.ffn_down": layer + "feed_forward.output_dense"})
        names.update({f"layers.{i}.{p}_proj": layer + f"attention.{p}_proj" for p in ("q", "k", "v", "out")})
    for ours, theirs in names.items():
        for param in ("weight", "bias"):
            key = _PREFIX + theirs + "." + param
            if key in hf:
                state[f"{ours}.{param}"] = hf.pop(key)
    for param in ("weight", "bias"):
        if f"lm_head.{param}" not in hf:
            raise BadInputError(f"{where}: missing lm_head.{param} (the CTC head of Wav2Vec2ForCTC)")
        state[f"output.{param}"] = hf.pop(f"lm_head.{param}")[order]
    left = sorted(k for k in hf if k not in _IGNORED)
    if left:
        raise BadInputError(f"{where}: {len(left)} weight(s) this importer does not know, e.g. {left[0]}")
    return state


@torch.no_grad()
def reorder_by_importance_(model) -> dict:
    """Sort every layer's feed-forward units and attention heads by importance, most important first.

    Unit j of a feed-forward block scores ||W_up[j, :]|| * ||W_down[:, j]|| (what it can add to the residual
    stream); head h scores ||W_v[h]|| * ||W_out[:, h]|| (its value path). Permuting units or heads together
    with their rows/columns leaves the full system's outputs unchanged. Returns the orders, per layer."""
    head_dim, orders = model.cfg.head_dim, {"ffn": [], "heads": []}
    for layer in model.layers:
        up, down = layer.ffn_up, layer.ffn_down
        ffn = torch.argsort(up.weight.norm(dim=1) * down.weight.norm(dim=0), descending=True, stable=True)
        up.weight.copy_(up.weight[ffn]), up.bias.copy_(up.bias[ffn])
        down.weight.copy_(down.weight[:, ffn])
        n_heads = layer.v_proj.weight.shape[0] // head_dim
        value = layer.v_proj.weight.reshape(n_heads, head_dim, -1).flatten(1).norm(dim=1)
        out = layer.out_proj.weight.reshape(-1, n_heads, head_dim).transpose(0, 1).flatten(1).norm(dim=1)
        heads = torch.argsort(value * out, descending=True, stable=True)
        rows = (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()  # units of the kept heads, in order
        for proj in (layer.q_proj, layer.k_proj, layer.v_proj):
            proj.weight.copy_(proj.weight[rows]), proj.bias.copy_(proj.bias[rows])
        layer.out_proj.weight.copy_(layer.out_proj.weight[:, rows])
        orders["ffn"].append(ffn.tolist()), orders["heads"].append(heads.tolist())
    return orders


def import_hf(directory: str | Path, out: str | Path, *, search: dict | None = None, reorder: bool = True,
              force: bool = False) -> Path:
    """Convert the Wav2Vec2ForCTC folder `directory` into the allinone checkpoint folder `out`.

    `search` overrides the search space (keys depths, ffn_dims, head_choices, weight_bits). The checkpoint's
    targets are the largest system at each precision; a training recipe names the real targets."""
    from allinone.checkpoint import CONFIG, save_checkpoint
    from allinone.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Supernet

    directory, out = Path(directory), Path(out)
    if (out / CONFIG).exists() and not force:
        raise BadInputError(f"{out}: already holds a checkpoint (pass --force to replace it)")
    config = _hf_config(directory)
    vocabulary, order = hf_vocabulary(directory, config)
    pre_path = directory / "preprocessor_config.json"
    preprocessor = _read_json(pre_path, "feature extractor settings") if pre_path.is_file() else {}
    if preprocessor.get("sampling_rate", 16000) != 16000:
        raise BadInputError(f"{pre_path}: sampling_rate {preprocessor['sampling_rate']} is not supported (expected 16000)")
    if not pre_path.is_file():
        log.warning("%s: missing; assuming do_normalize=true (the Wav2Vec2FeatureExtractor default)", pre_path)
    arch = hf_architecture(config, len(vocabulary), bool(preprocessor.get("do_normalize", True)), search,
                           str(directory / "config.json"))
    model = Wav2Vec2Supernet(Wav2Vec2Config.from_dict(arch))
    state = _state_from_hf(_load_weights(directory), model.cfg, order, directory)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    if missing:
        raise BadInputError(f"{directory}: weights lack {len(missing)} tensor(s) the config needs, e.g. {missing[0]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise BadInputError(f"{directory}: {key} has shape {tuple(value.shape)}, config.json implies "
                                f"{tuple(expected[key].shape)}")
    model.load_state_dict(state)
    orders = reorder_by_importance_(model) if reorder else None
    space = model.search_space
    targets = [SubnetSpec(space.depths[-1], space.ffn_dims[-1], space.heads[-1], b) for b in space.weight_bits]
    tokenizer = {"type": "char", "version": 1, "blank_id": 0, "vocab": vocabulary}
    extra = {"hf_import": {"source": str(directory.resolve()), "hf_vocab_order": order,
                           "reordered_by_importance": orders is not None}}
    return save_checkpoint(out, model.eval(), targets=targets, vocabulary=tokenizer, extra=extra)
