#!/usr/bin/env bash
# The test command: lint, unit + integration + property + scenario tests,
# and a build of the fuzz target. Fails on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Each step says how long the one before it took (CI's budget is 30 min).
last=$SECONDS
step() { echo; echo "== $*   [previous step: $((SECONDS - last)) s, total $SECONDS s]"; last=$SECONDS; }
trap 'echo "== done   [last step: $((SECONDS - last)) s, total $SECONDS s]"' EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build --workspace (the daemon tests run the agent binary)"
cargo build --workspace --locked

step "cargo test --workspace"
cargo test --workspace --locked

step "vigild's own world as root: control access with real unprivileged users (two users and a group, removed after), the journal on a full tmpfs"
cargo test -p vigil-watchdog --locked --test daemon root_ -- --ignored

step "fuzz targets build (cargo-fuzz runs them on nightly): the wire decoder, the control-request and config parsers"
cargo check --manifest-path protocol/fuzz/Cargo.toml --quiet
# The workspace's lockfile and target directory: the same versions, built once.
cp Cargo.lock host-watchdog/fuzz/Cargo.lock
cargo check --manifest-path host-watchdog/fuzz/Cargo.toml --target-dir target --quiet

# The benchmarks are built with the release profile, the build users run
# (and the one the scale step and the demos build: compiled once).
step "codec benchmark"
cargo bench -p vigil-protocol --bench codec --locked --profile release

step "engine benchmark (1,000 VMs)"
cargo bench -p vigil-watchdog --bench engine --locked --profile release

step "scale: 1,000 simulated agents against vigild (libvirt test driver)"
BENCH_WINDOW=10 bash scripts/bench-scale.sh 1000

step "no-VM demo (libvirt test driver)"
bash scripts/demo.sh

step "what operators see: the Prometheus mixin (promtool), a real Prometheus alert, the HTML report in headless Chromium"
bash scripts/observe-test.sh

step "real-VM fault matrix (QEMU TCG, libvirtd, vhost-device-vsock)"
bash scripts/vm/test.sh

step "live two-node Pacemaker cluster (network namespaces): host health and cluster resources"
bash scripts/cluster/test.sh

step "real-VM fault matrix on a Debian 12 systemd guest (the packaged agent; image cached under target/vm-debian/)"
bash scripts/vm/test-debian.sh

step "chaos soak: 5 minutes, seed 1, three guests, then the auditor"
bash scripts/soak.sh 5 --seed 1

step "real-VM demo (README main job)"
bash scripts/vm/demo.sh

step "packages: build, inspect, install, verify units, purge"
bash scripts/package-test.sh

step "agent footprint (15 s against a local sink)"
bash scripts/agent-footprint.sh 15
