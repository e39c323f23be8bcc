"""All-in-one checkpoints: a directory of safetensors weights and a JSON config (never pickle).

    CKPT/model.safetensors        supernet weights (float32, or float16 for a shipped checkpoint)
    CKPT/config.json              format version, family, architecture, search space, targets, vocabulary,
                                  recipe, data fingerprints, sha256 of model.safetensors
    CKPT/trainer_state.safetensors + trainer_state.json   optional: optimizer tensors, step, RNG, data position

Every file is written to a temporary name and renamed, so a checkpoint is either the old one or the new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from allinone.errors import BadInputError
from allinone.files import read_json, sha256_file, write_files_atomically
from allinone.models.registry import FAMILIES, family_classes
from allinone.spec import SubnetSpec
from allinone.validation import check_keys

__all__ = ["CHECKPOINT_FORMAT_VERSION", "Checkpoint", "save_checkpoint", "checkpoint_files", "load_checkpoint",
           "build_model"]

CHECKPOINT_FORMAT_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
# Where a checkpoint's weights started (`train --init`, an import); training, resuming and packing carry them.
PROVENANCE_KEYS = ("init", "hf_import")
_CONFIG_KEYS = ("family", "architecture", "targets", "vocabulary", "weights_sha256")  # what loading reads


def build_model(family: str, architecture: dict) -> nn.Module:
    """A freshly initialised supernet of `family` with `architecture` (its config as a dict)."""
    if family not in FAMILIES:
        raise BadInputError(f"model family {family!r} is not supported (expected one of {sorted(FAMILIES)})")
    config_cls, model_cls = family_classes(family)
    return model_cls(config_cls.from_dict(dict(architecture)))


@dataclass
class Checkpoint:
    """A loaded checkpoint: the supernet (eval mode) and its config."""

    model: nn.Module
    config: dict
    path: Path | None = None
    targets: list[SubnetSpec] = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.config["family"]

    def tokenizer(self):
        from allinone.data.tokenizer import tokenizer_from_dict

        return tokenizer_from_dict(self.config["vocabulary"])


def checkpoint_files(model: nn.Module, *, targets: list[SubnetSpec], vocabulary: dict, recipe: dict | None = None,
                     data: dict | None = None, extra: dict | None = None,
                     dtype: torch.dtype = torch.float32) -> list[tuple[str, bytes]]:
    """The (name, bytes) of model.safetensors and config.json, weights first (config vouches for them)."""
    from safetensors.torch import save

    import allinone

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype != torch.float32:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    weights = save(state)

    config = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "family": model.family,
        "architecture": model.cfg.to_dict(),
        "search_space": model.search_space.to_dict(),
        "targets": [spec.id for spec in targets],
        "vocabulary": vocabulary,
        "recipe": recipe or {},
        "data": data or {},
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "weights_dtype": str(dtype).replace("torch.", ""),
        "allinone_version": allinone.__version__,
        **(extra or {}),
    }
    return [(WEIGHTS, weights), (CONFIG, (json.dumps(config, indent=2, allow_nan=False) + "\n").encode())]


def save_checkpoint(directory: Path, model: nn.Module, **kwargs) -> Path:
    """Write model.safetensors and config.json into `directory` (see `checkpoint_files` for the arguments)."""
    write_files_atomically(Path(directory), checkpoint_files(model, **kwargs))
    return Path(directory)


def _read_config(directory: Path) -> dict:
    config_path = directory / CONFIG
    if not directory.is_dir():
        raise BadInputError(f"checkpoint {directory}: not a directory (expected one holding {CONFIG} and {WEIGHTS})")
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise BadInputError(f"checkpoint {directory}: missing {name}")
    config = read_json(config_path, "a checkpoint config (config.json)")
    if not isinstance(config, dict):
        raise BadInputError(f"checkpoint {config_path}: expected a JSON object")
    version = config.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise BadInputError(f"checkpoint {config_path}: format_version {version!r} is not supported "
                            f"(expected {CHECKPOINT_FORMAT_VERSION})")
    # Other keys (recipe, data, trained_steps, ...) are free-form provenance, so only missing ones are refused.
    check_keys(config, _CONFIG_KEYS, f"checkpoint {config_path}", quoted=True, allow_unknown=True)
    return config


def load_checkpoint(directory: str | Path, *, verify: bool = True) -> Checkpoint:
    """Load a checkpoint directory; refuses a wrong version, missing files or weights that fail their sha256."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config = _read_config(directory)
    weights_path = directory / WEIGHTS
    if verify and sha256_file(weights_path) != config["weights_sha256"]:
        raise BadInputError(f"checkpoint {weights_path}: sha256 does not match config.json "
                            "(the file was modified or damaged)")
    model = build_model(config["family"], config["architecture"])
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise BadInputError(f"checkpoint {weights_path}: unreadable safetensors file ({err})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BadInputError(f"checkpoint {weights_path}: weights do not fit the {config['family']} architecture in "
                            f"config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise BadInputError(f"checkpoint {weights_path}: {key} has shape {tuple(value.shape)}, the architecture "
                                f"expects {tuple(expected[key].shape)}")
    model.load_state_dict(state)
    targets = [model.search_space.validate(SubnetSpec.from_id(t)) for t in config["targets"]]
    return Checkpoint(model.eval(), config, directory, targets)
