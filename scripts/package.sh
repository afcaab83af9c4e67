#!/usr/bin/env bash
# Build the packages: vigil-agent (static binary) and vigil-watchdog
# (vigild, vigilctl), as .deb (cargo-deb) and .rpm (cargo-generate-rpm),
# with man pages and shell completions generated from the CLI definitions.
# Output: target/packaging/*.deb, *.rpm.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TARGET=x86_64-unknown-linux-gnu
OUT=target/packaging

for tool in cargo-deb:cargo-deb cargo-generate-rpm:cargo-generate-rpm; do
    bin="${tool%%:*}"; crate="${tool##*:}"
    command -v "$bin" >/dev/null || cargo install --locked "$crate"
done

RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$TARGET" -p vigil-agent
cargo build --release --locked -p vigil-watchdog
cargo run --release --locked -q -p vigil-gen -- "$OUT"

cargo deb --no-build --locked -p vigil-agent --target "$TARGET" -o "$OUT/"
cargo deb --no-build --locked -p vigil-watchdog -o "$OUT/"
cargo generate-rpm -p guest-agent --target "$TARGET" -o "$OUT/"
cargo generate-rpm -p host-watchdog -o "$OUT/"
ls -l "$OUT"/*.deb "$OUT"/*.rpm
