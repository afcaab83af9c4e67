//! What a restart must settle, read from the journal: intents without an
//! outcome, open faults, the budget's destructive actions, recovered faults
//! that may recur, open warnings, maintenance and quarantine.

use super::*;

impl Journal {
    /// What a restart must settle: intents without an outcome, faults not
    /// closed (with their last ladder step), and destructive actions per VM
    /// (for the budget).
    pub fn unsettled(&self) -> Result<Unsettled, JournalError> {
        use crate::engine::RestoredFault;
        let mut u = Unsettled::default();
        let mut open_intents: std::collections::BTreeMap<u64, (String, ActionKind)> =
            Default::default();
        let mut open_faults: std::collections::BTreeMap<u64, (String, RestoredFault)> =
            Default::default();
        let mut closed_faults: std::collections::BTreeMap<u64, (String, RestoredFault)> =
            Default::default();
        // The last recovered fault per VM, kind and subject (for recurrence).
        type Key = (String, &'static str, Option<String>);
        let mut recovered: std::collections::BTreeMap<Key, (String, RestoredFault, Millis)> =
            Default::default();
        let mut warnings = std::collections::BTreeSet::new();
        let mut maintenance = std::collections::BTreeMap::new();
        let mut quarantined = std::collections::BTreeMap::new();
        for e in self.rows(
            "SELECT seq, t_ms, body FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            0,
            -1,
        )? {
            match e.record {
                Record::Intent {
                    vm,
                    action,
                    rung,
                    attempt,
                } => {
                    if action.kind.is_destructive() {
                        u.destructive.push((vm.clone(), e.t));
                    }
                    if let (Some(rung), Some((_, f))) = (rung, open_faults.get_mut(&action.fault)) {
                        f.last_step = Some((rung, attempt, action.kind.clone(), e.t));
                        f.interrupted = Some((action.id, action.kind.clone()));
                        f.last_failed = false;
                    }
                    open_intents.insert(action.id, (vm, action.kind));
                }
                Record::Outcome { id, ok, .. } => {
                    open_intents.remove(&id);
                    for (_, f) in open_faults.values_mut() {
                        if f.interrupted.as_ref().is_some_and(|(a, _)| *a == id) {
                            f.last_failed = !ok;
                        }
                    }
                }
                Record::Fault {
                    vm,
                    id,
                    kind,
                    subject,
                    onset,
                    detected,
                    located,
                    ..
                } => {
                    let r = RestoredFault {
                        id,
                        kind,
                        subject,
                        onset,
                        detected,
                        located,
                        last_step: None,
                        interrupted: None,
                        last_failed: false,
                    };
                    open_faults.insert(id, (vm, r));
                }
                Record::Closed { id, how, at, .. } => {
                    if let Some((vm, f)) = open_faults.remove(&id) {
                        if how == Closure::Recovered {
                            let key = (vm.clone(), f.kind.name(), f.subject.clone());
                            recovered.insert(key, (vm.clone(), f.clone(), at));
                        }
                        closed_faults.insert(id, (vm, f));
                    }
                }
                Record::Warning {
                    vm, kind, subject, ..
                } => {
                    warnings.insert((vm, kind, subject));
                }
                Record::WarningCleared {
                    vm, kind, subject, ..
                } => {
                    warnings.remove(&(vm, kind, subject));
                }
                Record::Transition { vm, to, why, .. } => {
                    if to == crate::engine::State::Quarantined {
                        // What quarantined it first: a restart's
                        // restoring transition keeps it.
                        quarantined.entry(vm.clone()).or_insert_with(|| why.clone());
                    } else {
                        quarantined.remove(&vm);
                    }
                    if to == crate::engine::State::Maintenance {
                        maintenance.insert(vm, crate::engine::maintenance_until(&why));
                    } else {
                        maintenance.remove(&vm);
                    }
                }
                Record::Reopened { id, .. } => {
                    if let Some((vm, f)) = closed_faults.remove(&id) {
                        let key = (vm.clone(), f.kind.name(), f.subject.clone());
                        if recovered.get(&key).is_some_and(|(_, r, _)| r.id == id) {
                            recovered.remove(&key);
                        }
                        open_faults.insert(id, (vm, f));
                    }
                }
                _ => {}
            }
        }
        // An open fault's last step still without an outcome, if a
        // restart can resume what is left of it, is resumed within the
        // fault rather than settled as interrupted.
        for (_, f) in open_faults.values_mut() {
            f.interrupted = f
                .interrupted
                .take()
                .filter(|(id, kind)| kind.resumable() && open_intents.contains_key(id));
            if let Some((id, _)) = &f.interrupted {
                open_intents.remove(id);
            }
        }
        u.intents = open_intents
            .into_iter()
            .map(|(id, (vm, kind))| (id, vm, kind))
            .collect();
        u.faults = open_faults.into_values().collect();
        u.recovered = recovered.into_values().collect();
        u.warnings = warnings.into_iter().collect();
        u.maintenance = maintenance.into_iter().collect();
        u.quarantined = quarantined.into_iter().collect();
        Ok(u)
    }
}

/// What a restart finds open in the journal.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Unsettled {
    /// (action id, vm, kind) of intents with no outcome.
    pub intents: Vec<(u64, String, ActionKind)>,
    /// Faults not closed, by VM.
    pub faults: Vec<(String, crate::engine::RestoredFault)>,
    /// (vm, time) of every destructive action's intent.
    pub destructive: Vec<(String, Millis)>,
    /// The last fault a recovery action closed per VM, kind and subject,
    /// with its last ladder step and when it closed (for recurrence).
    pub recovered: Vec<(String, crate::engine::RestoredFault, Millis)>,
    /// Warnings raised and not cleared: (vm, kind, subject).
    pub warnings: Vec<(String, crate::engine::warn::WarningKind, Option<String>)>,
    /// VMs in maintenance when the journal ends, until when (if timed).
    pub maintenance: Vec<(String, Option<Millis>)>,
    /// VMs quarantined when the journal ends (until an operator releases
    /// them), and what quarantined them.
    pub quarantined: Vec<(String, String)>,
}
