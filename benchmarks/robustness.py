"""Robustness, two tables (markdown).

1. How a checkpoint does on speech unlike its training data: test WER under noise, reverberation, speaking rate
   and telephone bandwidth, for a few of its nested systems. The synthetic corpus is clean read speech from TTS
   voices; real speech differs in all of these ways and more (human voices, spontaneous speech, microphones),
   so this bounds how far the model travels, from below.

    .venv/bin/python benchmarks/robustness.py --checkpoint checkpoints/conformer_small \\
        --manifest corpus/synth/test.jsonl --subnets d12-f512-h4-w32,d4-f128-h2-w4

2. `--bad-inputs`: every bad-input case (broken audio, tampered bundles, hostile YAML/JSON, damaged and NaN
   checkpoints, broken manifests) run through the real `allinone` CLI, with its exit code and the first line it
   printed (stderr, else stdout). Needs only the tiny test checkpoint; about five minutes on 2 cores.

    .venv/bin/python benchmarks/robustness.py --bad-inputs
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
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


# ---- table 2: bad inputs through the real CLI ------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
ALLINONE = str(Path(sys.executable).parent / "allinone")
TINY = ROOT / "tests" / "fixtures" / "tiny_overfit"
SAMPLE = ROOT / "sdk" / "allinone" / "assets" / "sample.wav"
TEXT = (ROOT / "sdk" / "allinone" / "assets" / "sample.txt").read_text().strip()
DEEP_JSON = "[" * 5000 + "]" * 5000  # 10 KB


def _write(path: Path, content: str | bytes) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _wav(path: Path, wave: np.ndarray, subtype: str = "PCM_16") -> str:
    sf.write(path, wave, SAMPLE_RATE, subtype=subtype)
    return str(path)


def _cut(path: str, keep: int) -> str:
    """`path` cut to its first `keep` bytes: a copy interrupted half way."""
    return _write(Path(path), Path(path).read_bytes()[:keep])


def _manifest(path: Path, audio: str) -> str:
    return _write(path, json.dumps({"audio_filepath": audio, "text": TEXT}) + "\n")


def _sparse(path: Path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def _replace_value(yaml_text: str, key: str, value: str) -> str:
    """`key: old` -> `key: value` on the first line that sets `key` (keeps the file's layout and comments)."""
    lines = yaml_text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
    lines[i] = lines[i][: lines[i].index(":") + 1] + f" {value}"
    return "\n".join(lines) + "\n"


def _checkpoint_copy(tmp: Path, name: str, damage=None) -> str:
    """A copy of the tiny checkpoint; `damage` (applied to each parameter) makes it a real, damaged one."""
    import torch

    from allinone.checkpoint import load_checkpoint, save_checkpoint

    out = tmp / name
    if damage is None:
        shutil.copytree(TINY, out)
        return str(out)
    ckpt = load_checkpoint(TINY)
    with torch.no_grad():
        for p in ckpt.model.parameters():
            damage(p)
    save_checkpoint(out, ckpt.model, targets=ckpt.targets, vocabulary=ckpt.config["vocabulary"])
    return str(out)


def _bundle_copy(bundle: Path, tmp: Path, name: str, manifest: str | None = None) -> str:
    """A copy of `bundle` named `name`, its manifest.json replaced by `manifest` (deleted when it is "")."""
    out = tmp / name
    shutil.copytree(bundle, out)
    if manifest == "":
        (out / "manifest.json").unlink()
    elif manifest is not None:
        _write(out / "manifest.json", manifest)
    return str(out)


def _edited(bundle: Path, edit) -> str:
    """The bundle's manifest.json text after `edit(data)`."""
    data = json.loads((bundle / "manifest.json").read_text())
    edit(data)
    return json.dumps(data, indent=2)


def _audio_cases(tmp: Path, b: str) -> list[tuple[str, list[str]]]:
    speech = sf.read(str(SAMPLE), dtype="float32")[0]  # (N,) real speech
    nan, inf = speech.copy(), speech.copy()
    nan[1000:1010], inf[5] = np.nan, np.inf
    sf.write(tmp / "8k.wav", speech[::2], 8000)
    return [
        ("audio: NaN samples", ["transcribe", b, _wav(tmp / "nan.wav", nan, "FLOAT")]),
        ("audio: an infinite sample", ["transcribe", b, _wav(tmp / "inf.wav", inf, "FLOAT")]),
        ("audio: 1000x full scale (a warning)", ["transcribe", b, _wav(tmp / "loud.wav", speech * 1000, "FLOAT")]),
        ("audio: digital silence (a note)", ["transcribe", b, _wav(tmp / "silent.wav", np.zeros(SAMPLE_RATE))]),
        ("audio: 0 samples", ["transcribe", b, _wav(tmp / "empty.wav", np.zeros(0))]),
        ("audio: WAV header says 4 s, 1 KB of data", ["transcribe", b, _cut(_wav(tmp / "cut.wav", speech), 44 + 1024)]),
        ("audio: FLAC cut in half", ["transcribe", b, _cut(_wav(tmp / "cut.flac", speech), 20000)]),
        ("audio: text file named .wav", ["transcribe", b, _write(tmp / "text.wav", "not audio")]),
        ("audio: missing file", ["transcribe", b, str(tmp / "missing.wav")]),
        ("audio: 8 kHz (resampled, a note)", ["transcribe", b, str(tmp / "8k.wav")]),
    ]


def _bundle_cases(tmp: Path, bundle: Path) -> list[tuple[str, list[str]]]:
    good = str(SAMPLE)
    nan_manifest = _edited(bundle, lambda d: d["verification"].update(max_abs_diff="NAN")).replace('"NAN"', "NaN")
    pte = Path(_bundle_copy(bundle, tmp, "tampered_pte")) / "model.pte"
    pte.write_bytes(pte.read_bytes()[:-16] + b"\0" * 16)
    return [
        ("bundle: no such directory", ["transcribe", str(tmp / "nobundle"), good]),
        ("bundle: manifest.json missing", ["inspect", _bundle_copy(bundle, tmp, "no_manifest", "")]),
        ("bundle: manifest.json not JSON", ["transcribe", _bundle_copy(bundle, tmp, "not_json", "{not"), good]),
        ("bundle: manifest.json 5000 deep", ["transcribe", _bundle_copy(bundle, tmp, "deep", DEEP_JSON), good]),
        ("bundle: NaN in manifest.json (inspect)", ["inspect", _bundle_copy(bundle, tmp, "nan", nan_manifest)]),
        ("bundle: NaN in manifest.json (transcribe)", ["transcribe", str(tmp / "nan"), good]),
        ("bundle: model.pte modified (transcribe)", ["transcribe", str(pte.parent), good]),
        ("bundle: model.pte modified (inspect)", ["inspect", str(pte.parent)]),
        ("bundle: format_version 7", ["transcribe", _bundle_copy(bundle, tmp, "v7", _edited(
            bundle, lambda d: d.update(format_version=7))), good]),
        ("bundle: sizes edited to a string (inspect)", ["inspect", _bundle_copy(bundle, tmp, "sizes", _edited(
            bundle, lambda d: d.update(sizes="?")))]),
    ]


def _profile_and_recipe_cases(tmp: Path, good_manifest: str) -> list[tuple[str, list[str]]]:
    profile = (ROOT / "device_profiles" / "pixel-8.yaml").read_text()
    recipe = (ROOT / "recipes" / "tiny.yaml").read_text()
    deep = _write(tmp / "deep.yaml", "x: " + "[" * 500 + "]" * 500 + "\n")  # 1 KB
    catalog = _write(tmp / "catalog.json", json.dumps({"format_version": 1, "kind": "allinone-catalog", "entries": []}))
    train = ["--train", good_manifest, "--dev", good_manifest, "--no-progress"]
    return [
        ("profile: 500-deep YAML (validate)", ["profiles", "validate", deep]),
        ("profile: 500-deep YAML (select)", ["select", "--catalog", catalog, "--profile", deep]),
        ("profile: unknown key", ["profiles", "validate", _write(tmp / "typo.yaml", profile.replace(
            "max_model_mib", "max_modle_mib"))]),
        ("profile: duplicate key", ["profiles", "validate", _write(tmp / "dup.yaml", profile + "threads: 2\n")]),
        ("profile: .nan budget", ["profiles", "validate", _write(tmp / "nan.yaml", _replace_value(
            profile, "max_rtf", ".nan"))]),
        ("profile: not UTF-8", ["profiles", "validate", _write(tmp / "latin1.yaml", b"name: \xe9\n")]),
        ("profile: 17 MiB file", ["profiles", "validate", _sparse(tmp / "huge.yaml", 17 * 2**20)]),
        ("recipe: 500-deep YAML", ["train", "--recipe", deep, *train, "--out", str(tmp / "run0")]),
        ("recipe: lr .nan", ["train", "--recipe", _write(tmp / "nan_recipe.yaml", _replace_value(recipe, "lr", ".nan")),
                             *train, "--out", str(tmp / "run1")]),
    ]


def _checkpoint_cases(tmp: Path, m: dict) -> list[tuple[str, list[str]]]:
    nan_ckpt = _checkpoint_copy(tmp, "nan_ckpt", lambda p: p.fill_(float("nan")))
    inf_ckpt = _checkpoint_copy(tmp, "inf_ckpt", lambda p: p.mul_(1e38).mul_(1e38))
    tampered = _checkpoint_copy(tmp, "tampered_ckpt")
    weights = Path(tampered) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    no_config = _checkpoint_copy(tmp, "no_config_ckpt")
    (Path(no_config) / "config.json").unlink()
    deep_config = _checkpoint_copy(tmp, "deep_config_ckpt")
    _write(Path(deep_config) / "config.json", DEEP_JSON)
    good = ["--manifest", m["good"]]
    return [
        ("train: a NaN WAV in the corpus", ["train", "--recipe", "tiny", "--train", m["nan"], "--dev", m["good"],
                                            "--out", str(tmp / "run2"), "--no-progress"]),
        ("train: --init from a NaN checkpoint", ["train", "--recipe", "tiny", "--init", nan_ckpt, "--train", m["good"],
                                                 "--dev", m["good"], "--out", str(tmp / "run3"), "--no-progress"]),
        ("checkpoint: config.json missing", ["eval", "--checkpoint", no_config, *good]),
        ("checkpoint: config.json 5000 deep", ["eval", "--checkpoint", deep_config, *good]),
        ("checkpoint: weights modified", ["eval", "--checkpoint", tampered, *good]),
        ("checkpoint: NaN weights (eval)", ["eval", "--checkpoint", nan_ckpt, *good]),
        ("checkpoint: inf weights (eval)", ["eval", "--checkpoint", inf_ckpt, *good]),
        ("checkpoint: NaN weights (catalog)", ["catalog", "--checkpoint", nan_ckpt, *good, "--no-activations"]),
        ("checkpoint: NaN weights (export)", ["export", "--checkpoint", nan_ckpt, "--subnet", "d1-f64-h1-w32", "--out",
                                              str(tmp / "nan_bundle")]),
    ]


def _manifest_cases(tmp: Path, m: dict) -> list[tuple[str, list[str]]]:
    good = str(SAMPLE)
    dotdot = tmp / "dotdot"
    (dotdot / "sub").mkdir(parents=True)
    _write(dotdot / "wav.scp", f"a {good}\n")
    _write(dotdot / "text", f"a {TEXT}\n")
    empty = _write(tmp / "empty.jsonl", "")
    return [
        ("manifest: missing", ["data", "check", str(tmp / "missing.jsonl")]),
        ("manifest: empty (--strict)", ["data", "check", "--strict", empty]),
        ("manifest: empty (eval)", ["eval", "--checkpoint", _checkpoint_copy(tmp, "ckpt_e"), "--manifest", empty]),
        ("manifest: NaN WAV (headers only)", ["data", "check", m["nan"]]),
        ("manifest: NaN WAV (--strict)", ["data", "check", "--strict", m["nan"]]),
        ("manifest: NaN WAV (eval)", ["eval", "--checkpoint", _checkpoint_copy(tmp, "ckpt_n"), "--manifest", m["nan"]]),
        ("manifest: truncated WAV (--strict)", ["data", "check", "--strict", m["cut"]]),
        ("manifest: 1000x full scale (--deep, a warning)", ["data", "check", "--deep", m["loud"]]),
        ("manifest: silent WAV (--deep, a warning)", ["data", "check", "--deep", m["silent"]]),
        ("manifest: ../../etc/passwd as audio (--strict)", ["data", "check", "--strict", _manifest(
            tmp / "traversal.jsonl", "../../../../../../../../etc/passwd")]),
        ("manifest: 5000-deep JSON line (--strict)", ["data", "check", "--strict", _write(tmp / "deep.jsonl",
                                                                                           DEEP_JSON + "\n")]),
        ("manifest: NaN duration (--strict)", ["data", "check", "--strict", _write(
            tmp / "nan_duration.jsonl", f'{{"audio_filepath": "{good}", "text": "hi", "duration": NaN}}\n')]),
        ("manifest: `..` (eval: hypotheses in CKPT/eval/dotdot/)", ["eval", "--checkpoint", _checkpoint_copy(
            tmp, "ckpt_d"), "--manifest", "..", "--subnet", "d1-f64-h1-w4"]),
    ]


def _other_json_cases(tmp: Path) -> list[tuple[str, list[str]]]:
    (tmp / "dist" / "x").mkdir(parents=True)
    _write(tmp / "dist" / "x" / "report.json", '{"format_version": 1, "load_ms": Infinity}')
    return [
        ("catalog: 5000-deep JSON", ["select", "--catalog", _write(tmp / "deep_catalog.json", DEEP_JSON), "--profile",
                                     "pixel-8"]),
        ("catalog: NaN literal", ["select", "--catalog", _write(tmp / "nan_catalog.json", '{"entries": NaN}'),
                                  "--profile", "pixel-8"]),
        ("hypotheses: NaN literal", ["compare", _write(tmp / "a.hyps.jsonl", '{"format_version": 1, "wer": NaN}\n'),
                                     str(tmp / "a.hyps.jsonl")]),
        ("report: 5000-deep JSON (calibrate)", ["calibrate", "--profile", "pixel-8", "--report",
                                                _write(tmp / "deep_report.json", DEEP_JSON)]),
        ("report: Infinity literal (report)", ["report", str(tmp / "dist")]),
    ]


def _bad_input_cases(tmp: Path, bundle: Path) -> list[tuple[str, list[str]]]:
    """(what is wrong, CLI arguments) per case; every file is written here, under `tmp`."""
    cases = _audio_cases(tmp, str(bundle))  # writes the WAVs the manifests below point at
    m = {name: _manifest(tmp / f"{name}.jsonl", str(tmp / f"{name}.wav")) for name in ("nan", "cut", "loud", "silent")}
    m["good"] = _manifest(tmp / "good.jsonl", str(SAMPLE))
    return (cases + _bundle_cases(tmp, bundle) + _profile_and_recipe_cases(tmp, m["good"]) + _checkpoint_cases(tmp, m)
            + _manifest_cases(tmp, m) + _other_json_cases(tmp))


def _first_line(done: subprocess.CompletedProcess, tmp: Path) -> str:
    """The first line a user reads: stderr's first line that is not a progress bar or an INFO log, else stdout's."""
    lines = [line.strip() for line in re.split(r"[\r\n]", done.stderr) if line.strip()]
    lines = [line for line in lines if not re.match(r"(INFO |W\d{4} |evaluating |\d+%\|)", line)]
    line = lines[0] if lines else (done.stdout.strip().splitlines() or [""])[0]
    return line.replace(str(tmp), "TMP").replace(str(ROOT) + "/", "")


def bad_input_table() -> str:
    """Run every case through the CLI: a markdown table of case, command, exit code and first line printed."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bundle = tmp / "bundle"
        subprocess.run([ALLINONE, "export", "--checkpoint", str(TINY), "--subnet", "d1-f64-h1-w4", "--out", str(bundle)],
                       check=True, capture_output=True)
        rows, tracebacks = [], []
        for what, args in _bad_input_cases(tmp, bundle):
            cwd = tmp / "dotdot" / "sub" if ".." in args else tmp
            done = subprocess.run([ALLINONE, *args], capture_output=True, text=True, cwd=cwd, timeout=900)
            command = " ".join(args[:2] if args[0] in ("data", "profiles") else args[:1])
            rows.append((what, command, done.returncode, _first_line(done, tmp)))
            if "Traceback" in done.stderr:
                tracebacks.append(what)
            print(f"{what}: exit {done.returncode}", file=sys.stderr, flush=True)
    codes = {code: sum(row[2] == code for row in rows) for code in sorted({row[2] for row in rows})}
    out = [f"{len(rows)} bad inputs through `allinone`: " + ", ".join(f"exit {c}: {n}" for c, n in codes.items())
           + " (0: accepted, with the warning or note shown; 2: bad input; 4: verification failed); "
           + (f"tracebacks: {', '.join(tracebacks)}" if tracebacks else "no case printed a traceback") + ".", "",
           "| case | command | exit | first line printed (TMP: the cases' folder) |", "|---|---|---:|---|"]
    out += [f"| {what} | `{command}` | {code} | {line.replace('|', '/')} |" for what, command, code, line in rows]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/conformer_small")
    parser.add_argument("--manifest", default="corpus/synth/test.jsonl")
    parser.add_argument("--subnets", help="comma-separated spec ids (default: the largest and smallest target)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bad-inputs", action="store_true", help="print the bad-input table instead (table 2)")
    args = parser.parse_args()
    if args.bad_inputs:
        print(bad_input_table())
        return
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
