//! vigild restarted or killed under a paused guest, on the matrix's VM: a
//! close reaching a paused guest's vsock once broke it, so what happens to
//! the agent's session across each kind of restart is checked here.

use super::*;

/// Killed (the store keeps the session), restarted with a store (handed
/// over), restarted without one (the channel may break: never a repair).
pub fn restarts_while_paused(vm: &mut Vm) {
    // vigild killed while the VM is paused (a crash): nothing is handed
    // over, but the store holds the session it served, so nothing is
    // closed under the paused guest (a close reaching its vsock would
    // break it: the soak's first run found this). The next vigild keeps
    // that connection until the guest runs, then closes it; the agent
    // reconnects. No fault, the guest healthy.
    let t_p = now_ms();
    assert!(virsh(&["suspend", DOMAIN]).status.success());
    let taken = vm.restart_vigild_after("-KILL", true);
    assert!(taken >= 1, "the session as served: {}", vm.log());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !vm.log().contains("left is closed"),
        "closed while the guest was paused: {}",
        vm.log()
    );
    assert!(virsh(&["resume", DOMAIN]).status.success());
    let resumed = Instant::now();
    common::wait_until(
        Duration::from_secs(30),
        "the left connection closed",
        || {
            vm.log()
                .contains("the agent connection a killed vigild left is closed")
        },
    );
    vm.wait_healthy(60);
    std::thread::sleep(Duration::from_secs(10));
    vm.assert_untouched_since(t_p, "a killed vigild");
    eprintln!(
        "vigild killed while paused: its session kept in the store, closed {:?} after resume, agent back, no fault",
        resumed.elapsed()
    );
    // vigild restarted while the VM is paused, as systemd 254+ restarts it
    // (an upgrade): the session goes to the descriptor store and the next
    // vigild serves it on. The guest hears nothing; nothing is a fault.
    let t_p = now_ms();
    assert!(virsh(&["suspend", DOMAIN]).status.success());
    let taken = vm.restart_vigild(false);
    assert!(
        taken >= 3,
        "the session as served, as handed over, and the state: {}",
        vm.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(virsh(&["resume", DOMAIN]).status.success());
    std::thread::sleep(Duration::from_secs(15));
    vm.assert_untouched_since(t_p, "a handed-over restart");
    assert!(
        vm.log().contains("agent session taken over"),
        "{}",
        vm.log()
    );
    eprintln!("vigild restarted while paused, session handed over: no fault, healthy");
    // The same with no descriptor store (systemd before 254): its exit
    // closes the agent's connection last, and that write to a paused VM
    // may break vhost-device-vsock until destroy + start. The restarted
    // vigild must not call the idle, silent guest hung: transport-down,
    // no reset.
    let t_p = now_ms();
    assert!(virsh(&["suspend", DOMAIN]).status.success());
    assert_eq!(vm.restart_vigild(true), 0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(virsh(&["resume", DOMAIN]).status.success());
    let resumed = now_ms();
    // Either the channel broke (a fault names it) or it survived (the VM
    // stays healthy); the guest is never repaired.
    let deadline = Instant::now() + Duration::from_secs(110);
    let f = loop {
        let fault = vm
            .records_since(t_p)
            .into_iter()
            .find(|r| r["record"] == "fault");
        if let Some(f) = fault {
            break f;
        }
        if Instant::now() > deadline {
            assert_eq!(vm.state(), "healthy", "{}", vm.log());
            break serde_json::json!({"kind": "none: the channel survived", "layer": "-"});
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let after: Vec<Value> = vm.records_since(t_p);
    let repairs: Vec<&Value> = after.iter().filter(|r| destructive(r)).collect();
    assert!(
        repairs.is_empty(),
        "no repair of a healthy guest: {repairs:?}"
    );
    assert!(
        f["kind"] == "transport-down" || f["layer"] == "-",
        "the channel, not the guest: {f}"
    );
    eprintln!(
        "vigild restarted while paused, no store: {} ({}) located {} ms after resume; no reset",
        f["kind"],
        f["layer"],
        f["located"].as_u64().unwrap_or(0).saturating_sub(resumed)
    );
}
