//! The fault matrix on the guest people run: Debian 12 with systemd and
//! the agent installed from its .deb (scripts/vm/build-debian.sh), started
//! by its device, in its hardened unit. Gated like the busybox matrix; run
//! with `bash scripts/vm/test-debian.sh`.

use super::*;

/// When the agent's first heartbeat of a boot reached vigild (the VM's
/// transition to healthy on it), at or after `t0`.
fn first_heartbeat(vm: &Vm, t0: u64, secs: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let found = common::records(&vm.sock()).into_iter().find(|(t, r)| {
            *t >= t0
                && r["record"] == "transition"
                && r["to"] == "healthy"
                && r["why"]
                    .as_str()
                    .is_some_and(|w| w.contains("first heartbeat"))
        });
        if let Some((t, _)) = found {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "no first heartbeat since {t0}: journal {:#?}\n{}",
            vm.records_since(t0),
            vm.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn no_destructive_since(vm: &Vm, t0: u64, what: &str) {
    let bad: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(destructive)
        .collect();
    assert!(bad.is_empty(), "{what}: no repair expected: {bad:?}");
}

fn bye_logged(vm: &Vm, reason: &str) -> usize {
    vm.log()
        .matches(&format!("agent said bye: {reason}"))
        .count()
}

/// Kernel vsock at last: a vigild inside the guest listens on AF_VSOCK,
/// a second agent connects over vsock_loopback (CID 1), mapped to a
/// test-driver domain by the config; a watched process dies and is
/// restarted end to end (scripts/vm/debian/vsock-loopback.sh).
fn kernel_vsock_loopback(vm: &mut Vm, rows: &mut Vec<Row>) {
    let t0 = now_ms();
    let out = vm.shell_out("vigil-vsock-loopback", 180);
    assert!(out.contains("LOOPBACK-PASS"), "{out}");
    let journal: Vec<Value> = out
        .split("__JOURNAL_BEGIN__")
        .nth(1)
        .and_then(|j| j.split("__JOURNAL_END__").next())
        .unwrap_or("")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .map(|v| v["record"].clone())
        .collect();
    let fault = journal
        .iter()
        .find(|r| r["record"] == "fault")
        .unwrap_or_else(|| panic!("a fault in the guest's journal: {out}"));
    let closed = journal
        .iter()
        .find(|r| r["record"] == "closed" && r["id"] == fault["id"])
        .unwrap_or_else(|| panic!("closed in the guest's journal: {out}"));
    assert_eq!(
        (
            fault["kind"].as_str(),
            fault["layer"].as_str(),
            closed["how"].as_str()
        ),
        (
            Some("service-down"),
            Some("guest-service"),
            Some("recovered")
        )
    );
    rows.push(Row {
        case: "kernel vsock lo",
        kind: "service-down".into(),
        layer: "guest-service".into(),
        action: journal
            .iter()
            .filter(|r| r["record"] == "intent" && r["rung"].is_number())
            .map(|r| action_name(&r["action"]["kind"]))
            .collect::<Vec<_>>()
            .join(">"),
        detect: closed["detect_ms"].as_u64().unwrap_or(0),
        window: fault["onset_window_ms"].as_u64().unwrap_or(0),
        locate: closed["locate_ms"].as_u64().unwrap_or(0),
        repair: closed["repair_ms"].as_u64(),
        injected: 0,
    });
    let f = vm.faults_since(t0);
    assert!(f.is_empty(), "the loopback case disturbed the guest: {f:?}");
}

#[test]
#[ignore = "needs qemu and the Debian image"]
fn fault_matrix_on_a_debian_guest() {
    let t_boot = now_ms();
    let mut vm = boot_guest(&Guest::debian(""), None);
    let hb = first_heartbeat(&vm, t_boot, 120);
    let mut boots = vec![hb - t_boot];
    eprintln!(
        "debian: first heartbeat {} ms after virsh start",
        hb - t_boot
    );
    vm.wait_healthy(30);
    // The unit runs as packaged: started by its device, hardened, the
    // agent locked in memory.
    let unit = vm.shell_out(
        "systemctl show -p ActiveState,ProtectSystem,WantedBy,BindsTo vigil-agent.service; \
         ls /etc/systemd/system/dev-vsock.device.wants/; \
         journalctl -b -u vigil-agent | grep -q 'locked in memory: stays' && echo AGENT\"\"LOCKED",
        30,
    );
    for want in [
        "ActiveState=active",
        "ProtectSystem=full",
        "AGENTLOCKED",
        "BindsTo=dev-vsock.device",
        "vigil-agent.service",
    ] {
        assert!(unit.contains(want), "{want} in {unit}");
    }
    let mut rows = Vec::new();
    kernel_vsock_loopback(&mut vm, &mut rows);
    // A healthy Debian guest raised no fault at all since boot, the
    // loopback case's half minute included: its sandboxed agent reports
    // the guest's mounts, not its read-only binds.
    let f = vm.faults_since(t_boot);
    assert!(
        f.is_empty(),
        "faults on a healthy guest: {f:?}\n{}",
        vm.log()
    );

    case(
        &mut vm,
        &mut rows,
        "unit killed",
        "service-down",
        "guest-service",
        Some("restart-service"),
        |vm| vm.shell("systemctl kill cron.service"),
        |_| {},
    );
    // The agent killed and held down (Restart= is cancelled by the stop):
    // agent-down, the kernel answers the probe, no reset.
    case(
        &mut vm,
        &mut rows,
        "agent killed",
        "agent-down",
        "agent",
        None,
        |vm| vm.shell("systemctl kill -s KILL vigil-agent; sleep 0.5; systemctl stop vigil-agent"),
        |vm| vm.shell("systemctl start vigil-agent"),
    );
    // Frozen: no heartbeat, the kernel answers the probe (agent-down, not
    // a hang); systemd's watchdog (WatchdogSec=10) kills the agent and
    // Restart= brings it back: nothing for vigild to do.
    case(
        &mut vm,
        &mut rows,
        "agent frozen",
        "agent-down",
        "agent",
        None,
        |vm| vm.shell("kill -STOP $(pidof vigil-agent)"),
        |_| {},
    );
    let restarts = vm.shell_out("systemctl show -p NRestarts,Result vigil-agent", 30);
    assert!(
        restarts.contains("Result=watchdog") || !restarts.contains("NRestarts=0"),
        "systemd's watchdog restarted the agent: {restarts}"
    );
    case(
        &mut vm,
        &mut rows,
        "disk full",
        "disk-full",
        "guest-storage",
        Some("alert"),
        |vm| vm.shell("fallocate -l $(df --output=avail -B1 / | tail -1) /var/tmp/fill; sync"),
        |vm| vm.shell("rm -f /var/tmp/fill; sync"),
    );
    let t_oom = now_ms();
    case(
        &mut vm,
        &mut rows,
        "OOM kill",
        "memory-exhaustion",
        "guest-resources",
        Some("add-memory"),
        |vm| vm.shell("tail /dev/zero"),
        |_| {},
    );
    // One hog, killed once: one step of memory. PSI's avg10 still reads
    // ~44 % for a report after the kill while nothing stalls any more; it
    // once counted as pressure and took a second step.
    let steps: Vec<Value> = vm
        .records_since(t_oom)
        .into_iter()
        .filter(|r| r["record"] == "intent" && action_name(&r["action"]["kind"]) == "add-memory")
        .collect();
    assert_eq!(steps.len(), 1, "one OOM kill, one step: {steps:?}");

    // In-guest maintenance: a unit down during it is not acted on; its
    // end brings the fault and the repair.
    let out = vm.shell_out(
        "vigil-agent maintenance on --for 10m --reason 'kernel update'",
        30,
    );
    assert!(out.contains("host: connected"), "{out}");
    vm.wait(30, "guest maintenance", "transition", |r| {
        r["to"] == "maintenance"
    });
    let t0 = now_ms();
    vm.shell("systemctl kill cron.service");
    std::thread::sleep(Duration::from_secs(7));
    let f = vm.faults_since(t0);
    assert!(f.is_empty(), "maintenance must hold faults: {f:?}");
    case(
        &mut vm,
        &mut rows,
        "maint. off",
        "service-down",
        "guest-service",
        Some("restart-service"),
        |vm| vm.shell("vigil-agent maintenance off"),
        |_| {},
    );
    // An upgrade under the APT hook: maintenance opens and closes around
    // dpkg; cron, restarted by its maintainer scripts, is not repaired.
    let t0 = now_ms();
    let out = vm.shell_out(
        "apt-get install -y --reinstall /var/lib/vigil-test/cron_*.deb >/dev/null 2>&1; echo apt=$?",
        180,
    );
    assert!(out.contains("apt=0"), "{out}");
    let after = vm.records_since(t0);
    let into = after
        .iter()
        .filter(|r| r["record"] == "transition" && r["to"] == "maintenance")
        .count();
    assert!(into >= 1, "the APT hook declared maintenance: {after:?}");
    vm.wait_healthy(30);
    let f = vm.faults_since(t0);
    assert!(f.is_empty(), "an upgrade is no fault: {f:?}");
    eprintln!("apt-get install --reinstall cron: maintenance around dpkg, no fault");
    // The agent's own package upgraded in place (reinstalled): the APT
    // hook opens maintenance, dpkg restarts the agent inside the window,
    // the new agent tells the host the window again and does not report
    // this boot's kernel events (the OOM kill above) as news.
    let t0 = now_ms();
    let sessions = vm.log().matches("agent connected").count();
    let out = vm.shell_out(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -o Dpkg::Options::=--force-confold --reinstall /var/lib/vigil-test/vigil-agent_*.deb >/dev/null 2>&1; echo apt=$?",
        180,
    );
    assert!(out.contains("apt=0"), "{out}");
    common::wait_until(Duration::from_secs(30), "the new agent's session", || {
        vm.log().matches("agent connected").count() > sessions
    });
    vm.wait_healthy(30);
    std::thread::sleep(Duration::from_secs(3));
    let f = vm.faults_since(t0);
    assert!(
        f.is_empty(),
        "an agent upgrade is no fault: {f:?}\n{}",
        vm.log()
    );
    eprintln!("apt-get install --reinstall vigil-agent: agent restarted in maintenance, no fault");

    // Lifecycle: a reboot from inside says so (Bye(Reboot)) and is no
    // fault; its new boot's agent comes back.
    let t0 = now_ms();
    let before = bye_logged(&vm, "Reboot");
    vm.shell("systemctl reboot");
    let hb = first_heartbeat(&vm, t0, 120);
    boots.push(hb - t0);
    vm.wait_healthy(30);
    assert_eq!(bye_logged(&vm, "Reboot"), before + 1, "{}", vm.log());
    let f = vm.faults_since(t0);
    assert!(f.is_empty(), "systemctl reboot made faults: {f:?}");
    no_destructive_since(&vm, t0, "systemctl reboot");
    eprintln!(
        "systemctl reboot: bye(reboot), back in {} ms, no fault",
        hb - t0
    );
    // The same through the agent's allow-listed reboot command, run from
    // its sandbox at the operator's word (vigilctl action agent-reboot).
    let t0 = now_ms();
    let out = common::ctl(&vm.sock(), &["action", DOMAIN, "agent-reboot"]);
    assert!(out.status.success(), "{out:?}");
    let hb = first_heartbeat(&vm, t0, 120);
    boots.push(hb - t0);
    vm.wait_healthy(30);
    assert_eq!(bye_logged(&vm, "Reboot"), before + 2, "{}", vm.log());
    let f = vm.faults_since(t0);
    assert!(f.is_empty(), "agent-reboot made faults: {f:?}");
    eprintln!(
        "vigilctl action agent-reboot: the agent's reboot command ran, back in {} ms",
        hb - t0
    );
    // The agent stopped by the operator says so (Bye(stopped)): no fault.
    let t0 = now_ms();
    vm.shell("systemctl stop vigil-agent");
    common::wait_until(Duration::from_secs(30), "bye(stopped)", || {
        bye_logged(&vm, "Stopped") >= 1
    });
    std::thread::sleep(Duration::from_secs(5));
    vm.shell("systemctl start vigil-agent");
    vm.wait_healthy(30);
    let f = vm.faults_since(t0);
    assert!(
        f.is_empty(),
        "systemctl stop vigil-agent made faults: {f:?}"
    );
    eprintln!("systemctl stop vigil-agent: bye(stopped), no fault");

    // The kernel panics: reset, the new boot's agent is back.
    vm.shell = None;
    case(
        &mut vm,
        &mut rows,
        "kernel panic",
        "guest-panic",
        "guest-kernel",
        Some("reset"),
        |vm| vm.shell("echo c > /proc/sysrq-trigger"),
        |_| {},
    );
    // A guest hang: the one vCPU taken by a SCHED_FIFO spinner.
    vm.shell = None;
    case(
        &mut vm,
        &mut rows,
        "guest hang",
        "guest-hang",
        "guest-kernel",
        Some("reset"),
        |vm| vm.shell("echo -1 > /proc/sys/kernel/sched_rt_runtime_us; /usr/local/bin/rt-spin &"),
        |_| {},
    );
    vm.shell = None;

    // poweroff: Bye(Shutdown), the domain stops and stays off.
    let t0 = now_ms();
    vm.shell("systemctl poweroff");
    common::wait_until(Duration::from_secs(120), "the domain to shut off", || {
        String::from_utf8_lossy(&virsh(&["domstate", DOMAIN]).stdout).contains("shut off")
    });
    std::thread::sleep(Duration::from_secs(5));
    assert!(bye_logged(&vm, "Shutdown") >= 1, "{}", vm.log());
    assert_eq!(vm.state(), "off", "{}", vm.log());
    let f = vm.faults_since(t0);
    assert!(f.is_empty(), "poweroff made faults: {f:?}");
    no_destructive_since(&vm, t0, "poweroff");
    eprintln!("poweroff: bye(shutdown), left off, no fault");
    drop(vm);

    // The vsock driver loads late (blacklisted from autoloading, loaded by
    // hand well after boot): the agent starts when the device appears.
    let t0 = now_ms();
    let mut vm = boot_guest(
        &Guest::debian("modprobe.blacklist=vmw_vsock_virtio_transport"),
        None,
    );
    let up = vm.shell_out("systemctl is-system-running --wait; ls /dev/vsock", 180);
    assert!(up.contains("No such file"), "vsock loaded early: {up}");
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(vm.state(), "healthy", "no agent before the driver");
    let loaded = now_ms();
    vm.shell("modprobe vmw_vsock_virtio_transport");
    let hb = first_heartbeat(&vm, t0, 60);
    eprintln!(
        "late vsock driver: first heartbeat {} ms after the module loaded ({} ms after boot)",
        hb - loaded,
        hb - t0
    );
    vm.wait_healthy(30);
    let f = vm.faults_since(t0);
    assert!(f.is_empty(), "late driver made faults: {f:?}");
    drop(vm);

    print_table(&rows);
    eprintln!(
        "boot to first heartbeat (ms): {}",
        boots
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Consecutive cold boots of the Debian guest (`VIGIL_BOOTS`, default 20;
/// `virsh destroy` + `start`, as an operator would): every boot's agent
/// connects, started by its device, and the time from `virsh start` to its
/// first heartbeat is printed. Run with `bash scripts/vm/boots-debian.sh`.
#[test]
#[ignore = "needs qemu and the Debian image"]
fn debian_boots() {
    let n: usize = std::env::var("VIGIL_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let t0 = now_ms();
    let vm = boot_guest(&Guest::debian(""), None);
    let mut times = vec![first_heartbeat(&vm, t0, 120) - t0];
    for _ in 1..n {
        vm.wait_healthy(30);
        assert!(virsh(&["destroy", DOMAIN]).status.success());
        common::wait_until(Duration::from_secs(30), "vigild to see it off", || {
            vm.state() == "off"
        });
        let t = now_ms();
        assert!(virsh(&["start", DOMAIN]).status.success());
        times.push(first_heartbeat(&vm, t, 120) - t);
        eprintln!(
            "boot {}: first heartbeat after {} ms",
            times.len(),
            times[times.len() - 1]
        );
    }
    let f = vm.faults_since(t0);
    assert!(f.is_empty(), "faults across the boots: {f:?}");
    let mut sorted = times.clone();
    sorted.sort_unstable();
    eprintln!(
        "{n} boots, {} agents connected; virsh start -> first heartbeat: min {} ms, median {} ms, max {} ms",
        times.len(),
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
}
