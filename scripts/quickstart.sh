#!/usr/bin/env bash
# Quick start, main job: install what is needed, build, and run the no-VM
# demo: vigild against libvirt's test driver with real vigil-agent processes
# attached over Unix sockets; faults are injected and the detection ->
# localization -> recovery timeline and `vigilctl report` are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/demo.sh
