"""Issue 8's experiment: all-in-one compression of a CTC-trained wav2vec2 model, at our scale.

1. pretrain  a small `Wav2Vec2ForCTC` trained as an ordinary CTC model with transformers and saved in Hugging
             Face format (benchmarks/wav2vec2_pretrain.py) -> WORK/hf_model
2. import    `allinone import-hf WORK/hf_model --out WORK/imported` (FFN units and heads put in importance order)
3. compress  `allinone train --init WORK/imported --recipe recipes/wav2vec2_small.yaml` -> WORK/allinone
             (multitask + KL toward the float full system; interrupted runs resume)
4. eval      on the test set: the imported model (the HF model's own outputs) and every target of the
             all-in-one checkpoint; MAPSSWE of each target against the imported model
5. write     the wav2vec2 section of docs/results.md (between its markers; the rest of the file is
             benchmarks/results.py's) and print the table

    .venv/bin/python benchmarks/wav2vec2_results.py --corpus corpus/synth --work runs/wav2vec2 --compress-steps 600

Every stage is skipped when its output exists, so an interrupted run resumes by running the command again.
CPU seconds of each training are recorded in WORK/cpu_seconds.json (one thread each).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from allinone.checkpoint import load_checkpoint
from allinone.evaluate import mapsswe
from allinone.files import atomic_write_text
from allinone.size import subnet_size
from allinone.spec import SubnetSpec
from allinone.train.recipe import load_recipe
from results import _evaluated, _pct, _verdict  # benchmarks/results.py: same evaluation cache and wording

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- wav2vec2-results:begin -->", "<!-- wav2vec2-results:end -->"
IMPORTED = "imported"  # the imported model's largest float system: the HF model itself


def _run(cmd: list[str], log: Path, work: Path, name: str) -> None:
    """Run one stage as a child with one thread; add its CPU seconds to WORK/cpu_seconds.json."""
    path = work / "cpu_seconds.json"
    cpu = json.loads(path.read_text()) if path.is_file() else {}
    print(f"{name}: {' '.join(cmd)}", flush=True)
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=out,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
    cpu[name] = round(cpu.get(name, 0.0) + usage.ru_utime + usage.ru_stime, 1)
    atomic_write_text(path, json.dumps(cpu, indent=2) + "\n")


def _trained(run: Path, steps: int) -> bool:
    state = run / "trainer_state.json"
    return state.is_file() and json.loads(state.read_text())["step"] >= steps


def train_stages(args, work: Path) -> None:
    corpus = Path(args.corpus)
    hf = work / "hf_model"
    if not (hf / "config.json").is_file():
        _run([sys.executable, str(ROOT / "benchmarks" / "wav2vec2_pretrain.py"), "--corpus", args.corpus,
              "--out", str(hf), "--steps", str(args.pretrain_steps)], work / "pretrain.log", work, "pretrain")
    imported = work / "imported"
    if not (imported / "config.json").is_file():
        _run([sys.executable, "-m", "allinone.cli", "import-hf", str(hf), "--out", str(imported)],
             work / "import.log", work, "import")
    run = work / "allinone"
    if not _trained(run, args.compress_steps):
        cmd = [sys.executable, "-m", "allinone.cli", "train", "--init", str(imported), "--recipe", args.recipe,
               "--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"), "--out", str(run),
               "--max-steps", str(args.compress_steps), "--no-progress"]
        if (run / "trainer_state.json").is_file():
            cmd.append("--resume")
        _run(cmd, work / "allinone.log", work, "compress")


def char_test(a, b) -> tuple[float, float]:
    """Matched-pairs test on character errors, utterances as the pairs: (mean difference a - b per utterance,
    two-sided p of the z statistic). MAPSSWE's segments need words both systems got right, which a model at
    95 % WER hardly has; characters still separate the systems."""
    errors_b = {h.id: h.char_errors for h in b.hypotheses}
    diffs = [h.char_errors - errors_b[h.id] for h in a.hypotheses]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)
    if var == 0:
        return mean, 1.0 if mean == 0 else 0.0
    z = mean / math.sqrt(var / len(diffs))
    return mean, math.erfc(abs(z) / math.sqrt(2))


def _char_verdict(mean: float, p: float) -> str:
    if p >= 0.05:
        return f"not significant (p={p:.3f})"
    return f"{'worse' if mean > 0 else 'better'}, p={p:.3g}"


def report(args, work: Path, recipe, hyps: dict, reference, sizes: dict[str, int], cpu: dict) -> str:
    full_bytes, own_full = sizes[IMPORTED], recipe.targets[0]
    rows, best, best_chars = [], None, None
    for target in recipe.targets:
        result = mapsswe(hyps[target], reference)
        ratio = full_bytes / sizes[target]
        worse = result.significant and result.better == "b"
        if not worse and (best is None or ratio > best[1]):
            best = (target, ratio)
        mean, p = char_test(hyps[target], reference)
        if not (p < 0.05 and mean > 0) and (best_chars is None or ratio > best_chars[1]):
            best_chars = (target, ratio)
        own = "-" if target == own_full else _verdict(mapsswe(hyps[target], hyps[own_full]))
        rows.append(f"| {target} | {sizes[target] / 2**20:.2f} | {ratio:.2f}x | {_pct(hyps[target].wer)} | "
                    f"{_pct(hyps[target].cer)} | {_verdict(result)} | {_char_verdict(mean, p)} | {own} |")
    pretrain = json.loads((work / "hf_model.json").read_text()) if (work / "hf_model.json").is_file() else {}
    lines = [
        BEGIN,
        "## wav2vec2: all-in-one compression of a CTC-trained wav2vec2 model (issue 8)",
        "",
        f"Generated by `benchmarks/wav2vec2_results.py` on {datetime.date.today().isoformat()} "
        f"({platform.machine()}, {os.cpu_count()} CPUs). Command:",
        "",
        "```",
        f"nice .venv/bin/python benchmarks/wav2vec2_results.py --corpus {args.corpus} --work {args.work} "
        f"--pretrain-steps {args.pretrain_steps} --compress-steps {args.compress_steps}",
        "```",
        "",
        "The paper compresses a wav2vec2.0 fine-tuned on LibriSpeech-100h (up to 3.93x smaller with no significant "
        "WER increase). Nothing can be downloaded here, so the \"fine-tuned foundation model\" is a small "
        f"`Wav2Vec2ForCTC` ({pretrain.get('params', 0):,} parameters: hidden 192, 8 pre-norm layers, 6 heads, FFN 768, "
        "7 x 64-channel feature encoder) trained with transformers as an ordinary CTC model on the synthetic "
        f"corpus' training split for {pretrain.get('steps', args.pretrain_steps)} steps "
        f"({pretrain.get('cpu_seconds', 0):,.0f} CPU s, one thread), saved in Hugging Face format, imported with `allinone import-hf` "
        f"(units and heads in importance order) and compressed all-in-one with `{args.recipe}` for "
        f"{args.compress_steps} steps ({cpu.get('compress', 0):,.0f} CPU s, one thread). No self-supervised "
        "pre-training: the model has seen only this corpus.",
        "",
        f"Test set: {reference.n_utterances} utterances, {reference.ref_words:,} words. Reference: the imported "
        f"model (the HF model's own outputs; its float full system, {full_bytes / 2**20:.2f} MiB of weights), "
        f"WER {_pct(reference.wer)}, CER {_pct(reference.cer)}. Sizes are the deployed weight bytes (the feature "
        "encoder and positional convolution stay float at 8 and 4 bits); MAPSSWE is each all-in-one system "
        "against the imported model, and against the all-in-one run's own float full system (which kept "
        "training on the same data during compression, so it may have moved away from the imported model).",
        "",
        "| system | weights MiB | smaller by | test WER | test CER | vs imported: MAPSSWE (words) | vs imported: "
        "character errors | vs all-in-one float full: MAPSSWE |",
        "|---|---:|---:|---:|---:|---|---|---|",
        *rows,
        "",
    ]
    if best is not None:
        lines.append(f"Largest compression with no significant WER increase over the imported model (MAPSSWE, "
                     f"as the paper tests): **{best[0]}, {best[1]:.2f}x** (the paper: 3.93x).")
    else:
        lines.append("No compressed system matches the imported model's WER (every one is significantly worse).")
    if reference.wer > 0.8:
        lines += ["", f"Read that with care: at {_pct(reference.wer)} WER nearly every word is wrong in every "
                  "system, so MAPSSWE (whose segments end at words both systems got right) has almost no power "
                  "here. The character-error column is the informative one (a matched-pairs z test on each "
                  "utterance's character edits): by it the largest compression with no significant increase is "
                  + (f"**{best_chars[0]}, {best_chars[1]:.2f}x**." if best_chars else "none.")
                  + f" The all-in-one float full system's own CER ({_pct(hyps[own_full].cer)}) is lower than the "
                  f"imported model's ({_pct(reference.cer)}): the compression run also continued CTC training on "
                  "the same data, and the compressed systems share that gain."]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the marked section of `path` (or append it), leaving the rest of the file as it is."""
    text = path.read_text() if path.is_file() else ""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpus/synth", help="directory with train/dev/test.jsonl")
    parser.add_argument("--work", default="runs/wav2vec2")
    parser.add_argument("--recipe", default="recipes/wav2vec2_small.yaml")
    parser.add_argument("--pretrain-steps", type=int, default=2500)
    parser.add_argument("--compress-steps", type=int, default=600)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(args.recipe)
    train_stages(args, work)
    test = Path(args.corpus) / "test.jsonl"
    imported_ckpt = load_checkpoint(work / "imported")
    full = max(imported_ckpt.model.search_space.enumerate(), key=lambda s: (s.weight_bits, s.depth, s.ffn_dim, s.heads))
    reference = _evaluated(work / "imported", [full.id], test, work / "eval", {full.id: IMPORTED})[full.id]
    hyps = _evaluated(work / "allinone", list(recipe.targets), test, work / "eval")
    model = load_checkpoint(work / "allinone").model
    sizes = {t: subnet_size(model, SubnetSpec.from_id(t)).weight_bytes for t in recipe.targets}
    sizes[IMPORTED] = subnet_size(imported_ckpt.model, full).weight_bytes
    cpu = json.loads((work / "cpu_seconds.json").read_text()) if (work / "cpu_seconds.json").is_file() else {}
    section = report(args, work, recipe, hyps, reference, sizes, cpu)
    write_section(Path(args.out), section)
    print(section)


if __name__ == "__main__":
    main()
