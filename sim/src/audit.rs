//! The soak's auditor: a journal checked against the injection log the
//! soak wrote (`scripts/soak.sh`, `vigil-audit DIR`). One line per
//! violation, and a summary: faults injected, detected, of the right kind
//! and layer, recovered, false and duplicate actions, detection times.
//!
//! What is a violation:
//! - an injected fault not detected within its bound (the bound grows by
//!   every outage of vigild's world, vigild killed or libvirtd restarted,
//!   that overlaps it);
//! - a fault on a guest that no injection explains, and every action for it
//!   (false actions);
//! - an action that answers no journaled fault, an action id journaled
//!   twice, an outcome journaled twice or never;
//! - an action while its VM was in maintenance or paused on purpose, or a
//!   call to the hypervisor while libvirtd was down;
//! - a guest that did not end healthy or quarantined;
//!
//! One consequence is known and not a violation, only counted: vigild
//! killed while a guest is paused on purpose closes that guest's sessions
//! (nothing was handed over), the close reaches the paused guest's
//! vhost-device-vsock and wedges it until the domain is destroyed and
//! started (DESIGN §6). vigild must name it `transport-down` and take no
//! destructive action for it; the guest may end held in that fault.
//! - a journal check that failed (after each vigild kill, and at the end).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use vigil_watchdog::engine::{Closure, Millis, Record};
use vigil_watchdog::journal::Entry;

/// Faults of this kind and layer, found within `within_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// Fault kind.
    pub kind: String,
    /// Layer.
    pub layer: String,
    /// Bound.
    pub within_ms: Millis,
}

/// One line of the injection log.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// When.
    pub t: Millis,
    /// The VM, or `*` for vigild's world.
    pub vm: String,
    /// What was done.
    pub what: String,
    /// The fault it must show as, for a fault injection.
    pub expect: Option<Expect>,
    /// The end of its window (maintenance, a pause, an outage).
    pub end: Option<Millis>,
    /// The whole line.
    pub raw: Value,
}

impl Injection {
    /// Parse one JSON line.
    pub fn parse(line: &str) -> Result<Injection, String> {
        let raw: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let expect = raw.get("expect").filter(|e| !e.is_null()).map(|e| Expect {
            kind: e["kind"].as_str().unwrap_or("").into(),
            layer: e["layer"].as_str().unwrap_or("").into(),
            within_ms: e["within_ms"].as_u64().unwrap_or(0),
        });
        Ok(Injection {
            t: raw["t"]
                .as_u64()
                .ok_or_else(|| format!("no time: {line}"))?,
            vm: raw["vm"].as_str().unwrap_or("*").into(),
            what: raw["what"].as_str().unwrap_or("").into(),
            expect,
            end: raw["end"].as_u64(),
            raw,
        })
    }
}

/// The auditor's findings.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Audit {
    /// One line each.
    pub violations: Vec<String>,
    /// Fault injections.
    pub injected: usize,
    /// Detected within their bounds.
    pub detected: usize,
    /// Of those, of the right kind and layer.
    pub right: usize,
    /// Of those, recovered (closed as recovered or cleared).
    pub recovered: usize,
    /// Actions for faults no injection explains.
    pub false_actions: usize,
    /// Action ids or outcomes journaled twice.
    pub duplicate_actions: usize,
    /// Transport faults of guests paused while vigild was killed.
    pub collateral: usize,
    /// Detection times (located − injected), ms.
    pub detect_ms: Vec<Millis>,
    /// Disruptions of vigild's world and must-nots, by name.
    pub disruptions: BTreeMap<String, usize>,
    /// Records read.
    pub records: usize,
}

impl Audit {
    /// The soak's targets: nothing violated, every fault detected, at
    /// least 95 % of the right kind and layer.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.detected == self.injected
            && self.right * 100 >= self.injected * 95
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let pct = |n: usize| {
            if self.injected == 0 {
                0.0
            } else {
                n as f64 * 100.0 / self.injected as f64
            }
        };
        let mut d = self.detect_ms.clone();
        d.sort_unstable();
        let median = d.get(d.len() / 2).copied().unwrap_or(0);
        let max = d.last().copied().unwrap_or(0);
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
        row("journal records", self.records.to_string());
        row("faults injected", self.injected.to_string());
        row(
            "detected",
            format!("{} ({:.1} %)", self.detected, pct(self.detected)),
        );
        row(
            "right kind and layer",
            format!("{} ({:.1} %)", self.right, pct(self.right)),
        );
        row(
            "recovered",
            format!("{} ({:.1} %)", self.recovered, pct(self.recovered)),
        );
        row("false actions", self.false_actions.to_string());
        row("duplicate actions", self.duplicate_actions.to_string());
        row(
            "collateral",
            format!(
                "{} (transport-down: vigild killed while the guest was paused)",
                self.collateral
            ),
        );
        row("detection", format!("median {median} ms, max {max} ms"));
        let dis: Vec<String> = self
            .disruptions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        row("disruptions", dis.join(", "));
        row("violations", self.violations.len().to_string());
        out
    }
}

/// Windows of one kind: (vm, from, to).
fn windows(log: &[Injection], what: &str) -> Vec<(String, Millis, Millis)> {
    log.iter()
        .filter(|i| i.what == what)
        .map(|i| (i.vm.clone(), i.t, i.end.unwrap_or(i.t)))
        .collect()
}

fn within(t: Millis, w: &(String, Millis, Millis), vm: &str, slack: Millis) -> bool {
    (w.0 == vm || w.0 == "*") && t >= w.1 && t <= w.2 + slack
}

/// Audit `entries` (the whole journal) against the injection `log`.
pub fn audit(entries: &[Entry], log: &[Injection]) -> Audit {
    let mut a = Audit {
        records: entries.len(),
        ..Audit::default()
    };
    let guests: BTreeSet<String> = log
        .iter()
        .filter(|i| i.what == "start")
        .flat_map(|i| {
            i.raw["vms"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(String::from))
        })
        .collect();
    for i in log {
        if !matches!(
            i.what.as_str(),
            "start" | "final" | "journal-check" | "maintenance-off"
        ) {
            *a.disruptions.entry(i.what.clone()).or_default() += 1;
        }
    }
    // vigild's world out: detection bounds grow by these.
    let mut outages = windows(log, "vigild-kill");
    outages.extend(windows(log, "libvirtd-restart"));
    // Faults as the journal has them: (vm, id, kind, layer, located), and
    // reopenings as new sightings of the same fault.
    let mut sightings: Vec<(String, u64, String, String, Millis)> = Vec::new();
    let mut layer_of: BTreeMap<u64, String> = BTreeMap::new();
    let mut closed: BTreeMap<u64, Closure> = BTreeMap::new();
    for e in entries {
        match &e.record {
            Record::Fault {
                vm,
                id,
                kind,
                layer,
                located,
                ..
            } => {
                layer_of.insert(*id, layer.name().into());
                sightings.push((
                    vm.clone(),
                    *id,
                    kind.name().into(),
                    layer.name().into(),
                    *located,
                ));
            }
            Record::Reopened { vm, id, kind, .. } => {
                let layer = layer_of.get(id).cloned().unwrap_or_default();
                sightings.push((vm.clone(), *id, kind.name().into(), layer, e.t));
            }
            Record::Closed { id, how, .. } => {
                closed.insert(*id, *how);
            }
            _ => {}
        }
    }
    // Each fault injection claims an unclaimed sighting on its VM within
    // its bound: of the expected kind and layer if there is one, else one
    // located after it, else the first (a sighting of another kind located
    // before the injection is not taken for it while a better one exists).
    let mut claimed: BTreeSet<usize> = BTreeSet::new();
    let mut explained: BTreeSet<u64> = BTreeSet::new();
    for inj in log.iter().filter(|i| i.expect.is_some()) {
        let Some(x) = &inj.expect else { continue };
        a.injected += 1;
        let mut deadline = inj.t + x.within_ms;
        for o in &outages {
            if o.1 <= deadline && o.2 >= inj.t.saturating_sub(x.within_ms) {
                deadline += o.2.saturating_sub(o.1) + 10_000;
            }
        }
        let found = sightings
            .iter()
            .enumerate()
            .filter(|(n, s)| {
                !claimed.contains(n) && s.0 == inj.vm && s.4 + 2_000 >= inj.t && s.4 <= deadline
            })
            .min_by_key(|(n, s)| (s.2 != x.kind || s.3 != x.layer, s.4 < inj.t, *n));
        match found {
            None => a.violations.push(format!(
                "{} on {} at {}: no fault within {} ms (expected {} in {})",
                inj.what,
                inj.vm,
                inj.t,
                deadline - inj.t,
                x.kind,
                x.layer
            )),
            Some((n, s)) => {
                claimed.insert(n);
                explained.insert(s.1);
                a.detected += 1;
                a.detect_ms.push(s.4.saturating_sub(inj.t));
                if s.2 == x.kind && s.3 == x.layer {
                    a.right += 1;
                } else {
                    eprintln!(
                        "note: {} on {} at {} showed as {} in {} (expected {} in {})",
                        inj.what, inj.vm, inj.t, s.2, s.3, x.kind, x.layer
                    );
                }
                if matches!(
                    closed.get(&s.1),
                    Some(Closure::Recovered | Closure::Cleared)
                ) {
                    a.recovered += 1;
                }
            }
        }
    }
    // A guest paused on purpose while vigild was killed: its transport may
    // be wedged (see the module's doc).
    let kills = windows(log, "vigild-kill");
    let wedged = |vm: &str| {
        windows(log, "suspend")
            .iter()
            .any(|p| p.0 == vm && kills.iter().any(|k| k.1 <= p.2 && k.2 >= p.1))
    };
    let mut collateral: BTreeSet<u64> = BTreeSet::new();
    // A sighting on a guest that no injection claimed, of a fault that no
    // claimed sighting explains, is a false fault.
    let mut false_faults: BTreeSet<u64> = BTreeSet::new();
    for (n, s) in sightings.iter().enumerate() {
        if guests.contains(&s.0) && !claimed.contains(&n) && !explained.contains(&s.1) {
            if s.2 == "transport-down" && wedged(&s.0) {
                if collateral.insert(s.1) {
                    a.collateral += 1;
                }
                continue;
            }
            false_faults.insert(s.1);
            a.violations.push(format!(
                "fault #{} {} on {} at {}: no injection explains it",
                s.1, s.2, s.0, s.4
            ));
        }
    }
    // Actions.
    let faults: BTreeMap<u64, String> = sightings.iter().map(|s| (s.1, s.0.clone())).collect();
    let mut intents: BTreeMap<u64, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<u64, usize> = BTreeMap::new();
    let paused = windows(log, "suspend");
    let maintenance = windows(log, "maintenance");
    let libvirtd = windows(log, "libvirtd-restart");
    for e in entries {
        match &e.record {
            Record::Intent {
                vm, action, rung, ..
            } => {
                *intents.entry(action.id).or_default() += 1;
                let answers = action.fault == 0 || faults.get(&action.fault) == Some(vm);
                if !answers {
                    a.violations.push(format!(
                        "action #{} {} on {vm} at {}: answers no journaled fault (#{})",
                        action.id,
                        action.kind.name(),
                        e.t,
                        action.fault
                    ));
                }
                if false_faults.contains(&action.fault) {
                    a.false_actions += 1;
                }
                if collateral.contains(&action.fault) && action.kind.is_destructive() {
                    a.violations.push(format!(
                        "action #{} {} on {vm} at {}: destructive, for a wedged transport",
                        action.id,
                        action.kind.name(),
                        e.t
                    ));
                }
                let what = format!(
                    "action #{} {} on {vm} at {}",
                    action.id,
                    action.kind.name(),
                    e.t
                );
                if rung.is_some() && maintenance.iter().any(|w| within(e.t, w, vm, 0)) {
                    a.violations
                        .push(format!("{what}: the VM was in maintenance"));
                }
                if rung.is_some() && paused.iter().any(|w| within(e.t, w, vm, 0)) {
                    a.violations
                        .push(format!("{what}: the VM was paused on purpose"));
                }
                if action.kind.through_hypervisor()
                    && libvirtd.iter().any(|w| within(e.t, w, vm, 0))
                {
                    a.violations.push(format!("{what}: libvirtd was down"));
                }
            }
            Record::Outcome { id, .. } => *outcomes.entry(*id).or_default() += 1,
            _ => {}
        }
    }
    for (id, n) in &intents {
        if *n > 1 {
            a.duplicate_actions += 1;
            a.violations
                .push(format!("action #{id}: its intent journaled {n} times"));
        }
        match outcomes.get(id).copied().unwrap_or(0) {
            0 => a
                .violations
                .push(format!("action #{id}: no outcome journaled")),
            1 => {}
            k => {
                a.duplicate_actions += 1;
                a.violations
                    .push(format!("action #{id}: {k} outcomes journaled"));
            }
        }
    }
    for id in outcomes.keys().filter(|id| !intents.contains_key(id)) {
        a.violations
            .push(format!("outcome of action #{id} without its intent"));
    }
    // How it ended, and the journal's checks.
    for i in log {
        if i.what == "final" {
            let st = i.raw["state"].as_str().unwrap_or("?");
            // Quarantined with a reason: its fault, or (the fault gone
            // since) why vigild says it is quarantined.
            let reason = !i.raw["fault"].is_null() || i.raw["quarantine"].is_string();
            let ok = st == "healthy"
                || (st == "quarantined" && reason)
                || (i.raw["fault"] == "transport-down" && wedged(&i.vm));
            if !ok {
                a.violations.push(format!(
                    "{} ended {st} ({}), not healthy or quarantined with a reason",
                    i.vm, i.raw["domain_state"]
                ));
            }
        }
        if i.what == "journal-check" && i.raw["ok"] != true {
            a.violations.push(format!(
                "journal check {}: {}",
                i.raw["when"], i.raw["said"]
            ));
        }
    }
    if !log.iter().any(|i| i.what == "final") {
        a.violations
            .push("the soak did not finish (no final states)".into());
    }
    a
}

#[cfg(test)]
mod tests;
