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
run_vm_test fault_matrix_on_a_real_vm
