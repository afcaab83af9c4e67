//! The fault engine: detect → locate → decide, as a pure state machine.
//!
//! No I/O and no clock: every call takes `now`, and the same inputs give
//! the same outputs. [`Engine::step`] takes one VM's observation,
//! [`Engine::global`] a host-wide one (the periodic tick, disarm/arm); both
//! return journal records and actions for the executor, which reports back
//! with [`Input::ActionDone`].
//!
//! Per VM: `Discovering → Healthy → Suspect → Faulted → Recovering →
//! Healthy`, plus `Maintenance`, `Paused`, `Off` and `Quarantined`.
//! Silence is corroborated before it is named: domain state, vCPU time, I/O
//! progress and a guest-kernel liveness probe decide between agent-down,
//! guest-hang and vcpu-stalled; a busy guest with I/O progress is not hung.

pub mod config;
pub mod detect;
pub mod evidence;
pub mod host;
mod host_level;
mod ladder;
pub mod model;
pub mod network;
mod render;
pub mod storage;
mod table;
pub mod trend;
pub mod warn;
use table::{VmTable, Waiting};
mod vm;
pub use vm::maintenance_until;

use std::collections::{BTreeMap, VecDeque};

pub use config::{EngineConfig, Exhausted, Ladder, Rung};
pub use model::*;
pub use render::render;
use vm::Vm;

/// Marker name for host-level records.
pub const HOST: &str = "(host)";

/// The engine: one owner of every VM's detection and recovery state.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    vms: VmTable,
    next_fault: u64,
    next_action: u64,
    armed: bool,
    /// (time, vm) of faults located recently, for the host-wide breaker.
    recent_faults: VecDeque<(Millis, VmId)>,
    /// The breaker is open until then.
    host_wide_until: Option<Millis>,
    /// The host-wide fault while the breaker is open: id, onset, located.
    host_wide_fault: Option<(u64, Millis, Millis)>,
    /// The hypervisor has not answered: the host-level fault that says
    /// so, when its call began, and when the fault was located.
    hypervisor_silent: Option<(u64, Millis, Millis)>,
    /// The host's own health.
    host: host::HostState,
    /// The host's filesystems under VM disks.
    storage: storage::Storage,
    /// Open host-level faults the host's state calls for (hardware, a
    /// device's I/O errors, a filesystem full), by kind and subject: id,
    /// onset, located.
    host_faults: BTreeMap<(FaultKind, String), (u64, Millis, Millis)>,
    /// Those faults in words, with the VMs each touches (none: all), as
    /// the last settle left them.
    host_open: std::sync::Arc<[(String, Option<Vec<VmId>>)]>,
    /// Destructive actions started recently, host-wide.
    destructive_recent: VecDeque<Millis>,
    /// What is known of VMs not monitored yet (seeded from the journal,
    /// or seen before the hypervisor listed them): applied when they are
    /// added, so a VM learned late needs no replay from the outside.
    waiting: BTreeMap<VmId, Waiting>,
    /// Actions a restart interrupted that the daemon is to finish, by VM:
    /// (action id, kind, when it started).
    resumes: BTreeMap<VmId, (u64, ActionKind, Millis)>,
}

impl Engine {
    /// An engine with these settings (validated by the caller).
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            vms: VmTable::default(),
            next_fault: 1,
            next_action: 1,
            armed: true,
            recent_faults: VecDeque::new(),
            host_wide_until: None,
            host_wide_fault: None,
            hypervisor_silent: None,
            host: host::HostState::default(),
            storage: storage::Storage::default(),
            host_faults: BTreeMap::new(),
            host_open: std::sync::Arc::from(Vec::new()),
            destructive_recent: VecDeque::new(),
            waiting: BTreeMap::new(),
            resumes: BTreeMap::new(),
        }
    }

    /// Continue fault and action numbering (after a restart).
    pub fn seed_ids(&mut self, next_fault: u64, next_action: u64) {
        self.next_fault = self.next_fault.max(next_fault);
        self.next_action = self.next_action.max(next_action);
    }

    /// After a restart: a fault the journal shows a recovery action closed
    /// at `at`, so that its recurrence continues its ladder.
    pub fn seed_recovered(&mut self, vm: &str, f: &RestoredFault, at: Millis) {
        if !self.vms.contains_key(vm) {
            let w = self.waiting.entry(vm.to_string()).or_default();
            w.recovered.push((f.clone(), at));
            return;
        }
        let (Some(v), Some((rung, attempt, _, _))) = (self.vms.get_mut(vm), &f.last_step) else {
            return;
        };
        v.remember_recovered(vm::Recovered {
            id: f.id,
            kind: f.kind,
            subject: f.subject.clone(),
            rung: *rung,
            attempt: *attempt,
            at,
        });
    }

    /// Restore a VM's destructive-action history (after a restart), so the
    /// per-VM budget survives it.
    pub fn seed_destructive(&mut self, vm: &str, times: &[Millis]) {
        match self.vms.get_mut(vm) {
            Some(v) => v.destructive_log.extend(times.iter().copied()),
            None => self
                .waiting
                .entry(vm.to_string())
                .or_default()
                .destructive
                .extend(times.iter().copied()),
        }
    }

    /// A VM was in maintenance when the last run ended (operator's or the
    /// guest's, until `until` if timed): it still is, after a restart too.
    pub fn restore_maintenance(&mut self, now: Millis, vm: &str, until: Option<Millis>) -> Output {
        if until.is_some_and(|u| u <= now) {
            return Output::default();
        }
        if self.vms.contains_key(vm) {
            let on = OperatorCommand::MaintenanceOn { until };
            return self.step(now, vm, Input::Operator(on));
        }
        self.waiting.entry(vm.to_string()).or_default().maintenance = Some(until);
        Output::default()
    }

    /// A VM was quarantined when the last run ended (`why`: what
    /// quarantined it): it still is, after a restart too, until an operator
    /// releases it (when its VM is added, if it is not yet).
    pub fn restore_quarantine(&mut self, now: Millis, vm: &str, why: &str) -> Output {
        let mut out = Output::default();
        match self.vms.get_mut(vm) {
            Some(v) => v.restore_quarantine(now, why, &mut out),
            None => {
                self.waiting.entry(vm.to_string()).or_default().quarantined = Some(why.to_string())
            }
        }
        out
    }

    /// Why a VM is quarantined, while it is.
    pub fn quarantine_reason(&self, vm: &str) -> Option<&str> {
        self.vms.get(vm).and_then(|v| v.quarantine.as_deref())
    }

    /// Resume a fault from a previous run (when its VM is added, if it is
    /// not yet). An action the restart interrupted is then the daemon's to
    /// finish: see [`Engine::take_resume`].
    pub fn restore_fault(&mut self, now: Millis, vm: &str, fault: &RestoredFault) -> Output {
        let mut out = Output::default();
        match self.vms.get_mut(vm) {
            Some(v) => {
                v.restore(now, fault, &self.cfg, &mut out);
                if v.quarantine.is_some() {
                    // Its repairs stopped: nothing is resumed.
                    return out;
                }
                if let (Some((id, kind)), Some((_, _, _, at))) =
                    (&fault.interrupted, &fault.last_step)
                {
                    self.resumes
                        .insert(vm.to_string(), (*id, kind.clone(), *at));
                }
            }
            None => {
                self.waiting.entry(vm.to_string()).or_default().fault = Some(fault.clone());
            }
        }
        out
    }

    /// An interrupted action of `vm`'s restored fault, to finish now:
    /// (action id, kind, when it started).
    pub fn take_resume(&mut self, vm: &str) -> Option<(u64, ActionKind, Millis)> {
        self.resumes.remove(vm)
    }

    /// The domain state as last seen (also of a VM not monitored yet).
    pub fn domain(&self, vm: &str) -> Option<DomainState> {
        match self.vms.get(vm) {
            Some(v) => Some(v.domain),
            None => self.waiting.get(vm).and_then(|w| w.domain),
        }
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// New settings (a reload, validated): every step from now on uses
    /// them; a fault already on its ladder goes on from the rung it is on.
    pub fn set_config(&mut self, cfg: EngineConfig) {
        self.cfg = cfg;
    }

    /// Whether actions are taken.
    pub fn armed(&self) -> bool {
        self.armed
    }

    /// A VM's state, if monitored.
    pub fn state(&self, vm: &str) -> Option<State> {
        self.vms.get(vm).map(|v| v.state)
    }

    /// Whether a VM is all right or being put right (true), or faulted
    /// beyond what vigild can do (false), and why.
    pub fn verdict(&self, now: Millis, vm: &str) -> Option<(bool, String)> {
        self.vms.get(vm).map(|v| v.health_verdict(now))
    }

    /// Last heartbeat time of a VM.
    pub fn last_heartbeat(&self, vm: &str) -> Option<Millis> {
        self.vms.get(vm).and_then(|v| v.arrivals.last())
    }

    /// A VM's learned heartbeat arrivals, for the advisor.
    pub fn heartbeat_spread(&self, vm: &str) -> Option<crate::advisor::Spread> {
        let v = self.vms.get(vm)?;
        let (samples, learned_ms) = v.arrivals.learned(&self.cfg);
        Some(crate::advisor::Spread {
            samples,
            bound_ms: v.arrivals.bound(&self.cfg),
            learned_ms,
            min_timeout_ms: self.cfg.min_timeout_ms,
            timeout_ms: self.cfg.heartbeat_timeout_ms,
        })
    }

    /// The active fault of a VM: (id, kind).
    pub fn active_fault(&self, vm: &str) -> Option<(u64, FaultKind)> {
        self.vms
            .get(vm)
            .and_then(|v| v.fault.as_ref())
            .map(|f| (f.id, f.kind))
    }

    /// Monitored VMs, in name order.
    pub fn vms(&self) -> impl Iterator<Item = (&str, State)> {
        self.vms.values().map(|v| (v.name.as_str(), v.state))
    }

    /// Whether host→guest traffic is allowed now (never while paused or
    /// crashed: vhost-device-vsock breaks after a write to a paused VM).
    pub fn may_talk_to(&self, vm: &str) -> bool {
        self.vms
            .get(vm)
            .is_some_and(|v| v.domain == DomainState::Running && v.state != State::Paused)
    }

    /// `vm`'s open warnings.
    pub fn warnings(&self, vm: &str) -> Vec<warn::Warning> {
        self.vms
            .get(vm)
            .map_or(Vec::new(), |v| v.warn.open().cloned().collect())
    }

    /// Feed one observation about `vm`.
    pub fn step(&mut self, now: Millis, vm: &str, input: Input) -> Output {
        let mut out = Output::default();
        if let Input::VmAdded {
            agent,
            memory_kib,
            cluster,
        } = input
        {
            let new = !self.vms.contains_key(vm);
            if new {
                self.vms.insert(Vm::new(vm, now, &self.cfg));
            }
            if let Some(v) = self.vms.get_mut(vm) {
                v.agent = agent;
                v.memory_kib = memory_kib;
                v.cluster = cluster;
            }
            if new {
                self.added(now, vm, &mut out);
            }
            return out;
        }
        if !self.vms.contains_key(vm) {
            // Not monitored yet: keep what will matter once it is.
            match input {
                Input::Domain(d) => {
                    self.waiting.entry(vm.to_string()).or_default().domain = Some(d)
                }
                Input::Hello { boot_id } => {
                    self.waiting.entry(vm.to_string()).or_default().hello = Some(boot_id)
                }
                Input::SessionClosed | Input::Bye(_) => {
                    if let Some(w) = self.waiting.get_mut(vm) {
                        w.hello = None;
                    }
                }
                // The outcome of an action on the host, or on a VM removed
                // while it ran: journaled all the same (an intent is never
                // left without its outcome).
                Input::ActionDone { id, ok, detail } => out.records.push(Record::Outcome {
                    vm: vm.to_string(),
                    id,
                    ok,
                    detail,
                }),
                _ => {}
            }
            return out;
        }
        if let Input::VmRemoved = input {
            if let Some(mut v) = self.vms.remove(vm) {
                v.close_fault(now, Closure::Withdrawn, &mut out);
                v.warn.withdraw(vm, &mut out);
            }
            return out;
        }
        self.prune(now);
        let mut ctx = vm::Ctx::new(&self.cfg, self.ctx_seed());
        // Observations about an unknown VM (not yet listed) are ignored.
        if let Some(v) = self.vms.get_mut(vm) {
            v.on_input(now, input, &mut ctx, &mut out);
            v.drive(now, &mut ctx, &mut out);
        }
        let effects = ctx.into_effects();
        self.absorb(effects, now, &mut out);
        out
    }

    /// A VM just added: what was known of it before applies now (its
    /// journal history, its domain's state, its agent's open session).
    fn added(&mut self, now: Millis, vm: &str, out: &mut Output) {
        let Some(w) = self.waiting.remove(vm) else {
            return;
        };
        self.seed_destructive(vm, &w.destructive);
        for (f, at) in &w.recovered {
            self.seed_recovered(vm, f, *at);
        }
        if let Some(why) = &w.quarantined {
            let o = self.restore_quarantine(now, vm, why);
            out.records.extend(o.records);
            out.actions.extend(o.actions);
        }
        if let Some(f) = &w.fault {
            let o = self.restore_fault(now, vm, f);
            out.records.extend(o.records);
            out.actions.extend(o.actions);
        }
        let maintenance = w
            .maintenance
            .map(|until| Input::Operator(OperatorCommand::MaintenanceOn { until }));
        for input in w
            .domain
            .map(Input::Domain)
            .into_iter()
            .chain(w.hello.map(|boot_id| Input::Hello { boot_id }))
            .chain(maintenance)
        {
            let o = self.step(now, vm, input);
            out.records.extend(o.records);
            out.actions.extend(o.actions);
        }
    }

    /// Feed a host-wide observation.
    pub fn global(&mut self, now: Millis, g: Global) -> Output {
        let mut out = Output::default();
        match g {
            Global::Disarm => self.armed = false,
            Global::Arm => self.armed = true,
            Global::Tick => {}
            Global::HypervisorSilent { for_ms, lost } => {
                self.hypervisor_silent(now, for_ms, lost, &mut out)
            }
            Global::HypervisorAnswers => self.hypervisor_answers(now, &mut out),
            Global::Stalled { ms } => {
                let why = format!("vigild did not run for {ms} ms: deadlines start over");
                for v in self.vms.values_mut() {
                    v.watchdog_stalled(now, self.cfg.resume_grace_ms, &why, &mut out);
                }
            }
        }
        if self.host_wide_until.is_some_and(|until| now >= until) {
            self.host_wide_until = None;
            // The breaker closes: so does its host-level fault (the VMs'
            // own faults go on on their own).
            if let Some((id, onset, located)) = self.host_wide_fault.take() {
                let (kind, how) = (FaultKind::HostWide, Closure::Cleared);
                let closed = host_level::host_closed(now, id, kind, how, onset, located);
                out.records.push(closed);
            }
        }
        self.prune(now);
        let mut ctx = vm::Ctx::new(&self.cfg, self.ctx_seed());
        for v in self.vms.values_mut() {
            v.tick(now, &mut ctx, &mut out);
            v.drive(now, &mut ctx, &mut out);
        }
        let effects = ctx.into_effects();
        self.absorb(effects, now, &mut out);
        self.host_settle(now, &mut out);
        out
    }

    fn prune(&mut self, now: Millis) {
        while self
            .destructive_recent
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= 60_000)
        {
            self.destructive_recent.pop_front();
        }
        let window = self.cfg.host_wide_window_ms;
        while self
            .recent_faults
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) >= window)
        {
            self.recent_faults.pop_front();
        }
    }

    /// Fold a step's side effects back into host-wide state; trip the
    /// host-wide breaker when many VMs fault together.
    fn absorb(&mut self, fx: vm::Effects, now: Millis, out: &mut Output) {
        self.next_fault = fx.next_fault;
        self.next_action = fx.next_action;
        self.destructive_recent.extend(fx.destructive_started);
        if fx.located.is_empty() {
            return;
        }
        for vm in fx.located {
            if !self.recent_faults.iter().any(|(_, v)| *v == vm) {
                self.recent_faults.push_back((now, vm));
            }
        }
        let monitored = self.vms.values().filter(|v| v.state != State::Off).count();
        let faulted = self.recent_faults.len();
        if self.host_wide_until.is_some()
            || monitored < self.cfg.host_wide_min_vms
            || faulted as f64 <= self.cfg.host_wide_share * monitored as f64
        {
            return;
        }
        self.host_wide_until = Some(now + self.cfg.host_wide_window_ms);
        let affected: Vec<VmId> = self.recent_faults.iter().map(|(_, v)| v.clone()).collect();
        let id = self.next_fault;
        self.next_fault += 1;
        let onset = self.recent_faults.front().map_or(now, |(t, _)| *t);
        self.host_wide_fault = Some((id, onset, now));
        let ev = format!(
            "{faulted} of {monitored} VMs faulted within {} ms: {}",
            self.cfg.host_wide_window_ms,
            affected.join(", ")
        );
        self.host_fault(now, id, FaultKind::HostWide, None, ev, onset, out);
        let mut seed = self.ctx_seed();
        seed.host_wide = true;
        let mut ctx = vm::Ctx::new(&self.cfg, seed);
        for name in affected {
            if let Some(v) = self.vms.get_mut(&name) {
                v.host_wide(now, &mut ctx, out);
            }
        }
        let fx = ctx.into_effects();
        self.next_fault = fx.next_fault;
        self.next_action = fx.next_action;
    }
}

#[cfg(test)]
mod tests;
