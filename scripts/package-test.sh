#!/usr/bin/env bash
# Build both packages, check their contents, install the .debs on this
# machine, run the installed binaries, verify the units (and print their
# systemd-analyze security exposure), then purge and check that nothing is
# left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
dpkg-query -W -f='${Status}' rpm 2>/dev/null | grep -q "ok installed" || apt-get install -y -qq rpm
bash scripts/package.sh
OUT=target/packaging
agent_deb=$(ls "$OUT"/vigil-agent_*.deb | head -1)
wd_deb=$(ls "$OUT"/vigil-watchdog_*.deb | head -1)

echo "== contents"
for d in "$agent_deb" "$wd_deb"; do dpkg-deb -c "$d"; done
for r in "$OUT"/vigil-agent-*.rpm "$OUT"/vigil-watchdog-*.rpm; do echo "-- $r"; rpm -qlp "$r"; rpm -qp --configfiles "$r"; done
agent_list=$(dpkg-deb -c "$agent_deb"); wd_list=$(dpkg-deb -c "$wd_deb")
for want in ./usr/bin/vigil-agent ./etc/vigil/agent.toml ./usr/lib/systemd/system/vigil-agent.service \
            ./usr/share/man/man1/vigil-agent.1.gz ./usr/share/bash-completion/completions/vigil-agent \
            ./usr/lib/udev/rules.d/60-vigil-agent.rules ./etc/apt/apt.conf.d/90vigil-agent; do
    grep -q " $want\$" <<< "$agent_list" || { echo "vigil-agent.deb lacks $want"; exit 1; }
done
for want in ./usr/sbin/vigild ./usr/sbin/vigilctl ./etc/vigil/watchdog.toml ./usr/lib/systemd/system/vigild.service \
            ./usr/share/man/man8/vigild.8.gz ./usr/share/man/man8/vigilctl.8.gz ./usr/lib/vigil/vigil-cluster-monitor \
            ./usr/share/vigil/prometheus/vigil-rules.yml ./usr/share/vigil/prometheus/RUNBOOK.md \
            ./usr/share/vigil/grafana/vigil-dashboard.json; do
    grep -q " $want\$" <<< "$wd_list" || { echo "vigil-watchdog.deb lacks $want"; exit 1; }
done
[ "$(dpkg-deb -f "$agent_deb" Depends)" = "" ] || { echo "the static agent must not depend on anything"; exit 1; }
grep -qx /etc/vigil/agent.toml <<< "$(dpkg-deb -I "$agent_deb" conffiles)"
grep -qx /etc/apt/apt.conf.d/90vigil-agent <<< "$(dpkg-deb -I "$agent_deb" conffiles)"
grep -qx /etc/vigil/watchdog.toml <<< "$(dpkg-deb -I "$wd_deb" conffiles)"
echo "package contents OK"

echo "== guest-image recipe: the cloud-init snippet is valid YAML with what it needs"
dpkg-query -W -f='${Status}' python3-yaml 2>/dev/null | grep -q "ok installed" || apt-get install -y -qq python3-yaml
python3 - packaging/guest-image/cloud-init.yaml <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
assert open(sys.argv[1]).readline().strip() == "#cloud-config"
files = {f["path"]: f["content"] for f in doc["write_files"]}
assert "/etc/vigil/agent.toml" in files
assert any("vigil-agent" in " ".join(map(str, c)) for c in doc["runcmd"])
print("cloud-init snippet OK")
PY

echo "== install (services are not started: policy-rc.d)"
policy=/usr/sbin/policy-rc.d
had_policy=0; [ -e "$policy" ] && had_policy=1
if [ "$had_policy" = 0 ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; fi
trap '[ "$had_policy" = 0 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "./$agent_deb" "./$wd_deb"
file_list=$(mktemp)
dpkg -L vigil-agent vigil-watchdog > "$file_list"

echo "== installed binaries"
/usr/bin/vigil-agent --version
python3 -c 'import yaml,sys; d=yaml.safe_load(open(sys.argv[1])); print([f["content"] for f in d["write_files"] if f["path"]=="/etc/vigil/agent.toml"][0])' \
    packaging/guest-image/cloud-init.yaml > /tmp/vigil-cloud-init-agent.toml
/usr/bin/vigil-agent check --config /tmp/vigil-cloud-init-agent.toml > /dev/null || [ $? -le 2 ]
rm -f /tmp/vigil-cloud-init-agent.toml
linkage=$(ldd /usr/bin/vigil-agent 2>&1 || true)
grep -Eq "not a dynamic executable|statically linked" <<< "$linkage" || { echo "vigil-agent is not static: $linkage"; exit 1; }
echo "vigil-agent: statically linked"
cfg=$(/usr/sbin/vigild --print-config); head -5 <<< "$cfg"
/usr/sbin/vigild --check-config --config /etc/vigil/watchdog.toml
help=$(/usr/sbin/vigilctl --help); head -5 <<< "$help"
man -w vigilctl >/dev/null 2>&1 || test -f /usr/share/man/man8/vigilctl.8*

echo "== units"
systemd-analyze verify /usr/lib/systemd/system/vigild.service /usr/lib/systemd/system/vigil-agent.service
for u in vigild vigil-agent; do
    echo "-- systemd-analyze security $u"
    systemd-analyze security --offline=true /usr/lib/systemd/system/$u.service | tail -1
done

echo "== purge"
apt-get purge -y -qq vigil-agent vigil-watchdog
left=0
while read -r f; do
    case "$f" in /|/etc|/usr|/usr/*bin|/usr/share|/usr/share/*|/lib|/lib/systemd|/lib/systemd/system|/usr/lib|/usr/lib/*) [ -d "$f" ] && continue ;; esac
    if [ -e "$f" ] && [ ! -d "$f" ]; then echo "left behind: $f"; left=1; fi
done < "$file_list"
for d in /etc/vigil /var/lib/vigil; do [ -e "$d" ] && { echo "left behind: $d"; left=1; }; done
rm -f "$file_list"
[ "$left" = 0 ] && echo "purged cleanly"
exit "$left"
