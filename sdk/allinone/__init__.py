"""allinone: one all-in-one ASR checkpoint, many nested device-sized systems.

`import allinone` stays light (no torch import); the heavy entry points load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["extract_subnet", "SubnetSpec", "SearchSpace"]


def extract_subnet(model, spec):
    """A plain `nn.Module` holding copies of only the weights nested system `spec` keeps; it gives the same
    outputs as `model(waveform, lengths, spec)` (float weights: quantize it with `allinone.quantize`)."""
    return model.extract_subnet(spec)


def __getattr__(name: str):
    if name in ("SubnetSpec", "SearchSpace"):
        from allinone import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'allinone' has no attribute {name!r}")
