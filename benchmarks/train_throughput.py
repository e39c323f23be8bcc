"""Training throughput of conformer_small: the full system alone vs one all-in-one step over the targets.

Times real optimisation steps (forward, backward, AdamW) on batches of real speech from a corpus manifest, the
settings taking turns on each batch, and prints audio-seconds per second for: the full float system alone; an all-in-one step with the recipe's
sandwich sample; an all-in-one step over every target. Ratios are measured in the same run.

    .venv/bin/python benchmarks/train_throughput.py --manifest corpus/synth/train.jsonl --steps 6
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from allinone.data.batching import make_loader
from allinone.data.manifest import read_manifest
from allinone.data.tokenizer import CharTokenizer
from allinone.models import conformer
from allinone.spec import SubnetSpec
from allinone.train.recipe import Recipe, load_recipe
from allinone.train.trainer import _Loop


def _batches(manifest: str, seconds: float, count: int):
    tokenizer = CharTokenizer()
    utts = read_manifest(manifest, tokenizer=tokenizer).utterances
    loader = make_loader(utts, tokenizer, max_batch_seconds=seconds, seed=0, num_workers=0)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            return batches
    return batches


def _loop(recipe: Recipe) -> _Loop:
    torch.manual_seed(0)
    model = getattr(conformer, recipe.model)(29)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    return _Loop(recipe, model, optimizer, [SubnetSpec.from_id(t) for t in recipe.targets], torch.device("cpu"), 0, 1)


def _time_interleaved(loops: dict[str, _Loop], batches) -> dict[str, tuple[float, float]]:
    """Each batch runs once per setting, settings taking turns, so load from other processes hits all alike.
    The first batch is a warm-up and is not timed."""
    totals = {name: [0.0, 0.0] for name in loops}
    for i, batch in enumerate(batches):
        for name, loop in loops.items():
            start = time.perf_counter()
            audio = loop.step(batch, i)["audio_seconds"]
            if i > 0:
                totals[name][0] += audio
                totals[name][1] += time.perf_counter() - start
    return {name: (a, s) for name, (a, s) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--recipe", default="conformer_small")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setting (after one warm-up)")
    parser.add_argument("--max-batch-seconds", type=float, help="batch size in audio seconds (default: the recipe's)")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    batches = _batches(args.manifest, args.max_batch_seconds or recipe.max_batch_seconds, args.steps + 1)
    base = recipe.to_dict()
    settings = {
        "full system alone": Recipe(**{**base, "targets": (recipe.targets[0],), "systems_per_step": None, "kl_weight": 0.0}),
        f"all-in-one, sandwich of {recipe.systems_per_step}": Recipe(**base),
        f"all-in-one, all {len(recipe.targets)} targets": Recipe(**{**base, "systems_per_step": None}),
    }
    timed = _time_interleaved({name: _loop(r) for name, r in settings.items()}, batches)
    rows, reference = [], None
    for name, (audio, seconds) in timed.items():
        rate = audio / seconds
        reference = reference or rate
        rows.append((name, audio, seconds, rate, seconds / len(batches[1:]), reference / rate))
    print(f"{'setting':<34}{'audio s':>9}{'wall s':>9}{'audio-s/s':>11}{'s/step':>9}{'cost vs full':>14}")
    for name, audio, seconds, rate, per_step, cost in rows:
        print(f"{name:<34}{audio:>9.1f}{seconds:>9.1f}{rate:>11.2f}{per_step:>9.2f}{cost:>13.2f}x")


if __name__ == "__main__":
    main()
