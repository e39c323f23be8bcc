"""Training recipes: YAML files naming the model, the target systems and the schedule.

Found by name (shipped in `recipes/`, installed as `allinone.recipes`) or by path. Unknown keys and
impossible values are refused before any training starts, naming the file and the key.
"""

from __future__ import annotations

import math
import importlib.resources
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from allinone.errors import BadInputError
from allinone.files import check_size, check_yaml_nesting
from allinone.models.registry import MODEL_NAMES
from allinone.validation import check_keys

__all__ = ["Recipe", "load_recipe", "RECIPE_FORMAT_VERSION"]

RECIPE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str  # factory name (conformer_small, conformer_tiny, wav2vec2_small, wav2vec2_tiny); --init overrides it
    targets: tuple[str, ...]  # spec ids the run promises to deliver
    systems_per_step: int | None = None  # None: every target each step; else a sandwich sample of this size
    loss_weights: dict = field(default_factory=dict)  # spec id -> CTC weight (default 1.0)
    kl_weight: float = 0.0  # lambda of KL(p_largest || p_system), teacher = largest float target, detached
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 5 % of the peak at max_steps
    max_steps: int = 1000
    grad_clip: float = 5.0
    max_batch_seconds: float = 60.0  # padded audio seconds per batch (per process under DDP)
    num_workers: int = 1  # data loader workers beside each training process
    checkpoint_minutes: float = 10.0  # save the resumable state this often (and at the end)
    checkpoint_steps: int | None = None  # also save every N steps (tests use it for determinism)
    seed: int = 0
    units: str = "char"  # CTC output units: "char" (29 symbols) or "bpe" (sentencepiece, learned from the train text)
    bpe_vocab_size: int = 256  # pieces of the "bpe" model (the blank comes on top)
    subsampling_factor: int | None = None  # conformer time reduction 4/6/8 (None: the model's default)
    augment: bool = False  # speed, reverberation, noise, band-limiting and gain, drawn anew every epoch
    bf16: str = "off"  # bfloat16 autocast: "on", "off", or "auto" (on where the CPU has native bf16 or on CUDA)
    zero_init_residual: bool = False  # a fresh conformer starts with every block's residual branches at zero, so
    # each depth starts as the function of the shallower ones (deep stacks otherwise stay on the CTC plateau)
    ema_decay: float | None = None  # per-step decay of a moving average of the weights, saved as the checkpoint
    # (the raw weights stay in the trainer state); None: the checkpoint holds the raw weights
    format_version: int = RECIPE_FORMAT_VERSION

    def to_dict(self) -> dict:
        data = asdict(self)
        data["targets"] = list(self.targets)
        return data


_MODELS = MODEL_NAMES  # the model registry's factory names
_CHOICES = {"units": ("char", "bpe"), "bf16": ("auto", "on", "off"), "subsampling_factor": (None, 4, 6, 8)}


def _fail(source: str, key: str, expected: str, got) -> BadInputError:
    return BadInputError(f"{source}: {key}: expected {expected}, got {got!r}")


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise BadInputError(f"{source}: expected a YAML mapping at the top level")
    version = data.get("format_version", RECIPE_FORMAT_VERSION)
    if version != RECIPE_FORMAT_VERSION:  # first: a newer recipe's new keys would hide the real problem
        raise _fail(source, "format_version", str(RECIPE_FORMAT_VERSION), version)
    check_keys(data, Recipe, source, quoted=True)  # unknown keys (did-you-mean), then name, model, targets
    if data["model"] not in _MODELS:
        raise _fail(source, "model", f"one of {list(_MODELS)}", data["model"])
    targets = data["targets"]
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise _fail(source, "targets", "a non-empty list of subnet ids like d12-f512-h4-w8", targets)
    numbers = {"lr": float, "weight_decay": float, "kl_weight": float, "grad_clip": float, "max_batch_seconds": float,
               "checkpoint_minutes": float, "warmup_steps": int, "max_steps": int, "num_workers": int, "seed": int}
    for key, kind in numbers.items():  # `not >= 0` also refuses .nan, and isfinite refuses .inf
        if key in data and (not isinstance(data[key], (int, float)) or isinstance(data[key], bool)
                            or (kind is int and not isinstance(data[key], int)) or not data[key] >= 0
                            or not math.isfinite(data[key])):
            raise _fail(source, key, f"a non-negative {kind.__name__}", data[key])
    for key in ("max_steps", "max_batch_seconds", "lr"):
        if key in data and data[key] <= 0:
            raise _fail(source, key, "a positive number", data[key])
    for key in ("systems_per_step", "checkpoint_steps"):
        if data.get(key) is not None and (not isinstance(data[key], int) or data[key] < 1):
            raise _fail(source, key, "a positive integer or null", data[key])
    if data.get("systems_per_step") is not None and data["systems_per_step"] < min(2, len(targets)):
        raise _fail(source, "systems_per_step", "at least 2 (the largest and the smallest target)",
                    data["systems_per_step"])
    for key, allowed in _CHOICES.items():
        if key in data and data[key] not in allowed:
            raise _fail(source, key, f"one of {list(allowed)}", data[key])
    for key in ("augment", "zero_init_residual"):
        if key in data and not isinstance(data[key], bool):
            raise _fail(source, key, "true or false", data[key])
    if data.get("zero_init_residual") and data["model"].startswith("wav2vec2"):
        raise _fail(source, "zero_init_residual", "false for a wav2vec2 model (a conformer-only init)", True)
    if "bpe_vocab_size" in data and (not isinstance(data["bpe_vocab_size"], int) or isinstance(data["bpe_vocab_size"], bool)
                                     or not 32 <= data["bpe_vocab_size"] <= 8192):
        raise _fail(source, "bpe_vocab_size", "an integer from 32 to 8192", data["bpe_vocab_size"])
    if data.get("subsampling_factor") is not None and data["model"].startswith("wav2vec2"):
        raise _fail(source, "subsampling_factor", "null for a wav2vec2 model (its frame rate is fixed)",
                    data["subsampling_factor"])
    ema = data.get("ema_decay")
    if ema is not None and (not isinstance(ema, float) or not 0.0 < ema < 1.0):
        raise _fail(source, "ema_decay", "a number between 0 and 1 (e.g. 0.999) or null", ema)
    weights = data.get("loss_weights", {}) or {}
    if not isinstance(weights, dict) or any(k not in targets for k in weights) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
            for w in weights.values()):
        raise _fail(source, "loss_weights", "a mapping from target ids to finite non-negative weights", weights)
    return Recipe(**{**data, "targets": tuple(targets), "loss_weights": dict(weights)})


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe by shipped name (`tiny`, `conformer_small`) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        resource = importlib.resources.files("allinone.recipes") / f"{name_or_path}.yaml"
        if not resource.is_file():
            shipped = sorted(p.name[:-5] for p in importlib.resources.files("allinone.recipes").iterdir()
                             if p.name.endswith(".yaml"))
            raise BadInputError(f"recipe {name_or_path!r}: no such shipped recipe (shipped: {shipped}) and no such file")
        text, source = resource.read_text(), f"recipes/{name_or_path}.yaml"
    else:
        if not path.is_file():
            raise BadInputError(f"recipe {path}: file not found")
        check_size(path, "a training recipe")
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as err:
            raise BadInputError(f"recipe {path}: cannot read ({err.__class__.__name__}); expected a UTF-8 YAML "
                                f"file") from None
    try:
        check_yaml_nesting(text, source, "a training recipe")
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise BadInputError(f"{source}: not valid YAML ({str(err).splitlines()[0]})") from None
    return recipe_from_dict(data, source)
