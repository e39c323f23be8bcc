"""Training throughput of one all-in-one step, before and after the training-speed work of issue 14.

Times real optimisation steps (forward, backward, AdamW) of the recipe's sandwich on batches of real speech
from a corpus manifest, the settings taking turns on each batch (so load from other processes hits all
alike), and prints audio-seconds per second and the speed-up over the landed trainer:
  * before: every system recomputes the log-mel frontend and subsampling convolutions, float32, and fake
    quantization goes through torchao's generic primitives;
  * shared front: that work once per batch, its gradient gathered over the systems;
  * shared front + bf16 autocast (where the CPU has native bf16: AMX / AVX512-BF16);
  * fused fake quantization: the same arithmetic in a few whole-tensor ops (bit-identical, as the trainer
    runs it now); the rows above it use torchao's primitives.
Also the full float system alone, for the cost of the all-in-one step against one system.

    .venv/bin/python benchmarks/train_throughput.py --manifest corpus/synth/train.jsonl --steps 6
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time

import torch

from allinone.data.batching import make_loader
from allinone.data.manifest import read_manifest
from allinone.data.tokenizer import CharTokenizer, train_sentencepiece
from allinone.models import conformer
from allinone.nn import quant
from allinone.spec import SubnetSpec
from allinone.train.recipe import Recipe, load_recipe
from allinone.train.trainer import TrainingStep, use_bf16


def _batches(manifest: str, recipe: Recipe, seconds: float, count: int):
    utts = read_manifest(manifest, tokenizer=CharTokenizer()).utterances
    tokenizer = train_sentencepiece([u.text for u in utts], recipe.bpe_vocab_size) if recipe.units == "bpe" \
        else CharTokenizer()
    loader = make_loader(utts, tokenizer, max_batch_seconds=seconds, seed=0, num_workers=0)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    return batches, len(tokenizer)


def _loop(recipe: Recipe, vocab_size: int, share_front: bool) -> TrainingStep:
    torch.manual_seed(0)
    factory = getattr(conformer, recipe.model)
    model = factory(vocab_size, **({"subsampling_factor": recipe.subsampling_factor} if recipe.subsampling_factor else {}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    return TrainingStep(recipe, model, optimizer, [SubnetSpec.from_id(t) for t in recipe.targets], torch.device("cpu"), 0, 1,
                 share_front=share_front)


@contextlib.contextmanager
def _torchao_fake_quant(enabled: bool):
    """Fake quantization through torchao's generic primitives (the landed trainer's), while `enabled`."""
    fused = quant._quant_dequant_weight, quant._quant_dequant_activation
    if enabled:
        quant._quant_dequant_weight = quant.torchao_quant_dequant_weight
        quant._quant_dequant_activation = quant.torchao_quant_dequant_activation
    try:
        yield
    finally:
        quant._quant_dequant_weight, quant._quant_dequant_activation = fused


def _time_interleaved(loops: dict[str, tuple[TrainingStep, bool]], batches) -> dict[str, tuple[float, float]]:
    """Each batch runs once per setting, settings taking turns. The first batch is a warm-up, not timed."""
    totals = {name: [0.0, 0.0] for name in loops}
    for i, batch in enumerate(batches):
        for name, (loop, torchao_quant) in loops.items():
            start = time.perf_counter()
            with _torchao_fake_quant(torchao_quant):
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
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    batches, vocab_size = _batches(args.manifest, recipe, args.max_batch_seconds or recipe.max_batch_seconds,
                                   args.steps + 1)
    sandwich, bf16 = dataclasses.replace(recipe, bf16="off"), dataclasses.replace(recipe, bf16="auto")
    full = dataclasses.replace(sandwich, targets=(recipe.targets[0],), systems_per_step=None, kl_weight=0.0)
    settings = {  # name: (training step, fake quantization through torchao's primitives)
        "before (landed trainer)": (_loop(sandwich, vocab_size, share_front=False), True),
        "shared front": (_loop(sandwich, vocab_size, share_front=True), True),
        "shared front + bf16": (_loop(bf16, vocab_size, share_front=True), True),
        "+ fused fake quant": (_loop(bf16, vocab_size, share_front=True), False),
        "full float system alone": (_loop(full, vocab_size, share_front=True), False),
    }
    timed = _time_interleaved(settings, batches)
    native = use_bf16("auto", torch.device("cpu"))
    print(f"{recipe.name}, sandwich of {recipe.systems_per_step} of {len(recipe.targets)} targets, {recipe.units} units, "
          f"{torch.get_num_threads()} threads, native bf16: {'yes' if native else 'no (bf16 row runs float32)'}")
    print(f"{'setting':<28}{'audio s':>9}{'wall s':>9}{'audio-s/s':>11}{'s/step':>9}{'speed-up':>10}")
    reference = None
    for name, (audio, seconds) in timed.items():
        rate = audio / seconds
        reference = reference or rate
        print(f"{name:<28}{audio:>9.1f}{seconds:>9.1f}{rate:>11.2f}{seconds / len(batches[1:]):>9.2f}"
              f"{rate / reference:>9.2f}x")


if __name__ == "__main__":
    main()
