#!/usr/bin/env bash
# Build the test guest: the Debian cloud kernel (downloaded as a package and
# unpacked), and a busybox initramfs with the virtio (blk, net)/vsock/
# pvpanic/balloon modules, a static network set-up for a user-mode NIC, the static vigil-agent with its config, a watched test service,
# and a root shell on the second serial port for fault injection.
# The guest's data disk template is an ext4 qcow2 (with a journal: an error aborts it and the filesystem refuses writes, as on a real guest) with a marker file; the
# guest panics at boot when it cannot mount it (as a guest whose root disk
# is corrupted would), which is what the snapshot-restore case relies on.
# Output: target/vm/{vmlinuz,initrd.img,disk.qcow2}.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
OUT="$ROOT/target/vm"
mkdir -p "$OUT"
TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$TARGET" -p vigil-agent --bins --example rt-spin

# Kernel.
if [ ! -e "$OUT/vmlinuz" ]; then
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image/ {print $2; exit}')
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1 && dpkg-deb -x ./*.deb k)
    rm -rf "$OUT/k"; mv "$tmp/k" "$OUT/k"; rm -rf "$tmp"
    cp "$OUT"/k/boot/vmlinuz-* "$OUT/vmlinuz"
    depmod -b "$OUT/k" "$(ls "$OUT/k/lib/modules")"
fi
KVER=$(ls "$OUT/k/lib/modules")
MODDIR="$OUT/k/lib/modules/$KVER"

# Modules in dependency order (from modules.dep).
order() {
    local m=$1 line deps d
    line=$(grep -E "(^|/)$m\.ko:" "$MODDIR/modules.dep") || { echo "no module $m" >&2; exit 1; }
    deps=${line#*:}
    for d in $deps; do order "$(basename "$d" .ko)"; done
    echo "${line%%:*}"
}
mods=$(for m in virtio_pci virtio_blk virtio_net vmw_vsock_virtio_transport pvpanic-mmio virtio_balloon; do order "$m"; done | awk '!seen[$0]++')

# Initramfs tree.
IR="$OUT/initramfs"
rm -rf "$IR"
mkdir -p "$IR"/{bin,dev,proc,sys,run,tmp,etc/vigil,lib/modules,var/log}
cp /bin/busybox "$IR/bin/busybox"
cp "$ROOT/target/$TARGET/release/vigil-agent" "$IR/bin/vigil-agent"
cp "$ROOT/target/$TARGET/release/examples/rt-spin" "$IR/bin/rt-spin"   # guest-hang injection
: > "$IR/etc/modules-order"
for m in $mods; do cp "$MODDIR/$m" "$IR/lib/modules/"; basename "$m" >> "$IR/etc/modules-order"; done
cat > "$IR/bin/testsvc" <<'SVC'
#!/bin/sh
# The watched test service: does nothing, forever.
while true; do sleep 3600; done
SVC
cat > "$IR/bin/agent-loop" <<'LOOP'
#!/bin/sh
# Supervise the agent like systemd's Restart=always (1 s back-off).
while true; do /bin/vigil-agent run --config /etc/vigil/agent.toml >>/var/log/agent.log 2>&1; sleep 1; done
LOOP
# The agent's config *inside the nested guest*: AF_VSOCK is only ever opened
# there (to the host CID, served by vhost-device-vsock as a Unix socket on
# this machine), never on this machine itself.
cat > "$IR/etc/vigil/agent.toml" <<'CONF'
connect = "vsock://2:1217"
state_dir = "/run/vigil-agent"
[watch]
processes = ["testsvc"]
[[allow]]
action = "restart-service"
name = "testsvc"
argv = ["/bin/sh", "-c", "setsid /bin/testsvc </dev/null >/dev/null 2>&1 &"]
[[allow]]
action = "reboot"
name = "reboot"
argv = ["/bin/busybox", "reboot", "-f"]
[[allow]]
action = "repair"
name = "restart-network"
argv = ["/bin/net-up"]
CONF
cat > "$IR/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
for m in $(cat /etc/modules-order); do insmod /lib/modules/$m; done
hostname vigil-guest
echo 1 > /proc/sys/kernel/sysrq
# Hung tasks reported after 10 s (the blocked-task case), not 120 s.
echo 10 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
# The data filesystem on the virtio disk (disk-full, read-only and
# snapshot-restore cases). A disk that cannot be mounted is a broken guest:
# panic, as a kernel that cannot mount its root filesystem does.
mkdir -p /data
if ! mount -t ext4 -o errors=remount-ro /dev/vda /data; then
    echo "vigil-guest: cannot mount /data: disk corrupted"
    echo c > /proc/sysrq-trigger
fi
/bin/net-up
setsid /bin/testsvc </dev/null >/dev/null 2>&1 &
setsid /bin/agent-loop </dev/null >/dev/null 2>&1 &
# A root shell on the second serial port: the host injects faults there.
setsid sh -c 'exec sh </dev/ttyS1 >/dev/ttyS1 2>&1' &
echo "vigil-guest: up"
while true; do sleep 3600; done
INIT
cat > "$IR/bin/net-up" <<'NET'
#!/bin/sh
# The guest's network on a user-mode NIC (when the domain has one): the
# address and the default route QEMU's user-mode network expects. Also the
# agent's allow-listed restart-network repair.
[ -e /sys/class/net/eth0 ] || exit 0
ip link set eth0 up
ip addr flush dev eth0
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2 dev eth0 2>/dev/null || ip route replace default via 10.0.2.2 dev eth0
NET
chmod 755 "$IR/init" "$IR/bin/testsvc" "$IR/bin/agent-loop" "$IR/bin/net-up"
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/initrd.img"

# The data disk template.
tmp=$(mktemp -d)
echo "vigil known-good data" > "$tmp/known-good"
rm -f "$OUT/data.raw"
truncate -s 64M "$OUT/data.raw"
# Few inodes (512), so the inode-exhaustion case fills them in a moment.
mke2fs -q -F -t ext4 -N 512 -d "$tmp" "$OUT/data.raw"
qemu-img convert -f raw -O qcow2 "$OUT/data.raw" "$OUT/disk.qcow2"
rm -rf "$tmp" "$OUT/data.raw"
ls -l "$OUT/vmlinuz" "$OUT/initrd.img" "$OUT/disk.qcow2"
