"""Silence library notices that do not concern a user of allinone: in the CLI's process and in every worker
process it spawns (a spawned process starts with Python's defaults, so the CLI's settings do not reach it).

Kept free of heavy imports on purpose: a worker runs `quiet_library_notices` before it imports torchao."""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_library_notices"]


def quiet_library_notices() -> None:
    # torchao warns at import about optional GPU kernels a CPU build lacks; torch's pytree warns about
    # an enum torchao registers.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # "generated new fontManager" on a first plot
    # torch.export's pytree deprecation notice, raised from inside torch during every export.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
