//! A restart resumes from the journal: what the last run left open is
//! settled, or handed to the engine to apply when each VM is added.

use super::*;

/// Resume from the journal: continue numbering; an intent without an
/// outcome is not repeated (it may have run: it gets a full
/// verification window instead); open faults continue on their
/// ladders where they were; destructive actions still count against
/// the per-VM budget. VMs start with a fresh boot grace, so the
/// restart itself resets no VM.
pub(super) fn resume(
    engine: &mut Engine,
    journal: &mut Journal,
    cfg: &Config,
    metrics: &Metrics,
    now: Millis,
) -> anyhow::Result<()> {
    let (max_fault, max_action) = journal.max_ids()?;
    engine.seed_ids(max_fault + 1, max_action + 1);
    let u = journal.unsettled()?;
    let mut settle = Vec::new();
    for (id, vm, kind) in &u.intents {
        log::warn!(
            "action #{id} {} on {vm} was interrupted by a restart; not repeated",
            kind.name()
        );
        settle.push(Record::Outcome {
            vm: vm.clone(),
            id: *id,
            ok: false,
            detail: "interrupted: vigild restarted before the result was known; not repeated"
                .into(),
        });
    }
    if !settle.is_empty() {
        journal.append(now, &settle)?;
    }
    // What the journal knows of each VM goes to the engine, which
    // applies it when the VM is added: the budget's destructive
    // actions, recovered faults that may still recur, open faults.
    let mut budgets: BTreeMap<String, Vec<Millis>> = BTreeMap::new();
    for (vm, t) in u.destructive {
        budgets.entry(vm).or_default().push(t);
    }
    for (vm, times) in &budgets {
        engine.seed_destructive(vm, times);
    }
    let window = cfg.engine.recurrence_window_ms;
    for (vm, f, at) in u.recovered {
        if now.saturating_sub(at) <= window {
            engine.seed_recovered(&vm, &f, at);
        }
    }
    // Host-level faults (the hypervisor not answering, host-wide) are
    // of the run that saw them: closed, and seen again if they still
    // hold. The host's health goes on where it was.
    let mut host_closed = Vec::new();
    for (vm, f) in u.faults.iter().filter(|(vm, _)| vm == engine::HOST) {
        host_closed.push(Record::Closed {
            vm: vm.clone(),
            id: f.id,
            kind: f.kind,
            how: engine::Closure::Withdrawn,
            at: now,
            detect_ms: f.located.saturating_sub(f.onset),
            locate_ms: 0,
            repair_ms: now.saturating_sub(f.located),
            flaps: 0,
        });
    }
    // Open warnings are of the run that saw them too: a trend starts
    // over with the new run, and a warning that still holds is raised
    // again once it has shown itself again.
    for (vm, kind, subject) in &u.warnings {
        host_closed.push(Record::WarningCleared {
            vm: vm.clone(),
            kind: *kind,
            subject: subject.clone(),
            why: "vigild restarted: its trends start over".into(),
        });
    }
    if !host_closed.is_empty() {
        journal.append(now, &host_closed)?;
    }
    if let Some(e) = journal.last_of_kind("host-health")? {
        if let Record::HostHealth { to, why, .. } = e.record {
            engine.host_restore(now, to, &why);
        }
    }
    metrics.host_health.set(engine.host().health().level());
    // Maintenance outlives a restart: the operator's word stands.
    for (vm, until) in &u.maintenance {
        log::info!("vm={vm} stays in maintenance (from the journal)");
        let _ = engine.restore_maintenance(now, vm, *until);
    }
    // So does a quarantine: no repairs until the operator releases it.
    for (vm, why) in &u.quarantined {
        log::info!("vm={vm} stays quarantined (from the journal): {why}");
        let _ = engine.restore_quarantine(now, vm, why);
    }
    for (vm, f) in u.faults.into_iter().filter(|(vm, _)| vm != engine::HOST) {
        log::info!(
            "vm={vm} fault #{} {} resumes from the journal",
            f.id,
            f.kind
        );
        let _ = engine.restore_fault(now, &vm, &f);
    }
    Ok(())
}
