"""The all-in-one paper's headline comparisons on our corpus; writes docs/results.md and its WER-vs-size plot.

Li et al., "One-pass Multiple Conformer and Foundation Speech Systems Compression and Quantization Using An
All-in-one Neural Model", Interspeech 2024, claim: nested systems as good as individually trained ones,
12.8x compression with no significant WER increase, and a 3.4x training-time saving. This script tests them:

1. train   the recipe's all-in-one run (WORK/allinone) and each --baselines target alone with the same data,
           code and schedule (WORK/only-ID). Finished runs are skipped, interrupted ones resumed (--resume).
2. eval    every target of the all-in-one checkpoint and each baseline on the test set; hypotheses are saved
           under WORK/eval and reused while newer than the checkpoint.
3. compare MAPSSWE of each all-in-one target against its individually trained twin, and of every target
           against the individually trained float full system (the compression claim).
4. cost    training time: one all-in-one step (the recipe's sandwich) vs one step of each target alone, timed
           on the same batches in this process, settings taking turns (ratios, not absolute seconds, are
           what a shared machine can measure); plus the CPU seconds of the real runs where recorded.
5. write   docs/results.md and docs/results_wer_vs_size.png (dev WER of the nested systems in the
           shipped checkpoint's catalog, targets marked).

    .venv/bin/python benchmarks/results.py --corpus corpus/synth --work runs/results \\
        --baselines d12-f512-h4-w32,d8-f384-h3-w4,d6-f256-h2-w8,d4-f128-h2-w4 --jobs 2

With --allinone CKPT the all-in-one run is that already trained checkpoint (e.g. a shipped one trained over
several sessions) instead of one trained here; with --baselines none no system is trained alone, and the
report says the first claim was not measured. For conformer_medium (docs/results_medium.md):

    .venv/bin/python benchmarks/results.py --recipe recipes/conformer_medium.yaml \\
        --allinone checkpoints/conformer_medium --checkpoint checkpoints/conformer_medium --baselines none \\
        --corpus ~/.cache/allinone/corpus/v1 --cost-corpus ~/.cache/allinone/corpus/v2 --out docs/results_medium.md

An interrupted run of this script is resumed by running the same command again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from allinone.checkpoint import load_checkpoint
from allinone.errors import BadInputError
from allinone.evaluate import evaluate, load_hypotheses, mapsswe, save_hypotheses
from allinone.files import atomic_write_bytes, atomic_write_text
from allinone.select import checkpoint_catalog
from allinone.spec import SubnetSpec
from allinone.train.recipe import Recipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]
CPU_SECONDS = "cpu_seconds.json"  # per run directory name: CPU seconds of its training process(es)


# ---- 1. training ------------------------------------------------------------------------------------------------


def _finished(run: Path, recipe: Recipe) -> bool:
    state = run / "trainer_state.json"
    return state.is_file() and json.loads(state.read_text())["step"] >= recipe.max_steps


def _train_command(args, run: Path, only: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "allinone.cli", "train", "--recipe", args.recipe, "--train",
           str(Path(args.corpus) / "train.jsonl"), "--dev", str(Path(args.corpus) / "dev.jsonl"), "--out", str(run),
           "--no-progress"]
    if only:
        cmd += ["--only", only]
    if (run / "trainer_state.json").is_file():
        cmd.append("--resume")
    return cmd


def train_all(args, recipe: Recipe, work: Path) -> None:
    """Run the missing trainings, `args.jobs` at a time, one thread each; record each run's CPU seconds."""
    runs = ([] if args.allinone else [(work / "allinone", None)]) + [(work / f"only-{b}", b) for b in args.baselines]
    todo = [(run, only) for run, only in runs if not _finished(run, recipe)]
    cpu_path = work / CPU_SECONDS
    cpu = json.loads(cpu_path.read_text()) if cpu_path.is_file() else {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: dict[int, tuple[Path, subprocess.Popen]] = {}
    while todo or running:
        while todo and len(running) < args.jobs:
            run, only = todo.pop(0)
            print(f"training {run.name} ({'resuming' if (run / 'trainer_state.json').is_file() else 'new'})", flush=True)
            log = open(work / f"{run.name}.log", "a")
            proc = subprocess.Popen(_train_command(args, run, only), env=env, stdout=log, stderr=subprocess.STDOUT)
            running[proc.pid] = (run, proc)
        pid, status, usage = os.wait4(-1, 0)  # rusage of that child and its waited-for children (data workers)
        if pid not in running:
            continue
        run, _ = running.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"training {run} failed (exit {os.waitstatus_to_exitcode(status)}); see {work / run.name}.log")
        cpu[run.name] = cpu.get(run.name, 0.0) + usage.ru_utime + usage.ru_stime
        atomic_write_text(cpu_path, json.dumps(cpu, indent=2) + "\n")


def _trained(checkpoint: Path) -> str:
    """How far a given all-in-one checkpoint was trained, from the last line of its metrics.jsonl."""
    metrics = checkpoint / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    if not lines:
        return "training log not shipped"
    last = json.loads(lines[-1])
    config = json.loads((checkpoint / "config.json").read_text())
    where = config.get("trained_on", {"device": "cpu"})
    if not {"step", "audio_h", "cpu_s"} <= last.keys():
        trained = f"step {last.get('step', '?')}"
    elif where["device"] == "cpu" or "elapsed_s" not in last:
        trained = f"step {last['step']:,}, {last['audio_h']:.1f} h of audio seen, {last['cpu_s']:,.0f} CPU-s"
    else:  # the host's CPU seconds only fed the accelerator: its wall time is the cost
        trained = (f"step {last['step']:,}, {last['audio_h']:.1f} h of audio seen in {last['elapsed_s']:,.0f} s on "
                   f"{where['processes']} {where['device']} device(s) ({where['name']}; {last['cpu_s']:,.0f} host "
                   "CPU-s, not comparable with CPU training)")
    start = config.get("init", {})
    if start.get("trained_steps"):  # a continuation: its log counts from its start (config.json `init`)
        trained += f", continuing {start['path']} trained {start['trained_steps']:,} steps"
        total, segment = config.get("trained_steps", last.get("step", 0)), start
        while segment.get("trained_steps"):
            total, segment = total + segment["trained_steps"], segment.get("init", {})
        trained += f" ({total:,} steps in all)"
    return trained


# ---- 2. evaluation ----------------------------------------------------------------------------------------------


def _evaluated(checkpoint: Path, subnets: list[str], test: Path, out: Path, names: dict[str, str] | None = None) -> dict:
    """SystemResult per subnet on `test`, reusing saved hypotheses newer than the checkpoint's weights; they
    are saved as OUT/NAME.hyps.jsonl, NAME being the subnet id unless `names` gives another."""
    weights_time = (checkpoint / "model.safetensors").stat().st_mtime
    paths = {s: out / f"{(names or {}).get(s, s)}.hyps.jsonl" for s in subnets}
    todo = [s for s, p in paths.items() if not p.is_file() or p.stat().st_mtime < weights_time]
    if todo:
        print(f"evaluating {checkpoint.name}: {', '.join(todo)}", flush=True)
        ckpt = load_checkpoint(checkpoint)
        from allinone.data.manifest import read_manifest

        utterances = read_manifest(test, tokenizer=ckpt.tokenizer()).utterances
        for result in evaluate(ckpt.model, [SubnetSpec.from_id(s) for s in todo], utterances, ckpt.tokenizer()):
            save_hypotheses(result, paths[result.subnet], checkpoint=str(checkpoint), manifest=str(test))
    return {s: load_hypotheses(p) for s, p in paths.items()}


# ---- 4. training cost -------------------------------------------------------------------------------------------


def step_costs(recipe: Recipe, manifest: Path, steps: int) -> dict[str, float]:
    """CPU seconds per optimisation step, one thread (as the real runs), of the all-in-one recipe and of each
    target alone, on the same batches, settings taking turns. CPU time rather than wall time, so other load
    on a shared machine does not count. The all-in-one steps are the recipe's own steps 1..steps, so the
    sampled middle targets vary as they do in the real run."""
    sys.path.insert(0, str(Path(__file__).parent))
    from train_throughput import _batches, _loop

    torch.set_num_threads(1)
    base = recipe.to_dict()
    settings = {"all-in-one": recipe}
    for target in recipe.targets:
        settings[target] = Recipe(**{**base, "targets": (target,), "systems_per_step": None, "kl_weight": 0.0})
    batches, vocab_size = _batches(str(manifest), recipe, recipe.max_batch_seconds, steps + 1)
    loops = {name: _loop(r, vocab_size, share_front=True) for name, r in settings.items()}  # as the trainer runs
    totals = dict.fromkeys(loops, 0.0)
    for i, batch in enumerate(batches):
        for name, one in loops.items():
            start = time.process_time()
            one.step(batch, i)
            if i > 0:  # the first batch warms up
                totals[name] += time.process_time() - start
    return {name: seconds / steps for name, seconds in totals.items()}


# ---- 5. report --------------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _verdict(result) -> str:
    if not result.significant:
        return f"not significant (p={result.p_value:.3f})"
    return f"{'better' if result.better == 'a' else 'worse'}, p={result.p_value:.3g}"


def plot_wer_vs_size(catalog_path: Path, targets: list[str], full_bytes: int, out: Path) -> int:
    """Dev WER of every catalogued system against its weight size; targets marked. Returns the point count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in json.loads(catalog_path.read_text())["entries"] if e.get("wer") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    colours = {32: "tab:blue", 8: "tab:orange", 4: "tab:green"}
    for bits in (32, 8, 4):
        pts = [e for e in entries if e["weight_bits"] == bits]
        ax.scatter([e["weight_bytes"] / 2**20 for e in pts], [100 * e["wer"] for e in pts], s=12, alpha=0.6,
                   color=colours[bits], label=f"{bits}-bit weights")
    marked = [e for e in entries if e["subnet"] in targets]
    ax.scatter([e["weight_bytes"] / 2**20 for e in marked], [100 * e["wer"] for e in marked], s=70,
               facecolors="none", edgecolors="black", linewidths=1.2, label="trained targets")
    ax.axvline(full_bytes / 12.8 / 2**20, color="grey", linestyle=":", label="12.8x smaller than float full")
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))  # 2, 5, 10 MiB rather than 2 x 10^0
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("weights (MiB, log scale)")
    ax.set_ylabel("dev WER (%)")
    ax.set_title(f"{len(entries)} nested systems of the shipped checkpoint (catalog)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(out, buffer.getvalue())
    return len(entries)


def write_report(args, recipe: Recipe, work: Path, aio: dict, twins: dict, costs: dict[str, float]) -> str:
    full_id = recipe.targets[0]
    reference = twins.get(full_id) or aio[full_id]  # the individually trained float full system when trained
    reference_name = "individually trained" if full_id in twins else "all-in-one"
    full_bytes = aio[full_id].bytes
    lines = [
        "# Results: the all-in-one paper's claims at our scale" + (f" ({recipe.name})" if args.allinone else ""),
        "",
        f"Generated by `benchmarks/results.py` on {datetime.date.today().isoformat()} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs). Command:",
        "",
        "```",
        "nice .venv/bin/python benchmarks/results.py " + " ".join(args.command) if args.allinone else
        "nice .venv/bin/python benchmarks/results.py --corpus " + args.corpus + " --work " + args.work_arg +
        " --baselines " + ",".join(args.baselines) + f" --jobs {args.jobs}",
        "```",
        "",
        f"Recipe `{args.recipe}`: {len(recipe.targets)} targets, {recipe.max_steps} steps, sandwich of "
        f"{recipe.systems_per_step} systems per step, KL weight {recipe.kl_weight}, batches of <= "
        f"{recipe.max_batch_seconds:g} s. "
        + (f"The all-in-one system is `{args.allinone}` ({args.allinone_trained}). " if args.allinone else "")
        + ("Baselines: the same code, data, schedule and seed with one system (`allinone train --only ID`). "
           if args.baselines else "No system was trained alone (`--baselines none`). ")
        + "Test set: " + f"{aio[full_id].n_utterances} utterances, "
        f"{aio[full_id].ref_words} words (held-out sentences; see docs/data.md). WER is greedy CTC, corpus level; "
        "significance is the MAPSSWE test at p < 0.05 (`allinone compare`).",
        "",
        "## Every target: all-in-one vs individually trained, size and compression",
        "",
        f"Compression is against the float full system ({full_id}, {full_bytes / 2**20:.2f} MiB of weights, "
        "frontend constants included). \"vs float full\" tests each all-in-one system against the "
        f"{reference_name} float full system ({_pct(reference.wer)} WER).",
        "",
        "| target | weights MiB | compression | all-in-one WER | individual WER | all-in-one vs individual | vs float full |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    rows = []
    for target in recipe.targets:
        a = aio[target]
        twin = twins.get(target)
        vs_twin = mapsswe(a, twin) if twin else None
        vs_full = mapsswe(a, reference) if not (twin is None and target == full_id) else None
        rows.append((target, a, twin, vs_twin, vs_full))
        lines.append(f"| {target} | {a.bytes / 2**20:.2f} | {full_bytes / a.bytes:.1f}x | {_pct(a.wer)} | "
                     f"{_pct(twin.wer) if twin else '-'} | {_verdict(vs_twin) if vs_twin else 'not trained alone'} | "
                     f"{_verdict(vs_full) if vs_full and a is not reference else '-'} |")

    # Target 1: no all-in-one target significantly worse than its twin.
    compared = [(t, v) for t, _, _, v, _ in rows if v is not None]
    worse = [t for t, v in compared if v.better == "b"]
    # Target 2: >= 12.8x with no significant increase vs the float full system.
    small = [(t, full_bytes / a.bytes, v) for t, a, _, _, v in rows if full_bytes / a.bytes >= 12.8 and v is not None]
    ok_small = [(t, c) for t, c, v in small if v.better != "b"]
    # Target 3: training-time saving from the interleaved per-step costs (same batches, same process).
    individual = sum(costs[t] for t in recipe.targets)
    saving = individual / costs["all-in-one"]

    cpu_path = work / CPU_SECONDS
    cpu = json.loads(cpu_path.read_text()) if cpu_path.is_file() else {}
    aio_cpu = cpu.get("allinone")
    lines += ["", "## Training time", "",
              f"CPU seconds per optimisation step, one thread, on the same {args.cost_steps} batches of the training "
              "set, settings taking turns in one process (CPU time, so other load on the machine does not count). "
              f"Every run has the same {recipe.max_steps} steps, so the ratio of step costs is the ratio of total "
              "training times. The last columns check this against the real runs: the CPU seconds each used "
              "(one thread each; " + cpu.get("_how", "from wait4 on the training processes") + ").", "",
              "| setting | CPU s/step | vs all-in-one step | real run CPU s | vs all-in-one run |",
              "|---|---:|---:|---:|---:|"]
    for name, seconds in costs.items():
        run = "allinone" if name == "all-in-one" else f"only-{name}"
        real = cpu.get(run)
        lines.append(f"| {name}{' (alone)' if name != 'all-in-one' else ''} | {seconds:.3f} | "
                     f"{seconds / costs['all-in-one']:.2f} | {f'{real:,.0f}' if real else '-'} | "
                     f"{f'{real / aio_cpu:.2f}' if real and aio_cpu else '-'} |")
    lines += ["", f"Training the {len(recipe.targets)} targets one by one costs {individual:.3f} CPU s per step, the "
              f"single all-in-one run {costs['all-in-one']:.3f}: **{saving:.2f}x less training time** for the "
              "all-in-one run."]
    lines += ["", "## The paper's targets", "",
              f"- **No target worse than its individually trained twin**: "
              + (f"not measured: no target was trained alone (each twin is a run of {recipe.max_steps:,} steps; the "
                 f"{len(recipe.targets)} of them would cost about {individual * recipe.max_steps / 3600:,.0f} CPU hours "
                 "at the step costs above)." if not compared else
                 ("met" if not worse else f"NOT met ({', '.join(worse)} significantly worse)")
                 + f" — {len(compared)} targets compared; "
                 + ", ".join(f"{t}: {_pct(aio[t].wer)} vs {_pct(twins[t].wer)} ({_verdict(v)})" for t, v in compared) + "."),
              "- **A system >= 12.8x smaller than the float full system with no significant WER increase**: "
              + (f"met by {', '.join(f'{t} ({c:.1f}x)' for t, c in ok_small)}" if ok_small else
                 "NOT met — " + ("; ".join(f"{t} ({c:.1f}x): {_pct(aio[t].wer)} vs {_pct(reference.wer)}, {_verdict(v)}"
                                          for t, c, v in small) or "no target is that small")) + ".",
              f"- **>= 3.4x less training time than one by one**: {'met' if saving >= 3.4 else 'NOT met'} "
              f"({saving:.2f}x).", ""]
    own = aio[full_id]
    if reference is not own and mapsswe(reference, own).better == "b":
        # A reference that trained badly makes "no increase against it" an easy bar: say so, and test the small
        # systems against the all-in-one float full system too.
        lines += [f"Caution: the individually trained float full system ({_pct(reference.wer)}) is significantly worse "
                  f"than the all-in-one run's own float full system ({_pct(own.wer)}): trained alone with this "
                  "schedule it learned slowly, so beating it is an easy bar. Against the all-in-one float full "
                  "system instead, the systems >= 12.8x smaller are: "
                  + "; ".join(f"{t} ({c:.1f}x) {_pct(aio[t].wer)}, {_verdict(mapsswe(aio[t], own))}" for t, c, _ in small)
                  + ". Read the compression target as met only against the individually trained baseline.", ""]
    catalog = Path(args.checkpoint) / "catalog.json"
    plot = Path(args.out).with_name(Path(args.out).stem + "_wer_vs_size.png")
    current = catalog.is_file()
    if current:
        try:
            checkpoint_catalog(args.checkpoint)  # its WERs must be these weights'
        except BadInputError as err:
            current = False
            lines += ["## WER vs size of the nested systems", "", f"Not shown: {err}", ""]
    if current:
        n = plot_wer_vs_size(catalog, list(recipe.targets), full_bytes, plot)
        entries = [e for e in json.loads(catalog.read_text())["entries"] if e.get("wer") is not None]
        small = sorted((e for e in entries if full_bytes / e["weight_bytes"] >= 12.8), key=lambda e: e["wer"])
        everything = n > len(recipe.targets)
        lines += ["## WER vs size of the nested systems", "",
                  f"Dev-set WER of the {n} nested systems in the shipped checkpoint's catalog ({args.checkpoint}, "
                  "float16 weights of the all-in-one run, "
                  + ("`allinone catalog --all`: every system of the search space, most of them never trained as a "
                     "target), the trained targets circled." if everything else
                     "`allinone catalog`: the trained targets only)."), ""]
        if small:
            lines += [f"{len(small)} of them are at least 12.8x smaller than the float full system; the best on "
                      f"dev is {small[0]['subnet']} ({full_bytes / small[0]['weight_bytes']:.1f}x, dev WER "
                      f"{_pct(small[0]['wer'])}, against {_pct(aio[full_id].wer)} test / "
                      + next((_pct(e["wer"]) for e in entries if e["subnet"] == full_id), "?")
                      + " dev for the float full system).", ""]
        lines += [f"![WER vs size]({plot.name})", ""]
    return "\n".join(lines)


def _kept_sections(path: Path) -> str:
    """Sections other scripts own in the same file (benchmarks/wav2vec2_results.py), kept across rewrites."""
    import re

    text = path.read_text() if path.is_file() else ""
    return "".join("\n" + m.group(0) for m in re.finditer(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->\n?", text, re.S))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpus/synth", help="directory with train/dev/test.jsonl")
    parser.add_argument("--recipe", default="recipes/conformer_small.yaml")
    parser.add_argument("--work", default="runs/results", help="training runs and evaluations go here")
    parser.add_argument("--baselines", default="d12-f512-h4-w32,d8-f384-h3-w4,d6-f256-h2-w8,d4-f128-h2-w4",
                        help="targets to train individually (comma-separated)")
    parser.add_argument("--checkpoint", default="checkpoints/conformer_small",
                        help="the shipped checkpoint whose catalog gives the WER-vs-size plot")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run side by side (one thread each)")
    parser.add_argument("--cost-steps", type=int, default=10, help="timed steps per setting for the cost table")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--allinone", help="an all-in-one checkpoint already trained with --recipe: evaluate it "
                        "instead of training one under --work")
    parser.add_argument("--cost-corpus", help="directory whose train.jsonl the step costs are timed on (default: "
                        "--corpus)")
    args = parser.parse_args()
    args.command = sys.argv[1:]
    args.baselines = [] if args.baselines == "none" else [b.strip() for b in args.baselines.split(",") if b.strip()]
    args.work_arg = args.work
    recipe = load_recipe(args.recipe)
    unknown = [b for b in args.baselines if b not in recipe.targets]
    if unknown:
        raise SystemExit(f"--baselines {','.join(unknown)}: not targets of {args.recipe}; expected some of {', '.join(recipe.targets)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if args.allinone:
        args.allinone_trained = _trained(Path(args.allinone))
    train_all(args, recipe, work)
    test = Path(args.corpus) / "test.jsonl"
    aio = _evaluated(Path(args.allinone) if args.allinone else work / "allinone", list(recipe.targets), test,
                     work / "eval" / "allinone")
    twins = {b: _evaluated(work / f"only-{b}", [b], test, work / "eval" / f"only-{b}")[b] for b in args.baselines}
    print("timing training steps", flush=True)
    costs = step_costs(recipe, Path(args.cost_corpus or args.corpus) / "train.jsonl", args.cost_steps)
    atomic_write_text(Path(args.out), write_report(args, recipe, work, aio, twins, costs) + _kept_sections(Path(args.out)))
    print(f"wrote {args.out} in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
