"""An exponential moving average of the weights: what a run saves as its checkpoint when `ema_decay` is set.

Small batches on 2 CPU cores make the raw weights noisy from step to step; their average over the last
~1 / (1 - decay) steps is a better model to evaluate and ship. Training itself keeps updating the raw
weights, which the resumable trainer state carries so a resumed run continues exactly."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """shadow <- decay * shadow + (1 - decay) * weights after every step; buffers (e.g. feature statistics)
    are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay: expected a number between 0 and 1, got {decay}")
        self.decay = decay
        self._params = {name for name, _ in model.named_parameters()}
        self.shadow = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, value in model.state_dict().items():
            if name in self._params and value.is_floating_point():
                self.shadow[name].lerp_(value, 1.0 - self.decay)
            else:
                self.shadow[name].copy_(value)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """Within the block the model holds the averaged weights; yields a copy of its raw state dict, which
        is put back on the way out (also on an error)."""
        raw = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield raw
        finally:
            model.load_state_dict(raw)
