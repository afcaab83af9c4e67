#!/usr/bin/env bash
# The no-VM demo: vigild against libvirt's test driver (three domains from
# tests/fixtures/node.xml) with two real vigil-agent processes attached over
# Unix sockets. Injects a service death, an operator's destroy (left off) and an agent kill,
# then prints the detection -> localization -> recovery timeline and
# `vigilctl report`. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
cargo build --release --locked -p vigil-watchdog -p vigil-agent
BIN="$ROOT/target/release"

work="$(mktemp -d /tmp/vigil-demo.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

. scripts/lib.sh

cp /bin/sleep "$work/demosvc"   # the guest service the agent watches
cat > "$work/vigild.toml" <<CONF
libvirt_uri = "test://$ROOT/tests/fixtures/node.xml"
journal = "$work/journal.db"
control_socket = "$work/control.sock"
metrics_listen = "127.0.0.1:0"
[[vm]]
domain = "web"
agent = "unix://$work/web.sock"
[[vm]]
domain = "db"
agent = "unix://$work/db.sock"
CONF
agent_conf() { # agent_conf NAME [watch+allow]
    cat > "$work/$1-agent.toml" <<CONF
connect = "unix://$work/$1.sock"
state_dir = "$work/$1-run"
kmsg = "$work/$1-kmsg"
CONF
    : > "$work/$1-kmsg"
    if [ "${2:-}" = watch ]; then cat >> "$work/$1-agent.toml" <<CONF
[watch]
processes = ["demosvc"]
[[allow]]
action = "restart-service"
name = "demosvc"
argv = ["/usr/bin/setsid", "-f", "$work/demosvc", "3600"]
CONF
    fi
}
agent_conf web watch
agent_conf db

say "starting vigild (libvirt test driver: web, db, legacy) and two agents"
RUST_LOG=warn "$BIN/vigild" --config "$work/vigild.toml" 2> "$work/vigild.log" &
pids+=($!)
wait_for 10 test -S "$work/control.sock"
setsid -f "$work/demosvc" 3600
RUST_LOG=warn "$BIN/vigil-agent" run --config "$work/web-agent.toml" 2> "$work/web-agent.log" &
pids+=($!)
RUST_LOG=warn "$BIN/vigil-agent" run --config "$work/db-agent.toml" 2> "$work/db-agent.log" &
db_agent=$!
pids+=($db_agent)
wait_for 15 state_is web healthy
wait_for 15 state_is db healthy
ctl list

say "fault 1: the watched service dies in web (SIGKILL)"
pkill -9 -f "^$work/demosvc" || true
wait_for 20 closed web service-down
ctl list

say "not a fault: an operator destroys db (vigilctl action db destroy): off on purpose, left off"
ctl action db destroy
wait_for 10 state_is db off
sleep 3
ctl list
say "... until the operator starts it again"
ctl action db start
wait_for 20 state_is db healthy
ctl list

say "fault 3: db's agent is killed (-9); it comes back 3 s later"
kill -9 "$db_agent"
wait_for 10 faulted db agent-down
ctl status db
sleep 3
RUST_LOG=warn "$BIN/vigil-agent" run --config "$work/db-agent.toml" 2>> "$work/db-agent.log" &
pids+=($!)
wait_for 15 closed db agent-down
ctl list

say "timeline (vigilctl events)"
ctl events
say "vigilctl report"
ctl report
pkill -9 -f "^$work/demosvc" || true
