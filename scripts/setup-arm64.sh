#!/usr/bin/env bash
# Extra system packages for the linux-arm64 native runner: the cross compiler and qemu-user to prove it here.
# Not part of scripts/setup.sh: only `allinone runner --target linux-arm64`, the slow arm64 tests and
# benchmarks/arm64_parity.py need them. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t APT_PACKAGES < <(grep -v '^\s*#' scripts/apt-packages-arm64.txt | grep -v '^\s*$')
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup-arm64: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup-arm64: done (next: .venv/bin/allinone runner --target linux-arm64 --out runner-linux-arm64)"
