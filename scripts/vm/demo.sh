#!/usr/bin/env bash
# The real-VM demo: boot one QEMU guest (TCG) with vigil-agent inside under
# libvirt, run vigild against qemu:///system, inject a kernel panic and a
# service death through the guest's serial shell, then print the timeline
# (fault -> detected -> located -> action -> recovered, with times) and
# `vigilctl report`. Installs what it needs (idempotent); stops everything
# it started, by PID, even on failure. KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/vm/setup-host.sh
bash scripts/vm/build-guest.sh
cargo build --release --locked -p vigil-watchdog
BIN="$ROOT/target/release"
DOM=vigil-demo

. scripts/lib.sh
. scripts/vm/libvirt.sh
work="$(mktemp -d /tmp/vigil-vm-demo.XXXXXX)"
pids=()
cleanup() { # vigild first: it would start the domain again
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    virsh -c qemu:///system destroy "$DOM" >/dev/null 2>&1 || true
    virsh -c qemu:///system undefine "$DOM" --snapshots-metadata >/dev/null 2>&1 || true
    stop_libvirt
    [ -n "${KEEP:-}" ] && echo "work directory kept: $work" || rm -rf "$work"
}
trap cleanup EXIT
# Type a command into the guest's root shell on its second serial port. The
# connection stays open a moment: QEMU drops what the UART has not taken
# yet when the peer hangs up.
guest() { { printf '%s\n' "$*"; sleep 1; } | socat -u - "UNIX-CONNECT:$work/shell.sock"; }

start_libvirt
virsh -c qemu:///system destroy "$DOM" >/dev/null 2>&1 || true
virsh -c qemu:///system undefine "$DOM" --snapshots-metadata >/dev/null 2>&1 || true
cp target/vm/disk.qcow2 "$work/disk.qcow2"

say "starting vhost-device-vsock (the guest's vsock, as Unix sockets here) and vigild"
vhost-device-vsock --vm "guest-cid=3,socket=$work/vhost.sock,uds-path=$work/vm.vsock" \
    >/dev/null 2> "$work/vhost-device-vsock.log" &
pids+=($!)
wait_for 10 test -S "$work/vhost.sock"
cat > "$work/vigild.toml" <<CONF
libvirt_uri = "qemu:///system"
journal = "$work/journal.db"
control_socket = "$work/control.sock"
metrics_listen = ""
[[vm]]
domain = "$DOM"
agent = "hybrid://$work/vm.vsock:1217"
probe = "hybrid://$work/vm.vsock:9"
CONF
RUST_LOG=warn "$BIN/vigild" --config "$work/vigild.toml" 2> "$work/vigild.log" &
pids+=($!)
wait_for 10 test -S "$work/control.sock"

say "booting $DOM (QEMU, TCG): Debian cloud kernel, busybox, vigil-agent, a watched test service"
sed -e "s|@NAME@|$DOM|; s|@UUID@|5e1f0000-0000-4000-8000-000000000002|; s|@WORK@|$work|g" \
    -e "s|@KERNEL@|$ROOT/target/vm/vmlinuz|; s|@INITRD@|$ROOT/target/vm/initrd.img|" \
    -e "s|@MEMORY@|512|; s|@CURRENT@|384|; s|@CMDLINE@|console=ttyS0 panic=0 quiet|" \
    tests/fixtures/vm.xml.in > "$work/vm.xml"
virsh -c qemu:///system define "$work/vm.xml" >/dev/null
virsh -c qemu:///system start "$DOM"
wait_for 90 state_is "$DOM" healthy
ctl list

say "fault 1: kernel panic in the guest (echo c > /proc/sysrq-trigger)"
guest 'echo c > /proc/sysrq-trigger'
wait_for 30 faulted "$DOM" guest-panic
ctl status "$DOM"
wait_for 90 closed "$DOM" guest-panic
wait_for 30 state_is "$DOM" healthy
ctl list

say "fault 2: the watched service dies (killall testsvc)"
guest 'killall testsvc'
wait_for 30 closed "$DOM" service-down
ctl list

say "timeline (vigilctl events)"
ctl events
say "vigilctl report (over the demo's few seconds, one 5 s panic outage weighs heavily)"
ctl report
mkdir -p "$ROOT/target/report"
ctl report --html "$ROOT/target/report/vm-demo.html"
echo "open target/report/vm-demo.html in a browser: the timeline of both faults (detect / locate / repair)"
