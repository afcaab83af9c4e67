#!/usr/bin/env bash
# Quick start, main job: install what is needed, build, and take a live
# health snapshot of this machine with the agent's manual probe
# (`vigil-agent check`), as a summary and as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p vigil-agent
echo "== vigil-agent check"
status=0
target/release/vigil-agent check || status=$?
echo "(exit status $status: 0 healthy, 1 degraded, 2 faulted)"
echo "== vigil-agent check --json (first lines)"
target/release/vigil-agent check --json | head -20
