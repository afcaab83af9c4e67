#!/usr/bin/env bash
# Quick start, main job: install what is needed (build tools, libvirt, QEMU,
# vhost-device-vsock), build, and run the real-VM demo: one QEMU guest with
# vigil-agent inside, vigild watching it through libvirt; a kernel panic and
# a service death are injected and the detection -> localization ->
# recovery timeline and `vigilctl report` are printed. Leaves nothing
# running. (`bash scripts/demo.sh` is the same story without a VM, on
# libvirt's test driver.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/vm/demo.sh
