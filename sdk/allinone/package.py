"""Bundle writer: `model.pte` + `manifest.json` in one directory, written whole or not at all."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from allinone.errors import BadInputError

__all__ = ["BUNDLE_FORMAT_VERSION", "write_bundle", "quantization_info", "io_signature", "versions"]

BUNDLE_FORMAT_VERSION = 1
FRAME_SHIFT_S = 0.04  # 10 ms hop x4 subsampling


def quantization_info(weight_bits: int, float_layers: list[str]) -> dict:
    if weight_bits == 32:
        return {"weight_bits": 32, "scheme": "fp32", "weight_granularity": None, "group_size": None,
                "activations": "float32", "float_layers": []}
    return {"weight_bits": weight_bits, "scheme": f"8da{weight_bits}w",
            "weight_granularity": "per_channel" if weight_bits == 8 else "per_group",
            "group_size": None if weight_bits == 8 else 32,
            "activations": "dynamic int8 per token, asymmetric", "float_layers": list(float_layers)}


def io_signature(vocab_size: int, min_samples: int, max_samples: int) -> dict:
    return {"method": "forward",
            "input": {"name": "waveform", "dtype": "float32", "shape": [1, "N"], "min_samples": min_samples,
                      "max_samples": max_samples},
            "output": {"name": "log_probs", "dtype": "float32", "shape": [1, "T", vocab_size],
                       "frame_shift_s": FRAME_SHIFT_S, "blank_id": 0}}


def versions() -> dict:
    from importlib.metadata import version

    import allinone

    return {"torch": version("torch"), "executorch": version("executorch"), "torchao": version("torchao"),
            "allinone": allinone.__version__}


def write_bundle(directory: str | Path, pte: bytes, manifest: dict, *, force: bool = False) -> Path:
    """Write `model.pte` and `manifest.json` (with `format_version`, `kind`, `created`, `pte` filled in).

    The bundle is assembled in a temporary sibling directory and renamed into place, so an interrupted
    build leaves no half-written bundle. An existing `directory` is refused unless `force`."""
    directory = Path(directory)
    if directory.exists() and not force:
        raise BadInputError(f"{directory}: already exists (pass --force to replace it)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "kind": "allinone-bundle",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **manifest,
        "pte": {"file": "model.pte", "sha256": hashlib.sha256(pte).hexdigest()},
    }
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        (staging / "model.pte").write_bytes(pte)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for name in ("model.pte", "manifest.json"):
            with open(staging / name, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(staging, 0o755)
        if directory.exists():  # --force: move the old bundle aside first, remove it after the swap
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old."))
            os.replace(directory, old / "bundle")
            os.replace(staging, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory
