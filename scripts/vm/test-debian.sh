#!/usr/bin/env bash
# The fault matrix on the Debian 12 systemd guest with the packaged agent:
# install what it needs (idempotent), build the image (cached under
# target/vm-debian/), start virtlogd and libvirtd by hand if they are not
# running (and stop the ones it started, by PID, even on failure), run the
# gated test.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/vm/setup-host.sh >/dev/null
IMG=$(bash scripts/vm/build-debian.sh | tail -1)
export VIGIL_DEBIAN_IMAGE="$IMG"
export PATH="$HOME/.cargo/bin:$PATH"

. scripts/vm/libvirt.sh
cleanup() {
    virsh -c qemu:///system destroy vigil-e2e >/dev/null 2>&1 || true
    virsh -c qemu:///system undefine vigil-e2e --snapshots-metadata >/dev/null 2>&1 || true
    stop_libvirt
}
trap cleanup EXIT
start_libvirt
cargo test --locked -p vigil-watchdog --test vm fault_matrix_on_a_debian_guest -- --ignored --nocapture --test-threads=1
