//! What the core's records and VMs show outside: log lines and the
//! Prometheus metrics.

use super::*;

impl Core {
    pub(super) fn observe_record(&mut self, r: &Record) {
        match r {
            Record::Transition { vm, from, to, why } => {
                log::info!("vm={vm} state {from} -> {to}: {why}");
                // Healthy VMs are left to the quiet poll; any other state
                // is watched at the poll interval (a suspect one polled at
                // once, for a fresh sample to compare with).
                let hot = *to != State::Healthy;
                if hot != (*from != State::Healthy) {
                    let _ = self.backend.send(BackendReq::Watch {
                        vm: vm.clone(),
                        hot,
                    });
                }
                let uuid = uuid_of(&self.vms, vm);
                self.metrics.set_state(vm, &uuid, *to);
                let up = !matches!(
                    to,
                    State::Faulted | State::Recovering | State::Quarantined | State::Off
                ) || self
                    .engine
                    .active_fault(vm)
                    .is_some_and(|(_, k)| !k.is_outage());
                self.metrics
                    .vm_up
                    .get_or_create(&self.labels(vm))
                    .set(i64::from(up));
            }
            Record::Fault {
                vm,
                id,
                kind,
                layer,
                evidence,
                ..
            } => {
                log::warn!(
                    "vm={vm} fault=#{id} kind={kind} layer={} evidence={}",
                    layer.name(),
                    evidence.join("; ")
                );
                let l = FaultLabels {
                    domain: vm.clone(),
                    uuid: uuid_of(&self.vms, vm),
                    kind: kind.name().into(),
                    layer: layer.name().into(),
                };
                self.metrics.faults.get_or_create(&l).inc();
                self.metrics.fault_active.get_or_create(&l).set(1);
                self.open_faults.insert(*id, l);
            }
            Record::Intent { vm, action, .. } => {
                log::info!(
                    "vm={vm} action=#{} {} (fault #{})",
                    action.id,
                    action.kind,
                    action.fault
                );
                self.action_kinds
                    .insert(action.id, action.kind.name().to_string());
            }
            Record::Suppressed { vm, kind, why } => log::warn!("vm={vm} suppressed {kind}: {why}"),
            Record::Warning {
                vm,
                kind,
                subject,
                evidence,
                ..
            } => log::warn!(
                "vm={vm} warning {kind}{}: {evidence}",
                subject
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
            Record::WarningCleared {
                vm,
                kind,
                subject,
                why,
            } => log::info!(
                "vm={vm} warning {kind}{} cleared: {why}",
                subject
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
            Record::HostHealth { from, to, why, .. } => {
                log::warn!("host health {from} -> {to}: {why}");
                self.metrics.host_health.set(to.level());
                self.tell_cluster_health(*to);
            }
            Record::Reopened {
                vm,
                id,
                kind,
                flaps,
                evidence,
            } => {
                log::warn!(
                    "vm={vm} fault=#{id} kind={kind} came back (flap {flaps}): {}",
                    evidence.join("; ")
                );
                let l = FaultLabels {
                    domain: vm.clone(),
                    uuid: uuid_of(&self.vms, vm),
                    kind: kind.name().into(),
                    layer: kind.layer().name().into(),
                };
                self.metrics.fault_active.get_or_create(&l).set(1);
                self.open_faults.insert(*id, l);
            }
            Record::Outcome { .. } => {}
            Record::Closed {
                vm,
                id,
                kind,
                how,
                detect_ms,
                locate_ms,
                repair_ms,
                ..
            } => {
                log::info!("vm={vm} fault=#{id} {kind} closed: {how:?} detect={detect_ms}ms locate={locate_ms}ms repair={repair_ms}ms");
                if let Some(f) = self.open_faults.remove(id) {
                    self.metrics.fault_active.remove(&f);
                }
                let l = self.labels(vm);
                self.metrics
                    .detect
                    .get_or_create(&l)
                    .observe(*detect_ms as f64 / 1000.0);
                self.metrics
                    .locate
                    .get_or_create(&l)
                    .observe(*locate_ms as f64 / 1000.0);
                if *how == engine::Closure::Recovered {
                    self.metrics
                        .repair
                        .get_or_create(&l)
                        .observe(*repair_ms as f64 / 1000.0);
                }
            }
        }
    }

    pub(super) fn refresh_metrics(&mut self, now: Millis) {
        let m = &self.metrics;
        m.journal_writable
            .set(i64::from(self.journal_down_since.is_none()));
        m.journal_unwritten.set(self.journal_waiting as i64);
        m.actions_held.set(self.held.len() as i64);
        let names: Vec<String> = self.engine.vms().map(|(n, _)| n.to_string()).collect();
        for n in &names {
            let l = self.labels(n);
            if let Some(t) = self.engine.last_heartbeat(n) {
                self.metrics
                    .heartbeat_age
                    .get_or_create(&l)
                    .set(now.saturating_sub(t) as f64 / 1000.0);
            }
        }
        for n in &names {
            let a = self.uptime.availability(n, now);
            self.metrics
                .availability
                .get_or_create(&self.labels(n))
                .set(a);
        }
    }
}
