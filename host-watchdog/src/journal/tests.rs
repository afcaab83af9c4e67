use super::*;
use crate::engine::{Action, Closure, FaultKind, Layer, State};

#[test]
fn records_round_trip_and_unsettled_work_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut j = Journal::open(&path).unwrap();
    let fault = Record::Fault {
        vm: "web".into(),
        id: 7,
        kind: FaultKind::GuestHang,
        layer: Layer::GuestKernel,
        evidence: vec!["silent".into()],
        subject: None,
        onset: 1,
        onset_window_ms: 0,
        detected: 2,
        located: 3,
    };
    let action = Action {
        id: 9,
        vm: "web".into(),
        kind: ActionKind::Reset,
        fault: 7,
        memory_kib: None,
    };
    let t1 = Record::Transition {
        vm: "web".into(),
        from: State::Healthy,
        to: State::Faulted,
        why: "x".into(),
    };
    j.append(1000, &[t1.clone(), fault.clone()]).unwrap();
    j.append(
        1001,
        &[Record::Intent {
            vm: "web".into(),
            action,
            rung: Some(0),
            attempt: 1,
        }],
    )
    .unwrap();
    drop(j);
    // Reopen (as after a crash): everything is there.
    let j = Journal::open(&path).unwrap();
    let all = j.since(0).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].record, t1);
    assert_eq!(j.max_ids().unwrap(), (7, 9));
    let u = j.unsettled().unwrap();
    // The open fault's reset has no outcome: it is resumed within the
    // fault, not settled as an interrupted intent.
    assert_eq!(u.intents, vec![]);
    assert_eq!(u.faults.len(), 1);
    assert_eq!(
        u.faults[0].1.last_step,
        Some((0, 1, ActionKind::Reset, 1001))
    );
    assert_eq!(u.faults[0].1.interrupted, Some((9, ActionKind::Reset)));
    assert_eq!(u.destructive, vec![("web".to_string(), 1001)]);
    assert_eq!(j.after(all[1].seq).unwrap().len(), 1);
    let mut j = j;
    j.append(
        1002,
        &[
            Record::Outcome {
                vm: "web".into(),
                id: 9,
                ok: true,
                detail: "done".into(),
            },
            Record::Closed {
                vm: "web".into(),
                id: 7,
                kind: FaultKind::GuestHang,
                how: Closure::Recovered,
                at: 1002,
                detect_ms: 1,
                locate_ms: 1,
                repair_ms: 999,
                flaps: 0,
            },
        ],
    )
    .unwrap();
    let u = j.unsettled().unwrap();
    assert!(u.intents.is_empty() && u.faults.is_empty());
    // The recovered fault is kept, with its last step, for recurrence.
    assert_eq!(u.recovered.len(), 1);
    let (vm, f, at) = &u.recovered[0];
    assert_eq!((vm.as_str(), f.id, *at), ("web", 7, 1002));
    assert_eq!(f.last_step, Some((0, 1, ActionKind::Reset, 1001)));
}

/// Old records go, but never those of a fault still open (a restart
/// must resume it), and numbering goes on past what was deleted.
#[test]
fn pruning_keeps_what_is_open_and_the_numbering() {
    let mut j = Journal::open(Path::new(":memory:")).unwrap();
    let fault = |id: u64| Record::Fault {
        vm: "web".into(),
        id,
        kind: FaultKind::ServiceDown,
        layer: Layer::GuestService,
        evidence: vec![],
        subject: Some("nginx".into()),
        onset: 1,
        onset_window_ms: 0,
        detected: 1,
        located: 1,
    };
    let closed = |id: u64| Record::Closed {
        vm: "web".into(),
        id,
        kind: FaultKind::ServiceDown,
        how: Closure::Cleared,
        at: 2,
        detect_ms: 0,
        locate_ms: 0,
        repair_ms: 0,
        flaps: 0,
    };
    j.append(1_000, &[fault(1)]).unwrap();
    j.append(2_000, &[closed(1)]).unwrap();
    j.append(3_000, &[fault(2)]).unwrap(); // still open
    j.append(4_000, &[closed(3)]).unwrap(); // a stray close, old
    j.append(9_000, &[fault(4), closed(4)]).unwrap();
    assert_eq!(j.prune(5_000).unwrap(), 2); // fault 1 and its close
    let left: Vec<u64> = j
        .since(0)
        .unwrap()
        .iter()
        .map(|e| match e.record {
            Record::Fault { id, .. } | Record::Closed { id, .. } => id,
            _ => 0,
        })
        .collect();
    assert_eq!(left, [2, 3, 4, 4]);
    assert_eq!(j.unsettled().unwrap().faults.len(), 1);
    // Everything old goes once nothing is open; ids go on.
    j.append(10_000, &[closed(2)]).unwrap();
    assert_eq!(j.prune(9_500).unwrap(), 4);
    assert_eq!(j.prune(20_000).unwrap(), 1);
    assert_eq!(j.since(0).unwrap().len(), 0);
    assert_eq!(j.max_ids().unwrap(), (4, 0));

    // A fault closed and reopened (it flapped) is open: a restart
    // resumes it, and pruning keeps it from its first record.
    let reopened = Record::Reopened {
        vm: "web".into(),
        id: 5,
        kind: FaultKind::ServiceDown,
        flaps: 1,
        evidence: vec!["nginx down again".into()],
    };
    j.append(10_000, &[fault(5), closed(5)]).unwrap();
    j.append(11_000, &[reopened]).unwrap();
    let u = j.unsettled().unwrap();
    let open: Vec<u64> = u.faults.iter().map(|(_, f)| f.id).collect();
    assert_eq!(open, [5]);
    j.prune(10_500).unwrap();
    assert!(j
        .since(0)
        .unwrap()
        .iter()
        .any(|e| matches!(e.record, Record::Fault { id: 5, .. })));
}

#[test]
fn pages_cover_everything_once_in_order() {
    let mut j = Journal::open(Path::new(":memory:")).unwrap();
    for i in 0..25u64 {
        let r = Record::Transition {
            vm: "a".into(),
            from: State::Healthy,
            to: State::Suspect,
            why: format!("#{i}"),
        };
        j.append(i * 10, &[r]).unwrap();
    }
    let mut seen = j.since_page(50, 10).unwrap();
    assert_eq!(seen.len(), 10);
    assert_eq!(seen[0].t, 50);
    loop {
        let last = seen.last().unwrap().seq;
        let page = j.after_page(last, 10).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        seen.extend(page);
    }
    let ts: Vec<Millis> = seen.iter().map(|e| e.t).collect();
    assert_eq!(ts, (5..25).map(|i| i * 10).collect::<Vec<_>>());
    assert_eq!(j.since(0).unwrap().len(), 25);
}

#[test]
fn warnings_not_cleared_are_found_for_the_restart() {
    use crate::engine::warn::WarningKind;
    let mut j = Journal::open(Path::new(":memory:")).unwrap();
    let w = |vm: &str| Record::Warning {
        vm: vm.into(),
        kind: WarningKind::PredictedFull,
        subject: Some("/data".into()),
        evidence: "fills".into(),
        eta: Some(9),
    };
    let cleared = Record::WarningCleared {
        vm: "db".into(),
        kind: WarningKind::PredictedFull,
        subject: Some("/data".into()),
        why: "deleted".into(),
    };
    j.append(1, &[w("web"), w("db"), cleared]).unwrap();
    assert_eq!(
        j.unsettled().unwrap().warnings,
        vec![(
            "web".to_string(),
            WarningKind::PredictedFull,
            Some("/data".to_string())
        )]
    );
}

#[test]
fn a_quarantine_not_released_is_found_for_the_restart() {
    use crate::engine::State;
    let mut j = Journal::open(Path::new(":memory:")).unwrap();
    let t = |vm: &str, from, to, why: &str| Record::Transition {
        vm: vm.into(),
        from,
        to,
        why: why.into(),
    };
    j.append(
        1,
        &[
            t(
                "web",
                State::Recovering,
                State::Quarantined,
                "ladder exhausted",
            ),
            t("db", State::Recovering, State::Quarantined, "budget"),
            t("db", State::Quarantined, State::Discovering, "released"),
            // A restart's restoring transition keeps the first reason.
            t("web", State::Discovering, State::Quarantined, "restored"),
        ],
    )
    .unwrap();
    assert_eq!(
        j.unsettled().unwrap().quarantined,
        vec![("web".to_string(), "ladder exhausted".to_string())]
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    drop(Journal::open(&path).unwrap());
    let db = Connection::open(&path).unwrap();
    db.execute("UPDATE meta SET value = 99 WHERE key = 'schema'", [])
        .unwrap();
    drop(db);
    assert!(matches!(
        Journal::open(&path),
        Err(JournalError::TooNew { found: 99 })
    ));
}
