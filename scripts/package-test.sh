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
dpkg-deb -c "$agent_deb" | grep -q ' ./usr/bin/vigil-agent$'
dpkg-deb -c "$wd_deb" | grep -q ' ./usr/sbin/vigild$'
dpkg-deb -c "$wd_deb" | grep -q ' ./usr/share/man/man8/vigilctl.8'
dpkg-deb -I "$agent_deb" conffiles | grep -qx /etc/vigil/agent.toml
dpkg-deb -I "$wd_deb" conffiles | grep -qx /etc/vigil/watchdog.toml

echo "== install (services are not started: policy-rc.d)"
policy=/usr/sbin/policy-rc.d
had_policy=0; [ -e "$policy" ] && had_policy=1
if [ "$had_policy" = 0 ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; fi
trap '[ "$had_policy" = 0 ] && rm -f "$policy"' EXIT
apt-get install -y -qq "./$agent_deb" "./$wd_deb"
file_list=$(mktemp)
dpkg -L vigil-agent vigil-watchdog > "$file_list"

echo "== installed binaries"
/usr/bin/vigil-agent --version
ldd /usr/bin/vigil-agent 2>&1 | grep -q "not a dynamic executable" && echo "vigil-agent: statically linked"
/usr/sbin/vigild --print-config | head -5
/usr/sbin/vigild --check-config --config /etc/vigil/watchdog.toml
/usr/sbin/vigilctl --help | head -5
man -w vigilctl >/dev/null 2>&1 || test -f /usr/share/man/man8/vigilctl.8*

echo "== units"
systemd-analyze verify /lib/systemd/system/vigild.service /lib/systemd/system/vigil-agent.service
for u in vigild vigil-agent; do
    echo "-- systemd-analyze security $u"
    systemd-analyze security --offline=true /lib/systemd/system/$u.service | tail -1
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
