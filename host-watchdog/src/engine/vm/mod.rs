//! One VM's detection state and how each observation moves it.

use std::collections::{BTreeSet, VecDeque};

use vigil_protocol::snapshot::Snapshot;
use vigil_protocol::{ByeReason, Notice};

use super::config::EngineConfig;
use super::detect::Arrivals;
use super::evidence;
use super::model::*;

pub(super) mod domain;
mod fault;
mod input;
pub use input::maintenance_until;
mod network;
mod report;
mod silence;

/// How long before silence a reported panic/oops still explains it.
const PANIC_EXPLAINS_MS: Millis = 30_000;
/// How long before a domain's stop a host OOM kill of its QEMU explains
/// it (the kernel logs the kill before the process dies; libvirt's event
/// follows within milliseconds).
const HOST_OOM_EXPLAINS_MS: Millis = 10_000;
/// Recovered faults remembered for recurrence (kinds × a few subjects).
const MAX_RECOVERED: usize = 32;
/// Longest wait for a stats sample before calling a hang without one.
const STATS_WAIT_MS: Millis = 10_000;
/// The least time between the baseline and the sample compared with it
/// (vCPU time over a shorter span says little).
const MIN_SAMPLE_SPAN_MS: Millis = 900;

/// Step-wide context: settings and host-wide counters.
pub(super) struct Ctx<'a> {
    pub cfg: &'a EngineConfig,
    pub armed: bool,
    pub host_wide: bool,
    /// The hypervisor does not answer: no destructive action anywhere.
    pub hypervisor_silent: bool,
    /// Open host-level faults, in words, with the VMs each touches (none:
    /// all): named in the evidence of a fault a VM they touch is located
    /// with.
    pub host_open: std::sync::Arc<[(String, Option<Vec<VmId>>)]>,
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

/// What a step's context starts from (the engine's host-wide state).
pub(super) struct CtxSeed {
    pub armed: bool,
    pub host_wide: bool,
    pub hypervisor_silent: bool,
    pub host_open: std::sync::Arc<[(String, Option<Vec<VmId>>)]>,
    pub next_fault: u64,
    pub next_action: u64,
    pub destructive_recent: usize,
}

impl<'a> Ctx<'a> {
    pub fn new(cfg: &'a EngineConfig, seed: CtxSeed) -> Ctx<'a> {
        Ctx {
            cfg,
            armed: seed.armed,
            host_wide: seed.host_wide,
            hypervisor_silent: seed.hypervisor_silent,
            host_open: seed.host_open,
            next_fault: seed.next_fault,
            next_action: seed.next_action,
            destructive_recent: seed.destructive_recent,
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
    /// Last sign of health (and how late the silence may have begun).
    pub onset: Onset,
    /// Why.
    pub cause: String,
    /// Counters when suspicion began, and when they were taken.
    pub baseline: Option<(Millis, DomainStats)>,
    /// Liveness probe result, once it is in.
    pub probe: Option<ProbeResult>,
    /// The agent's connection closed (rather than going quiet).
    pub closed: bool,
}

/// When a fault began: at the earliest `at`, at the latest `at + window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Onset {
    pub at: Millis,
    pub window: Millis,
}

impl Onset {
    /// Known to the millisecond (a kernel log time, a lifecycle event).
    pub fn exact(at: Millis) -> Onset {
        Onset { at, window: 0 }
    }

    /// Somewhere between `from` and `to`.
    pub fn between(from: Millis, to: Millis) -> Onset {
        let at = from.min(to);
        Onset {
            at,
            window: to - at,
        }
    }
}

/// From this many flaps on, a fault that clears stays open until it has
/// stayed away for the flap window (before that, each clearing closes it
/// and each return reopens it, journaled).
pub(super) const FLAPS_HELD_OPEN: u32 = 3;

/// The fault being handled.
#[derive(Debug, Clone)]
pub(super) struct ActiveFault {
    pub id: u64,
    pub kind: FaultKind,
    pub subject: Option<String>,
    pub onset: Millis,
    /// Evidence of it last seen (a repeated kernel line, a report showing
    /// the state): event-based faults close only after a quiet period.
    pub last_seen: Millis,
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
    /// Times it came back within the flap window.
    pub flaps: u32,
    /// A flapping fault whose condition is gone: since when.
    pub quiet_since: Option<Millis>,
    /// When it last came back.
    pub reopened_at: Option<Millis>,
}

/// One monitored VM.
#[derive(Debug)]
pub(super) struct Vm {
    pub name: VmId,
    pub state: State,
    pub agent: bool,
    /// A cluster resource: hypervisor-level rungs ask the cluster.
    pub cluster: bool,
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
    /// Watched services seen running in this boot.
    pub services_seen: BTreeSet<String>,
    pub stats: Option<(Millis, DomainStats)>,
    /// When the domain was last seen running.
    pub running_seen: Option<Millis>,
    pub last_report: Option<Millis>,
    pub suspect: Option<Suspicion>,
    pub fault: Option<ActiveFault>,
    pub maintenance: Option<Option<Millis>>,
    /// No actions until an operator's release; detection goes on, and new
    /// faults are journaled and alerted.
    /// Quarantined, and why (what the operator releases it from).
    pub quarantine: Option<String>,
    pub off: bool,
    /// Host clock minus guest clock (ms), the least seen since the last
    /// (re)connect or resume: maps guest times onto the host's.
    pub clock_offset: Option<i64>,
    /// Host time of the last report's snapshot (when the agent looked).
    pub last_observed: Option<Millis>,
    /// For the active event-based fault: the state its events point to,
    /// while the last report still showed it.
    pub linger: Option<String>,
    /// When the agent's connection last closed without a bye.
    pub closed_at: Option<Millis>,
    /// When the domain last resumed from a pause.
    pub resumed_at: Option<Millis>,
    /// When monitoring began (this vigild's start, or the VM's definition).
    pub added_at: Millis,
    pub pressure_streak: u32,
    /// The last report's memory stall counter.
    pub mem_stall: Option<evidence::StallCounter>,
    pub panic_seen: Option<Millis>,
    /// When the host's OOM killer killed this VM's QEMU, and its line.
    pub host_oom: Option<(Millis, String)>,
    /// Paused for an I/O error while a filesystem under its disks was
    /// full: it waits for space (see `host_space`).
    pub space_wait: bool,
    /// When it was resumed because space came back (bounded per hour).
    pub space_resumes: VecDeque<Millis>,
    /// Until then a shut-off "destroyed" or "shutdown" is the doing of an
    /// action of ours that just finished: the hypervisor's lifecycle
    /// events come on their own path and may arrive after the result.
    pub own_stop_until: Option<Millis>,
    /// An operator's action that takes the guest down (a reboot, a reset,
    /// a shutdown): its id, and until when what it causes is expected —
    /// services stopping, silence, a close without a bye. No fault is
    /// taken from them until the guest is back or off, the action failed,
    /// or the boot grace passed.
    pub operator_down: Option<(u64, Millis)>,
    /// The last fault closed (cleared or recovered), and when: reopened if
    /// it comes back within the flap window.
    pub last_closed: Option<(ActiveFault, Millis)>,
    pub destructive_log: VecDeque<Millis>,
    /// Faults recovery actions closed within the recurrence window, and
    /// where on their ladders (one per kind and subject, at most
    /// `MAX_RECOVERED`).
    pub recovered: VecDeque<Recovered>,
    /// Its network as the guest and the host show it.
    pub net: super::network::NetView,
    /// Trends and open warnings.
    pub warn: super::warn::Trends,
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
            cluster: false,
            domain: DomainState::Unknown,
            memory_kib: (0, 0),
            arrivals: Arrivals::default(),
            grace_until: now + cfg.boot_grace_ms,
            awaiting_first: true,
            session_open: false,
            clean_bye: None,
            boot_id: None,
            services_seen: BTreeSet::new(),
            stats: None,
            running_seen: None,
            last_report: None,
            suspect: None,
            fault: None,
            maintenance: None,
            quarantine: None,
            off: false,
            clock_offset: None,
            last_observed: None,
            linger: None,
            closed_at: None,
            resumed_at: None,
            added_at: now,
            pressure_streak: 0,
            mem_stall: None,
            panic_seen: None,
            host_oom: None,
            space_wait: false,
            space_resumes: VecDeque::new(),
            own_stop_until: None,
            operator_down: None,
            last_closed: None,
            destructive_log: VecDeque::new(),
            recovered: VecDeque::new(),
            net: Default::default(),
            warn: Default::default(),
        }
    }

    /// The state the facts say this VM is in.
    fn derive(&self) -> State {
        let paused_on_purpose = self.paused_on_purpose();
        if self.quarantine.is_some() {
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

    /// Whether the VM is all right or being put right by its ladder (true),
    /// or faulted beyond what vigild can do (false: quarantined, ladder
    /// exhausted, an expected agent absent past its boot grace), and why:
    /// what a cluster's monitor asks.
    pub fn health_verdict(&self, now: Millis) -> (bool, String) {
        if self.quarantine.is_some() {
            return (false, "quarantined: no more repairs until released".into());
        }
        if let Some(f) = &self.fault {
            if f.held {
                let why = format!("fault #{} {} holds: its ladder is exhausted", f.id, f.kind);
                return (false, why);
            }
            return (true, format!("fault #{} {} being repaired", f.id, f.kind));
        }
        let running = self.domain == DomainState::Running;
        if self.agent && self.awaiting_first && running && now >= self.grace_until {
            return (
                false,
                "agent expected, none heard since the boot grace ended".into(),
            );
        }
        (true, self.state.name().to_string())
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

    /// Frozen: no deadlines, no faults from reports, no actions.
    /// (Quarantine is not frozen: it stops actions, never seeing.)
    pub fn frozen(&self) -> bool {
        self.maintenance.is_some()
            || self.off
            || self.paused_on_purpose()
            || self.operator_down.is_some()
    }

    /// The operator's action that took the guest down is over: the guest
    /// is back or off (the paths that say so rearm), or it failed, or its
    /// window passed (then silence counts again from now).
    pub fn operator_down_over(
        &mut self,
        now: Millis,
        grace: Option<Millis>,
        why: &str,
        out: &mut Output,
    ) {
        if self.operator_down.take().is_some() {
            if let Some(g) = grace {
                self.rearm(now, g);
            }
            self.settle(why, out);
        }
    }

    /// A guest time (ms since its boot) on the host's clock, once the
    /// offset is known; never later than `now`.
    pub fn host_time(&self, guest_ms: u64, now: Millis) -> Option<Millis> {
        let off = self.clock_offset?;
        let t = i64::try_from(guest_ms).ok()?.saturating_add(off);
        Some(u64::try_from(t.max(0)).unwrap_or(0).min(now))
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

    /// The watchdog did not run for a while: no deadline is judged on that
    /// time; suspicion begun from it is dropped.
    pub fn watchdog_stalled(&mut self, now: Millis, grace: Millis, why: &str, out: &mut Output) {
        if self.frozen() {
            return;
        }
        self.grace_until = self.grace_until.max(now + grace);
        self.arrivals.forget_last();
        if self.suspect.take().is_some() {
            self.settle(why, out);
        }
    }

    fn rearm(&mut self, now: Millis, grace: Millis) {
        self.grace_until = now + grace;
        self.arrivals.forget_last();
        self.suspect = None;
        // The guest's clock may have stood still (pause) or restarted.
        self.clock_offset = None;
    }
}
