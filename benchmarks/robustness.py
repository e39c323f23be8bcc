"""How a checkpoint does on speech unlike its training data: test WER under noise, reverberation, speaking rate
and telephone bandwidth, for a few of its nested systems. Prints a table (markdown).

The synthetic corpus is clean read speech from TTS voices; real speech differs in all of these ways and more
(human voices, spontaneous speech, microphones), so this bounds how far the model travels, from below.

    .venv/bin/python benchmarks/robustness.py --checkpoint checkpoints/conformer_small \\
        --manifest corpus/synth/test.jsonl --subnets d12-f512-h4-w32,d4-f128-h2-w4
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from allinone.checkpoint import load_checkpoint
from allinone.data.audio import load_audio
from allinone.data.augment import add_noise, add_reverb, change_speed
from allinone.data.manifest import read_manifest
from allinone.evaluate import evaluate
from allinone.spec import SubnetSpec

SAMPLE_RATE = 16000


def _telephone(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down to 8 kHz and back: the 4 kHz bandwidth of a phone call."""
    from scipy.signal import resample_poly

    return resample_poly(resample_poly(wave, 1, 2), 2, 1).astype(np.float32)[: len(wave)]


CONDITIONS = {
    "clean (held-out TTS voices)": lambda w, rng: w,
    "noise 20 dB SNR": lambda w, rng: add_noise(w, rng, 20.0),
    "noise 10 dB SNR": lambda w, rng: add_noise(w, rng, 10.0),
    "noise 0 dB SNR": lambda w, rng: add_noise(w, rng, 0.0),
    "reverb RT60 0.4 s": lambda w, rng: add_reverb(w, rng, 0.4),
    "reverb RT60 0.8 s": lambda w, rng: add_reverb(w, rng, 0.8),
    "speech 0.8x as fast": lambda w, rng: change_speed(w, 0.8),
    "speech 1.25x as fast": lambda w, rng: change_speed(w, 1.25),
    "telephone band (8 kHz)": _telephone,
}


def _perturbed_manifest(utterances, condition, directory: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for i, u in enumerate(utterances):
        wave = CONDITIONS[condition](load_audio(u.audio_filepath), rng)
        path = directory / f"{i:05d}.wav"
        sf.write(path, wave, SAMPLE_RATE)
        lines.append(json.dumps({"audio_filepath": str(path), "text": u.text, "duration": len(wave) / SAMPLE_RATE}))
    manifest = directory / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/conformer_small")
    parser.add_argument("--manifest", default="corpus/synth/test.jsonl")
    parser.add_argument("--subnets", help="comma-separated spec ids (default: the largest and smallest target)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    tokenizer = ckpt.tokenizer()
    specs = ([SubnetSpec.from_id(s) for s in args.subnets.split(",")] if args.subnets
             else [ckpt.targets[0], ckpt.targets[-1]])
    utterances = read_manifest(args.manifest, tokenizer=tokenizer).utterances
    rows = []
    for condition in CONDITIONS:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = _perturbed_manifest(utterances, condition, Path(tmp), args.seed)
            results = evaluate(ckpt.model, specs, read_manifest(manifest, tokenizer=tokenizer).utterances, tokenizer,
                               progress=False)
        rows.append((condition, results))
        print(f"{condition}: " + ", ".join(f"{r.subnet} {r.wer:.1%}" for r in results), flush=True)
    print()
    print(f"Test WER (CER) of {args.checkpoint} on {len(utterances)} utterances of {args.manifest}, perturbed:")
    print()
    print("| condition | " + " | ".join(s.id for s in specs) + " |")
    print("|---|" + "---:|" * len(specs))
    for condition, results in rows:
        print(f"| {condition} | " + " | ".join(f"{r.wer:.1%} ({r.cer:.1%})" for r in results) + " |")


if __name__ == "__main__":
    main()
