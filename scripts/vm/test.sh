#!/usr/bin/env bash
# The real-VM fault matrix: install what it needs (idempotent), build the
# guest, start virtlogd and libvirtd by hand if they are not running (and
# stop the ones it started, by PID, even on failure), run the gated test.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/vm/setup-host.sh
bash scripts/vm/build-guest.sh
export PATH="$HOME/.cargo/bin:$PATH"

. scripts/vm/libvirt.sh
cleanup() {
    virsh -c qemu:///system destroy vigil-e2e >/dev/null 2>&1 || true
    virsh -c qemu:///system undefine vigil-e2e --snapshots-metadata >/dev/null 2>&1 || true
    stop_libvirt
}
trap cleanup EXIT
start_libvirt
cargo test --locked -p vigil-watchdog --test vm fault_matrix_on_a_real_vm -- --ignored --nocapture --test-threads=1
