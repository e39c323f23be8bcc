"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory):
    """allinone's cache (lowered programs, timings) of this test session, not the user's: tests start cold and
    leave nothing behind; CLI subprocesses inherit it. Tests that need their own pass --cache-dir."""
    before = os.environ.get("ALLINONE_CACHE_DIR")
    os.environ["ALLINONE_CACHE_DIR"] = str(tmp_path_factory.mktemp("allinone-cache"))
    yield Path(os.environ["ALLINONE_CACHE_DIR"])
    if before is None:
        os.environ.pop("ALLINONE_CACHE_DIR")
    else:
        os.environ["ALLINONE_CACHE_DIR"] = before


# --- the allinone CLI on the trained tiny checkpoint (build and demo tests) ---
ROOT = Path(__file__).parents[1]
ALLINONE = str(Path(sys.executable).parent / "allinone")  # the console script of the venv running the tests
SAMPLE_WAV = ROOT / "sdk/allinone/assets/sample.wav"
SAMPLE_TEXT = (ROOT / "sdk/allinone/assets/sample.txt").read_text().strip()
TINY_OVERFIT = ROOT / "tests/fixtures/tiny_overfit"  # conformer_tiny trained until it transcribes sample.wav


def run_allinone(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real `allinone` CLI; with `check`, a non-zero exit fails the test showing the end of stderr."""
    proc = subprocess.run([ALLINONE, *args], capture_output=True, text=True, timeout=1800, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"allinone {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def board_profile(name: str, description: str, *, max_model_mib: float = 64) -> str:
    """A device profile (YAML text) of a float-only test board: 1 thread, 32-bit weights, a guessed latency model."""
    return f"""\
format_version: 1
name: {name}
description: {description}
target: linux-arm64
backend: xnnpack
threads: 1
weight_bits: [32]
memory: {{max_model_mib: {max_model_mib:g}, max_peak_rss_mib: 512, runtime_overhead_mib: 40}}
latency: {{max_rtf: 1.0, reference_audio_s: 10}}
latency_model:
  overhead_ms: 5
  throughput_gmacs: {{fp32: 5}}
  workload_factor: 0.5
  source: estimated
  citations: ["test profile"]
  uncertainty_pct: 50
"""


def clip_catalog_checkpoint(parent: Path, *catalog_args: str) -> Path:
    """A copy of the tiny fixture in `parent`/tiny with a catalog measured on the clip it learned (sample.wav);
    `catalog_args` go to `allinone catalog` (e.g. --no-activations)."""
    ckpt = parent / "tiny"
    shutil.copytree(TINY_OVERFIT, ckpt)
    manifest = parent / "clip.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(SAMPLE_WAV), "text": SAMPLE_TEXT, "duration": 4.05}) + "\n")
    run_allinone("catalog", "--checkpoint", str(ckpt), "--manifest", str(manifest), *catalog_args)
    return ckpt
