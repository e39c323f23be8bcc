#!/usr/bin/env bash
# Install the Debian packages listed in FILE (one per line, # comments) that are not installed yet.
# Usage: bash scripts/apt-install.sh FILE TAG   (TAG prefixes the progress line). Safe to rerun.
set -euo pipefail
mapfile -t APT_PACKAGES < <(grep -v '^\s*#' "$1" | grep -v '^\s*$')
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "$2: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
