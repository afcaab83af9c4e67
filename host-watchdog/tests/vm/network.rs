//! Network faults on a real VM with a user-mode NIC (QEMU's own network:
//! no bridge, no tap, nothing on the host's interfaces). Every packet stays
//! on this machine: the guest's gateway 10.0.2.2 is the host's loopback,
//! where the test listens.

use std::net::TcpListener;

use super::*;

/// The test NIC's MAC (the guest's eth0, configured by its init).
const MAC: &str = "52:54:00:76:67:01";
/// A second NIC, never configured in the guest (its eth1): the replug
/// case's, a subject of its own.
const MAC2: &str = "52:54:00:76:67:02";

/// Network kinds, for the must-not checks.
fn network_fault(r: &Value) -> bool {
    r["record"] == "fault"
        && ["vnic-link-down", "network-down", "network-unreachable"]
            .iter()
            .any(|k| r["kind"] == *k)
}

/// A listener on the host's loopback that takes and drops connections
/// (what the guest's TCP check and its traffic reach), until dropped.
struct Sink {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Sink {
    fn new() -> Sink {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::io::Read;
            let mut total = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).ok();
                        c.set_read_timeout(Some(Duration::from_millis(500))).ok();
                        let mut buf = [0u8; 65536];
                        loop {
                            if s.load(std::sync::atomic::Ordering::Relaxed) {
                                break;
                            }
                            match c.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => total += n as u64,
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            total
        });
        Sink {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop listening; the bytes it took.
    fn close(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Packets the guest's eth0 sent, from a live probe of its agent.
fn tx_packets(vm: &Vm) -> u64 {
    let p = common::ctl_json(&vm.sock(), &["probe", DOMAIN]);
    p["network"]["interfaces"][0]["counters"]["tx_packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("a probe with the network: {p}"))
}

/// No network fault for `secs` from `t0`.
fn none_for(vm: &Vm, t0: u64, secs: u64, what: &str) {
    std::thread::sleep(Duration::from_secs(secs));
    let bad: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(|r| network_fault(r) || destructive(r))
        .collect();
    assert!(bad.is_empty(), "{what} made faults: {bad:?}\n{}", vm.log());
}

/// Network faults, on a VM of their own with a user-mode NIC.
pub fn network_faults(rows: &mut Vec<Row>) {
    let sink = Sink::new();
    let mut g = Guest::busybox();
    g.extra = format!(
        "<interface type='user'><mac address='{MAC}'/><model type='virtio'/></interface>\
         <interface type='user'><mac address='{MAC2}'/><model type='virtio'/></interface>"
    );
    let mut vm = boot_guest(&g, None);
    vm.wait_healthy(60);
    // A TCP check of what the guest "serves": the test's listener through
    // the gateway. Added to the guest's config; the agent restarts.
    vm.shell(&format!(
        "printf '[[check.tcp]]\\ntarget = \"10.0.2.2:{}\"\\ntimeout_ms = 1000\\nevery_ms = 2000\\n' \
         >> /etc/vigil/agent.toml; killall vigil-agent",
        sink.port
    ));
    std::thread::sleep(Duration::from_secs(3));
    vm.wait_healthy(60);
    let status = common::ctl(&vm.sock(), &["status", DOMAIN]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    eprintln!("{status}");
    assert!(
        status.contains(&format!("eth0 {MAC} up 10.0.2.15/24"))
            && status.contains("host user-mode link up")
            && status.contains("v4 via 10.0.2.2 on eth0")
            && status.contains(&format!("10.0.2.2:{} ok", sink.port)),
        "vigilctl status shows the interface, both sides: {status}"
    );

    // Must not: 60 s of heavy traffic to the host (bounded: at most 512 MiB
    // or 60 s, whichever ends first), and within it a 1 s link flap (under
    // the 5 s hold-off).
    let tx0 = tx_packets(&vm);
    let t0 = now_ms();
    vm.shell(&format!(
        "timeout 60 sh -c 'dd if=/dev/zero bs=64k count=8192 2>/dev/null | nc 10.0.2.2 {}' &",
        sink.port
    ));
    std::thread::sleep(Duration::from_secs(20));
    assert!(virsh(&["domif-setlink", DOMAIN, MAC, "down"])
        .status
        .success());
    std::thread::sleep(Duration::from_secs(1));
    assert!(virsh(&["domif-setlink", DOMAIN, MAC, "up"])
        .status
        .success());
    none_for(&vm, t0, 42, "60 s of heavy traffic with a 1 s link flap");
    let sent = tx_packets(&vm).saturating_sub(tx0);
    eprintln!("60 s of traffic ({sent} packets sent by the guest) with a 1 s link flap: no fault");
    assert!(sent > 10_000, "the traffic was heavy: {sent} packets");

    // The host sets the vNIC's link down: vnic-link-down (host-network),
    // and vigild sets it up again.
    case(
        &mut vm,
        rows,
        "vnic link down",
        "vnic-link-down",
        "host-network",
        Some("set-link-up"),
        |_| {
            assert!(virsh(&["domif-setlink", DOMAIN, MAC, "down"])
                .status
                .success())
        },
        |_| {},
    );
    let link = String::from_utf8_lossy(&virsh(&["domif-getlink", DOMAIN, MAC]).stdout).to_string();
    assert!(link.contains("up"), "the link is up again: {link}");

    // Inside the guest: the interface set down, then the default route
    // deleted: network-down (guest-network), the guest's restart-network.
    case(
        &mut vm,
        rows,
        "guest if down",
        "network-down",
        "guest-network",
        Some("repair"),
        |vm| vm.shell("ip link set eth0 down"),
        |_| {},
    );
    case(
        &mut vm,
        rows,
        "route deleted",
        "network-down",
        "guest-network",
        Some("repair"),
        |vm| vm.shell("ip route del default"),
        |_| {},
    );

    // What the guest serves stops answering: network-unreachable (the
    // network beyond the host), alert only; it clears when it answers.
    let port = sink.port;
    let mut back: Option<TcpListener> = None;
    let mut sink = Some(sink);
    case(
        &mut vm,
        rows,
        "tcp target gone",
        "network-unreachable",
        "network",
        Some("alert"),
        |_| {
            let took = sink.take().unwrap().close();
            eprintln!("the host's listener took {took} bytes from the guest");
        },
        |_| back = Some(TcpListener::bind(("127.0.0.1", port)).unwrap()),
    );

    // The second NIC plugged in again (the ladder's second rung, made the
    // first for this case: vigild restarted on a config that says so):
    // libvirt detaches it (the guest lets go of the PCIe device) and
    // attaches it with the same MAC; the host's side is mended. The guest
    // never used it, so its interface coming back down is nothing lost.
    let cfg = vm.dir.path().join("vigild.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "[engine.ladders.vnic-link-down]\n\
         rungs = [{ action = \"replug-nic\", verify_ms = 45000 }, { action = \"alert\" }]\n\
         exhausted = \"hold\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    vm.restart_vigild(true);
    vm.wait_healthy(60);
    // Its link up in the guest (no address: nothing it worked with), so
    // the guest sees the carrier go and says so at once.
    vm.shell("ip link set eth1 up");
    std::thread::sleep(Duration::from_secs(2));
    case(
        &mut vm,
        rows,
        "vnic replugged",
        "vnic-link-down",
        "host-network",
        Some("replug-nic"),
        |_| {
            assert!(virsh(&["domif-setlink", DOMAIN, MAC2, "down"])
                .status
                .success())
        },
        |_| {},
    );
    let xml = String::from_utf8_lossy(&virsh(&["dumpxml", DOMAIN]).stdout).to_string();
    assert!(
        xml.matches(MAC2).count() == 1 && !xml.contains("state='down'"),
        "the NIC back, same MAC, link up: {xml}"
    );
    drop(back); // the TCP check's target kept answering until now
    drop(vm);
}
