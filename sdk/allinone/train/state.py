"""Resumable trainer state: optimizer tensors in safetensors, counters and positions in JSON (no pickle)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from allinone.files import read_json, sha256_file
from allinone.errors import BadInputError

__all__ = ["trainer_state_files", "load_trainer_state", "load_raw_weights", "finish_interrupted_save",
           "STATE_TENSORS", "STATE_JSON"]

STATE_TENSORS, STATE_JSON = "trainer_state.safetensors", "trainer_state.json"
STATE_FORMAT_VERSION = 1
RAW = "raw_model."  # key prefix of the raw weights, saved beside the optimizer when the checkpoint holds an average


def trainer_state_files(optimizer: torch.optim.Optimizer, progress: dict, checkpoint: list[tuple[str, bytes]],
                        raw_weights: dict[str, torch.Tensor] | None = None) -> list[tuple[str, bytes]]:
    """All files of a resumable save, in rename order: optimizer tensors (and `raw_weights`, the weights
    training continues from when the checkpoint holds their average), the checkpoint's weights and config,
    and last trainer_state.json, which records the sha256 of the files it belongs to."""
    from safetensors.torch import save

    state = optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    for name, value in (raw_weights or {}).items():
        tensors[RAW + name] = value.detach().cpu().contiguous()
    optimizer_bytes = save(tensors)
    files = [(STATE_TENSORS, optimizer_bytes), *checkpoint]
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files}
    # The hashes go last: a progress dict carried over from a resume must never overwrite them.
    meta = {"format_version": STATE_FORMAT_VERSION, "param_groups": state["param_groups"], **progress,
            "sha256": hashes}
    return files + [(STATE_JSON, (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode())]


def finish_interrupted_save(directory: Path) -> int | None:
    """Make a run folder whole again after a save that was killed (SIGKILL, power loss) part-way.

    A save stages every file under a temporary name (`files.write_files_atomically`: `.NAME.*.tmp`, fsynced),
    then renames them with trainer_state.json last. A staged trainer_state.json that parses is therefore
    complete, and so is every file it vouches for: the renames are finished (rolled forward) and the step it
    records is returned. Otherwise the kill came while staging and the renamed set is still the previous,
    consistent save. Either way the leftover temporary files are removed."""
    staged_states = sorted(directory.glob(f".{STATE_JSON}.*.tmp"), key=lambda p: p.stat().st_mtime, reverse=True)
    finished = None
    for staged in staged_states:
        try:
            meta = json.loads(staged.read_text())
            hashes = dict(meta["sha256"])
        except (ValueError, KeyError, TypeError, OSError):
            continue  # killed while this file was being written: the save never reached its renames
        moves, complete = [], True
        for name, digest in hashes.items():
            if (directory / name).is_file() and sha256_file(directory / name) == digest:
                continue
            match = [t for t in directory.glob(f".{name}.*.tmp") if sha256_file(t) == digest]
            if not match:
                complete = False
                break
            moves.append((match[0], directory / name))
        if complete:
            for tmp, final in moves:
                os.replace(tmp, final)
            os.replace(staged, directory / STATE_JSON)
            finished = int(meta.get("step", 0))
            break
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    return finished


def load_trainer_state(directory: Path, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the optimizer from `directory` and return the saved progress dict."""
    from safetensors import safe_open

    meta_path, tensor_path = directory / STATE_JSON, directory / STATE_TENSORS
    if not meta_path.is_file() or not tensor_path.is_file():
        raise BadInputError(f"{directory}: no trainer state to resume from (expected {STATE_JSON} and {STATE_TENSORS})")
    meta = read_json(meta_path, f"trainer state ({STATE_JSON})")
    if not isinstance(meta, dict):
        raise BadInputError(f"{meta_path}: expected a JSON object")
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise BadInputError(f"{meta_path}: format_version {meta.get('format_version')!r} is not supported")
    for name, digest in meta.get("sha256", {}).items():
        if sha256_file(directory / name) != digest:
            raise BadInputError(f"{directory / name}: does not match {STATE_JSON} (a save was interrupted between "
                                "renames, or the file was changed); cannot resume consistently")
    per_param: dict[int, dict] = {}
    with safe_open(str(tensor_path), "pt") as f:
        for key in f.keys():
            if key.startswith(RAW):
                continue  # the raw weights: read by load_raw_weights, not twice
            index, name = key.split(".", 1)
            per_param.setdefault(int(index), {})[name] = f.get_tensor(key)
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    return {k: v for k, v in meta.items() if k not in ("format_version", "param_groups", "sha256")}


def load_raw_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The raw weights a save carried beside the optimizer (empty when its checkpoint holds them itself).
    Read after `load_trainer_state`, which checked the file against trainer_state.json."""
    from safetensors import safe_open

    with safe_open(str(Path(directory) / STATE_TENSORS), "pt") as f:
        return {key[len(RAW):]: f.get_tensor(key) for key in f.keys() if key.startswith(RAW)}
