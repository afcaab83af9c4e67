#!/usr/bin/env bash
# The real-VM fault matrix: install what it needs (idempotent), build the
# guest, start virtlogd and libvirtd by hand if they are not running (and
# stop the ones it started, by PID, even on failure), run the gated test.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/vm/setup-host.sh
bash scripts/vm/build-guest.sh
export PATH="$HOME/.cargo/bin:$PATH"

started=()
cleanup() {
    virsh -c qemu:///system destroy vigil-e2e >/dev/null 2>&1 || true
    virsh -c qemu:///system undefine vigil-e2e --snapshots-metadata >/dev/null 2>&1 || true
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
start_daemon() { # start_daemon NAME PIDFILE
    if ! pgrep -x "$1" >/dev/null; then
        "$1" -d -p "$2"
        for _ in $(seq 50); do [ -s "$2" ] && break; sleep 0.1; done
        started+=("$(cat "$2")")
    fi
}
start_daemon virtlogd /run/vigil-test-virtlogd.pid
start_daemon libvirtd /run/vigil-test-libvirtd.pid
for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
cargo test --locked -p vigil-watchdog --test vm -- --ignored --nocapture --test-threads=1
