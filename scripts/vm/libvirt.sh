# Start virtlogd and libvirtd by hand (no systemd) when they are not
# running, and remember the PIDs of the ones started here in `started`, so
# the caller stops only those (sourced).
started=()
# A process that exists and is not a zombie (a killed daemon can linger as
# one until its reaper gets to it, and must not count as running).
pid_alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$s" != Z ]; }
running() { local p; for p in $(pgrep -x "$1"); do pid_alive "$p" && return 0; done; return 1; }
start_daemon() { # start_daemon NAME PIDFILE
    if ! running "$1"; then
        rm -f "$2"
        "$1" -d -p "$2"
        for _ in $(seq 50); do [ -s "$2" ] && break; sleep 0.1; done
        started+=("$(cat "$2")")
    fi
}
start_libvirt() {
    start_daemon virtlogd /run/vigil-virtlogd.pid
    local before=${#started[@]}
    start_daemon libvirtd /run/vigil-libvirtd.pid
    # A libvirtd of this script's own: a test may stop it and start it again
    # (with the same PID file, which stop_libvirt reads).
    if [ "${#started[@]}" -gt "$before" ]; then export VIGIL_OWN_LIBVIRTD=1; fi
    for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "libvirtd did not answer" >&2; return 1
}
stop_libvirt() { # and wait until they are gone
    # A test that restarted our libvirtd left its new PID in the PID file.
    if [ "${VIGIL_OWN_LIBVIRTD:-}" = 1 ] && [ -s /run/vigil-libvirtd.pid ]; then
        local p; p=$(cat /run/vigil-libvirtd.pid)
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = libvirtd ] && started+=("$p")
    fi
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${started[@]}"; do
        for _ in $(seq 100); do pid_alive "$p" || break; sleep 0.1; done
    done
}
# Run the gated real-VM test(s) matching FILTER under libvirtd (started by
# hand if it is not running); on exit, even a failing one, the test domain
# is destroyed and undefined and the daemons started here are stopped.
run_vm_test() { # run_vm_test FILTER
    trap vm_cleanup EXIT
    start_libvirt
    cargo test --locked -p vigil-watchdog --test vm "$1" -- --ignored --nocapture --test-threads=1
}
vm_cleanup() {
    virsh -c qemu:///system destroy vigil-e2e >/dev/null 2>&1 || true
    virsh -c qemu:///system undefine vigil-e2e --snapshots-metadata >/dev/null 2>&1 || true
    stop_libvirt
}
