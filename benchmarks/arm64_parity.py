"""Host (x86-64) vs linux-arm64 native runner on the shipped checkpoint: the full system of
checkpoints/conformer_small at float, 8-bit and 4-bit, run on test utterances by the host runner and by the
cross-built arm64 runner folder under qemu-aarch64 (`allinone runner --target linux-arm64`).

    bash scripts/setup-arm64.sh        # cross toolchain + qemu-user (once)
    .venv/bin/python benchmarks/arm64_parity.py --manifest ~/.cache/allinone/corpus/v1/test.jsonl --utterances 20 \
        --out runs/arm64_parity

Prints, per precision and emulated CPU, the largest absolute log-prob difference host vs arm64 (over every
frame and token of every utterance), the build's verification tolerance for that precision, how many greedy
transcripts are identical and on how many frames the greedy token differs (near-ties that flip). Utterances are the manifest's first N of at most 30 s (one program call each).
Timings under emulation say nothing about a board, so none are reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from allinone.build import MAX_ABS_DIFF, export_bundle
from allinone.checkpoint import load_checkpoint
from allinone.data import read_jsonl
from allinone.runner import emulator_command, write_runner_folder
from allinone_runtime.cpp import build_runner, run_runner

ROOT = Path(__file__).resolve().parents[1]
SPECS = {32: "d12-f512-h4-w32", 8: "d12-f512-h4-w8", 4: "d12-f512-h4-w4"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "conformer_small"))
    ap.add_argument("--manifest", required=True, help="JSONL test manifest (audio paths relative to its folder)")
    ap.add_argument("--utterances", type=int, default=20)
    ap.add_argument("--cpu", action="append", help="qemu -cpu model (repeatable; default cortex-a76, the Pi 5's)")
    ap.add_argument("--out", default="runs/arm64_parity", help="bundles, runner folder and log-probs go here")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    utterances = [u for u in read_jsonl(args.manifest).utterances if u.duration <= 30][:args.utterances]
    folder = out / "runner-linux-arm64"
    if not (folder / "runner.json").is_file():
        write_runner_folder(folder, build_dir=out / "build-arm64")
    host = build_runner(out / "build-host")
    ckpt = load_checkpoint(args.checkpoint)
    rows = []
    for bits, spec in SPECS.items():
        bundle = out / f"w{bits}"
        if not (bundle / "manifest.json").is_file():
            export_bundle(ckpt, spec, bundle, force=True)
        host_out = {}
        for k, u in enumerate(utterances):
            npy = out / "lp" / f"host-w{bits}-{k}.npy"
            npy.parent.mkdir(exist_ok=True)
            host_out[k] = (run_runner(host, bundle, u.audio_filepath, threads=1, transcribe_only=True,
                                      logprobs=npy)[0], np.load(npy))
        for cpu in args.cpu or ["cortex-a76"]:
            start, worst, same, flipped, frames = time.perf_counter(), 0.0, 0, 0, 0
            for k, u in enumerate(utterances):
                npy = out / "lp" / f"arm-{cpu}-w{bits}-{k}.npy"
                text, _ = run_runner(folder / "allinone_runner", bundle, u.audio_filepath, threads=1,
                                     transcribe_only=True, logprobs=npy, emulator=emulator_command(cpu=cpu))
                arm_lp, host_lp = np.load(npy)[0], host_out[k][1][0]  # (T, V)
                worst = max(worst, float(np.abs(arm_lp - host_lp).max()))
                flipped += int((arm_lp.argmax(-1) != host_lp.argmax(-1)).sum())  # greedy choice differs: near-ties
                frames += len(arm_lp)
                same += text == host_out[k][0]
            rows.append({"bits": bits, "subnet": spec, "cpu": cpu, "utterances": len(utterances),
                         "max_abs_logprob_diff": worst, "tolerance": MAX_ABS_DIFF[bits], "identical_transcripts": same,
                         "flipped_frames": flipped, "frames": frames,
                         "seconds_of_audio": round(sum(u.duration for u in utterances), 1),
                         "wall_s": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), flush=True)
    (out / "arm64_parity.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n| precision | system | emulated CPU | utterances | max abs log-prob diff host vs arm64 | tolerance "
          f"| identical transcripts | frames whose greedy token differs |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bits']}-bit | {r['subnet']} | {r['cpu']} | {r['utterances']} | {r['max_abs_logprob_diff']:.3g} "
              f"| {r['tolerance']} | {r['identical_transcripts']}/{r['utterances']} | {r['flipped_frames']}/{r['frames']} |")


if __name__ == "__main__":
    main()
