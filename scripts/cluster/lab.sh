# A two-node Pacemaker cluster on one machine, for tests (sourced): nodes
# hv1 and hv2, each in a network namespace of its own (joined by a veth
# pair, 10.254.0.1 and .2: cluster traffic never leaves the namespaces) and
# a mount + UTS namespace with tmpfs over the cluster's state, so neither
# node sees the host's nor the other's. corosync (knet, two_node) and
# pacemakerd run in each. Everything started is stopped by its process
# group, and the namespaces removed, by lab_down.

LAB_DIR=${LAB_DIR:-/tmp/vigil-cluster-lab}
LAB_NODES=(hv1 hv2)

lab_node_pid() { cat "$LAB_DIR/$1.pid"; }

# Run a command inside node $1 (its network, mount and UTS namespaces).
in_node() {
    local node=$1; shift
    nsenter -t "$(lab_node_pid "$node")" -n -m -u -- "$@"
}

lab_corosync_conf() {
    cat <<CONF
totem {
    version: 2
    cluster_name: vigil-lab
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    token: 3000
}
nodelist {
    node {
        ring0_addr: 10.254.0.1
        name: hv1
        nodeid: 1
    }
    node {
        ring0_addr: 10.254.0.2
        name: hv2
        nodeid: 2
    }
}
quorum {
    provider: corosync_votequorum
    two_node: 1
}
logging {
    to_logfile: yes
    logfile: /var/log/cluster/corosync.log
    to_syslog: no
    to_stderr: no
}
CONF
}

lab_up() {
    lab_down 2>/dev/null || true
    rm -rf "$LAB_DIR"
    mkdir -p "$LAB_DIR"
    ip link add vigil-hv1 type veth peer name vigil-hv2
    local i=1
    for n in "${LAB_NODES[@]}"; do
        ip netns add "vigil-$n"
        ip link set "vigil-$n" netns "vigil-$n"
        ip -n "vigil-$n" addr add "10.254.0.$i/24" dev "vigil-$n"
        ip -n "vigil-$n" link set "vigil-$n" up
        ip -n "vigil-$n" link set lo up
        mkdir -p "$LAB_DIR/$n/etc-corosync"
        lab_corosync_conf > "$LAB_DIR/$n/etc-corosync/corosync.conf"
        # The node: private mounts and hostname, state on tmpfs, then
        # corosync and pacemakerd in the foreground of their own group.
        setsid ip netns exec "vigil-$n" unshare --mount --uts --propagation private \
            bash -c '
                set -e
                hostname "$1"
                for d in /run /dev/shm /var/lib/pacemaker /var/lib/corosync /var/log/pacemaker /var/log/cluster; do
                    mkdir -p "$d"; mount -t tmpfs -o mode=0755 "vigil-lab-$1" "$d"
                done
                chmod 1777 /dev/shm
                mount --bind "$2/etc-corosync" /etc/corosync
                mkdir -p /var/lib/pacemaker/cib /var/lib/pacemaker/pengine /var/lib/pacemaker/blackbox /var/lib/pacemaker/cores /run/crm
                chown -R hacluster:haclient /var/lib/pacemaker /var/log/pacemaker /run/crm
                chmod 0770 /var/lib/pacemaker/*
                echo $$ > "$2/../$1.pid"
                corosync -f > "$2/corosync.out" 2>&1 &
                sleep 2
                exec pacemakerd > "$2/pacemakerd.out" 2>&1
            ' node "$n" "$LAB_DIR/$n" < /dev/null > "$LAB_DIR/$n.out" 2>&1 &
        i=$((i + 1))
    done
    for n in "${LAB_NODES[@]}"; do
        local t=0
        until [ -s "$LAB_DIR/$n.pid" ]; do sleep 0.2; t=$((t + 1)); [ $t -lt 50 ] || { echo "lab: $n did not start" >&2; return 1; }; done
    done
}

# Wait until both nodes are online members in hv1's view.
lab_wait_online() {
    local t=0
    until in_node hv1 crm_mon -1 2>/dev/null | grep -Eq "Online: \[ hv1 hv2 \]"; do
        sleep 1; t=$((t + 1))
        [ $t -lt 120 ] || { echo "lab: the cluster did not form" >&2; in_node hv1 crm_mon -1 >&2 || true; return 1; }
    done
    echo "lab: cluster formed in ${t} s"
}

lab_down() {
    for n in "${LAB_NODES[@]}"; do
        local pid
        pid=$(cat "$LAB_DIR/$n.pid" 2>/dev/null) || continue
        # The node's processes: its process group (setsid above).
        local pgid
        pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')
        if [ -n "$pgid" ]; then
            kill -TERM -- "-$pgid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL -- "-$pgid" 2>/dev/null || true
        fi
        rm -f "$LAB_DIR/$n.pid"
    done
    for n in "${LAB_NODES[@]}"; do ip netns del "vigil-$n" 2>/dev/null || true; done
    ip link del vigil-hv1 2>/dev/null || true
}
