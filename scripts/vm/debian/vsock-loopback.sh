#!/bin/sh
# Runs inside the Debian test guest (installed there by
# scripts/vm/build-debian.sh as /usr/local/bin/vigil-vsock-loopback): the
# first end-to-end check of vigild's kernel AF_VSOCK listener and CID
# identity. AF_VSOCK is opened only here, inside a nested guest: vigild
# listens on vsock://any:1300, a second vigil-agent connects to CID 1
# through vsock_loopback, and the libvirt test driver's domain is mapped
# to CID 1 by vigild's config (libvirt's <vsock> refuses CIDs below 3).
# A watched process is killed; vigild must locate service-down and have
# the agent restart it. Prints the journal between markers, and
# LOOPBACK-PASS or LOOPBACK-FAIL.
set -u
# Not under /run: initramfs-tools mounts it noexec.
W=/var/tmp/vigil-loopback
rm -rf "$W"; mkdir -p "$W"
modprobe vsock_loopback || { echo "LOOPBACK-FAIL no vsock_loopback"; exit 1; }
cat > "$W/node.xml" <<'XML'
<node>
  <domain type='test'>
    <name>loopback</name>
    <uuid>5e1f0000-0000-4000-8000-00000000100a</uuid>
    <memory unit='KiB'>524288</memory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
</node>
XML
cat > "$W/vigild.toml" <<CONF
libvirt_uri = "test://$W/node.xml"
journal = "$W/journal.db"
control_socket = "$W/control.sock"
metrics_listen = ""
listen = ["vsock://any:1300"]
[[vm]]
domain = "loopback"
cid = 1
CONF
cat > "$W/lo-svc" <<'SVC'
#!/bin/sh
while true; do sleep 3600; done
SVC
chmod 755 "$W/lo-svc"
# The guest's kernel log is the packaged agent's to report (this boot's
# earlier faults would be news to a vigild that starts now); this one gets
# an empty log of its own.
: > "$W/kmsg"
cat > "$W/agent.toml" <<CONF
connect = "vsock://1:1300"
state_dir = "$W/agent"
kmsg = "$W/kmsg"
[watch]
processes = ["lo-svc"]
[[allow]]
action = "restart-service"
name = "lo-svc"
argv = ["/bin/sh", "-c", "setsid $W/lo-svc </dev/null >/dev/null 2>&1 &"]
CONF
setsid "$W/lo-svc" </dev/null >/dev/null 2>&1 &
RUST_LOG=info setsid /usr/sbin/vigild --config "$W/vigild.toml" </dev/null >"$W/vigild.log" 2>&1 &
VIGILD=$!
RUST_LOG=info setsid /usr/bin/vigil-agent run --config "$W/agent.toml" </dev/null >"$W/agent.log" 2>&1 &
AGENT=$!
ctl() { /usr/sbin/vigilctl --socket "$W/control.sock" "$@"; }
state() { ctl --json status loopback 2>/dev/null | sed -n 's/.*"state": *"\([a-z-]*\)".*/\1/p' | head -1; }
wait_for() { # wait_for SECONDS COMMAND...
    t=$1; shift
    while [ "$t" -gt 0 ]; do "$@" && return 0; sleep 1; t=$((t - 1)); done
    return 1
}
healthy() { [ "$(state)" = healthy ]; }
located() { ctl events --json 2>/dev/null | grep -q '"kind":"service-down"'; }
recovered() { ctl events --json 2>/dev/null | grep '"record":"closed"' | grep -q '"how":"recovered"'; }
ok=1
wait_for 60 healthy || { echo "loopback: never healthy"; ok=0; }
if [ $ok = 1 ]; then
    pkill -x lo-svc
    wait_for 30 located || { echo "loopback: no service-down"; ok=0; }
    wait_for 30 recovered || { echo "loopback: not recovered"; ok=0; }
    pgrep -x lo-svc >/dev/null || { echo "loopback: lo-svc not running again"; ok=0; }
fi
echo "__JOURNAL_BEGIN__"
ctl events --json
echo "__JOURNAL_END__"
kill "$AGENT" "$VIGILD" 2>/dev/null
pkill -x lo-svc
wait
if [ $ok = 1 ]; then echo "LOOPBACK-PASS"; else tail -n 20 "$W/vigild.log" "$W/agent.log"; echo "LOOPBACK-FAIL"; fi
