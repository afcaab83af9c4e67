//! The host-level side of the engine: faults that belong to the host, not
//! to one VM (the hypervisor not answering, hardware errors, a device
//! throwing I/O errors, a filesystem under VM disks full), each once per
//! host and subject, with the VMs it touches named in its evidence and in
//! theirs; and the host's health they feed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::host;
use super::storage::FsSample;
use super::*;

/// VMs that must lose the same gateway at once for it to be the host's
/// uplink.
pub const UPLINK_MIN_VMS: usize = 3;

impl Engine {
    /// A libvirt call has not returned for `for_ms`: one host-level fault
    /// (and an alert) for as long as it lasts; destructive actions wait.
    pub(super) fn hypervisor_silent(
        &mut self,
        now: Millis,
        for_ms: Millis,
        lost: bool,
        out: &mut Output,
    ) {
        if self.hypervisor_silent.is_some() {
            return;
        }
        let id = self.next_fault;
        self.next_fault += 1;
        let onset = now.saturating_sub(for_ms);
        self.hypervisor_silent = Some((id, onset, now));
        let ev = if lost {
            format!(
                "the connection to libvirtd is lost (for {for_ms} ms): reconnecting; \
                 no destructive action until it is back"
            )
        } else {
            format!(
                "a libvirt call has not returned for {for_ms} ms: no destructive action until it answers"
            )
        };
        self.host_fault(
            now,
            id,
            FaultKind::HypervisorUnresponsive,
            None,
            ev,
            onset,
            out,
        );
    }

    /// A host-level fault on `(host)`, located now, and its alert.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn host_fault(
        &mut self,
        now: Millis,
        id: u64,
        kind: FaultKind,
        subject: Option<String>,
        evidence: String,
        onset: Millis,
        out: &mut Output,
    ) {
        out.records.push(Record::Fault {
            vm: HOST.into(),
            id,
            kind,
            layer: kind.layer(),
            subject,
            evidence: vec![evidence],
            onset,
            onset_window_ms: 0,
            detected: now,
            located: now,
        });
        let action = Action {
            id: self.next_action,
            vm: HOST.into(),
            kind: ActionKind::Alert,
            fault: id,
            memory_kib: None,
        };
        self.next_action += 1;
        out.records.push(Record::Intent {
            vm: HOST.into(),
            action: action.clone(),
            rung: None,
            attempt: 1,
        });
        out.actions.push(action);
    }

    /// The hypervisor answers again: its fault closes, work goes on.
    pub(super) fn hypervisor_answers(&mut self, now: Millis, out: &mut Output) {
        let Some((id, onset, located)) = self.hypervisor_silent.take() else {
            return;
        };
        for v in self.vms.values_mut() {
            v.hypervisor_back(now);
        }
        let kind = FaultKind::HypervisorUnresponsive;
        out.records.push(host_closed(
            now,
            id,
            kind,
            Closure::Recovered,
            onset,
            located,
        ));
    }

    /// Whether the hypervisor is taken as not answering.
    pub fn hypervisor_is_silent(&self) -> bool {
        self.hypervisor_silent.is_some()
    }

    /// A signal from the host's own kernel log.
    pub fn host_signal(&mut self, now: Millis, signal: &host::HostSignal, line: &str) -> Output {
        let mut out = Output::default();
        self.host.signal(now, signal, line);
        self.host_settle(now, &mut out);
        out
    }

    /// The host's memory and I/O pressure (PSI `full` avg60, %).
    pub fn host_pressure(&mut self, now: Millis, memory: Option<f64>, io: Option<f64>) -> Output {
        let mut out = Output::default();
        self.host.pressure(now, memory, io);
        self.host_settle(now, &mut out);
        out
    }

    /// An operator cleared the host's hardware and disk reasons.
    pub fn host_clear(&mut self, now: Millis) -> Output {
        let mut out = Output::default();
        self.host.clear();
        self.host_settle(now, &mut out);
        out
    }

    /// The host's health as the journal last said (after a restart).
    pub fn host_restore(&mut self, now: Millis, health: host::HostHealth, why: &str) {
        self.host.restore(now, health, why);
    }

    /// The host's health and its reasons.
    pub fn host(&self) -> &host::HostState {
        &self.host
    }

    /// A round of samples of the host's filesystems under VM disks (and
    /// the journal's): full or filling ones are host-level faults; a VM
    /// paused for want of space is resumed once its filesystems have
    /// space again.
    pub fn host_storage(&mut self, now: Millis, samples: Vec<FsSample>) -> Output {
        let mut out = Output::default();
        let (pct, horizon) = (
            self.cfg.host_storage_full_percent,
            self.cfg.host_storage_horizon_ms,
        );
        self.storage.sample(now, samples, pct, horizon);
        // A VM paused because a write found no space, not yet seen waiting:
        // the filesystem it wrote to (its tightest) is full, whatever its use.
        let ran_out: Vec<String> = self
            .vms
            .values()
            .filter(|v| v.domain == DomainState::Paused(PauseReason::NoSpace) && !v.space_wait)
            .filter_map(|v| self.storage.tightest(&v.name).map(str::to_string))
            .collect();
        for m in ran_out {
            self.storage.ran_out(&m);
        }
        self.host_settle(now, &mut out);
        let mut ctx = vm::Ctx::new(&self.cfg, self.ctx_seed());
        for v in self.vms.values_mut() {
            let fs = self.storage.of_vm(&v.name);
            v.host_space(now, &fs, &mut ctx, &mut out);
        }
        let effects = ctx.into_effects();
        self.absorb(effects, now, &mut out);
        out
    }

    /// The open host-level faults: (id, kind, subject, located).
    pub fn host_faults(&self) -> Vec<(u64, FaultKind, Option<String>, Millis)> {
        let mut open: Vec<_> = self
            .host_faults
            .iter()
            .map(|((kind, subject), (id, _, located))| {
                let sub = (!subject.is_empty()).then(|| subject.clone());
                (*id, *kind, sub, *located)
            })
            .collect();
        let others = [
            (FaultKind::HypervisorUnresponsive, self.hypervisor_silent),
            (FaultKind::HostWide, self.host_wide_fault),
        ];
        for (kind, f) in others {
            if let Some((id, _, located)) = f {
                open.push((id, kind, None, located));
            }
        }
        open.sort_by_key(|f| f.0);
        open
    }

    /// A step's context's start: the engine's host-wide state.
    pub(super) fn ctx_seed(&self) -> vm::CtxSeed {
        vm::CtxSeed {
            armed: self.armed,
            host_wide: self.host_wide_until.is_some(),
            hypervisor_silent: self.hypervisor_silent.is_some(),
            host_open: self.host_open.clone(),
            next_fault: self.next_fault,
            next_action: self.next_action,
            destructive_recent: self.destructive_recent.len(),
        }
    }

    /// The VMs whose open fault is network-unreachable for the same
    /// unanswering gateway, by gateway: the host's uplink when there are
    /// [`UPLINK_MIN_VMS`] of them.
    fn lost_gateways(&self) -> BTreeMap<String, Vec<VmId>> {
        let mut by: BTreeMap<String, Vec<VmId>> = BTreeMap::new();
        for v in self.vms.values() {
            let Some(f) = v
                .fault
                .as_ref()
                .filter(|f| f.kind == FaultKind::NetworkUnreachable)
            else {
                continue;
            };
            if let Some(gw) = f
                .subject
                .as_deref()
                .and_then(|s| s.strip_prefix("gateway "))
            {
                by.entry(gw.to_string()).or_default().push(v.name.clone());
            }
        }
        by.retain(|_, vms| vms.len() >= UPLINK_MIN_VMS);
        by
    }

    /// The VMs a host-level fault touches (none: every VM on the host).
    fn touched(&self, kind: FaultKind, subject: &str) -> Option<Vec<VmId>> {
        match kind {
            FaultKind::HostUplink => Some(
                self.lost_gateways()
                    .remove(subject.trim_start_matches("gateway "))
                    .unwrap_or_default(),
            ),
            FaultKind::HostStorageFull => Some(self.storage.vms_on(subject)),
            FaultKind::HostDiskErrors => Some(
                self.host
                    .disk_errors()
                    .find(|(dev, _)| *dev == subject)
                    .map_or(Vec::new(), |(_, d)| d.vms.clone()),
            ),
            _ => None,
        }
    }

    /// The open host-level faults, in words, with the VMs each touches: a
    /// VM's own fault names them. Kept from one settle to the next (every
    /// step reads it).
    fn open_host_faults(&self) -> Arc<[(String, Option<Vec<VmId>>)]> {
        self.host_faults
            .iter()
            .map(|((kind, subject), f)| {
                let text = match subject.as_str() {
                    "" => format!("{kind} #{}", f.0),
                    s => format!("{kind} #{} ({s})", f.0),
                };
                (text, self.touched(*kind, subject))
            })
            .collect()
    }

    /// The open faults of the VMs a new host-level fault touches, in words
    /// (the fault it explains, when the VM's came first).
    fn explains(&self, kind: FaultKind, subject: &str) -> String {
        let Some(touched) = self.touched(kind, subject) else {
            return String::new();
        };
        let open: Vec<String> = touched
            .iter()
            .filter_map(|vm| {
                let (id, kind) = self.active_fault(vm)?;
                Some(format!("{vm} #{id} {kind}"))
            })
            .collect();
        match open.len() {
            0 => String::new(),
            n if n <= 10 => format!("; open faults it touches: {}", open.join(", ")),
            n => format!(
                "; open faults it touches: {} and {} more",
                open[..10].join(", "),
                n - 10
            ),
        }
    }

    /// The host-level faults the host's state calls for: (kind, subject)
    /// → (onset, evidence).
    fn host_faults_wanted(&self, now: Millis) -> BTreeMap<(FaultKind, String), (Millis, String)> {
        let mut want = BTreeMap::new();
        let hw: Vec<_> = self
            .host
            .reasons()
            .filter(|(k, _)| matches!(*k, "hardware" | "corrected-errors"))
            .collect();
        if let Some(since) = hw.iter().map(|(_, r)| r.since).min() {
            let why = hw
                .iter()
                .map(|(_, r)| r.why.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            want.insert((FaultKind::HostHardware, String::new()), (since, why));
        }
        for (dev, d) in self.host.disk_errors() {
            let vms = match d.vms.is_empty() {
                true => "no VM disk known on it".to_string(),
                false => format!("disks of {}", d.vms.join(", ")),
            };
            let why = format!("{} I/O error(s) on {dev}; {vms}; last: {}", d.count, d.line);
            want.insert((FaultKind::HostDiskErrors, dev.to_string()), (d.since, why));
        }
        for t in self.storage.troubles(now) {
            want.insert((FaultKind::HostStorageFull, t.mount), (now, t.why));
        }
        for (gw, vms) in self.lost_gateways() {
            let onset = vms
                .iter()
                .filter_map(|v| self.vms.get(v)?.fault.as_ref().map(|f| f.onset))
                .min()
                .unwrap_or(now);
            let why = format!(
                "{} VMs lost their gateway {gw} at once ({}): the host's uplink, not their networks",
                vms.len(),
                vms.join(", ")
            );
            want.insert(
                (FaultKind::HostUplink, format!("gateway {gw}")),
                (onset, why),
            );
        }
        want
    }

    /// The host-level conditions into host-level faults and the host's
    /// health; a change journaled.
    pub(super) fn host_settle(&mut self, now: Millis, out: &mut Output) {
        use host::HostHealth::{Degraded, Failed};
        let hv = self.hypervisor_silent.map(|(id, ..)| {
            let why = format!("the hypervisor does not answer (fault #{id})");
            (Degraded, why)
        });
        self.host.condition(now, "hypervisor", hv);
        let wide = self
            .host_wide_until
            .map(|_| (Failed, "many VMs faulted at once (host-wide)".to_string()));
        self.host.condition(now, "host-wide", wide);
        let full: Vec<String> = self
            .storage
            .troubles(now)
            .into_iter()
            .filter(|t| t.full)
            .map(|t| t.why)
            .collect();
        let full = (!full.is_empty()).then(|| (Degraded, full.join("; ")));
        self.host.condition(now, "storage-full", full);
        let uplink: Vec<String> = self
            .lost_gateways()
            .into_iter()
            .map(|(gw, vms)| format!("{} VMs lost their gateway {gw}", vms.len()))
            .collect();
        let uplink = (!uplink.is_empty()).then(|| (Degraded, uplink.join("; ")));
        self.host.condition(now, "uplink", uplink);
        self.host.expire(now);
        let want = self.host_faults_wanted(now);
        let gone: Vec<_> = self
            .host_faults
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some((id, onset, located)) = self.host_faults.remove(&key) {
                out.records.push(host_closed(
                    now,
                    id,
                    key.0,
                    Closure::Cleared,
                    onset,
                    located,
                ));
            }
        }
        for ((kind, subject), (onset, mut why)) in want {
            if self.host_faults.contains_key(&(kind, subject.clone())) {
                continue;
            }
            why.push_str(&self.explains(kind, &subject));
            let id = self.next_fault;
            self.next_fault += 1;
            let onset = onset.min(now);
            let sub = (!subject.is_empty()).then(|| subject.clone());
            self.host_fault(now, id, kind, sub, why, onset, out);
            self.host_faults.insert((kind, subject), (id, onset, now));
        }
        self.host_open = self.open_host_faults();
        if let Some((from, to, why)) = self.host.settle(now) {
            out.records.push(Record::HostHealth {
                vm: HOST.into(),
                from,
                to,
                why,
            });
        }
    }
}

/// A host-level fault's closing record.
pub(super) fn host_closed(
    now: Millis,
    id: u64,
    kind: FaultKind,
    how: Closure,
    onset: Millis,
    located: Millis,
) -> Record {
    Record::Closed {
        vm: HOST.into(),
        id,
        kind,
        how,
        at: now,
        detect_ms: located.saturating_sub(onset),
        locate_ms: 0,
        repair_ms: now.saturating_sub(located),
        flaps: 0,
    }
}
