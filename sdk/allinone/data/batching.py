"""Duration-bucketed dynamic batching and a torch Dataset of (waveform, token targets).

`make_loader(utterances, tokenizer, max_batch_seconds=120)` gives a DataLoader whose batches hold
utterances of similar length (little padding) and at most `max_batch_seconds` of audio in total (steady
memory), decoded and augmented in `num_workers` processes so the model's process is never waiting on I/O.
Under torchrun, pass `num_replicas`/`rank` and each rank gets its own equal share of the batches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from allinone.data.audio import SAMPLE_RATE, load_audio
from allinone.data.augment import AugmentConfig, augment_waveform
from allinone.data.manifest import Utterance
from allinone.data.tokenizer import CharTokenizer
from allinone.errors import BadInputError

__all__ = ["DurationBatchSampler", "SpeechDataset", "SpeechBatch", "collate_speech", "make_loader"]


class DurationBatchSampler(Sampler[list[int]]):
    """Yields lists of indices: utterances sorted into duration buckets, each batch <= `max_batch_seconds`.

    Batches are cut within a bucket, so lengths in a batch are close; the batch order (and the order inside
    buckets) is shuffled per epoch from `seed` + epoch (`set_epoch`). An utterance longer than
    `max_batch_seconds` gets a batch of its own. With `num_replicas` > 1 each `rank` takes every
    num_replicas-th batch, the list padded by repeating batches so all ranks step the same number of times.
    """

    def __init__(self, durations: Sequence[float], max_batch_seconds: float, *, num_buckets: int = 10,
                 max_batch_size: int | None = None, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        if max_batch_seconds <= 0:
            raise BadInputError(f"max_batch_seconds must be positive, got {max_batch_seconds}")
        if not 0 <= rank < num_replicas:
            raise BadInputError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.durations = np.asarray(durations, dtype=np.float64)
        self.max_batch_seconds = float(max_batch_seconds)
        self.num_buckets = max(1, num_buckets)
        self.max_batch_size = max_batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = np.argsort(self.durations, kind="stable")
        batches: list[list[int]] = []
        for bucket in np.array_split(order, min(self.num_buckets, max(1, len(order)))):
            if self.shuffle:
                bucket = rng.permutation(bucket)
            batch: list[int] = []
            # Pad cost is set by the longest item, so cap on longest * count rather than the sum.
            longest = 0.0
            for i in bucket:
                d = float(self.durations[i])
                full = batch and (max(longest, d) * (len(batch) + 1) > self.max_batch_seconds
                                  or (self.max_batch_size and len(batch) >= self.max_batch_size))
                if full:
                    batches.append(batch)
                    batch, longest = [], 0.0
                batch.append(int(i))
                longest = max(longest, d)
            if batch:
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        if self.num_replicas > 1 and batches:
            per_rank = math.ceil(len(batches) / self.num_replicas)
            batches = (batches * math.ceil(per_rank * self.num_replicas / len(batches)))[: per_rank * self.num_replicas]
            batches = batches[self.rank::self.num_replicas]
        return iter(batches)

    def __len__(self) -> int:
        n = len(self._all_batches())
        return math.ceil(n / self.num_replicas) if self.num_replicas > 1 else n


class SpeechDataset(Dataset):
    """Item i = (waveform float32 (N,) at 16 kHz, token ids int64 (L,)) of utterance i.

    Transcripts are tokenized up front, so an unspellable one fails here, naming its manifest line.
    `augment` (an AugmentConfig) is applied on the fly with a per-item RNG derived from (`seed`, epoch, item),
    or without a seed from the worker seed (reproducible under `torch.manual_seed`).
    """

    def __init__(self, utterances: Sequence[Utterance], tokenizer: CharTokenizer | None = None,
                 augment: AugmentConfig | None = None, sample_rate: int = SAMPLE_RATE, seed: int | None = None):
        self.utterances = list(utterances)
        self.tokenizer = tokenizer or CharTokenizer()
        self.augment = augment
        self.seed, self.epoch = seed, 0
        self.sample_rate = sample_rate
        self.targets = []
        for u in self.utterances:
            try:
                self.targets.append(torch.tensor(self.tokenizer.encode(u.text), dtype=torch.long))
            except BadInputError as err:
                raise BadInputError(f"{u.origin or u.audio_filepath}: {err}") from None

    def __len__(self) -> int:
        return len(self.utterances)

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations (with a seed): call before each epoch's DataLoader is made."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.utterances[index]
        wave = load_audio(u.audio_filepath, self.sample_rate)  # (N,)
        if self.augment is not None:
            # With a seed, the draw is fixed by (seed, epoch, item): a resumed run hears what it would have.
            key = [self.seed, self.epoch, index] if self.seed is not None else [torch.initial_seed() % 2**63, index]
            rng = np.random.default_rng(key)
            wave = augment_waveform(wave, rng, self.augment, self.sample_rate)
        return torch.from_numpy(np.ascontiguousarray(wave)), self.targets[index]


@dataclass
class SpeechBatch:
    """A padded batch: waveforms (B, N) float32 zero-padded; lengths (B,) int64 samples;
    targets (B, L) int64 padded with the blank id 0; target_lengths (B,) int64."""

    waveforms: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor

    def pin_memory(self) -> "SpeechBatch":
        return SpeechBatch(*(t.pin_memory() for t in (self.waveforms, self.lengths, self.targets,
                                                       self.target_lengths)))


def collate_speech(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> SpeechBatch:
    """Pad a list of (waveform (N_i,), targets (L_i,)) into a SpeechBatch."""
    waves, targets = zip(*items)
    return SpeechBatch(
        waveforms=torch.nn.utils.rnn.pad_sequence(list(waves), batch_first=True),  # (B, N)
        lengths=torch.tensor([len(w) for w in waves], dtype=torch.long),  # (B,)
        targets=torch.nn.utils.rnn.pad_sequence(list(targets), batch_first=True, padding_value=0),  # (B, L)
        target_lengths=torch.tensor([len(t) for t in targets], dtype=torch.long),  # (B,)
    )


def make_loader(utterances: Sequence[Utterance], tokenizer: CharTokenizer | None = None, *,
                max_batch_seconds: float = 120.0, shuffle: bool = True, seed: int = 0,
                augment: AugmentConfig | None = None, num_workers: int | None = None,
                num_replicas: int = 1, rank: int = 0, num_buckets: int = 10) -> DataLoader:
    """DataLoader of SpeechBatch over `utterances` (see `DurationBatchSampler` for the batching rules).

    num_workers defaults to the number of cores, capped at 4: decoding and augmenting then run beside the
    training process. Call `loader.batch_sampler.set_epoch(epoch)` each epoch for a fresh order.
    """
    dataset = SpeechDataset(utterances, tokenizer, augment)
    sampler = DurationBatchSampler([u.duration for u in utterances], max_batch_seconds, num_buckets=num_buckets,
                                   shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank)
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_speech, num_workers=workers,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)
