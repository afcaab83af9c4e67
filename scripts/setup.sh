#!/usr/bin/env bash
# Install what building and testing Vigil needs on a fresh Debian machine
# (root). Idempotent: installs only what is missing.
set -euo pipefail

APT_PACKAGES=(build-essential pkg-config libvirt-dev sqlite3 procps util-linux jq pacemaker-cli-utils curl python3 chromium-headless-shell)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
    exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
