//! Deciding: walk a fault's escalation ladder, with a budget per rung,
//! exponential backoff, the per-VM destructive budget, the host-wide cap and
//! breaker, and quarantine or hold when the ladder is exhausted.

use super::config::{action_of, Exhausted};
use super::model::*;
use super::vm::{domain, Ctx, Vm};

/// Actions that only inform: taken even when disarmed or host-wide.
fn informative(k: &ActionKind) -> bool {
    matches!(
        k,
        ActionKind::Alert | ActionKind::CaptureEvidence | ActionKind::LivenessProbe
    )
}

impl Vm {
    /// Take the next recovery step if one is due.
    pub fn drive(&mut self, now: Millis, ctx: &mut Ctx<'_>, out: &mut Output) {
        // Corroboration can complete on any input (probe result, stats).
        self.corroborate(now, ctx, out);
        // A flapping fault that went quiet takes no step; it closes once
        // it stayed away for the flap window.
        if let Some(q) = self.fault.as_ref().and_then(|f| f.quiet_since) {
            if now.saturating_sub(q) >= ctx.cfg.flap_window_ms {
                self.close_quiet(now, out);
            }
            return;
        }
        for _ in 0..8 {
            if self.frozen() || self.quarantine.is_some() {
                return;
            }
            let Some(f) = &self.fault else { return };
            if f.held || f.pending.is_some() {
                return;
            }
            if let Some(until) = f.verify_until {
                if now < until {
                    return;
                }
                // An event-based fault whose events did not come back
                // within the window, with nothing behind them still shown,
                // was repaired.
                if f.acted
                    && f.kind.basis() == Basis::Event
                    && f.last_seen <= f.verify_from
                    && self.linger.is_none()
                {
                    self.close_verified(now, "no recurrence within the verification window", out);
                    return;
                }
                let why = format!("{} not recovered within the verification window", f.kind);
                self.escalate(now, &why, ctx, out);
                continue;
            }
            if now < f.next_try_at {
                return;
            }
            if !self.run_rung(now, ctx, out) {
                return;
            }
        }
    }

    /// Verification failed early: escalate at once.
    pub fn escalate_now(&mut self, now: Millis, why: &str, ctx: &mut Ctx<'_>, out: &mut Output) {
        self.escalate(now, why, ctx, out);
        self.drive(now, ctx, out);
    }

    /// Move to the next attempt or rung; quarantine or hold at the end.
    pub(super) fn escalate(&mut self, now: Millis, why: &str, ctx: &mut Ctx<'_>, out: &mut Output) {
        let Some(f) = self.fault.as_mut() else { return };
        let Some(ladder) = ctx.cfg.ladder(f.kind) else {
            return;
        };
        f.verify_until = None;
        f.suppressed_noted = false;
        let attempts = ladder.rungs.get(f.rung).map_or(0, |r| r.attempts);
        if f.attempt < attempts {
            let backoff = ladder.rungs[f.rung].backoff_ms;
            f.next_try_at = now + backoff.saturating_mul(1 << (f.attempt - 1).min(16));
            f.attempt += 1;
        } else {
            f.rung += 1;
            f.attempt = 1;
            f.next_try_at = now;
        }
        if f.rung < ladder.rungs.len() {
            self.settle(why, out);
            return;
        }
        match ladder.exhausted {
            Exhausted::Hold => {
                f.held = true;
                self.settle(&format!("{why}; ladder exhausted, holding"), out);
            }
            Exhausted::Quarantine => {
                self.quarantine(now, &format!("{why}; ladder exhausted"), ctx, out)
            }
        }
    }

    fn quarantine(&mut self, _now: Millis, why: &str, ctx: &mut Ctx<'_>, out: &mut Output) {
        if self.quarantine.is_some() {
            // Evidence and the alert were taken when it was quarantined.
            self.settle(why, out);
            return;
        }
        self.quarantine = Some(why.to_string());
        let fault = self.fault.as_ref().map_or(0, |f| f.id);
        for kind in [ActionKind::CaptureEvidence, ActionKind::Alert] {
            self.side_action(kind, fault, ctx, out);
        }
        self.settle(why, out);
    }

    /// Journal and emit an action outside the ladder (evidence capture,
    /// quarantine alert, an operator's): intent first, like every action.
    /// Returns its id.
    pub fn side_action(
        &mut self,
        kind: ActionKind,
        fault: u64,
        ctx: &mut Ctx<'_>,
        out: &mut Output,
    ) -> u64 {
        let action = Action {
            id: ctx.action_id(),
            vm: self.name.clone(),
            kind,
            fault,
            memory_kib: None,
        };
        out.records.push(Record::Intent {
            vm: self.name.clone(),
            action: action.clone(),
            rung: None,
            attempt: 1,
        });
        let id = action.id;
        out.actions.push(action);
        id
    }

    fn suppress(
        &mut self,
        now: Millis,
        kind: ActionKind,
        why: String,
        retry_ms: Millis,
        out: &mut Output,
    ) {
        if let Some(f) = self.fault.as_mut() {
            f.next_try_at = now + retry_ms;
            if f.suppressed_noted {
                return;
            }
            f.suppressed_noted = true;
        }
        out.records.push(Record::Suppressed {
            vm: self.name.clone(),
            kind,
            why,
        });
    }

    /// Run the current rung. Returns true when it moved on without an
    /// action (skipped rung), so the caller should look again.
    fn run_rung(&mut self, now: Millis, ctx: &mut Ctx<'_>, out: &mut Output) -> bool {
        let Some(f) = self.fault.as_ref() else {
            return false;
        };
        let Some(rung) = ctx
            .cfg
            .ladder(f.kind)
            .and_then(|l| l.rungs.get(f.rung))
            .cloned()
        else {
            return false;
        };
        let (rung_idx, attempt, fault_id) = (f.rung, f.attempt, f.id);
        let Some(mut kind) = action_of(&rung.action, f.subject.as_deref()) else {
            self.escalate(
                now,
                &format!("rung {} has nothing to act on", rung.action),
                ctx,
                out,
            );
            return true;
        };
        // A cluster resource is started, stopped and moved by the cluster
        // only: a rung that would do so asks the cluster instead.
        if self.cluster && domain::stops_and_starts(&kind) {
            kind = ActionKind::AskCluster;
        }
        if kind.needs_agent() && !(self.session_open && self.domain == DomainState::Running) {
            out.records.push(Record::Suppressed {
                vm: self.name.clone(),
                kind,
                why: "agent not connected".into(),
            });
            self.skip_rung(now, "agent not connected", ctx, out);
            return true;
        }
        let mut memory_kib = None;
        if kind == ActionKind::AddMemory {
            let (cur, max) = self.memory_kib;
            let step = cur * u64::from(ctx.cfg.memory_step_percent) / 100;
            if cur >= max || step == 0 {
                out.records.push(Record::Suppressed {
                    vm: self.name.clone(),
                    kind,
                    why: format!("memory at maximum ({max} KiB)"),
                });
                self.skip_rung(now, "memory at maximum", ctx, out);
                return true;
            }
            memory_kib = Some((cur + step).min(max));
        }
        if !informative(&kind) {
            if !ctx.armed {
                self.suppress(now, kind, "disarmed".into(), 1_000, out);
                return false;
            }
            if ctx.host_wide {
                self.suppress(now, kind, "host-wide event in progress".into(), 1_000, out);
                return false;
            }
            // Blind: nothing destructive, and no call to a hypervisor
            // that cannot take it (it would fail and climb the ladder on
            // the hypervisor's account, not the fault's).
            if ctx.hypervisor_silent && (kind.is_destructive() || kind.through_hypervisor()) {
                let why = "the hypervisor does not answer: not acting blind".into();
                self.suppress(now, kind, why, 1_000, out);
                return false;
            }
        }
        if kind.is_destructive() {
            let from_silence = matches!(
                self.fault.as_ref().map(|f| f.kind),
                Some(FaultKind::GuestHang | FaultKind::VcpuStalled | FaultKind::AgentDown)
            );
            let hold_until = self
                .fault
                .as_ref()
                .map_or(now, |f| f.located + ctx.cfg.destructive_holdoff_ms);
            if from_silence && now < hold_until {
                if let Some(f) = self.fault.as_mut() {
                    f.next_try_at = hold_until;
                }
                return false;
            }
            let window = ctx.cfg.reset_window_ms;
            while self
                .destructive_log
                .front()
                .is_some_and(|t| now.saturating_sub(*t) >= window)
            {
                self.destructive_log.pop_front();
            }
            if self.destructive_log.len() as u32 >= ctx.cfg.reset_budget {
                let why = format!(
                    "{} destructive actions within {} s: budget exhausted",
                    self.destructive_log.len(),
                    window / 1000
                );
                out.records.push(Record::Suppressed {
                    vm: self.name.clone(),
                    kind,
                    why: why.clone(),
                });
                self.quarantine(now, &why, ctx, out);
                return false;
            }
            if ctx.destructive_last_minute() >= ctx.cfg.destructive_per_minute as usize {
                let why = format!(
                    "host-wide cap of {} destructive actions per minute",
                    ctx.cfg.destructive_per_minute
                );
                self.suppress(now, kind, why, 5_000, out);
                return false;
            }
            self.destructive_log.push_back(now);
            ctx.started_destructive(now);
        }
        let action = Action {
            id: ctx.action_id(),
            vm: self.name.clone(),
            kind: kind.clone(),
            fault: fault_id,
            memory_kib,
        };
        out.records.push(Record::Intent {
            vm: self.name.clone(),
            action: action.clone(),
            rung: Some(rung_idx),
            attempt,
        });
        out.actions.push(action.clone());
        if let Some(f) = self.fault.as_mut() {
            f.pending = Some((action.id, kind));
            f.verify_from = now;
            f.acted |= !informative(&action.kind);
            f.suppressed_noted = false;
        }
        self.settle(&format!("{} started", action.kind), out);
        false
    }

    fn skip_rung(&mut self, now: Millis, why: &str, ctx: &mut Ctx<'_>, out: &mut Output) {
        if let Some(f) = self.fault.as_mut() {
            if let Some(attempts) = ctx
                .cfg
                .ladder(f.kind)
                .and_then(|l| l.rungs.get(f.rung))
                .map(|r| r.attempts)
            {
                f.attempt = attempts; // no further attempts on this rung
            }
        }
        self.escalate(now, why, ctx, out);
    }

    /// An action finished: start verifying, or escalate on failure.
    pub fn on_action_done(
        &mut self,
        now: Millis,
        id: u64,
        ok: bool,
        detail: String,
        ctx: &mut Ctx<'_>,
        out: &mut Output,
    ) {
        out.records.push(Record::Outcome {
            vm: self.name.clone(),
            id,
            ok,
            detail: detail.clone(),
        });
        let Some(f) = self.fault.as_mut() else {
            // Its fault closed before its outcome came (the report showing
            // the service back outran the agent's answer): the action is
            // over all the same. Should that fault come back, it must not
            // wait for this outcome again.
            if let Some((f, _)) = self.last_closed.as_mut() {
                if f.pending.as_ref().is_some_and(|(p, _)| *p == id) {
                    f.pending = None;
                }
            }
            return;
        };
        if f.pending.as_ref().map(|(p, _)| *p) != Some(id) {
            return;
        }
        if let Some((_, k)) = f
            .pending
            .take()
            .filter(|(_, k)| domain::stops_and_starts(k))
        {
            self.own_stop_until = Some(now + domain::own_events_ms(&k));
        }
        if ok {
            let verify = ctx
                .cfg
                .ladder(f.kind)
                .and_then(|l| l.rungs.get(f.rung))
                .map_or(30_000, |r| r.verify_ms);
            f.verify_until = Some(now + verify);
            self.settle("action done; verifying", out);
            // Recovery evidence may already be in (e.g. the service came back).
            if self.liveness_fault() {
                self.check_cleared(now, ctx, out);
            }
        } else {
            let why = format!("action failed: {detail}");
            self.escalate(now, &why, ctx, out);
        }
    }
}
