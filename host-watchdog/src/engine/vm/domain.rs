//! What the domain's run state means for one VM: started, paused on
//! purpose or not, shut off cleanly or crashed.

use super::*;

/// Actions that stop the domain and start it again (a reset of a crashed
/// domain falls back to destroy and start): the lifecycle events they
/// cause are theirs, not an operator's nor a crash.
pub(crate) fn stops_and_starts(k: &ActionKind) -> bool {
    matches!(
        k,
        ActionKind::DestroyStart
            | ActionKind::SnapshotRevert
            | ActionKind::Reset
            | ActionKind::Reboot
            | ActionKind::Start
            | ActionKind::AskCluster
    )
}

/// How long after such an action's result its stop events may still come
/// (the cluster takes its time: its recovery stops the domain later).
pub(crate) fn own_events_ms(k: &ActionKind) -> Millis {
    match k {
        ActionKind::AskCluster => 120_000,
        _ => 5_000,
    }
}

impl Vm {
    /// When a domain that stopped unasked stopped: the moment its agent's
    /// connection dropped (the VMM's socket goes with the VMM), if it did
    /// so since the last heartbeat; else after the last heartbeat.
    fn stop_onset(&self, now: Millis) -> Onset {
        let last = self.arrivals.last();
        match self.closed_at {
            Some(c) if last.is_none_or(|l| c >= l) => Onset::exact(c),
            _ => Onset::between(last.unwrap_or(now), now),
        }
    }

    pub(super) fn on_domain(
        &mut self,
        now: Millis,
        d: DomainState,
        ctx: &mut Ctx<'_>,
        out: &mut Output,
    ) {
        let was = self.domain;
        // libvirt tells why a disk error paused the guest (no space) on
        // one path and only that it did on another: the plainer word does
        // not undo the precise one.
        let d = match (was, d) {
            (
                DomainState::Paused(PauseReason::NoSpace),
                DomainState::Paused(PauseReason::IoError),
            ) => was,
            _ => d,
        };
        self.domain = d;
        if !matches!(d, DomainState::Paused(_)) {
            self.space_wait = false;
        }
        if matches!(d, DomainState::ShutOff(_) | DomainState::Crashed { .. }) {
            // Off (or crashed): the operator's action is over either way;
            // what follows is judged as a stop.
            self.operator_down = None;
        }
        let ours = self
            .fault
            .as_ref()
            .and_then(|f| f.pending.as_ref())
            .is_some_and(|(_, k)| stops_and_starts(k));
        match d {
            DomainState::Running => {
                // Never seen running nor heard from, first seen paused
                // for no stated reason (libvirt's "starting up" is one):
                // libvirt starts every domain paused and resumes it, and
                // vigild started in between: a start, not a resume (an
                // operator's pause is a resume: its short grace).
                let starting = self.running_seen.is_none()
                    && self.arrivals.last().is_none()
                    && was == DomainState::Paused(PauseReason::Other);
                self.running_seen = Some(now);
                if self.off
                    || starting
                    || matches!(was, DomainState::ShutOff(_) | DomainState::Crashed { .. })
                {
                    self.off = false;
                    self.awaiting_first = true;
                    self.rearm(now, ctx.cfg.boot_grace_ms);
                    self.settle("domain started", out);
                } else if matches!(was, DomainState::Paused(_)) {
                    self.rearm(now, ctx.cfg.resume_grace_ms);
                    self.resumed_at = Some(now);
                    self.settle("domain resumed", out);
                } else {
                    self.settle("domain running", out);
                }
                self.check_cleared(now, ctx, out);
            }
            DomainState::Paused(reason) => {
                self.suspect = None;
                match reason {
                    PauseReason::IoError | PauseReason::NoSpace => {
                        let why = match reason {
                            PauseReason::NoSpace => {
                                "domain paused: the host had no space left for a disk write (ENOSPC)"
                            }
                            _ => "domain paused by a disk I/O error",
                        };
                        self.locate(
                            now,
                            Onset::exact(now),
                            now,
                            FaultKind::HostStorage,
                            None,
                            vec![why.into()],
                            ctx,
                            out,
                        )
                    }
                    PauseReason::Watchdog => self.locate(
                        now,
                        Onset::between(self.arrivals.last().unwrap_or(now), now),
                        now,
                        FaultKind::GuestHang,
                        None,
                        vec!["guest watchdog device fired".into()],
                        ctx,
                        out,
                    ),
                    PauseReason::Panicked => self.locate(
                        now,
                        Onset::exact(now),
                        now,
                        FaultKind::GuestPanic,
                        None,
                        vec!["domain paused: guest panicked".into()],
                        ctx,
                        out,
                    ),
                    _ => self.settle(&format!("domain paused ({reason:?})").to_lowercase(), out),
                }
            }
            DomainState::ShutOff(reason) => {
                self.suspect = None;
                // Stopped by someone (virsh destroy / shutdown outside
                // vigild) is off on purpose unless the VM is to be always
                // on; a VMM that died is a crash.
                let by_operator = matches!(reason, StopReason::Destroyed | StopReason::Shutdown);
                let ours_late = by_operator && self.own_stop_until.is_some_and(|t| now <= t);
                if ours || ours_late {
                    return;
                }
                let crashed = matches!(reason, StopReason::Crashed | StopReason::Failed)
                    || (by_operator && ctx.cfg.restart_stopped_by_operator);
                if crashed && self.maintenance.is_none() {
                    let panicked = self
                        .panic_seen
                        .is_some_and(|t| now.saturating_sub(t) <= PANIC_EXPLAINS_MS);
                    let oom = self
                        .host_oom
                        .take()
                        .filter(|(t, _)| now.saturating_sub(*t) <= HOST_OOM_EXPLAINS_MS);
                    let (kind, line) = if panicked {
                        (
                            FaultKind::GuestPanic,
                            "agent reported a kernel panic before the domain stopped",
                        )
                    } else if oom.is_some() {
                        (
                            FaultKind::HostOom,
                            "the host's OOM killer killed its QEMU, and the domain stopped",
                        )
                    } else {
                        (FaultKind::VmCrashed, "domain shut off without a clean bye")
                    };
                    let reason = format!("{reason:?}").to_lowercase();
                    let mut ev = vec![format!("{line}: {reason}")];
                    ev.extend(oom.map(|(_, l)| format!("host kernel: {l}")));
                    let onset = self.stop_onset(now);
                    self.locate(now, onset, now, kind, None, ev, ctx, out);
                } else {
                    self.off = true;
                    self.close_fault(now, Closure::Withdrawn, out);
                    let why = format!("domain shut off ({reason:?})").to_lowercase();
                    let why = if by_operator {
                        format!("{why}: stopped on purpose, left off")
                    } else {
                        why
                    };
                    self.settle(&why, out);
                }
            }
            DomainState::Crashed { panicked } => {
                self.suspect = None;
                if ours {
                    return;
                }
                let (kind, ev) = if panicked || self.panic_seen.is_some() {
                    (
                        FaultKind::GuestPanic,
                        "domain crashed: guest panicked (pvpanic)",
                    )
                } else {
                    (FaultKind::VmCrashed, "domain crashed")
                };
                let onset = self.stop_onset(now);
                self.locate(now, onset, now, kind, None, vec![ev.into()], ctx, out);
            }
            DomainState::ShuttingDown | DomainState::Unknown => {}
        }
    }
}

/// Resumes for space come back, per VM per hour, at most: a guest that
/// fills whatever space is freed is left paused for an operator.
const SPACE_RESUMES_PER_HOUR: usize = 3;

impl Vm {
    /// The host filesystems under this VM's disks were sampled (mount,
    /// full now). A VM paused because the host had no space for its
    /// writes is resumed once every one of them has space again (never
    /// before); one paused for a device error is not (space is not what
    /// it lacks).
    pub fn host_space(
        &mut self,
        now: Millis,
        fs: &[(&str, bool)],
        ctx: &mut Ctx<'_>,
        out: &mut Output,
    ) {
        let DomainState::Paused(reason @ (PauseReason::NoSpace | PauseReason::IoError)) =
            self.domain
        else {
            return;
        };
        let Some(f) = &self.fault else { return };
        if f.kind != FaultKind::HostStorage || f.pending.is_some() || fs.is_empty() {
            return;
        }
        if fs.iter().any(|(_, full)| *full) {
            self.space_wait = true;
            return;
        }
        if !(reason == PauseReason::NoSpace || self.space_wait)
            || !ctx.armed
            || ctx.hypervisor_silent
            || self.quarantine.is_some()
            || self.maintenance.is_some()
        {
            return;
        }
        self.space_resumes
            .retain(|t| now.saturating_sub(*t) < 3_600_000);
        if self.space_resumes.len() >= SPACE_RESUMES_PER_HOUR {
            if !f.suppressed_noted {
                out.records.push(Record::Suppressed {
                    vm: self.name.clone(),
                    kind: ActionKind::Resume,
                    why: format!(
                        "resumed {SPACE_RESUMES_PER_HOUR} times within the hour for space come back; the guest filled it each time"
                    ),
                });
            }
            if let Some(f) = self.fault.as_mut() {
                f.suppressed_noted = true;
            }
            return;
        }
        let fault = f.id;
        let id = self.side_action(ActionKind::Resume, fault, ctx, out);
        self.space_resumes.push_back(now);
        if let Some(f) = self.fault.as_mut() {
            f.pending = Some((id, ActionKind::Resume));
            f.acted = true;
            f.held = false;
            f.verify_from = now;
            f.verify_until = None;
        }
        let mounts: Vec<&str> = fs.iter().map(|(m, _)| *m).collect();
        self.settle(
            &format!("space is back on {}: resuming", mounts.join(", ")),
            out,
        );
    }
}
