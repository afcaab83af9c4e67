//! Vigil's own world failing under a running guest: libvirtd stopped and
//! started again.

use super::*;

/// Where scripts/vm/libvirt.sh keeps the PID of the libvirtd it started.
const LIBVIRTD_PIDFILE: &str = "/run/vigil-libvirtd.pid";

fn host_fault_since(vm: &Vm, t0: u64) -> Option<Value> {
    vm.records_since(t0).into_iter().find(|r| {
        r["record"] == "fault" && r["vm"] == "(host)" && r["kind"] == "hypervisor-unresponsive"
    })
}

fn hypervisor_ok(vm: &Vm) -> bool {
    common::ctl_json(&vm.sock(), &["list"])["watchdog"]["hypervisor"]["ok"] == true
}

/// libvirtd stopped under a running guest, then started again: vigild says
/// at once that it is blind (journal, `vigilctl list`), acts on nothing
/// meanwhile, reconnects by itself once libvirtd is back, and the guest
/// was never touched. Only a libvirtd the test script started is stopped.
pub fn libvirtd_restarted(vm: &mut Vm) {
    assert_eq!(
        std::env::var("VIGIL_OWN_LIBVIRTD").as_deref(),
        Ok("1"),
        "this case stops and starts libvirtd: run it through scripts/vm/libvirt.sh, \
         which starts one of its own"
    );
    let pid = std::fs::read_to_string(LIBVIRTD_PIDFILE).unwrap();
    let pid = pid.trim().to_string();
    let t0 = now_ms();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "libvirtd {pid} did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = now_ms();
    let deadline = Instant::now() + Duration::from_secs(20);
    let fault = loop {
        if let Some(f) = host_fault_since(vm, t0) {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "libvirtd stopped: no hypervisor-unresponsive fault; {}",
            vm.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let blind_after = fault["located"].as_u64().unwrap().saturating_sub(stopped);
    assert!(!hypervisor_ok(vm), "vigilctl list does not say it is blind");
    let out = common::ctl(&vm.sock(), &["status", DOMAIN]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HYPERVISOR:"), "status: {text}");
    eprintln!(
        "libvirtd stopped: blind {blind_after} ms later ({}); status says: {}",
        fault["evidence"],
        text.lines()
            .find(|l| l.starts_with("HYPERVISOR"))
            .unwrap_or("")
    );
    // A while without libvirtd: vigild keeps the agent's session.
    std::thread::sleep(Duration::from_secs(5));
    let restarted = now_ms();
    assert!(Command::new("libvirtd")
        .args(["-d", "-p", LIBVIRTD_PIDFILE])
        .status()
        .unwrap()
        .success());
    let id = fault["id"].as_u64().unwrap();
    let closed = common::wait_record(
        &vm.sock(),
        60,
        "hypervisor fault closed",
        "closed",
        "(host)",
        |r| r["id"].as_u64() == Some(id),
        || vm.log(),
    );
    let back_after = closed["at"].as_u64().unwrap().saturating_sub(restarted);
    assert!(hypervisor_ok(vm));
    let touched: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(|r| r["record"] == "intent" && r["vm"] == DOMAIN)
        .collect();
    assert!(touched.is_empty(), "the guest was acted on: {touched:?}");
    let faults: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(|r| r["record"] == "fault" && r["vm"] == DOMAIN)
        .collect();
    assert!(faults.is_empty(), "the guest was faulted: {faults:?}");
    assert_eq!(vm.state(), "healthy");
    eprintln!(
        "libvirtd started again: vigild reconnected {back_after} ms later; the guest untouched, healthy"
    );
}
