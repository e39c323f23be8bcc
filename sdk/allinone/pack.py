"""`allinone pack`: turn a training run into a checkpoint to ship or commit.

Keeps the weights (optionally in float16, half the bytes), config and a thinned training log; drops the
trainer state. With a dev manifest, the float full system is evaluated before and after the dtype change
and the pack is refused if its WER moved (by more than an explicit `--max-wer-change`), so a smaller file
never costs accuracy silently.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from allinone.catalog import CATALOG_FILE
from allinone.errors import BadInputError, VerificationError

__all__ = ["pack_checkpoint", "thin_log"]

METRICS = "metrics.jsonl"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def thin_log(text: str, every: int) -> str:
    """Keep every `every`-th step's line of a metrics.jsonl (and the last), so the log stays small."""
    lines = [line for line in text.splitlines() if line.strip()]
    kept = [line for i, line in enumerate(lines) if json.loads(line)["step"] % every == 0 or i == len(lines) - 1]
    return "".join(line + "\n" for line in kept)


def _full_float(ckpt):
    """The largest float target: the system a dtype change must not hurt."""
    floats = [s for s in ckpt.targets if s.weight_bits == 32] or list(ckpt.targets)
    return max(floats, key=lambda s: (s.depth, s.ffn_dim, s.heads))


def _dev_wer(model, spec, utterances, tokenizer) -> float:
    from allinone.evaluate import evaluate

    return evaluate(model, [spec], utterances, tokenizer, progress=False)[0].wer


def pack_checkpoint(run: str | Path, out: str | Path, *, dtype: str = "float16", dev: str | Path | None = None,
                    log_every: int = 10, force: bool = False, max_wer_change: float = 0.0) -> dict:
    """Write the checkpoint of training run `run` to `out` (weights + config + thinned metrics.jsonl).

    Returns what was checked: {"subnet", "dev_wer_before", "dev_wer_after"} (WERs None without `dev`). The
    stored dtype may move that WER by at most `max_wer_change` (absolute: 0.001 is 0.1 points) either way.
    `out` is assembled in a temporary sibling directory and renamed into place."""
    from allinone.checkpoint import PROVENANCE_KEYS, checkpoint_files, load_checkpoint
    from allinone.files import sha256_file, write_files_atomically

    if dtype not in DTYPES:
        raise BadInputError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    if not 0 <= max_wer_change < 1:
        raise BadInputError(f"--max-wer-change {max_wer_change}: expected a WER difference in [0, 1)")
    if log_every < 1:
        raise BadInputError(f"--log-every {log_every}: expected a positive number of steps")
    run, out = Path(run), Path(out)
    if out.exists() and not force:
        raise BadInputError(f"{out}: already exists (pass --force to replace it)")
    ckpt = load_checkpoint(run)
    config = ckpt.config
    spec = _full_float(ckpt)
    files = checkpoint_files(ckpt.model, targets=ckpt.targets, vocabulary=config["vocabulary"],
                             recipe=config.get("recipe"), data=config.get("data"),
                             extra={"trained_steps": config.get("trained_steps"),
                                    **{k: config[k] for k in (*PROVENANCE_KEYS, "trained_on") if k in config},
                                    "packed_from": {"weights_sha256": config["weights_sha256"],
                                                    "weights_dtype": config.get("weights_dtype", "float32")}},
                             dtype=DTYPES[dtype])
    checked = {"subnet": spec.id, "dev_wer_before": None, "dev_wer_after": None}
    if dev is not None:
        from safetensors.torch import load

        from allinone.data.manifest import read_manifest

        tokenizer = ckpt.tokenizer()
        utterances = read_manifest(dev, tokenizer=tokenizer).utterances
        if not utterances:
            raise BadInputError(f"--dev {dev}: no usable utterances; expected a dev manifest")
        checked["dev_wer_before"] = _dev_wer(ckpt.model, spec, utterances, tokenizer)
        packed = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in load(files[0][1]).items()}
        ckpt.model.load_state_dict(packed)
        checked["dev_wer_after"] = _dev_wer(ckpt.model, spec, utterances, tokenizer)
        if abs(checked["dev_wer_after"] - checked["dev_wer_before"]) > max_wer_change:
            raise VerificationError(f"{run}: {spec.id} dev WER changes from {checked['dev_wer_before']:.4f} to "
                                    f"{checked['dev_wer_after']:.4f} in {dtype}, more than {max_wer_change:g}; keep "
                                    "float32 (--dtype float32) or accept it (--max-wer-change)")
        # The check travels with the weights: which manifest, what it measured, what change was accepted.
        config_out = json.loads(files[1][1])
        config_out["packed_from"]["dev_check"] = {"manifest": str(dev), "manifest_sha256": sha256_file(dev),
                                                  **checked, "max_wer_change": max_wer_change}
        files[1] = (files[1][0], (json.dumps(config_out, indent=2, allow_nan=False) + "\n").encode())
    if (run / METRICS).is_file():
        files.append((METRICS, thin_log((run / METRICS).read_text(), log_every).encode()))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        write_files_atomically(staging, files)
        # Hand-written notes (MODEL_CARD.md) survive a re-pack. So does catalog.json: `select` refuses it until
        # `allinone catalog` (with `--all` again for an --all catalog) has measured the new weights; that run
        # keeps its lowered memory facts (they depend on the architecture, not the weights; without a warm
        # lowering cache they cost minutes of lowering). eval/ holds the old weights' hypotheses only: it goes.
        kept = []
        if out.is_dir():
            kept = sorted(out.glob("*.md"))
            if _names_its_weights(out / CATALOG_FILE):
                kept.append(out / CATALOG_FILE)
        for path in kept:
            shutil.copy2(path, staging / path.name)
        os.chmod(staging, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return checked


def _names_its_weights(catalog: Path) -> bool:
    """A catalog whose meta names the weights it measured: `select` can tell it is stale. One without (written
    by hand) would be taken as it is, so it goes with the old weights instead; so does an unreadable one."""
    from allinone.catalog import load_catalog

    try:
        return bool(load_catalog(catalog).meta.get("weights_sha256"))
    except BadInputError:  # missing, not JSON, or not a catalog
        return False
