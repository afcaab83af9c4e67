#!/usr/bin/env bash
# What operators look at, tested with the real tools: the Prometheus mixin
# (promtool check + unit tests), a real Prometheus (Debian's) scraping a
# running vigild with the mixin's rules, where an alert fires on an
# injected fault; and the HTML report of that vigild's journal loaded in a
# real headless browser (Debian's Chromium): no console errors, nothing
# fetched, one band per phase of every journaled fault; its screenshot is
# kept in target/report/. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
. scripts/lib.sh

# Prometheus from the Debian package, unpacked under target/ (no system
# service is installed or started), keyed by the package's version.
prom_version="$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')"
PROM="$ROOT/target/prometheus/$prom_version"
if [ ! -x "$PROM/usr/bin/prometheus" ]; then
    say "unpacking Debian's prometheus $prom_version into target/prometheus"
    dl="$(mktemp -d)"
    (cd "$dl" && apt-get download "prometheus=$prom_version" >/dev/null 2>&1)
    mkdir -p "$PROM"
    dpkg-deb -x "$dl"/prometheus_*.deb "$PROM"
    rm -rf "$dl"
fi
PROMTOOL="$PROM/usr/bin/promtool"
command -v chromium-headless-shell >/dev/null || { echo "chromium-headless-shell missing: bash scripts/setup.sh" >&2; exit 1; }

say "promtool check rules / test rules (packaging/prometheus)"
"$PROMTOOL" check rules packaging/prometheus/vigil-rules.yml
(cd packaging/prometheus && "$PROMTOOL" test rules vigil-rules.test.yml)

cargo build --release --locked -p vigil-watchdog -p vigil-agent
BIN="$ROOT/target/release"
work="$(mktemp -d /tmp/vigil-observe.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pkill -9 -f "^$work/obssvc" 2>/dev/null || true   # the agent's restart of it
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mport="$(free_port)"
pport="$(free_port)"

cp /bin/sleep "$work/obssvc"
cat > "$work/vigild.toml" <<CONF
libvirt_uri = "test://$ROOT/tests/fixtures/node.xml"
journal = "$work/journal.db"
control_socket = "$work/control.sock"
metrics_listen = "127.0.0.1:$mport"
[[vm]]
domain = "web"
agent = "unix://$work/web.sock"
CONF
cat > "$work/web-agent.toml" <<CONF
connect = "unix://$work/web.sock"
state_dir = "$work/web-run"
kmsg = "$work/web-kmsg"
[watch]
processes = ["obssvc"]
[[allow]]
action = "restart-service"
name = "obssvc"
argv = ["/usr/bin/setsid", "-f", "$work/obssvc", "3600"]
CONF
: > "$work/web-kmsg"
cat > "$work/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/packaging/prometheus/vigil-rules.yml
scrape_configs:
  - job_name: vigil
    static_configs:
      - targets: ["127.0.0.1:$mport"]
CONF

say "vigild (libvirt test driver), an agent, and Prometheus scraping vigild with the mixin's rules"
RUST_LOG=warn "$BIN/vigild" --config "$work/vigild.toml" 2> "$work/vigild.log" &
pids+=($!)
wait_for 10 test -S "$work/control.sock"
setsid -f "$work/obssvc" 3600
RUST_LOG=warn "$BIN/vigil-agent" run --config "$work/web-agent.toml" 2> "$work/agent.log" &
pids+=($!)
"$PROM/usr/bin/prometheus" --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$work/tsdb" --web.listen-address="127.0.0.1:$pport" \
    > "$work/prometheus.log" 2>&1 &
pids+=($!)
wait_for 15 state_is web healthy
api() { curl -sf "http://127.0.0.1:$pport/api/v1/$1"; }
scraped() { api 'query?query=vigil_vm_up' | jq -e '.data.result | length > 0'; }
wait_for 30 scraped
api 'query?query=up%7Bjob%3D%22vigil%22%7D' | jq -c '.data.result[] | {up: .value[1]}'

say "fault: the watched service dies (SIGKILL): service-down, and VigilFaultOpen fires in Prometheus"
pkill -9 -f "^$work/obssvc" || true
wait_for 30 closed web service-down
# Prometheus keeps every firing alert as an ALERTS series: it fired at
# some evaluation, even if the fault closed since (a repair takes seconds).
fired_q='max_over_time(ALERTS{alertname="VigilFaultOpen",alertstate="firing",domain="web",kind="service-down"}[5m])'
firing() { curl -sfG "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$fired_q" | jq -e '.data.result | length > 0'; }
if ! wait_for 60 firing; then
    echo "FAIL: VigilFaultOpen did not fire" >&2
    api alerts >&2 || true
    tail -20 "$work/prometheus.log" >&2
    exit 1
fi
curl -sfG "http://127.0.0.1:$pport/api/v1/query" --data-urlencode 'query=max_over_time(ALERTS{alertstate="firing"}[5m])' \
    | jq -c '.data.result[] | .metric | {alert: .alertname, domain, kind, layer, severity}'
others='max_over_time(ALERTS{alertstate="firing",alertname!="VigilFaultOpen"}[5m])'
if curl -sfG "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$others" | jq -e '.data.result | length > 0' >/dev/null; then
    echo "FAIL: an alert fired that nothing injected warrants" >&2
    curl -sfG "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$others" >&2; exit 1
fi

say "the HTML report of this journal, in headless Chromium"
out="$ROOT/target/report"
mkdir -p "$out"
ctl report --html "$out/report.html"
if grep -q 'http' "$out/report.html"; then echo "FAIL: the report refers to something outside it" >&2; exit 1; fi
chrome() {
    chromium-headless-shell --no-sandbox --disable-gpu --enable-logging=stderr --v=0 \
        --user-data-dir="$work/chrome" "$@"
}
chrome --dump-dom "file://$out/report.html" > "$work/dom.html" 2> "$work/chrome.log"
chrome --screenshot="$out/report.png" --window-size=1200,1100 --hide-scrollbars \
    "file://$out/report.html" >/dev/null 2>> "$work/chrome.log"
if grep -E ':CONSOLE|ERR_|Uncaught' "$work/chrome.log"; then
    echo "FAIL: console errors or failed loads (above)" >&2; exit 1
fi
test -s "$out/report.png" || { echo "FAIL: no screenshot" >&2; exit 1; }
# Every fault in the journal is three bands (detect, locate, repair) in the
# page the browser built.
faults="$(ctl events --json | jq -r 'select(.record.record=="fault") | .record.id')"
n=0
for id in $faults; do
    for phase in detect locate repair; do
        grep -q "data-fault=\"$id\"[^>]*data-phase=\"$phase\"" "$work/dom.html" \
            || { echo "FAIL: fault #$id has no $phase band in the DOM" >&2; exit 1; }
    done
    n=$((n + 1))
done
[ "$n" -ge 1 ] || { echo "FAIL: no fault in the journal" >&2; exit 1; }
bands="$(grep -o 'class="band ' "$work/dom.html" | wc -l)"
echo "report: $n faults, $bands bands in the browser's DOM, screenshot $(stat -c %s "$out/report.png") bytes at target/report/report.png"
[ "$bands" -eq $((3 * n)) ] || { echo "FAIL: $bands bands for $n faults" >&2; exit 1; }

say "console errors are caught (a page that logs one fails the check)"
printf '<!DOCTYPE html><html><body><script>console.error("planted")</script></body></html>' > "$work/bad.html"
chrome --dump-dom "file://$work/bad.html" > /dev/null 2> "$work/bad.log"
grep -q ':CONSOLE' "$work/bad.log" || { echo "FAIL: a planted console error was not seen" >&2; exit 1; }
echo "observe-test: OK"
