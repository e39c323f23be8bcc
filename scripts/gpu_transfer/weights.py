"""Checkpoint weights through a 64 MiB transfer limit.

to8   (here):   CKPT -> DIR/init8.safetensors (matrices int8 per row + fp16 scales, the rest fp16) + config.json
from8 (device): DIR -> a loadable float32 checkpoint folder (config's weights_sha256 rewritten)
split (device): RUN -> OUT/w16.partN (the run's averaged weights as float16, in <= 16 MiB pieces) + config.json
join  (here):   FILES_AT -> CKPT (float16 checkpoint that `allinone eval` and `pack` read)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save

PIECE = 16 * 2**20 - 4096


def _write_ckpt(out: Path, state: dict, config: dict, dtype: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    blob = save(state)
    (out / "model.safetensors").write_bytes(blob)
    config = {**config, "weights_sha256": hashlib.sha256(blob).hexdigest(), "weights_dtype": dtype}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def to8(ckpt: Path, out: Path) -> None:
    state = load_file(str(ckpt / "model.safetensors"))
    packed = {}
    for k, v in state.items():
        if v.is_floating_point() and v.ndim >= 2 and v.numel() >= 4096:
            rows = v.float().reshape(v.shape[0], -1)
            scale = rows.abs().amax(1).clamp_min(1e-12) / 127
            packed[k + ".q8"] = torch.round(rows / scale[:, None]).to(torch.int8).reshape(v.shape)
            packed[k + ".s8"] = scale.half()
        else:
            packed[k] = v.half() if v.is_floating_point() else v
    out.mkdir(parents=True, exist_ok=True)
    (out / "init8.safetensors").write_bytes(save(packed))
    shutil.copy(ckpt / "config.json", out / "config.json")


def from8(src: Path, out: Path) -> None:
    packed = load_file(str(src / "init8.safetensors"))
    state = {}
    for k, v in packed.items():
        if k.endswith(".s8"):
            continue
        if k.endswith(".q8"):
            name = k[:-3]
            scale = packed[name + ".s8"].float()
            state[name] = (v.float().reshape(v.shape[0], -1) * scale[:, None]).reshape(v.shape).contiguous()
        else:
            state[k] = v.float() if v.is_floating_point() else v
    _write_ckpt(out, state, json.loads((src / "config.json").read_text()), "float32")


def split(run: Path, out: Path) -> None:
    state = load_file(str(run / "model.safetensors"))
    blob = save({k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    out.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(blob), PIECE):
        (out / f"w16.part{i // PIECE}").write_bytes(blob[i:i + PIECE])
    config = json.loads((run / "config.json").read_text())
    config["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    config["weights_dtype"] = "float16"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"weights: {len(blob) / 2**20:.1f} MiB in {(len(blob) + PIECE - 1) // PIECE} pieces, sha256 "
          f"{config['weights_sha256'][:12]}", flush=True)


def join(files_at: Path, out: Path) -> None:
    parts = sorted(files_at.rglob("w16.part*"), key=lambda p: int(p.name.removeprefix("w16.part")))
    blob = b"".join(p.read_bytes() for p in parts)
    config = json.loads(next(files_at.rglob("config.json")).read_text())
    if hashlib.sha256(blob).hexdigest() != config["weights_sha256"]:
        raise SystemExit("joined weights do not match config.json's sha256")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.safetensors").write_bytes(blob)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{out}: {len(parts)} pieces joined, sha256 ok")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["to8", "from8", "split", "join"])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    {"to8": to8, "from8": from8, "split": split, "join": join}[a.cmd](a.src, a.out)


if __name__ == "__main__":
    main()
