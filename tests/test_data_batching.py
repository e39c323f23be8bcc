"""Duration-bucketed batching and the speech DataLoader, on the synthetic corpus's real audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from allinone.data.augment import AugmentConfig
from allinone.data.batching import DurationBatchSampler, SpeechDataset, collate_speech, make_loader
from allinone.data.manifest import Utterance, read_jsonl
from allinone.data.tokenizer import CharTokenizer
from allinone.errors import BadInputError

DURATIONS = np.random.default_rng(0).uniform(0.5, 12.0, size=500).tolist() + [40.0]


def test_every_utterance_once_and_padded_seconds_capped() -> None:
    sampler = DurationBatchSampler(DURATIONS, max_batch_seconds=60, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(DURATIONS)))
    for b in batches:
        padded = max(DURATIONS[i] for i in b) * len(b)
        assert padded <= 60 or len(b) == 1  # the 40 s one may stand alone
    assert len(sampler) == len(batches)


def test_buckets_keep_lengths_close() -> None:
    batches = list(DurationBatchSampler(DURATIONS, max_batch_seconds=60, num_buckets=10, seed=0))
    fill = [sum(DURATIONS[i] for i in b) / (max(DURATIONS[i] for i in b) * len(b)) for b in batches]
    assert np.mean(fill) > 0.85  # little padding


def test_order_is_seeded_per_epoch() -> None:
    s = DurationBatchSampler(DURATIONS, 60, seed=3)
    first = list(s)
    assert list(DurationBatchSampler(DURATIONS, 60, seed=3)) == first
    s.set_epoch(1)
    assert list(s) != first
    unshuffled = DurationBatchSampler(DURATIONS, 60, shuffle=False)
    assert list(unshuffled) == list(unshuffled)


def test_ranks_get_disjoint_equal_shares() -> None:
    shares = [list(DurationBatchSampler(DURATIONS, 60, seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in shares}) == 1
    covered = {i for s in shares for b in s for i in b}
    assert covered == set(range(len(DURATIONS)))
    with pytest.raises(BadInputError):
        DurationBatchSampler(DURATIONS, 60, num_replicas=2, rank=2)


def test_collate_pads_and_reports_lengths() -> None:
    items = [(torch.ones(5), torch.tensor([3, 4])), (torch.ones(3), torch.tensor([5, 6, 7]))]
    batch = collate_speech(items)
    assert batch.waveforms.shape == (2, 5) and batch.waveforms[1, 3:].abs().sum() == 0
    assert batch.lengths.tolist() == [5, 3]
    assert batch.targets.tolist() == [[3, 4, 0], [5, 6, 7]] and batch.target_lengths.tolist() == [2, 3]


def test_dataset_names_the_line_of_an_unspellable_transcript(tmp_path: Path) -> None:
    bad = Utterance(str(tmp_path / "x.wav"), "na\u00efve", 1.0, origin="m.jsonl:7")
    with pytest.raises(BadInputError, match=r"m\.jsonl:7: cannot spell"):
        SpeechDataset([bad])


def test_loader_with_workers_yields_padded_batches_of_the_corpus(synth_corpus: Path) -> None:
    utts = read_jsonl(synth_corpus / "train.jsonl", strict=True).utterances
    tok = CharTokenizer()
    loader = make_loader(utts, tok, max_batch_seconds=30, num_workers=2, seed=0)
    seen = 0
    texts = {u.text for u in utts}
    for batch in loader:
        b = batch.waveforms.shape[0]
        assert batch.waveforms.dtype == torch.float32 and batch.waveforms.dim() == 2
        assert batch.lengths.shape == (b,) and int(batch.lengths.max()) == batch.waveforms.shape[1]
        assert batch.waveforms.shape[1] * b <= 30 * 16000 or b == 1
        for i in range(b):
            n, L = int(batch.lengths[i]), int(batch.target_lengths[i])
            assert batch.waveforms[i, n:].abs().sum() == 0
            assert tok.decode(batch.targets[i, :L].tolist()) in texts
        seen += b
    assert seen == len(utts)


def test_on_the_fly_augmentation_is_reproducible(synth_corpus: Path) -> None:
    utts = read_jsonl(synth_corpus / "train.jsonl", strict=True).utterances[:2]
    ds = SpeechDataset(utts, augment=AugmentConfig(noise_prob=1.0, speed_prob=0.0))
    torch.manual_seed(5)
    a = ds[0][0]
    torch.manual_seed(5)
    assert torch.equal(ds[0][0], a)
    clean = SpeechDataset(utts)[0][0]
    assert a.shape == clean.shape and not torch.allclose(a, clean)
