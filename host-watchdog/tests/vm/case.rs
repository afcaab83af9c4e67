//! One case of the matrix: inject, check the located fault and its
//! recovery, and keep the measured times for the table.

use super::*;

/// One row of the measured-times table.
pub struct Row {
    pub case: &'static str,
    pub kind: String,
    pub layer: String,
    pub action: String,
    pub detect: u64,
    /// How uncertain the onset is (0: measured to the millisecond).
    pub window: u64,
    pub locate: u64,
    pub repair: Option<u64>,
    /// From the injection to the located fault, measured by the test.
    pub injected: u64,
}

/// Whether a journal record is the intent of an action that stops or
/// restarts the guest: what a healthy guest must never get.
pub fn destructive(r: &Value) -> bool {
    r["record"] == "intent"
        && [
            "reset",
            "destroy-start",
            "snapshot-revert",
            "reboot",
            "start",
        ]
        .iter()
        .any(|d| r["action"]["kind"] == *d)
}

/// An action kind as journaled: a name, or an object keyed by the name.
pub fn action_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
        other => other.to_string(),
    }
}

/// The fault of `kind` located since `t0`: a new one, or one closed
/// moments ago and reopened (it came back within the flap window), as its
/// fault record with the reopening's time and evidence.
fn located(vm: &Vm, name: &str, kind: &str, t0: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = common::records(&vm.sock());
        let found = recs.iter().find_map(|(t, r)| {
            if r["vm"] != DOMAIN || r["kind"] != kind {
                return None;
            }
            if r["record"] == "fault" && r["located"].as_u64().unwrap_or(0) >= t0 {
                return Some(r.clone());
            }
            if r["record"] == "reopened" && *t >= t0 {
                let (_, first) = recs
                    .iter()
                    .find(|(_, f)| f["record"] == "fault" && f["id"] == r["id"])?;
                let mut f = first.clone();
                f["located"] = (*t).into();
                f["onset_window_ms"] = 0.into();
                f["evidence"] = r["evidence"].clone();
                return Some(f);
            }
            None
        });
        if let Some(f) = found {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: timed out waiting for fault {kind}; journal:\n{recs:#?}\n{}",
            vm.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Inject, then check the fault vigild located and its recovery.
#[allow(clippy::too_many_arguments)]
pub fn case(
    vm: &mut Vm,
    rows: &mut Vec<Row>,
    name: &'static str,
    kind: &str,
    layer: &str,
    action: Option<&str>,
    inject: impl FnOnce(&mut Vm),
    heal: impl FnOnce(&mut Vm),
) {
    let t0 = now_ms();
    inject(vm);
    let fault = located(vm, name, kind, t0);
    assert_eq!(fault["layer"], layer, "{name}: {fault}");
    eprintln!("{name}: {kind} located; evidence: {}", fault["evidence"]);
    heal(vm);
    let id = fault["id"].as_u64().unwrap();
    let closed = vm.wait(120, &format!("{name}: {kind} closed"), "closed", |r| {
        r["id"].as_u64() == Some(id) && r["at"].as_u64().unwrap_or(0) >= t0
    });
    let intents: Vec<Value> = vm
        .records_since(t0)
        .into_iter()
        .filter(|r| {
            r["record"] == "intent"
                && r["action"]["fault"].as_u64() == Some(id)
                && r["rung"].is_number()
        })
        .collect();
    let first = intents.first().map(|r| r["action"]["kind"].clone());
    match action {
        Some(a) => {
            let k = first.clone().unwrap_or(Value::Null);
            let matches = k == a || k.as_object().is_some_and(|o| o.contains_key(a));
            assert!(matches, "{name}: expected {a}, got {k}; {}", vm.log());
        }
        None => assert!(
            !intents.iter().any(destructive),
            "{name}: no destructive action expected: {intents:?}"
        ),
    }
    rows.push(Row {
        case: name,
        kind: kind.into(),
        layer: layer.into(),
        action: if intents.is_empty() {
            "-".into()
        } else {
            intents
                .iter()
                .map(|r| match r["attempt"].as_u64() {
                    Some(n) if n > 1 => format!("{}#{n}", action_name(&r["action"]["kind"])),
                    _ => action_name(&r["action"]["kind"]),
                })
                .collect::<Vec<_>>()
                .join(">")
        },
        detect: closed["detect_ms"].as_u64().unwrap(),
        window: fault["onset_window_ms"].as_u64().unwrap_or(0),
        locate: closed["locate_ms"].as_u64().unwrap(),
        repair: (closed["how"] == "recovered").then(|| closed["repair_ms"].as_u64().unwrap()),
        injected: fault["located"].as_u64().unwrap().saturating_sub(t0),
    });
    vm.wait_healthy(60);
}

/// Print the measured times.
pub fn print_table(rows: &[Row]) {
    // DETECT/LOCATE/REPAIR are vigild's own figures, from the onset it
    // measured (ONSET±: how late within that bound it may have begun; 0 is
    // a measured time: a kernel log line, a lifecycle event); INJECT->LOC
    // is the test's clock from the injection to the located fault.
    eprintln!(
        "\n{:<16} {:<18} {:<15} {:<32} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "CASE", "FAULT", "LAYER", "ACTIONS", "DETECT", "ONSET±", "LOCATE", "REPAIR", "INJECT->LOC"
    );
    for r in rows {
        let repair = r.repair.map_or("-".into(), |x| format!("{x} ms"));
        eprintln!(
            "{:<16} {:<18} {:<15} {:<32} {:>6} ms {:>6} ms {:>6} ms {:>9} {:>8} ms",
            r.case, r.kind, r.layer, r.action, r.detect, r.window, r.locate, repair, r.injected
        );
    }
}
