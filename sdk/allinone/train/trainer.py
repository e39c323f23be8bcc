"""One-pass all-in-one training: every step trains several nested systems of one supernet on one batch.

Loss per step = sum_s w_s * CTC(system s) + kl_weight * sum_{s != teacher} KL(p_teacher || p_s), the teacher
being the largest float target (detached). Systems are all targets, or a sandwich sample: the largest and
the smallest target plus random others. Each system's loss is back-propagated as soon as it is computed
(gradients accumulate in the shared weights), so memory holds one system's activations at a time.

Everything random in a step (which systems, dropout) derives from (seed, step) and the data order from
(seed, epoch), so a resumed run continues exactly as if it had never stopped.

One module, over 400 lines, because `train` and its run-folder bookkeeping (resume checks, metrics log,
atomic saves) and `TrainingStep` (the loss of one step) change together whenever the recipe grows a key;
benchmarks/train_throughput.py drives `TrainingStep` directly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F

from allinone.checkpoint import CONFIG, PROVENANCE_KEYS, checkpoint_files, load_checkpoint
from allinone.files import sha256_file, write_files_atomically
from allinone.errors import BadInputError
from allinone.spec import SubnetSpec
from allinone.train.stop import StopRequest, ignore_stop_signals
from allinone.train.recipe import Recipe
from allinone.train.averaging import WeightAverage
from allinone.train.state import (STATE_JSON, finish_interrupted_save, load_raw_weights, load_trainer_state,
                                  trainer_state_files)

__all__ = ["train", "TrainResult", "choose_systems", "learning_rate"]

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float  # training wall time summed over all sessions of this run
    audio_seconds: float  # audio seen (all processes), summed over sessions


def learning_rate(recipe: Recipe, step: int) -> float:
    """Linear warm-up to recipe.lr, then cosine decay to 5 % of it at max_steps."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = min(1.0, (step - recipe.warmup_steps) / max(1, recipe.max_steps - recipe.warmup_steps))
    return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _size_key(spec: SubnetSpec) -> tuple:
    return (spec.depth * spec.ffn_dim * spec.heads, spec.depth, spec.ffn_dim, spec.heads, spec.weight_bits)


def choose_systems(targets: list[SubnetSpec], k: int | None, seed: int, step: int) -> list[SubnetSpec]:
    """The systems trained at `step`: all targets, or the largest + smallest + k-2 others (sandwich rule).

    The largest float target comes first: it is the KL teacher."""
    ordered = sorted(targets, key=_size_key, reverse=True)
    if k is None or k >= len(ordered):
        return ordered
    largest, smallest, middle = ordered[0], ordered[-1], ordered[1:-1]
    rng = random.Random(seed * 1_000_003 + step)
    return [largest, *sorted(rng.sample(middle, k - 2), key=_size_key, reverse=True), smallest]


class _SkipFirst(torch.utils.data.Sampler):
    """A batch sampler that skips the first `skip` batches of its epoch (resuming mid-epoch)."""

    def __init__(self, inner, skip: int):
        self.inner, self.skip = inner, skip

    def __iter__(self):
        for i, batch in enumerate(self.inner):
            if i >= self.skip:
                yield batch

    def __len__(self):
        return max(0, len(self.inner) - self.skip)


def _ddp_setup() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _feature_statistics(model, utterances, limit: int = 200) -> None:
    """Set the frontend's per-band mean/std from up to `limit` training utterances."""
    from allinone.data.audio import load_audio

    feats = []
    with torch.no_grad():
        for u in utterances[:limit]:
            feats.append(model.frontend.log_mel(torch.from_numpy(load_audio(u.audio_filepath))[None])[0])
    stacked = torch.cat(feats)  # (frames, n_mels)
    model.frontend.feature_mean.copy_(stacked.mean(0))
    model.frontend.feature_std.copy_(stacked.std(0).clamp_min(1e-3))


def _read_split(path, tokenizer, name: str):
    from allinone.data.manifest import read_manifest

    result = read_manifest(path, tokenizer=tokenizer)
    if not result.utterances:
        raise BadInputError(f"{name} manifest {path}: no usable utterances ({result.skipped} skipped)")
    return result.utterances


def _fingerprint(path) -> dict:
    path = Path(path)
    return {"path": str(path), "sha256": sha256_file(path) if path.is_file() else None}


def _model_for(recipe: Recipe, vocab_size: int, start, init: Path | None):
    """The supernet to train: the --init checkpoint's (`start`, already loaded) or the recipe's, freshly built."""
    from allinone.models.registry import model_factory

    if start is not None:
        if start.model.cfg.vocab_size != vocab_size:
            raise BadInputError(f"--init {init}: vocabulary of {start.model.cfg.vocab_size} symbols, the data needs "
                                f"{vocab_size}")
        return start.model
    factory = model_factory(recipe.model)
    if recipe.subsampling_factor is not None:
        return factory(vocab_size, subsampling_factor=recipe.subsampling_factor)
    return factory(vocab_size)


def _init_provenance(init: Path, config: dict) -> dict:
    """What a checkpoint trained from --init records about where it started: the start's path, weights and
    steps (with the start's own `init`, so a chain of continuations adds up), and the start's import record
    (an imported wav2vec2's `hf_import`: source and HF vocabulary order)."""
    start = {"path": str(init), "weights_sha256": config.get("weights_sha256")}
    start.update({k: config[k] for k in ("trained_steps", "trained_on", "init") if config.get(k) is not None})
    out = {"init": start}
    if "hf_import" in config:
        out["hf_import"] = config["hf_import"]
    return out


def _trained_on(device: torch.device, world: int) -> dict:
    """Where the run's steps ran (config.json `trained_on`): a GPU run's logged CPU seconds are its host's
    data loading and dispatch, not its training cost, so a reader must be able to tell the two apart."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": device.type, "name": name, "processes": world}


def _check_resumable(out: Path, model, recipe: Recipe, data_info: dict) -> None:
    """The run in `out` must have the same architecture, recipe (but for max_steps) and train/dev data."""
    config = json.loads((out / CONFIG).read_text())
    if config.get("architecture") != model.cfg.to_dict():
        raise BadInputError(f"--resume {out}: the checkpoint's architecture differs from the recipe's model")
    # Everything but the step budget must be what the run started with (a forgotten --only, another recipe).
    defaults = Recipe(name="", model="", targets=()).to_dict()  # keys an older run's recipe did not have yet
    saved = {**defaults, **config.get("recipe", {})}
    now = json.loads(json.dumps(recipe.to_dict()))
    # ema_decay may change too: the average is a side product, the raw weights train the same either way.
    changed = [k for k in sorted(set(saved) | set(now)) if k not in ("max_steps", "ema_decay")
               and saved.get(k) != now.get(k)]
    if changed:
        raise BadInputError(f"--resume {out}: recipe {changed[0]!r} is {now.get(changed[0])!r}, the run started "
                            f"with {saved.get(changed[0])!r}; expected the same recipe (and --only) as the run")
    # The same data, or data order and the logged curve no longer mean what they say.
    saved_data = config.get("data", {})
    for split in ("train", "dev"):
        if saved_data.get(split, {}).get("sha256") not in (None, data_info[split]["sha256"]):
            raise BadInputError(f"--resume {out}: the {split} manifest differs from the one the run started with "
                                f"({saved_data[split].get('path')}); expected the same data")


def _finish_interrupted_save(out: Path) -> None:
    """Rank 0 completes or discards a save that a kill cut short (see `finish_interrupted_save`); other DDP
    ranks wait until it has, so none reads a mixed set."""
    if int(os.environ.get("RANK", "0")) == 0:
        finished = finish_interrupted_save(out)
        if finished is not None:
            log.info("%s: finished the save of step %d that was interrupted between its renames", out, finished)
        return
    deadline = time.monotonic() + 120
    while any(out.glob(f".{STATE_JSON}.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.5)


def train(recipe: Recipe, train_manifest, dev_manifest, out, *, max_steps: int | None = None, resume: bool = False,
          only: str | None = None, init: str | Path | None = None, progress: bool = True,
          skip_nonfinite: int = 0) -> TrainResult:
    """Train the recipe's supernet (or, with `only`, one system alone) into checkpoint directory `out`.

    A batch whose loss or gradient is NaN/inf stops training with BadInputError naming its utterances, before
    the weights change; `skip_nonfinite` lets up to that many such batches be skipped (with a warning)."""
    from allinone.data.augment import TRAINING_AUGMENT
    from allinone.data.batching import DurationBatchSampler, SpeechDataset, collate_speech

    out = Path(out)
    if only is not None:  # the individually trained baseline: same code, data and schedule, one system
        recipe = Recipe(**{**recipe.to_dict(), "targets": (only,), "systems_per_step": None, "kl_weight": 0.0,
                           "loss_weights": {}})
    if max_steps is not None:
        recipe = Recipe(**{**recipe.to_dict(), "targets": tuple(recipe.targets), "max_steps": max_steps})
    if resume and out.is_dir():
        _finish_interrupted_save(out)
    has_state = (out / STATE_JSON).is_file()
    if resume and not has_state:
        raise BadInputError(f"--resume {out}: no {STATE_JSON} to resume from")
    if not resume and (out / CONFIG).exists():
        raise BadInputError(f"{out}: already holds a checkpoint (use --resume to continue it, or another --out)")

    rank, world, device = _ddp_setup()
    torch.manual_seed(recipe.seed)  # the same initial weights for the same recipe
    # An --init checkpoint brings its vocabulary (an imported wav2vec2 keeps its own); else the default one.
    start = load_checkpoint(init) if init else None
    tokenizer = _tokenizer_for(recipe, train_manifest, start, out if resume else None)
    train_utts = _read_split(train_manifest, tokenizer, "train")
    _read_split(dev_manifest, tokenizer, "dev")  # fail before training, not after
    model = _model_for(recipe, len(tokenizer), start, Path(init) if init else None)
    targets = [model.search_space.validate(SubnetSpec.from_id(t)) for t in recipe.targets]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)

    data_info = {"train": _fingerprint(train_manifest), "dev": _fingerprint(dev_manifest)}
    init_provenance = _init_provenance(Path(init), start.config) if start else {}
    progress_state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "seconds": 0.0, "audio_seconds": 0.0,
                      "cpu_seconds": 0.0, "skipped_nonfinite": 0}
    if resume:
        _check_resumable(out, model, recipe, data_info)
        saved = json.loads((out / CONFIG).read_text())  # a resumed run keeps the record its first session wrote
        init_provenance = {k: saved[k] for k in PROVENANCE_KEYS if k in saved}
        model.load_state_dict(load_checkpoint(out, verify=True).model.state_dict())
    elif init is None and model.family == "conformer":  # wav2vec2 normalises each utterance in-graph instead
        _feature_statistics(model, train_utts)
        if recipe.zero_init_residual:
            model.zero_init_residual()
    model.to(device)
    # The average starts from the checkpoint's weights (the average itself, when the run kept one); training
    # continues from the raw weights the trainer state carries beside it.
    average = WeightAverage(model, recipe.ema_decay) if recipe.ema_decay else None
    if resume:
        # After model.to(device): the optimizer's saved moments follow their parameters onto the GPU.
        progress_state.update(load_trainer_state(out, optimizer))
        log.info("resuming %s at step %d", out, progress_state["step"])
        raw = load_raw_weights(out)
        if raw:
            model.load_state_dict(raw)
    if world > 1:  # identical start on every rank
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)

    dataset = SpeechDataset(train_utts, tokenizer, augment=TRAINING_AUGMENT if recipe.augment else None,
                            seed=recipe.seed)
    sampler = DurationBatchSampler([u.duration for u in train_utts], recipe.max_batch_seconds, seed=recipe.seed,
                                   num_replicas=world, rank=rank)
    trainer = TrainingStep(recipe, model, optimizer, targets, device, rank, world)
    trained_on = _trained_on(device, world)
    if rank == 0:
        log.info("training %s (%s units, %d symbols) with bf16 autocast %s%s", recipe.model, recipe.units,
                 len(tokenizer), "on" if trainer.bf16 else "off",
                 f"; the checkpoint holds a moving average of the weights (decay {recipe.ema_decay:g})"
                 if average else "")

    def save() -> None:
        if rank != 0:
            return
        # With an average, the checkpoint holds it (config.recipe.ema_decay says so) and `raw` the raw weights.
        with average.swapped_in(model) if average is not None else nullcontext() as raw:
            ckpt = checkpoint_files(model, targets=targets, vocabulary=tokenizer.to_dict(), recipe=recipe.to_dict(),
                                    data=data_info, extra={"trained_steps": progress_state["step"], "trained_on": trained_on,
                                           **init_provenance})
        write_files_atomically(out, trainer_state_files(optimizer, dict(progress_state), ckpt, raw))

    metrics_path = out / METRICS
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, progress_state["step"])
    bar = _progress_bar(recipe.max_steps, progress_state["step"], enabled=progress and rank == 0)
    last_save = time.monotonic()
    session_start, session_audio, session_cpu = time.monotonic(), 0.0, _cpu_seconds()
    base_seconds, base_audio = progress_state["seconds"], progress_state["audio_seconds"]
    base_cpu = progress_state.get("cpu_seconds", 0.0)
    # One process: Ctrl-C / SIGTERM stop after the step in hand, saved. Several (DDP): ranks could stop at
    # different steps and hang in a collective, so they keep the default (the last timed save counts).
    with StopRequest(enabled=world == 1) as stop:
        try:
            while progress_state["step"] < recipe.max_steps:
                sampler.set_epoch(progress_state["epoch"])
                dataset.set_epoch(progress_state["epoch"])  # augmentation drawn anew every epoch
                order = list(_SkipFirst(sampler, progress_state["batch_in_epoch"]))  # kept to name a bad batch
                batches = torch.utils.data.DataLoader(
                    dataset, batch_sampler=order, collate_fn=collate_speech, num_workers=recipe.num_workers,
                    worker_init_fn=ignore_stop_signals if recipe.num_workers else None)
                for indices, batch in zip(order, batches):
                    record = trainer.step(batch, progress_state["step"])
                    progress_state["batch_in_epoch"] += 1
                    if "nonfinite" in record:  # nothing was updated: skip the batch or stop
                        _skip_nonfinite(record["nonfinite"], [train_utts[i].id for i in indices], progress_state,
                                        skip_nonfinite)
                        continue
                    progress_state["step"] += 1
                    if average is not None:
                        average.update(model)
                    session_audio += record["audio_seconds"]
                    progress_state["seconds"] = base_seconds + time.monotonic() - session_start
                    progress_state["audio_seconds"] = base_audio + session_audio
                    progress_state["cpu_seconds"] = base_cpu + _cpu_seconds() - session_cpu
                    if rank == 0:
                        record.update(step=progress_state["step"], epoch=progress_state["epoch"],
                                      elapsed_s=round(progress_state["seconds"], 3),
                                      cpu_s=round(progress_state["cpu_seconds"], 1),
                                      audio_h=round(progress_state["audio_seconds"] / 3600, 4))
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(record, allow_nan=False) + "\n")
                        bar.update(1)
                        bar.set_postfix(loss=f"{record['loss']:.3f}",
                                        audio_s_per_s=f"{progress_state['audio_seconds'] / max(progress_state['seconds'], 1e-9):.1f}")
                    due_steps = recipe.checkpoint_steps and progress_state["step"] % recipe.checkpoint_steps == 0
                    due_time = time.monotonic() - last_save > recipe.checkpoint_minutes * 60
                    if due_steps or due_time or stop.requested:
                        save()
                        last_save = time.monotonic()
                    if stop.requested:
                        log.info("stopped at step %d (saved); continue with --resume", progress_state["step"])
                        raise KeyboardInterrupt
                    if progress_state["step"] >= recipe.max_steps:
                        break
                else:
                    progress_state["epoch"] += 1
                    progress_state["batch_in_epoch"] = 0
            save()
        finally:
            bar.close()
    return TrainResult(out, progress_state["step"], progress_state["seconds"], progress_state["audio_seconds"])


def _skip_nonfinite(what: list[str], ids: list[str], progress_state: dict, allowed: int) -> None:
    """Count a skipped non-finite batch, or raise BadInputError naming its utterances once `allowed` are used."""
    step = progress_state["step"] + 1
    shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    if progress_state["skipped_nonfinite"] >= allowed:
        raise BadInputError(f"step {step}: non-finite {', '.join(what)} (NaN or inf) on the batch of utterances "
                            f"{shown}; expected finite numbers (check their audio with `allinone data check --deep`, "
                            f"lower the learning rate, or pass --skip-nonfinite N to skip up to N such batches)")
    progress_state["skipped_nonfinite"] += 1
    log.warning("step %d: skipped a batch with a non-finite %s (utterances %s); %d of %d allowed skips used", step,
                ", ".join(what), shown, progress_state["skipped_nonfinite"], allowed)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (data workers): what a run costs on a shared machine."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _tokenizer_for(recipe: Recipe, train_manifest, start, resumed_out: Path | None):
    """The run's output units: an --init checkpoint's, a resumed run's own, characters, or subword units
    learned from the training transcripts (deterministic: the same text gives the same pieces)."""
    from allinone.data.tokenizer import CharTokenizer, tokenizer_from_dict, train_sentencepiece

    if start is not None:
        return start.tokenizer()
    if resumed_out is not None and (resumed_out / CONFIG).is_file():
        return tokenizer_from_dict(json.loads((resumed_out / CONFIG).read_text())["vocabulary"])
    if recipe.units == "char":
        return CharTokenizer()
    texts = [u.text for u in _read_split(train_manifest, CharTokenizer(), "train")]
    return train_sentencepiece(texts, recipe.bpe_vocab_size)


def use_bf16(setting: str, device: torch.device) -> bool:
    """bfloat16 autocast where it pays: native bf16 matmuls (AMX / AVX512-BF16 CPUs, CUDA), or when forced."""
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the state being resumed), so the log continues cleanly."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


class TrainingStep:
    """One optimisation step over the chosen nested systems."""

    def __init__(self, recipe: Recipe, model, optimizer, targets, device, rank: int, world: int,
                 share_front: bool = True):
        self.recipe, self.model, self.optimizer, self.targets = recipe, model, optimizer, targets
        self.device, self.rank, self.world = device, rank, world
        self.bf16 = use_bf16(recipe.bf16, device)
        self.share_front = share_front and hasattr(model, "front")  # off: each system recomputes it (benchmarks)

    def _nonfinite(self, losses: dict, kls: dict, grad_norm: torch.Tensor) -> list[str]:
        parts = _nonfinite_parts(losses, kls, grad_norm)
        if self.world > 1:  # every rank skips or stops together, else their weights part ways
            flag = torch.tensor([float(bool(parts))], device=self.device)
            dist.all_reduce(flag)
            parts = parts or (["loss or gradient on another rank"] if flag.item() else [])
        return parts

    def step(self, batch, step: int) -> dict:
        """One optimisation step; returns its metrics, or {'nonfinite': [...]} with the weights left unchanged."""
        recipe, model = self.recipe, self.model
        model.train()
        torch.manual_seed(recipe.seed * 1_000_003 + step * self.world + self.rank)  # dropout, reproducible
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(recipe, step)
        waveforms, lengths = batch.waveforms.to(self.device), batch.lengths.to(self.device)
        targets, target_lengths = batch.targets.to(self.device), batch.target_lengths.to(self.device)
        systems = choose_systems(self.targets, recipe.systems_per_step, recipe.seed, step)
        teacher = systems[0] if systems[0].weight_bits == 32 and recipe.kl_weight > 0 else None
        self.optimizer.zero_grad(set_to_none=True)
        teacher_log_probs, losses, kls = None, {}, {}
        # The work all systems share runs once (float32); its gradient is gathered on a detached copy and
        # sent back through it after the last system.
        shared = model.front(waveforms, lengths) if self.share_front else None
        if shared is not None:
            shared_out, shared_lengths = shared
            shared_in = shared_out.detach().requires_grad_(True)
        for spec in systems:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                if shared is not None:
                    log_probs, out_lengths = model.forward_front(shared_in, shared_lengths, spec)  # (B, T, V), (B,)
                else:
                    log_probs, out_lengths = model(waveforms, lengths, spec)  # (B, T, V), (B,)
            log_probs = log_probs.float()
            ctc = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths, blank=0,
                             reduction="mean", zero_infinity=True)
            loss = recipe.loss_weights.get(spec.id, 1.0) * ctc
            losses[spec.id] = ctc.detach()  # read once after the loop: a float() here would stall a GPU per system
            if teacher_log_probs is not None:
                kl = _frame_kl(teacher_log_probs, log_probs, out_lengths)
                kls[spec.id] = kl.detach()
                loss = loss + recipe.kl_weight * kl
            loss.backward()
            if spec == teacher:
                teacher_log_probs = log_probs.detach()
        if shared is not None and shared_in.grad is not None:
            shared_out.backward(shared_in.grad)
        if self.world > 1:
            for p in model.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= self.world
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        values = torch.stack([*losses.values(), *kls.values()]).tolist()  # one device-to-host copy per step
        losses = dict(zip(losses, values[:len(losses)]))
        kls = dict(zip(kls, values[len(losses):]))
        total = sum(recipe.loss_weights.get(k, 1.0) * v for k, v in losses.items())
        total += recipe.kl_weight * sum(kls.values())
        nonfinite = self._nonfinite(losses, kls, grad_norm)
        if nonfinite:  # an optimizer step would spread NaN into every shared weight
            self.optimizer.zero_grad(set_to_none=True)
            return {"nonfinite": nonfinite}
        self.optimizer.step()
        audio = float(batch.lengths.sum()) / model.cfg.frontend.sample_rate * self.world  # host copy: no sync
        return {"loss": round(total, 5), "ctc": {k: round(v, 5) for k, v in losses.items()},
                "kl": {k: round(v, 5) for k, v in kls.items()}, "lr": self.optimizer.param_groups[0]["lr"],
                "grad_norm": round(float(grad_norm), 4), "audio_seconds": round(audio, 3)}


def _nonfinite_parts(losses: dict, kls: dict, grad_norm: torch.Tensor) -> list[str]:
    """What in one step is NaN or inf: 'CTC loss of SPEC', 'KL of SPEC', 'gradient'."""
    parts = [f"CTC loss of {k}" for k, v in losses.items() if not math.isfinite(v)]
    parts += [f"KL of {k}" for k, v in kls.items() if not math.isfinite(v)]
    return parts + ([] if torch.isfinite(grad_norm) else ["gradient"])


def _frame_kl(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher || p_student) per frame, averaged over the valid frames of the batch."""
    mask = torch.arange(student_log_probs.shape[1], device=lengths.device)[None, :] < lengths[:, None]  # (B, T)
    per_frame = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)  # (B, T)
    return (per_frame * mask).sum() / mask.sum().clamp_min(1)
