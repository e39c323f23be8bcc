#!/usr/bin/env bash
# Extra system packages for the linux-arm64 native runner: the cross compiler and qemu-user to prove it here.
# Not part of scripts/setup.sh: only `allinone runner --target linux-arm64`, the slow arm64 tests and
# benchmarks/arm64_parity.py need them. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/apt-install.sh scripts/apt-packages-arm64.txt setup-arm64
echo "setup-arm64: done (next: .venv/bin/allinone runner --target linux-arm64 --out runner-linux-arm64)"
