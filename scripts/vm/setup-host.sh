#!/usr/bin/env bash
# Install, idempotently, what the real-VM tests need on a fresh Debian 12
# machine (root): libvirt 9.0 (daemon + QEMU driver, started by hand, no
# systemd), QEMU 10.x from bookworm-backports (the image's qemu-utils is
# that build), busybox-static, cpio, kmod, and vhost-device-vsock.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
for p in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients busybox-static cpio kmod e2fsprogs socat; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if ! qemu-system-x86_64 --version 2>/dev/null | grep -q "version 10" || ! command -v qemu-img >/dev/null; then
    # Enable bookworm-backports from the mirror the machine already uses.
    src=/etc/apt/sources.list.d/vigil-backports.sources
    if [ ! -e "$src" ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        [ -n "$uri" ] || uri=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" > "$src"
        apt-get update -qq
    fi
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils
fi
if ((${#need[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v vhost-device-vsock >/dev/null || cargo install --locked vhost-device-vsock --version 0.3.0

# libvirt without systemd: QEMU runs as root, no security driver, host
# cgroups left alone.
id libvirt-qemu >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu
conf=/etc/libvirt/qemu.conf
grep -q '^# vigil-vm-tests' "$conf" 2>/dev/null || cat >> "$conf" <<'CONF'
# vigil-vm-tests
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
CONF
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt
qemu-system-x86_64 --version | head -1
