#!/usr/bin/env bash
# Seed the control-request and config fuzzers' corpora with valid inputs:
# one request per verb, and the shipped, default and test configs. Then
# run each for 10 minutes and print what libFuzzer says at the end
# (executions, and crashes, which land in artifacts/).
# Run: bash seed-corpus.sh [SECONDS]   (nightly and cargo-fuzz needed)
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
mkdir -p corpus/control_request corpus/config
n=0
while IFS= read -r line; do
    n=$((n + 1)); printf '%s' "$line" > "corpus/control_request/verb-$n"
done <<'JSON'
{"verb":"list"}
{"verb":"status","domain":"web"}
{"verb":"health","domain":"web"}
{"verb":"health","resource":"vm-web"}
{"verb":"probe","domain":"web"}
{"verb":"events","since":1700000000000,"after":null,"limit":50}
{"verb":"events","since":null,"after":12}
{"verb":"warnings"}
{"verb":"advise","domain":"web"}
{"verb":"advise-apply","domain":"web","items":["memory"],"live":true}
{"verb":"advise-revert","domain":"web","action":7}
{"verb":"report","since":null}
{"verb":"maintenance","domain":"web","on":true,"for_ms":60000}
{"verb":"release","domain":"web"}
{"verb":"act","domain":"web","action":"reset"}
{"verb":"host","clear":true}
{"verb":"reload"}
{"verb":"config"}
{"verb":"disarm"}
{"verb":"arm"}
JSON
cp ../../packaging/config/watchdog.toml corpus/config/shipped.toml
../../target/debug/vigild --print-config > corpus/config/defaults.toml 2>/dev/null || true
printf '[cluster]\nkind = "pacemaker"\n[[vm]]\ndomain = "a"\nagent = "hybrid:///run/a.vsock:1217"\ncluster_resource = "vm-a"\ncid = 5\n[engine.ladders.agent-down]\nrungs = [{ action = "alert", verify_ms = 2000 }]\nexhausted = "hold"\n' > corpus/config/cluster.toml
echo "corpora: $(ls corpus/control_request | wc -l) requests, $(ls corpus/config | wc -l) configs"
for t in control_request config; do
    echo "== $t, $secs s"
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
        | grep -E "^(stat::|Done|==|SUMMARY|#[0-9]+ +DONE)" || true
done
