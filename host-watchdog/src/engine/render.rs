//! One journal record as one line of text: the decision log's format,
//! shared by `vigilctl events` and the scenario goldens.

use super::{Millis, Record};

/// One journal record as a log line.
pub fn render(t: Millis, r: &Record) -> String {
    match r {
        Record::Transition { vm, from, to, why } => format!("{t:>7} {vm:<8} {from} -> {to}: {why}"),
        Record::Fault { vm, id, kind, layer, evidence, onset, onset_window_ms, detected, located, .. } => format!(
            "{t:>7} {vm:<8} FAULT #{id} {kind} layer={} detect={}ms{} locate={}ms evidence: {}",
            layer.name(),
            detected.saturating_sub(*onset),
            if *onset_window_ms > 0 { format!(" (onset within {onset_window_ms}ms)") } else { String::new() },
            located.saturating_sub(*detected),
            evidence.join("; ")
        ),
        Record::Intent { vm, action, rung, attempt } => {
            let mem = action.memory_kib.map(|m| format!(" to {m} KiB")).unwrap_or_default();
            match rung {
                Some(r) => format!("{t:>7} {vm:<8} ACTION #{} {}{mem} (rung {r} attempt {attempt})", action.id, action.kind),
                None => format!("{t:>7} {vm:<8} ACTION #{} {}{mem}", action.id, action.kind),
            }
        }
        Record::Reopened { vm, id, kind, flaps, evidence } => format!(
            "{t:>7} {vm:<8} REOPENED #{id} {kind} flap {flaps} evidence: {}",
            evidence.join("; ")
        ),
        Record::Suppressed { vm, kind, why } => format!("{t:>7} {vm:<8} suppressed {kind}: {why}"),
        Record::Warning { vm, kind, subject, evidence, eta } => format!(
            "{t:>7} {vm:<8} WARNING {kind}{}{}: {evidence}",
            subject.as_ref().map(|s| format!(" {s}")).unwrap_or_default(),
            eta.map(|e| format!(" eta={e}")).unwrap_or_default()
        ),
        Record::WarningCleared { vm, kind, subject, why } => format!(
            "{t:>7} {vm:<8} warning {kind}{} cleared: {why}",
            subject.as_ref().map(|s| format!(" {s}")).unwrap_or_default()
        ),
        Record::HostHealth { vm, from, to, why } => {
            format!("{t:>7} {vm:<8} host health {from} -> {to}: {why}")
        }
        Record::Outcome { vm, id, ok, detail } => {
            format!("{t:>7} {vm:<8} outcome #{id} {}: {detail}", if *ok { "ok" } else { "FAILED" })
        }
        Record::Closed { vm, id, kind, how, detect_ms, locate_ms, repair_ms, flaps, .. } => format!(
            "{t:>7} {vm:<8} CLOSED #{id} {kind} {how:?} detect={detect_ms}ms locate={locate_ms}ms repair={repair_ms}ms{}",
            if *flaps > 0 { format!(" after {flaps} flaps") } else { String::new() }
        )
        .replace("Recovered", "recovered")
        .replace("Cleared", "cleared")
        .replace("Superseded", "superseded")
        .replace("Released", "released")
        .replace("Withdrawn", "withdrawn"),
    }
}
