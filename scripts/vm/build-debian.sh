#!/usr/bin/env bash
# Build the Debian 12 (bookworm) systemd test guest, as an image builder
# would: a minbase tree from the machine's configured apt mirror
# (mmdebstrap), the built vigil-agent .deb installed into it with a chroot
# `dpkg -i` (packaging/README.md's recipe), the agent's config for the
# test, and a disk made with `mkfs.ext4 -d` (no root mounts).
#
# Two layers, each cached under target/vm-debian/ keyed by its inputs:
#   base-<hash>/  the tree (this script's base part, the package list, the
#                 mirror): built once, ~1 min;
#   img-<hash>/   vmlinuz, initrd.img, root.qcow2 (the base, the .debs,
#                 the guest config): a few seconds when only the agent
#                 changed.
# Prints the image directory on the last line of its output.
#
# The guest: systemd, udev, the Debian cloud kernel and its initramfs
# (direct kernel boot, root on virtio-blk), cron as the watched daemon
# (restarted by the allow-listed `systemctl restart cron.service`; its .deb
# kept in /var/lib/vigil-test/ for the reinstall case), vigil-watchdog
# with libvirt0 (the in-guest kernel-vsock case), and a root shell on the
# second serial port for fault injection (test scaffolding only).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
OUT="$ROOT/target/vm-debian"
mkdir -p "$OUT"
export DEBIAN_FRONTEND=noninteractive
command -v mmdebstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq --no-install-recommends mmdebstrap; }

uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$uri" ] || uri=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
PACKAGES=systemd-sysv,udev,linux-image-cloud-amd64,initramfs-tools,iproute2,procps,kmod,cron,libvirt0,psmisc,e2fsprogs
key() { sha256sum | cut -c1-16; }

# The base tree.
base_key=$( { sed -n '/^# --- base/,/^# --- end base/p' "$0"; echo "$PACKAGES $uri"; } | key)
BASE="$OUT/base-$base_key"
# --- base
if [ ! -e "$BASE/.done" ]; then
    rm -rf "$OUT"/base-*
    mmdebstrap --mode=root --variant=minbase --include="$PACKAGES" \
        --customize-hook='mkdir -p "$1/var/lib/vigil-test" && cp "$1"/var/cache/apt/archives/cron_*.deb "$1/var/lib/vigil-test/"' \
        bookworm "$BASE.tmp" "deb $uri bookworm main" "deb $uri bookworm-updates main"
    mv "$BASE.tmp" "$BASE"
    touch "$BASE/.done"
fi
# --- end base

# The packages (built incrementally; the .debs' contents key the image).
bash scripts/package.sh >/dev/null
# The guest-hang injector (test scaffolding), static.
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target x86_64-unknown-linux-gnu -p vigil-agent --example rt-spin
RT_SPIN=target/x86_64-unknown-linux-gnu/release/examples/rt-spin
AGENT_DEB=$(ls -t target/packaging/vigil-agent_*_amd64.deb | head -1)
WATCHDOG_DEB=$(ls -t target/packaging/vigil-watchdog_*_amd64.deb | head -1)

img_key=$( { echo "$base_key"; sha256sum "$AGENT_DEB" "$WATCHDOG_DEB" "$RT_SPIN" scripts/vm/debian/* | cut -d' ' -f1; sed -n '/^# --- image/,/^# --- end image/p' "$0"; } | key)
IMG="$OUT/img-$img_key"
# --- image
if [ ! -e "$IMG/.done" ]; then
    rm -rf "$OUT"/img-*
    T="$OUT/tree.tmp"
    rm -rf "$T"
    cp -a "$BASE" "$T"
    rm -f "$T/.done"
    # Install the packages the way an image builder does.
    cp "$AGENT_DEB" "$WATCHDOG_DEB" "$T/var/tmp/"
    chroot "$T" sh -c 'dpkg -i /var/tmp/vigil-agent_*.deb /var/tmp/vigil-watchdog_*.deb && rm -f /var/tmp/vigil-*.deb'
    # The agent's .deb again, for the in-guest upgrade case.
    cp "$AGENT_DEB" "$T/var/lib/vigil-test/"
    # The host does not run vigild in the guest; the kernel-vsock case
    # starts its own.
    chroot "$T" systemctl disable vigild.service >/dev/null 2>&1 || true
    echo vigil-debian > "$T/etc/hostname"
    printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$T/etc/fstab"
    chroot "$T" passwd -d root >/dev/null
    install -m 755 "$RT_SPIN" "$T/usr/local/bin/rt-spin"
    install -m 755 scripts/vm/debian/vsock-loopback.sh "$T/usr/local/bin/vigil-vsock-loopback"
    # The agent's config for the test: cron watched and restartable, the
    # reboot command allowed.
    cat > "$T/etc/vigil/agent.toml" <<'CONF'
connect = "vsock://2:1217"
[watch]
units = ["cron.service"]
[[allow]]
action = "restart-service"
name = "cron.service"
argv = ["/usr/bin/systemctl", "restart", "cron.service"]
[[allow]]
action = "reboot"
name = "reboot"
argv = ["/usr/bin/systemctl", "reboot"]
CONF
    # Test scaffolding: a root shell on ttyS1, hung-task reports after
    # 10 s, and no waiting for a network that is not there.
    cat > "$T/etc/systemd/system/vigil-test-shell.service" <<'UNIT'
[Unit]
Description=Root shell on ttyS1 (Vigil's fault injection)
After=systemd-user-sessions.service
[Service]
ExecStart=/bin/sh
StandardInput=tty-force
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS1
# An interactive shell ignores SIGTERM: without this, every shutdown
# waits 90 s for it.
KillSignal=SIGKILL
Restart=always
RestartSec=1
[Install]
WantedBy=multi-user.target
UNIT
    chroot "$T" systemctl enable vigil-test-shell.service >/dev/null 2>&1
    echo 'kernel.hung_task_timeout_secs = 10' > "$T/etc/sysctl.d/90-vigil-test.conf"
    chroot "$T" systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer >/dev/null 2>&1 || true
    mkdir -p "$IMG"
    cp "$T"/boot/vmlinuz-* "$IMG/vmlinuz"
    cp "$T"/boot/initrd.img-* "$IMG/initrd.img"
    rm -f "$IMG/root.raw"
    truncate -s 2G "$IMG/root.raw"
    mke2fs -q -F -t ext4 -L vigil-root -d "$T" "$IMG/root.raw"
    qemu-img convert -f raw -O qcow2 "$IMG/root.raw" "$IMG/root.qcow2"
    rm -rf "$T" "$IMG/root.raw"
    touch "$IMG/.done"
fi
# --- end image
ls -l "$IMG"
echo "$IMG"
