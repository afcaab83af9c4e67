//! One VM's detection state and how each observation moves it.

use std::collections::VecDeque;

use vigil_protocol::snapshot::Snapshot;
use vigil_protocol::{ByeReason, Notice};

use super::config::EngineConfig;
use super::detect::Arrivals;
use super::evidence;
use super::model::*;

mod domain;
mod fault;
mod silence;

/// How long before silence a reported panic/oops still explains it.
const PANIC_EXPLAINS_MS: Millis = 30_000;
/// Recovered faults remembered for recurrence (kinds × a few subjects).
const MAX_RECOVERED: usize = 32;
/// Longest wait for a stats sample before calling a hang without one.
const STATS_WAIT_MS: Millis = 10_000;

/// Step-wide context: settings and host-wide counters.
pub(super) struct Ctx<'a> {
    pub cfg: &'a EngineConfig,
    pub armed: bool,
    pub host_wide: bool,
    next_fault: u64,
    next_action: u64,
    destructive_recent: usize,
    destructive_started: Vec<Millis>,
    located: Vec<VmId>,
}

/// What a step changed host-wide.
pub(super) struct Effects {
    pub next_fault: u64,
    pub next_action: u64,
    pub destructive_started: Vec<Millis>,
    pub located: Vec<VmId>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        cfg: &'a EngineConfig,
        armed: bool,
        host_wide: bool,
        next_fault: u64,
        next_action: u64,
        destructive_recent: usize,
    ) -> Ctx<'a> {
        Ctx {
            cfg,
            armed,
            host_wide,
            next_fault,
            next_action,
            destructive_recent,
            destructive_started: Vec::new(),
            located: Vec::new(),
        }
    }

    pub fn into_effects(self) -> Effects {
        Effects {
            next_fault: self.next_fault,
            next_action: self.next_action,
            destructive_started: self.destructive_started,
            located: self.located,
        }
    }

    pub fn fault_id(&mut self) -> u64 {
        self.next_fault += 1;
        self.next_fault - 1
    }

    pub fn action_id(&mut self) -> u64 {
        self.next_action += 1;
        self.next_action - 1
    }

    /// Destructive actions host-wide in the last minute, this step included.
    pub fn destructive_last_minute(&self) -> usize {
        self.destructive_recent + self.destructive_started.len()
    }

    pub fn started_destructive(&mut self, now: Millis) {
        self.destructive_started.push(now);
    }
}

/// Silence being corroborated.
#[derive(Debug, Clone)]
pub(super) struct Suspicion {
    /// When suspicion began.
    pub since: Millis,
    /// Last sign of health.
    pub onset: Millis,
    /// Why.
    pub cause: String,
    /// Counters when suspicion began.
    pub baseline: Option<DomainStats>,
    /// Liveness probe result, once it is in.
    pub probe: Option<ProbeResult>,
}

/// The fault being handled.
#[derive(Debug, Clone)]
pub(super) struct ActiveFault {
    pub id: u64,
    pub kind: FaultKind,
    pub subject: Option<String>,
    pub onset: Millis,
    pub detected: Millis,
    pub located: Millis,
    pub rung: usize,
    pub attempt: u32,
    /// Action in flight.
    pub pending: Option<(u64, ActionKind)>,
    /// Verifying until then.
    pub verify_until: Option<Millis>,
    /// Recovery evidence must be newer than this.
    pub verify_from: Millis,
    /// Next rung attempt not before.
    pub next_try_at: Millis,
    /// Ladder exhausted with `hold`: wait for the condition to clear.
    pub held: bool,
    /// Some recovery action ran.
    pub acted: bool,
    /// A suppression was already recorded for this attempt.
    pub suppressed_noted: bool,
}

/// One monitored VM.
#[derive(Debug)]
pub(super) struct Vm {
    pub name: VmId,
    pub state: State,
    pub agent: bool,
    pub domain: DomainState,
    pub memory_kib: (u64, u64),
    pub arrivals: Arrivals,
    /// Deadlines do not fire before this.
    pub grace_until: Millis,
    /// Waiting for the first heartbeat since a (re)boot.
    pub awaiting_first: bool,
    pub session_open: bool,
    pub clean_bye: Option<ByeReason>,
    pub boot_id: Option<String>,
    pub stats: Option<(Millis, DomainStats)>,
    /// When the domain was last seen running.
    pub running_seen: Option<Millis>,
    pub last_report: Option<Millis>,
    pub suspect: Option<Suspicion>,
    pub fault: Option<ActiveFault>,
    pub maintenance: Option<Option<Millis>>,
    pub quarantined: bool,
    pub off: bool,
    pub pressure_streak: u32,
    pub panic_seen: Option<Millis>,
    pub destructive_log: VecDeque<Millis>,
    /// Faults recovery actions closed within the recurrence window, and
    /// where on their ladders (one per kind and subject, at most
    /// `MAX_RECOVERED`).
    pub recovered: VecDeque<Recovered>,
}

/// Where the last recovered fault's ladder stood when it closed.
#[derive(Debug, Clone)]
pub(super) struct Recovered {
    pub id: u64,
    pub kind: FaultKind,
    pub subject: Option<String>,
    pub rung: usize,
    pub attempt: u32,
    pub at: Millis,
}

impl Vm {
    pub fn new(name: &str, now: Millis, cfg: &EngineConfig) -> Vm {
        Vm {
            name: name.to_string(),
            state: State::Discovering,
            agent: true,
            domain: DomainState::Unknown,
            memory_kib: (0, 0),
            arrivals: Arrivals::default(),
            grace_until: now + cfg.boot_grace_ms,
            awaiting_first: true,
            session_open: false,
            clean_bye: None,
            boot_id: None,
            stats: None,
            running_seen: None,
            last_report: None,
            suspect: None,
            fault: None,
            maintenance: None,
            quarantined: false,
            off: false,
            pressure_streak: 0,
            panic_seen: None,
            destructive_log: VecDeque::new(),
            recovered: VecDeque::new(),
        }
    }

    /// The state the facts say this VM is in.
    fn derive(&self) -> State {
        let paused_on_purpose = self.paused_on_purpose();
        if self.quarantined {
            State::Quarantined
        } else if self.maintenance.is_some() {
            State::Maintenance
        } else if self.off {
            State::Off
        } else if let Some(f) = &self.fault {
            if f.pending.is_some() || f.verify_until.is_some() {
                State::Recovering
            } else {
                State::Faulted
            }
        } else if paused_on_purpose {
            State::Paused
        } else if self.suspect.is_some() {
            State::Suspect
        } else if self.awaiting_first && (self.agent || self.domain != DomainState::Running) {
            State::Discovering
        } else {
            State::Healthy
        }
    }

    /// Record a transition if the facts changed the state.
    pub fn settle(&mut self, why: &str, out: &mut Output) {
        let to = self.derive();
        if to != self.state {
            out.records.push(Record::Transition {
                vm: self.name.clone(),
                from: self.state,
                to,
                why: why.to_string(),
            });
            self.state = to;
        }
    }

    /// Paused on purpose (not for a fault).
    pub fn paused_on_purpose(&self) -> bool {
        matches!(
            self.domain,
            DomainState::Paused(
                PauseReason::User
                    | PauseReason::Migration
                    | PauseReason::Save
                    | PauseReason::Snapshot
                    | PauseReason::Other
            )
        )
    }

    /// Frozen: no deadlines, no actions.
    pub fn frozen(&self) -> bool {
        self.maintenance.is_some() || self.quarantined || self.off || self.paused_on_purpose()
    }

    /// When silence becomes suspect, if heartbeats are expected now.
    fn deadline(&self, cfg: &EngineConfig) -> Option<Millis> {
        if !self.agent || self.domain != DomainState::Running || self.frozen() {
            return None;
        }
        // Until the first heartbeat after a (re)boot or a freeze, the grace
        // is the deadline; after it, the learned bound.
        match self.arrivals.last() {
            None => Some(self.grace_until),
            Some(last) => Some(last + self.arrivals.bound(cfg)),
        }
    }

    fn rearm(&mut self, now: Millis, grace: Millis) {
        self.grace_until = now + grace;
        self.arrivals.forget_last();
        self.suspect = None;
    }

    pub fn on_input(&mut self, now: Millis, input: Input, ctx: &mut Ctx<'_>, out: &mut Output) {
        match input {
            Input::VmAdded { .. } | Input::VmRemoved => {}
            Input::SessionOpened => {}
            Input::Hello { boot_id } => {
                if self.boot_id.as_deref().is_some_and(|b| b != boot_id) {
                    self.awaiting_first = true;
                }
                self.boot_id = Some(boot_id);
                self.session_open = true;
                self.clean_bye = None;
                // Alive now; the first heartbeat is due within the timeout.
                self.arrivals.forget_last();
                self.grace_until = self.grace_until.max(now + ctx.cfg.heartbeat_timeout_ms);
                if self.suspect.take().is_some() {
                    self.settle("agent reconnected", out);
                }
                self.check_cleared(now, ctx, out);
            }
            Input::Heartbeat { .. } => {
                self.arrivals.observe(now, ctx.cfg.heartbeat_interval_ms);
                let first = std::mem::take(&mut self.awaiting_first);
                if let Some(s) = self.suspect.take() {
                    let why = format!("heartbeat resumed after {} ms", now.saturating_sub(s.onset));
                    self.settle(&why, out);
                } else if first {
                    self.settle("first heartbeat", out);
                }
                self.check_cleared(now, ctx, out);
            }
            Input::Report(snapshot) => self.on_report(now, &snapshot, ctx, out),
            Input::Notice(Notice::MaintenanceStart { duration_s, .. }) => {
                let ms = (u64::from(duration_s) * 1000).min(ctx.cfg.max_guest_maintenance_ms);
                self.maintenance = Some(Some(now + ms));
                self.suspect = None;
                self.settle("guest declared maintenance", out);
            }
            Input::Notice(Notice::MaintenanceEnd) => {
                self.end_maintenance(now, ctx, "guest ended maintenance", out)
            }
            Input::Notice(Notice::Ready) => {}
            Input::Bye(reason) => {
                // A clean goodbye is not silence, but it is not forever:
                // the guest is expected back (or off) within a grace that
                // depends on why it left.
                let grace = match reason {
                    ByeReason::Reboot => {
                        self.awaiting_first = true;
                        ctx.cfg.boot_grace_ms
                    }
                    ByeReason::Shutdown => ctx.cfg.shutdown_grace_ms,
                    ByeReason::Stopped | ByeReason::Other(_) => ctx.cfg.agent_stopped_grace_ms,
                };
                let had_suspect = self.suspect.is_some();
                self.rearm(now, grace);
                self.clean_bye = Some(reason);
                if had_suspect {
                    self.settle("agent said bye", out);
                }
            }
            Input::SessionClosed => {
                self.session_open = false;
                if self.clean_bye.is_none()
                    && self.agent
                    && self.domain == DomainState::Running
                    && !self.frozen()
                {
                    let onset = self.arrivals.last().unwrap_or(now);
                    self.suspect(
                        now,
                        onset,
                        "agent connection closed without bye".into(),
                        ctx,
                        out,
                    );
                }
            }
            Input::Domain(d) => self.on_domain(now, d, ctx, out),
            Input::Rebooted => {
                self.awaiting_first = true;
                self.rearm(now, ctx.cfg.boot_grace_ms);
                self.settle("guest rebooted", out);
            }
            Input::Stats(s) => self.stats = Some((now, s)),
            Input::Probe(r) => {
                if let Some(s) = self.suspect.as_mut() {
                    s.probe = Some(r);
                }
            }
            Input::Operator(OperatorCommand::MaintenanceOn { until }) => {
                self.maintenance = Some(until);
                self.suspect = None;
                self.settle("operator maintenance", out);
            }
            Input::Operator(OperatorCommand::MaintenanceOff) => {
                self.end_maintenance(now, ctx, "operator ended maintenance", out)
            }
            Input::Operator(OperatorCommand::Release) => {
                self.recovered.clear(); // the operator starts every ladder over
                if self.quarantined {
                    self.quarantined = false;
                    self.destructive_log.clear();
                    self.close_fault(now, Closure::Released, out);
                    self.rearm(now, ctx.cfg.resume_grace_ms);
                    self.settle("operator released", out);
                    // Start over from what the hypervisor shows now: a domain
                    // still crashed or off is a fault again, with a fresh ladder.
                    if matches!(
                        self.domain,
                        DomainState::Crashed { .. } | DomainState::ShutOff(_)
                    ) {
                        self.on_domain(now, self.domain, ctx, out);
                    }
                }
            }
            Input::ActionDone { id, ok, detail } => {
                self.on_action_done(now, id, ok, detail, ctx, out)
            }
        }
    }

    fn end_maintenance(&mut self, now: Millis, ctx: &mut Ctx<'_>, why: &str, out: &mut Output) {
        if self.maintenance.take().is_some() {
            self.rearm(now, ctx.cfg.resume_grace_ms);
            self.settle(why, out);
        }
    }

    fn on_report(&mut self, now: Millis, s: &Snapshot, ctx: &mut Ctx<'_>, out: &mut Output) {
        self.last_report = Some(now);
        if evidence::panicking(s) {
            self.panic_seen = Some(now);
        }
        let mut conds = evidence::conditions(s, ctx.cfg);
        match evidence::memory_pressure(s, ctx.cfg) {
            Some(p) => {
                self.pressure_streak += 1;
                if self.pressure_streak >= ctx.cfg.memory_pressure_reports {
                    conds.push(evidence::Condition {
                        kind: FaultKind::MemoryExhaustion,
                        subject: None,
                        evidence: format!(
                            "memory pressure {}.{:02}% for {} reports",
                            p / 100,
                            p % 100,
                            self.pressure_streak
                        ),
                    });
                }
            }
            None => self.pressure_streak = 0,
        }
        // Is the active agent-evidence fault still shown?
        if let Some(f) = &self.fault {
            let agent_kind = matches!(
                f.kind,
                FaultKind::ServiceDown
                    | FaultKind::DiskFull
                    | FaultKind::FsReadonly
                    | FaultKind::IoErrors
                    | FaultKind::MemoryExhaustion
                    | FaultKind::KernelDegraded
            );
            let still = conds.iter().any(|c| {
                c.kind == f.kind
                    && (f.subject.is_none() || c.subject.is_none() || c.subject == f.subject)
            });
            if agent_kind && !still && now > f.verify_from {
                let how = if f.acted {
                    Closure::Recovered
                } else {
                    Closure::Cleared
                };
                let why = format!("{} cleared", f.kind);
                self.close_fault(now, how, out);
                self.settle(&why, out);
            }
        }
        if self.frozen() {
            return;
        }
        conds.sort_by_key(|c| std::cmp::Reverse(c.kind.severity()));
        if let Some(c) = conds.into_iter().next() {
            let onset = now.saturating_sub(ctx.cfg.heartbeat_interval_ms);
            self.locate(
                now,
                onset,
                now,
                c.kind,
                c.subject,
                vec![c.evidence],
                ctx,
                out,
            );
        }
    }

    /// Liveness faults clear when the VM shows life after detection.
    pub fn check_cleared(&mut self, now: Millis, _ctx: &mut Ctx<'_>, out: &mut Output) {
        let Some(f) = &self.fault else { return };
        if !self.liveness_fault() {
            return;
        }
        let alive = if self.agent {
            self.arrivals
                .last()
                .is_some_and(|t| t > f.verify_from && t > f.detected)
                && self.domain == DomainState::Running
                && self.session_open
        } else {
            self.running_seen
                .is_some_and(|t| t > f.verify_from && t > f.detected)
                && self.domain == DomainState::Running
        };
        if alive {
            let how = if f.acted {
                Closure::Recovered
            } else {
                Closure::Cleared
            };
            let why = format!(
                "{} {}",
                f.kind,
                if f.acted { "recovered" } else { "cleared" }
            );
            self.close_fault(now, how, out);
            self.settle(&why, out);
        }
    }
}
