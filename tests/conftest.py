"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# --- data (issue 3) ---
SYNTH_CORPUS_HOURS = 0.05  # ~3 minutes of audio: ~45 train, ~6 dev, ~6 test utterances
SYNTH_CORPUS_SEED = 0


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real synthetic corpus (offline TTS), made once per test session.

    Returns its folder, holding train.jsonl, dev.jsonl, test.jsonl (relative audio paths), corpus.json and
    audio/{split}/*.wav (16 kHz mono PCM16). Read it with `allinone.data.read_jsonl(path / "train.jsonl")`.
    """
    from allinone.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth_corpus")
    synthesize(out, SYNTH_CORPUS_HOURS, SYNTH_CORPUS_SEED, corpus_version=1, progress=False)  # fast engines only
    return out
