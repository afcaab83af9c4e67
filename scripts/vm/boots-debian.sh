#!/usr/bin/env bash
# Cold boots of the Debian 12 guest (N, default 20): every boot's agent
# connects; boot to first heartbeat printed. As test-debian.sh:
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
export VIGIL_BOOTS="${1:-20}"
run_vm_test debian_boots
