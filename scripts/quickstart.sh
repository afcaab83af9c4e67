#!/usr/bin/env bash
# Quick start, main job: install what is needed, build, and run Vigil's
# closest real thing at this stage of the project.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo bench -p vigil-protocol --bench codec --locked
