# Start virtlogd and libvirtd by hand (no systemd) when they are not
# running, and remember the PIDs of the ones started here in `started`, so
# the caller stops only those (sourced).
started=()
start_daemon() { # start_daemon NAME PIDFILE
    if ! pgrep -x "$1" >/dev/null; then
        "$1" -d -p "$2"
        for _ in $(seq 50); do [ -s "$2" ] && break; sleep 0.1; done
        started+=("$(cat "$2")")
    fi
}
start_libvirt() {
    start_daemon virtlogd /run/vigil-virtlogd.pid
    start_daemon libvirtd /run/vigil-libvirtd.pid
    for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "libvirtd did not answer" >&2; return 1
}
stop_libvirt() { for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done; }
