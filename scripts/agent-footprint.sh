#!/usr/bin/env bash
# Agent footprint: run the static release agent against a local Unix-socket
# sink for DURATION seconds (default 60) at the default intervals (500 ms
# heartbeat, 5 s report) and print peak RSS (VmHWM), CPU seconds
# (utime+stime) and the static binary's size.
# Targets: RSS <= 4 MiB, <= 0.1 % of one core, binary <= 4 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-60}"
TARGET=x86_64-unknown-linux-gnu

RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$TARGET" -p vigil-agent
cargo build --release --locked -p vigil-protocol --example sink
BIN="target/$TARGET/release/vigil-agent"

work="$(mktemp -d)"
sink_pid=""; agent_pid=""
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
    [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

target/release/examples/sink "$work/host.sock" "$((DURATION + 5))" > "$work/sink.out" &
sink_pid=$!
for _ in $(seq 50); do [ -S "$work/host.sock" ] && break; sleep 0.1; done
cat > "$work/agent.toml" <<CONF
connect = "unix://$work/host.sock"
state_dir = "$work/run"
CONF
RUST_LOG=warn "$BIN" run --config "$work/agent.toml" &
agent_pid=$!
sleep "$DURATION"
hz=$(getconf CLK_TCK)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$agent_pid/stat")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")
size=$(stat -c %s "$BIN")
kill "$agent_pid"; wait "$agent_pid" || true; agent_pid=""
wait "$sink_pid" || true; sink_pid=""
cpu_s=$(awk -v t=$((utime + stime)) -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}')
pct=$(awk -v t=$((utime + stime)) -v hz="$hz" -v d="$DURATION" 'BEGIN {printf "%.3f", 100 * t / hz / d}')
echo "agent footprint over ${DURATION} s at default intervals:"
echo "  peak RSS (VmHWM):   ${hwm_kb} KiB   (target <= 4096 KiB)"
echo "  CPU (utime+stime):  ${cpu_s} s = ${pct} % of one core   (target <= 0.1 %)"
echo "  static binary size: $((size / 1024)) KiB   (target <= 4096 KiB)"
echo "  linkage: $(ldd "$BIN" 2>&1 | head -1 | sed 's/^[[:space:]]*//')"
cat "$work/sink.out" | sed 's/^/  /'
# The figures hold only if the agent was connected the whole time (one
# heartbeat per 500 ms).
beats=$(awk '/heartbeats/ {print $2}' "$work/sink.out")
if [ "${beats:-0}" -lt $((DURATION * 2 * 9 / 10)) ]; then
    echo "agent-footprint: only ${beats:-0} heartbeats in ${DURATION} s: the agent was not connected throughout" >&2
    exit 1
fi
