#!/usr/bin/env bash
# Set up allinone from nothing: system packages, a virtual environment in .venv, the runtime and the SDK in
# editable mode.
# Safe to rerun: every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages (offline TTS engines for the synthetic corpus, libsndfile for soundfile, cmake for the C++ runner).
bash scripts/apt-install.sh scripts/apt-packages.txt setup

# Python environment. torch==2.13.0 first, so pip takes the CPU build (a bare `torch` pulls a CUDA build).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
# The device runtime is its own distribution that the SDK depends on; both in one pip call, runtime first, so
# pip takes allinone-runtime from ./runtime and never looks for it on an index.
# hf: transformers (wav2vec2 import tests); synth: Piper voice.
.venv/bin/python -m pip install -q -e './runtime[plots]' -e '.[test,hf,synth]'
echo "setup: done (.venv ready; run .venv/bin/allinone --help)"
