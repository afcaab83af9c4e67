#!/usr/bin/env bash
# The chaos soak: three busybox TCG guests under one vigild for MINUTES
# (default 5) on a seeded schedule (default seed 1) of overlapping guest
# faults and disruptions of vigild's own world (vigild SIGKILLed and
# started again, libvirtd stopped and started, host CPU starvation, a
# hostile flood on an agent socket); then the auditor checks the journal
# against the injection log. Its files stay in target/soak/seed-N/.
# Usage: bash scripts/soak.sh [MINUTES] [--seed N]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=5 seed=1
while [ $# -gt 0 ]; do
    case "$1" in
        --seed) seed=${2:?--seed needs a number}; shift 2 ;;
        [0-9]*) minutes=$1; shift ;;
        *) echo "usage: bash scripts/soak.sh [MINUTES] [--seed N]" >&2; exit 2 ;;
    esac
done
bash scripts/vm/setup-host.sh
bash scripts/vm/build-guest.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked -p vigil-sim --bin vigil-audit
. scripts/vm/libvirt.sh
soak_cleanup() {
    for n in 1 2 3; do
        virsh -c qemu:///system destroy "vigil-soak-$n" >/dev/null 2>&1 || true
        virsh -c qemu:///system undefine "vigil-soak-$n" --snapshots-metadata >/dev/null 2>&1 || true
    done
    stop_libvirt
}
trap soak_cleanup EXIT
start_libvirt
echo "== soak: $minutes min, seed $seed"
SOAK_MINUTES=$minutes SOAK_SEED=$seed \
    cargo test --locked -p vigil-watchdog --test vm soak::soak -- --ignored --nocapture --test-threads=1
echo "== audit of target/soak/seed-$seed"
target/debug/vigil-audit "target/soak/seed-$seed"
