"""The one registry of model factories: the names recipes, the CLI and `allinone info` accept, and the model
family (conformer, wav2vec2) each belongs to, which checkpoints record.

Looked up by name; the model modules (torch) are imported only when a model is built, so validating a recipe
stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FAMILIES", "MODEL_NAMES", "family_of", "model_factory", "family_classes"]

# family -> (module, config class, supernet class); a checkpoint's config.json names its family
FAMILIES = {"conformer": ("allinone.models.conformer", "ConformerConfig", "ConformerSupernet"),
            "wav2vec2": ("allinone.models.wav2vec2", "Wav2Vec2Config", "Wav2Vec2Supernet")}
# factory name -> family; each factory is `name(vocab_size, ...)` in its family's module
_FACTORIES = {"conformer_medium": "conformer", "conformer_small": "conformer", "conformer_tiny": "conformer",
              "wav2vec2_small": "wav2vec2", "wav2vec2_tiny": "wav2vec2"}
MODEL_NAMES = tuple(_FACTORIES)  # in this order in messages and --help


def family_of(name: str) -> str:
    """The family of factory `name` (KeyError for an unknown name: callers validate against MODEL_NAMES)."""
    return _FACTORIES[name]


def model_factory(name: str) -> Callable[..., "nn.Module"]:
    """The factory function `name` (e.g. conformer_small), taking the vocabulary size first."""
    return getattr(importlib.import_module(FAMILIES[family_of(name)][0]), name)


def family_classes(family: str) -> tuple[type, type]:
    """(config class, supernet class) of `family` (KeyError for an unknown family)."""
    module, config, supernet = FAMILIES[family]
    loaded = importlib.import_module(module)
    return getattr(loaded, config), getattr(loaded, supernet)
