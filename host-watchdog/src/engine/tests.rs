//! The engine as a whole: its purity, and decisions across its parts.

use super::*;

/// The engine is pure: no clock, no I/O, no threads in its sources.
#[test]
fn engine_sources_read_no_clock_and_do_no_io() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let forbidden = [
        "Instant",
        "SystemTime",
        "std::time",
        "std::fs",
        "std::net",
        "std::io",
        "std::thread",
        "tokio",
    ];
    // Every .rs file under engine/, subdirectories included.
    let mut dirs = vec![dir];
    let mut files = Vec::new();
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                // (`tests.rs` files are test-only modules.)
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 9, "engine sources: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for word in forbidden {
            assert!(!code.contains(word), "{} uses {word}", path.display());
        }
    }
}

fn engine_with_vm() -> Engine {
    let mut e = Engine::new(EngineConfig::default());
    e.step(
        0,
        "vm",
        Input::VmAdded {
            agent: true,
            memory_kib: (1 << 20, 2 << 20),
            cluster: false,
        },
    );
    e.step(0, "vm", Input::Domain(DomainState::Running));
    e.step(
        100,
        "vm",
        Input::Hello {
            boot_id: "b".into(),
        },
    );
    e
}

/// Heartbeats `seq` in `range`, every 500 ms, each with a tick.
fn heartbeats(e: &mut Engine, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        e.step(
            i * 500,
            "vm",
            Input::Heartbeat {
                seq: i,
                uptime_ms: i * 500,
            },
        );
        e.global(i * 500, Global::Tick);
    }
}

#[test]
fn heartbeats_keep_a_vm_healthy_and_silence_makes_it_suspect() {
    let mut e = engine_with_vm();
    heartbeats(&mut e, 1..=20);
    assert_eq!(e.state("vm"), Some(State::Healthy));
    let out = e.global(10_000 + 1_500, Global::Tick);
    assert_eq!(e.state("vm"), Some(State::Suspect));
    assert!(out
        .actions
        .iter()
        .any(|a| a.kind == ActionKind::LivenessProbe));
}

/// vigild itself did not run for 3 s (SIGSTOP, starvation): the
/// heartbeats it did not read are not the guest's silence. Its first
/// turn after the stall starts deadlines over; the queued heartbeats
/// then arrive; no suspicion, no fault.
#[test]
fn a_watchdog_stall_is_not_the_guests_silence() {
    let mut e = engine_with_vm();
    heartbeats(&mut e, 1..=20);
    let out = e.global(13_000, Global::Stalled { ms: 3_000 });
    assert!(out.records.is_empty() && out.actions.is_empty(), "{out:?}");
    let out = e.global(13_000, Global::Tick);
    assert_eq!(e.state("vm"), Some(State::Healthy), "{out:?}");
    e.step(
        13_010,
        "vm",
        Input::Heartbeat {
            seq: 21,
            uptime_ms: 13_000,
        },
    );
    e.global(13_100, Global::Tick);
    assert_eq!(e.state("vm"), Some(State::Healthy));
    // Suspect already when the stall is noticed: dropped, said why.
    let mut e = engine_with_vm();
    e.step(
        500,
        "vm",
        Input::Heartbeat {
            seq: 1,
            uptime_ms: 500,
        },
    );
    e.global(3_500, Global::Tick);
    assert_eq!(e.state("vm"), Some(State::Suspect));
    let out = e.global(3_600, Global::Stalled { ms: 3_000 });
    assert_eq!(e.state("vm"), Some(State::Healthy));
    assert!(
        out.records
            .iter()
            .any(|r| matches!(r, Record::Transition { why, .. } if why.contains("did not run"))),
        "{out:?}"
    );
}

/// A healthy VM is polled only at the quiet pass (every 5 s). It hangs
/// at 8 s; the sample polled at once when it turns suspect still holds
/// the I/O it did before it hung. Compared with the quiet sample from
/// before its last heartbeat that looks like a busy guest and holds the
/// verdict; compared with the sample polled at once, a second later
/// nothing moved: guest-hang.
#[test]
fn a_quiet_vms_hang_is_judged_on_samples_from_after_it_went_silent() {
    let stats = |cpu_s: u64, block: u64| {
        Input::Stats(DomainStats {
            cpu_time_ns: cpu_s * 1_000_000_000,
            block_ops: block,
            net_packets: 0,
        })
    };
    let mut e = engine_with_vm();
    e.step(0, "vm", stats(0, 0));
    heartbeats(&mut e, 1..=9);
    e.step(5_000, "vm", stats(2, 100));
    heartbeats(&mut e, 10..=16);
    e.global(9_500, Global::Tick);
    assert_eq!(e.state("vm"), Some(State::Suspect));
    e.step(9_500, "vm", stats(6, 180)); // polled at once
    e.step(10_300, "vm", Input::Probe(ProbeResult::TimedOut));
    e.global(10_300, Global::Tick);
    assert_eq!(
        e.state("vm"),
        Some(State::Suspect),
        "one sample is not a trend"
    );
    let out = e.step(10_500, "vm", stats(7, 180));
    let kinds: Vec<_> = out
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Fault { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, [FaultKind::GuestHang], "{out:?}");
}

/// vigild was killed between the destroy and the start of a reset:
/// after the restart the step is resumed within the same fault, and the
/// domain its destroy left shut off is not a new vm-crashed fault.
#[test]
fn an_interrupted_reset_resumes_within_its_fault() {
    let mut e = Engine::new(EngineConfig::default());
    e.seed_ids(8, 20);
    e.step(
        1_000,
        "vm",
        Input::VmAdded {
            agent: true,
            memory_kib: (1, 1),
            cluster: false,
        },
    );
    let restored = RestoredFault {
        id: 7,
        kind: FaultKind::GuestPanic,
        subject: None,
        onset: 100,
        detected: 150,
        located: 150,
        last_step: Some((0, 1, ActionKind::DestroyStart, 200)),
        interrupted: Some((12, ActionKind::DestroyStart)),
        last_failed: false,
    };
    e.restore_fault(1_000, "vm", &restored);
    assert_eq!(e.state("vm"), Some(State::Recovering));
    let out = e.step(
        1_000,
        "vm",
        Input::Domain(DomainState::ShutOff(StopReason::Destroyed)),
    );
    assert!(
        !out.records
            .iter()
            .any(|r| matches!(r, Record::Fault { .. })),
        "{out:?}"
    );
    assert_eq!(e.active_fault("vm"), Some((7, FaultKind::GuestPanic)));
    e.step(
        1_500,
        "vm",
        Input::ActionDone {
            id: 12,
            ok: true,
            detail: "resumed: started".into(),
        },
    );
    e.step(1_600, "vm", Input::Domain(DomainState::Running));
    e.step(
        2_000,
        "vm",
        Input::Hello {
            boot_id: "b2".into(),
        },
    );
    let out = e.step(
        2_500,
        "vm",
        Input::Heartbeat {
            seq: 1,
            uptime_ms: 500,
        },
    );
    assert!(out.records.iter().any(|r| matches!(
        r,
        Record::Closed {
            id: 7,
            how: Closure::Recovered,
            ..
        }
    )));
    assert_eq!(e.state("vm"), Some(State::Healthy));
}

#[test]
fn host_traffic_is_gated_on_the_domain_running() {
    let mut e = engine_with_vm();
    assert!(e.may_talk_to("vm"));
    e.step(
        200,
        "vm",
        Input::Domain(DomainState::Paused(PauseReason::User)),
    );
    assert!(!e.may_talk_to("vm"));
    e.step(
        300,
        "vm",
        Input::Domain(DomainState::Crashed { panicked: true }),
    );
    assert!(!e.may_talk_to("vm"));
    assert!(!e.may_talk_to("unknown"));
}

#[test]
fn destructive_cap_per_minute_defers_actions() {
    let cfg = EngineConfig {
        destructive_per_minute: 1,
        host_wide_min_vms: 100,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg);
    for vm in ["a", "b"] {
        e.step(
            0,
            vm,
            Input::VmAdded {
                agent: false,
                memory_kib: (1, 1),
                cluster: false,
            },
        );
        e.step(0, vm, Input::Domain(DomainState::Running));
    }
    let a = e.step(
        1_000,
        "a",
        Input::Domain(DomainState::Crashed { panicked: true }),
    );
    assert!(a.actions.iter().any(|x| x.kind == ActionKind::Reset));
    let b = e.step(
        1_000,
        "b",
        Input::Domain(DomainState::Crashed { panicked: true }),
    );
    assert!(!b.actions.iter().any(|x| x.kind == ActionKind::Reset));
    assert!(b
        .records
        .iter()
        .any(|r| matches!(r, Record::Suppressed { why, .. } if why.contains("per minute"))));
    // A minute later the deferred reset runs.
    let later = e.global(61_000, Global::Tick);
    assert!(later
        .actions
        .iter()
        .any(|x| x.kind == ActionKind::Reset && x.vm == "b"));
}
