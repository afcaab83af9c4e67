use super::*;
use vigil_watchdog::engine::{Action, ActionKind, FaultKind, Layer};

fn fault(t: Millis, vm: &str, id: u64, kind: FaultKind, layer: Layer) -> Entry {
    Entry {
        seq: 0,
        t,
        record: Record::Fault {
            vm: vm.into(),
            id,
            kind,
            layer,
            evidence: vec![],
            subject: None,
            onset: t,
            onset_window_ms: 0,
            detected: t,
            located: t,
        },
    }
}

fn intent(t: Millis, vm: &str, id: u64, fault: u64, kind: ActionKind) -> Entry {
    Entry {
        seq: 0,
        t,
        record: Record::Intent {
            vm: vm.into(),
            action: Action {
                id,
                vm: vm.into(),
                kind,
                fault,
                memory_kib: None,
            },
            rung: Some(0),
            attempt: 1,
        },
    }
}

fn outcome(t: Millis, vm: &str, id: u64) -> Entry {
    Entry {
        seq: 0,
        t,
        record: Record::Outcome {
            vm: vm.into(),
            id,
            ok: true,
            detail: String::new(),
        },
    }
}

fn log(lines: &[&str]) -> Vec<Injection> {
    let mut v: Vec<Injection> = lines.iter().map(|l| Injection::parse(l).unwrap()).collect();
    v.insert(
        0,
        Injection::parse(r#"{"t":0,"what":"start","vm":"*","vms":["a","b"]}"#).unwrap(),
    );
    v.push(
        Injection::parse(r#"{"t":99000,"what":"final","vm":"a","state":"healthy","fault":null}"#)
            .unwrap(),
    );
    v
}

const KILL: &str = r#"{"t":1000,"what":"service-kill","vm":"a","expect":{"kind":"service-down","layer":"guest-service","within_ms":20000}}"#;

#[test]
fn a_clean_run_passes() {
    let entries = vec![
        fault(3000, "a", 1, FaultKind::ServiceDown, Layer::GuestService),
        intent(3000, "a", 2, 1, ActionKind::RestartService("s".into())),
        outcome(3500, "a", 2),
    ];
    let a = audit(&entries, &log(&[KILL]));
    assert!(a.passed(), "{:?}", a.violations);
    assert_eq!(
        (a.injected, a.detected, a.right, a.detect_ms[0]),
        (1, 1, 1, 2000)
    );
}

/// The CI's 5-minute soak: a service-down (a false restart at boot)
/// located 1.2 s before an agent kill, then the agent-down the kill
/// caused. The kill is the agent-down's; the service-down and its
/// restart are false (they were once taken for the kill, of the wrong
/// kind, and the agent-down called unexplained).
#[test]
fn an_injection_claims_the_fault_it_caused_not_one_just_before() {
    let agent_kill = r#"{"t":3200,"what":"agent-kill","vm":"a","expect":{"kind":"agent-down","layer":"agent","within_ms":30000}}"#;
    let entries = vec![
        fault(2000, "a", 1, FaultKind::ServiceDown, Layer::GuestService),
        intent(2000, "a", 1, 1, ActionKind::RestartService("s".into())),
        outcome(2100, "a", 1),
        fault(4200, "a", 2, FaultKind::AgentDown, Layer::Agent),
        intent(4200, "a", 2, 2, ActionKind::Alert),
        outcome(4200, "a", 2),
    ];
    let a = audit(&entries, &log(&[agent_kill]));
    assert_eq!((a.detected, a.right, a.false_actions), (1, 1, 1));
    let text = a.violations.join("\n");
    assert!(
        text.contains("fault #1 service-down on a at 2000: no injection"),
        "{text}"
    );
    assert!(!text.contains("#2"), "{text}");
}

#[test]
fn a_missed_fault_a_false_action_and_a_duplicate_are_found() {
    let entries = vec![
        // b was never touched: a false fault and a false reset.
        fault(5000, "b", 1, FaultKind::GuestHang, Layer::GuestKernel),
        intent(5000, "b", 2, 1, ActionKind::Reset),
        outcome(6000, "b", 2),
        outcome(6100, "b", 2),
    ];
    let a = audit(&entries, &log(&[KILL]));
    assert!(!a.passed());
    assert_eq!(
        (a.detected, a.false_actions, a.duplicate_actions),
        (0, 1, 1)
    );
    let text = a.violations.join("\n");
    assert!(
        text.contains("service-kill on a at 1000: no fault"),
        "{text}"
    );
    assert!(
        text.contains("fault #1 guest-hang on b at 5000: no injection"),
        "{text}"
    );
    assert!(text.contains("action #2: 2 outcomes"), "{text}");
}

#[test]
fn actions_in_maintenance_or_while_libvirtd_is_down_are_violations() {
    let entries = vec![
        fault(3000, "a", 1, FaultKind::ServiceDown, Layer::GuestService),
        intent(4000, "a", 2, 1, ActionKind::RestartService("s".into())),
        outcome(4500, "a", 2),
        fault(21_000, "b", 3, FaultKind::VmCrashed, Layer::Hypervisor),
        intent(21_000, "b", 4, 3, ActionKind::Start),
        outcome(21_100, "b", 4),
    ];
    let a = audit(
        &entries,
        &log(&[
            r#"{"t":1000,"what":"maintenance","vm":"a","end":9000,"expect":{"kind":"service-down","layer":"guest-service","within_ms":30000}}"#,
            r#"{"t":20000,"what":"qemu-kill","vm":"b","expect":{"kind":"vm-crashed","layer":"hypervisor","within_ms":20000}}"#,
            r#"{"t":20500,"what":"libvirtd-restart","vm":"*","end":25000}"#,
        ]),
    );
    let text = a.violations.join("\n");
    assert!(
        text.contains("action #2 restart-service on a at 4000: the VM was in maintenance"),
        "{text}"
    );
    assert!(
        text.contains("action #4 start on b at 21000: libvirtd was down"),
        "{text}"
    );
    assert_eq!(a.violations.len(), 2, "{text}");
}

#[test]
fn a_wedged_transport_after_a_kill_during_a_pause_is_collateral_not_false() {
    let entries = vec![
        fault(30_000, "b", 1, FaultKind::TransportDown, Layer::Transport),
        intent(30_000, "b", 2, 1, ActionKind::Alert),
        outcome(30_000, "b", 2),
    ];
    let pause = r#"{"t":10000,"what":"suspend","vm":"b","end":20000,"expect":null}"#;
    let kill = r#"{"t":15000,"what":"vigild-kill","vm":"*","end":18000}"#;
    let held = r#"{"t":90000,"what":"final","vm":"b","state":"faulted","fault":"transport-down"}"#;
    let a = audit(&entries, &log(&[pause, kill, held]));
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!((a.collateral, a.false_actions), (1, 0));
    // Without the kill it is a false fault, and the guest ended wrong.
    let a = audit(&entries, &log(&[pause, held]));
    assert_eq!(a.violations.len(), 2, "{:?}", a.violations);
    // A reset for it is a violation even so.
    let mut reset = entries.clone();
    reset.push(intent(31_000, "b", 3, 1, ActionKind::Reset));
    reset.push(outcome(31_100, "b", 3));
    let a = audit(&reset, &log(&[pause, kill, held]));
    assert!(a
        .violations
        .iter()
        .any(|v| v.contains("destructive, for a wedged transport")));
}

/// The 60-minute soak: a VM quarantined for its reset budget, whose
/// fault then cleared, ends quarantined with no fault: a reason all
/// the same when vigild says why it is quarantined, none when not.
#[test]
fn quarantined_with_a_reason_its_fault_gone_since() {
    let ends = |last: &str| audit(&[], &log(&[last])).violations;
    let why = r#"{"t":90000,"what":"final","vm":"b","state":"quarantined","fault":null,"quarantine":"budget exhausted"}"#;
    assert!(ends(why).is_empty(), "{:?}", ends(why));
    let none = r#"{"t":90000,"what":"final","vm":"b","state":"quarantined","fault":null,"quarantine":null}"#;
    assert!(
        ends(none).iter().any(|v| v.contains("b ended quarantined")),
        "{:?}",
        ends(none)
    );
}

#[test]
fn an_outage_of_vigild_stretches_the_bound() {
    let entries = vec![fault(
        40_000,
        "a",
        1,
        FaultKind::ServiceDown,
        Layer::GuestService,
    )];
    let mut lines = vec![KILL];
    assert!(!audit(&entries, &log(&lines)).passed());
    lines.push(r#"{"t":2000,"what":"vigild-kill","vm":"*","end":25000}"#);
    let a = audit(&entries, &log(&lines));
    assert!(a.passed(), "{:?}", a.violations);
}
