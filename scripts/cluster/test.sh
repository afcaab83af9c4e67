#!/usr/bin/env bash
# vigild's host health against a live two-node Pacemaker cluster
# (scripts/cluster/lab.sh: two network namespaces, corosync + pacemakerd in
# each). A VM stand-in (ocf:pacemaker:Dummy, allow-migrate) runs on hv1,
# where vigild runs (libvirt's test driver) with a file for its host kernel
# log. A host disk error (yellow) moves nothing; an uncorrected memory
# error (red) moves the resource to hv2, timed from the injection; the
# operator's clear (green) moves nothing back. Before that, the VM is a
# cluster resource whose watched service dies, with a ladder that would
# reset it: vigild asks the cluster (crm_resource --fail) instead, and
# Pacemaker restarts the resource. Cleans up every process and namespace
# it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
for p in pacemaker corosync pacemaker-cli-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=" $p"
done
if [ -n "${missing:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
cargo build --locked -q -p vigil-watchdog -p vigil-agent --bins
ROOT=$PWD
. scripts/cluster/lab.sh
VIGILD_PID=
AGENT_PID=
SVC_PID=
cleanup() {
    for p in $AGENT_PID $SVC_PID; do kill "$p" 2>/dev/null || true; done
    if [ -n "$VIGILD_PID" ]; then
        kill "$VIGILD_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$VIGILD_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    lab_down
}
trap cleanup EXIT

lab_up
lab_wait_online
in_node hv1 crm_attribute --type crm_config --name stonith-enabled --update false
in_node hv1 crm_attribute --type crm_config --name node-health-strategy --update migrate-on-red
in_node hv1 crm_attribute --type rsc_defaults --name resource-stickiness --update 100
in_node hv1 cibadmin --create -o resources --xml-text \
    '<primitive id="vm1" class="ocf" provider="pacemaker" type="Dummy"><meta_attributes id="vm1-meta"><nvpair id="vm1-am" name="allow-migrate" value="true"/></meta_attributes><operations><op id="vm1-mon" name="monitor" interval="5s"/></operations></primitive>'
in_node hv1 cibadmin --create -o constraints --xml-text '<rsc_location id="vm1-on-hv1" rsc="vm1" node="hv1" score="50"/>'

where() { in_node hv1 crm_resource --locate --resource vm1 2>/dev/null | sed -n 's/.*running on: *//p'; }
wait_where() { # NODE SECONDS
    local t=0
    until [ "$(where)" = "$1" ]; do
        sleep 0.2; t=$((t + 1))
        [ $t -lt $(($2 * 5)) ] || { echo "FAIL: vm1 not on $1 within $2 s (on: $(where))" >&2; in_node hv1 crm_mon -1 >&2; return 1; }
    done
}
wait_where hv1 60
echo "vm1 started on hv1"

W=$LAB_DIR/vigild
rm -rf "$W"; mkdir -p "$W"
: > "$W/kmsg"
cat > "$W/vigild.toml" <<CONF
libvirt_uri = "test://$ROOT/tests/fixtures/node.xml"
journal = "$W/journal.db"
control_socket = "$W/control.sock"
metrics_listen = ""
host_kmsg = "$W/kmsg"
[cluster]
kind = "pacemaker"
node = "hv1"
dampen_s = 1
[[vm]]
domain = "web"
agent = "unix://$W/web.sock"
cluster_resource = "vm1"
[engine.ladders.service-down]
rungs = [{ action = "reset", verify_ms = 30000 }]
exhausted = "hold"
CONF
# The guest's side: an agent watching a service (a copy of sleep).
SVC=vigilsvc$$
cp /bin/sleep "$W/$SVC"
"$W/$SVC" 100000 < /dev/null > /dev/null 2>&1 &
SVC_PID=$!
: > "$W/agent-kmsg"
cat > "$W/agent.toml" <<CONF
connect = "unix://$W/web.sock"
state_dir = "$W/agent-run"
kmsg = "$W/agent-kmsg"
[watch]
processes = ["$SVC"]
CONF
in_node hv1 sh -c 'echo $$ > "$1/vigild.pid"; exec env RUST_LOG=info "$2" --config "$1/vigild.toml"' \
    vigild "$W" "$ROOT/target/debug/vigild" < /dev/null > /dev/null 2> "$W/vigild.log" &
for _ in $(seq 1 50); do [ -s "$W/vigild.pid" ] && break; sleep 0.1; done
VIGILD_PID=$(cat "$W/vigild.pid")
health() { in_node hv1 attrd_updater --query --name '#health-vigil' --node hv1 2>/dev/null | sed -n 's/.*value="\([a-z]*\)".*/\1/p'; }
wait_health() { # COLOUR
    local t=0
    until [ "$(health)" = "$1" ]; do
        sleep 0.2; t=$((t + 1))
        [ $t -lt 100 ] || { echo "FAIL: #health-vigil not $1 (is: $(health))" >&2; tail -20 "$W/vigild.log" >&2; return 1; }
    done
}
wait_health green
echo "vigild published green"
RUST_LOG=info "$ROOT/target/debug/vigil-agent" run --config "$W/agent.toml" < /dev/null > /dev/null 2> "$W/agent.log" &
AGENT_PID=$!
CTL=("$ROOT/target/debug/vigilctl" --socket "$W/control.sock")
t=0
until "${CTL[@]}" status web --json 2>/dev/null | grep -q '"state": *"healthy"'; do
    sleep 0.2; t=$((t + 1)); [ $t -lt 150 ] || { echo "FAIL: web not healthy" >&2; tail -20 "$W/vigild.log" >&2; exit 1; }
done
failcount() { in_node hv1 crm_failcount --query --resource vm1 --node hv1 2>/dev/null | sed -n 's/.*value=\([0-9A-Z]*\).*/\1/p'; }
kill "$SVC_PID"; SVC_PID=
t=0
until grep -q "ask-cluster ok=true" "$W/vigild.log"; do
    sleep 0.2; t=$((t + 1)); [ $t -lt 150 ] || { echo "FAIL: no ask-cluster" >&2; tail -20 "$W/vigild.log" >&2; exit 1; }
done
t=0
until [ "$(failcount)" -ge 1 ] 2>/dev/null && [ "$(where)" = hv1 ]; do
    sleep 0.2; t=$((t + 1)); [ $t -lt 150 ] || { echo "FAIL: the cluster did not recover vm1 (fail count $(failcount), on $(where))" >&2; exit 1; }
done
if grep -E "action=#[0-9]+ (reset|destroy-start|start) " "$W/vigild.log"; then
    echo "FAIL: vigild acted on a cluster resource's domain itself" >&2; exit 1
fi
n_fail=$(failcount)
in_node hv1 crm_resource --cleanup --resource vm1 > /dev/null
echo "cluster resource: service down, reset rung asked the cluster (fail count $n_fail), Pacemaker recovered vm1 on hv1"

echo "3,2,2000,-;I/O error, dev sdb, sector 1953525000 op 0x1:(WRITE) flags 0x800 phys_seg 8 prio class 0" >> "$W/kmsg"
wait_health yellow
sleep 10
[ "$(where)" = hv1 ] || { echo "FAIL: yellow moved vm1 to $(where)" >&2; exit 1; }
echo "yellow: vm1 stays on hv1"

t0=$(date +%s%N)
echo "0,3,3000,-;EDAC MC1: 1 UE memory read error on DIMM_B2 (channel:0 slot:1 page:0x1234 offset:0x0 grain:32)" >> "$W/kmsg"
wait_health red
t_red=$(date +%s%N)
wait_where hv2 30
t_moved=$(date +%s%N)
echo "red: vm1 moved hv1 -> hv2; host fault to red $(( (t_red - t0) / 1000000 )) ms, to resource moved $(( (t_moved - t0) / 1000000 )) ms"

"${CTL[@]}" host --clear > /dev/null
wait_health green
sleep 10
[ "$(where)" = hv2 ] || { echo "FAIL: green moved vm1 back to $(where)" >&2; exit 1; }
echo "green again: nothing moved back"
echo "cluster test: ok"
