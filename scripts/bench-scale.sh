#!/usr/bin/env bash
# vigild at scale, measured: for each N (default "100 1000 2000"; or
# `bash scripts/bench-scale.sh 1000`), a libvirt test-driver node with N
# running domains, vigild (release) with one agent socket per VM, and N
# simulated agents speaking the real protocol (examples/loadgen.rs). Prints
# for each N: time for all agents to connect, vigild's CPU as a fraction
# of one core over a steady window (BENCH_WINDOW s, default 60), RSS,
# threads, open fds, /metrics scrape time, faults during the steady window
# (false ones: every guest is healthy), faults after vigild is stopped for
# 3 s (SIGSTOP, SIGCONT; false ones too), then the detection latency of 10
# agents silenced together (min / median / p99, from the moment each went
# silent to its located fault). By default vigild opens the test driver
# in-process (libvirt calls cost no RPC); with BENCH_RPC=1 a libvirtd
# started for the benchmark (as the unprivileged user nobody, session mode,
# its own socket under the work directory) serves the same node through
# test+unix://, so every poll is an RPC as on a real host, and libvirtd's
# CPU is printed too. Kills what it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export PATH="$HOME/.cargo/bin:$PATH"
SIZES=("${@:-100 1000 2000}")
read -r -a SIZES <<< "${SIZES[*]}"
WINDOW="${BENCH_WINDOW:-60}"
cargo build --release --locked -q -p vigil-watchdog --bins --example loadgen
BIN="$ROOT/target/release"
LOADGEN="$ROOT/target/release/examples/loadgen"
TCK=$(getconf CLK_TCK)

pids=()
work=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
    [ -n "$work" ] && rm -rf "$work"
    return 0
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_field() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
ctl() { "$BIN/vigilctl" --socket "$work/control.sock" "$@"; }
healthy() { ctl list --json | jq '[.vms[] | select(.state == "healthy")] | length'; }
faults_since() {
    ctl events --json | jq -s --argjson t "$1" \
        '[.[] | select(.record.record == "fault" and .record.located >= $t)] | length'
}
now_ms() { date +%s%3N; }
scrape_ms() {
    local t0 t1
    t0=$(date +%s%N)
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    cat <&3 > /dev/null
    exec 3<&-
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

RPC="${BENCH_RPC:-0}"
printf '%-6s %9s %8s %8s %9s %8s %6s %10s %7s %8s | %s\n' \
    N CONNECT CPU LIBVIRTD RSS THREADS FDS SCRAPE FAULTS STOP3S "DETECT min/median/p99 (10 silenced)"
for n in "${SIZES[@]}"; do
    work="$(mktemp -d /tmp/vigil-bench.XXXXXX)"
    # The node: N running domains (no disks: the test driver's block
    # counters advance with the clock, which would read as I/O progress and
    # hold off every hang verdict for io_veto_limit_ms).
    {
        echo "<node>"
        for i in $(seq 1 "$n"); do
            printf "<domain type='test'><name>vm%d</name><memory>1048576</memory><currentMemory>1048576</currentMemory><vcpu>1</vcpu><os><type>hvm</type></os></domain>\n" "$i"
        done
        echo "</node>"
    } > "$work/node.xml"
    port=$((20000 + RANDOM % 20000))
    uri="test://$work/node.xml"
    lvpid=""
    if [ "$RPC" = 1 ]; then
        chmod 755 "$work"
        mkdir -p "$work/lv"
        chown nobody:nogroup "$work/lv"
        setpriv --reuid=nobody --regid=nogroup --clear-groups env -i HOME="$work/lv" \
            XDG_RUNTIME_DIR="$work/lv/run" XDG_CONFIG_HOME="$work/lv/config" \
            XDG_CACHE_HOME="$work/lv/cache" PATH=/usr/sbin:/usr/bin \
            libvirtd > "$work/libvirtd.log" 2>&1 &
        lvpid=$!
        pids+=("$lvpid")
        for _ in $(seq 1 100); do [ -S "$work/lv/run/libvirt/libvirt-sock" ] && break; sleep 0.1; done
        uri="test+unix://$work/node.xml?socket=$work/lv/run/libvirt/libvirt-sock"
    fi
    {
        echo "libvirt_uri = \"$uri\""
        echo "journal = \"$work/journal.db\""
        echo "control_socket = \"$work/control.sock\""
        echo "metrics_listen = \"127.0.0.1:$port\""
        for i in $(seq 1 "$n"); do
            printf '[[vm]]\ndomain = "vm%d"\nagent = "unix://%s/vm%d.sock"\n' "$i" "$work" "$i"
        done
    } > "$work/vigild.toml"
    # Agents' sockets and sessions: several descriptors per VM. The
    # packaged unit gives vigild LimitNOFILE=65536 (BENCH_NOFILE=65536 runs
    # it under that limit; by default the hard limit here).
    ulimit -n "${BENCH_NOFILE:-$(ulimit -Hn)}"
    RUST_LOG=warn "$BIN/vigild" --config "$work/vigild.toml" 2> "$work/vigild.log" &
    vpid=$!
    pids+=("$vpid")
    for _ in $(seq 1 300); do [ -S "$work/control.sock" ] && break; sleep 0.1; done
    t0=$(now_ms)
    "$LOADGEN" --dir "$work" -n "$n" --silence 10 > "$work/loadgen.out" 2> "$work/loadgen.err" &
    lpid=$!
    pids+=("$lpid")
    connect="-"
    for _ in $(seq 1 1200); do
        if [ "$(healthy)" -ge "$n" ]; then connect="$(( $(now_ms) - t0 )) ms"; break; fi
        sleep 0.25
    done
    if [ "$connect" = "-" ]; then
        echo "N=$n: only $(healthy) of $n agents healthy after 300 s" >&2
        tail -5 "$work/vigild.log" "$work/loadgen.err" >&2
        exit 1
    fi
    # Steady window.
    sleep 5
    ts=$(now_ms)
    c0=$(cpu_ticks "$vpid")
    l0=0; [ -n "$lvpid" ] && l0=$(cpu_ticks "$lvpid")
    sleep "$WINDOW"
    c1=$(cpu_ticks "$vpid")
    l1=0; [ -n "$lvpid" ] && l1=$(cpu_ticks "$lvpid")
    cpu=$(awk -v d=$((c1 - c0)) -v t="$TCK" -v w="$WINDOW" 'BEGIN {printf "%.3f", d / t / w}')
    lvcpu="-"
    [ -n "$lvpid" ] && lvcpu=$(awk -v d=$((l1 - l0)) -v t="$TCK" -v w="$WINDOW" 'BEGIN {printf "%.3f", d / t / w}')
    rss="$(( $(status_field "$vpid" VmRSS) / 1024 )) MiB"
    threads=$(status_field "$vpid" Threads)
    fds=$(ls "/proc/$vpid/fd" | wc -l)
    scrape="$(scrape_ms "$port") ms"
    false_faults=$(faults_since "$ts")
    # vigild stopped for 3 s: its own stall, not the guests'.
    tstop=$(now_ms)
    kill -STOP "$vpid"
    sleep 3
    kill -CONT "$vpid"
    sleep 8
    stop_faults=$(faults_since "$tstop")
    # Detection: 10 agents go silent together.
    kill -USR1 "$lpid"
    sleep 10
    lat=$(while read -r _ vm at; do
        ctl events --json | jq -r --arg vm "$vm" --argjson t "$at" \
            'select(.record.record == "fault" and .record.vm == $vm and .record.located >= $t)
             | .record.located - $t' | head -1
    done < <(grep '^silenced ' "$work/loadgen.out") | sort -n)
    detect=$(echo "$lat" | awk 'NF {a[n++] = $1} END {
        if (n == 0) {print "none detected"; exit}
        p99 = a[int((n - 1) * 0.99 + 0.5)]
        printf "%d / %d / %d ms (%d of 10)", a[0], a[int((n - 1) / 2)], p99, n}')
    printf '%-6s %9s %8s %8s %9s %8s %6s %10s %7s %8s | %s\n' \
        "$n" "$connect" "$cpu" "$lvcpu" "$rss" "$threads" "$fds" "$scrape" "$false_faults" "$stop_faults" "$detect"
    cleanup
done
