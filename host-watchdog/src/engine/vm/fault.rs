//! A located fault's life: opened (or resumed from the journal), escalated
//! host-wide, closed with its detect / locate / repair times.

use super::*;

impl Vm {
    /// Open a fault (or keep a more severe one).
    #[allow(clippy::too_many_arguments)]
    pub fn locate(
        &mut self,
        now: Millis,
        onset: Onset,
        detected: Millis,
        kind: FaultKind,
        subject: Option<String>,
        mut evidence: Vec<String>,
        ctx: &mut Ctx<'_>,
        out: &mut Output,
    ) {
        let mut kind = kind;
        if let Some(f) = self.fault.as_mut() {
            // A flapping fault that had gone quiet is back: one more flap.
            if f.kind == kind && f.subject == subject && f.quiet_since.take().is_some() {
                f.flaps += 1;
                f.last_seen = now;
            }
        }
        if let Some(f) = &self.fault {
            // The same failure again after a recovery action: that action
            // did not work; do not wait for the verification window.
            // (Only for discrete events; a report condition that persists
            // during verification is just not cleared yet.)
            let event_kind = matches!(
                kind,
                FaultKind::VmCrashed
                    | FaultKind::GuestPanic
                    | FaultKind::GuestHang
                    | FaultKind::HostStorage
            );
            if event_kind
                && f.kind == kind
                && f.acted
                && f.pending.is_none()
                && f.verify_until.is_some()
            {
                let why = format!("{kind} again: {}", evidence.join("; "));
                self.escalate_now(now, &why, ctx, out);
                return;
            }
            if f.kind.severity() >= kind.severity() {
                if f.kind == kind && f.subject == subject {
                    if let Some(f) = self.fault.as_mut() {
                        f.last_seen = now; // the same fault, seen again
                    }
                }
                return;
            }
        }
        if ctx.host_wide && kind != FaultKind::HostWide {
            evidence.push(format!("would be {kind}; host-wide event in progress"));
            kind = FaultKind::HostWide;
        }
        if self.fault.is_none() && self.reopen(now, kind, &subject, &evidence, ctx, out) {
            return;
        }
        self.close_fault(now, Closure::Superseded, out);
        self.suspect = None;
        // The same fault soon after a recovery action closed one: that
        // action did not hold; continue its ladder rather than repeat it.
        let window = ctx.cfg.recurrence_window_ms;
        self.recovered
            .retain(|r| now.saturating_sub(r.at) <= window);
        let recurs = self
            .recovered
            .iter()
            .position(|r| r.kind == kind && r.subject == subject)
            .and_then(|i| self.recovered.remove(i));
        if let Some(r) = &recurs {
            evidence.push(format!(
                "recurs {} s after fault #{} was recovered; continuing its ladder",
                now.saturating_sub(r.at) / 1000,
                r.id
            ));
        }
        let host: Vec<&str> = ctx
            .host_open
            .iter()
            .filter(|(_, vms)| vms.as_ref().is_none_or(|v| v.contains(&self.name)))
            .map(|(text, _)| text.as_str())
            .collect();
        if !host.is_empty() {
            evidence.push(format!("host-level fault open: {}", host.join(", ")));
        }
        let id = ctx.fault_id();
        out.records.push(Record::Fault {
            vm: self.name.clone(),
            id,
            kind,
            layer: kind.layer(),
            evidence,
            subject: subject.clone(),
            onset: onset.at.min(detected),
            onset_window_ms: onset.window,
            detected,
            located: now,
        });
        // A fault beyond the host (the network outside) is no sign of a
        // host-wide event: many VMs losing their gateway is the uplink's
        // fault (`host_level.rs`), not a reason to hold every repair.
        if kind.layer() != Layer::Network {
            ctx.located.push(self.name.clone());
        }
        self.linger = None;
        self.fault = Some(ActiveFault {
            id,
            kind,
            subject,
            onset: onset.at.min(detected),
            last_seen: now,
            detected,
            located: now,
            rung: 0,
            attempt: 1,
            pending: None,
            verify_until: None,
            verify_from: now,
            next_try_at: now,
            held: false,
            acted: false,
            suppressed_noted: false,
            flaps: 0,
            quiet_since: None,
            reopened_at: None,
        });
        if matches!(kind, FaultKind::GuestPanic | FaultKind::GuestHang) {
            // Keep what there is to see before any recovery changes it.
            self.side_action(ActionKind::CaptureEvidence, id, ctx, out);
        }
        if self.quarantine.is_some() {
            // Quarantine stops repairs, not seeing: journal it, tell the
            // operator, take no action until released.
            if let Some(f) = self.fault.as_mut() {
                f.held = true;
            }
            self.side_action(ActionKind::Alert, id, ctx, out);
            self.settle(&format!("{kind} located while quarantined"), out);
            return;
        }
        self.settle(&format!("{kind} located"), out);
        if let (Some(r), Some(f)) = (recurs, self.fault.as_mut()) {
            (f.rung, f.attempt) = (r.rung, r.attempt);
            self.escalate_now(now, &format!("{kind} recurred"), ctx, out);
        }
    }

    /// Resume a fault from a previous run: the last step is treated as
    /// having run, and verification gets a full window from now.
    pub fn restore(
        &mut self,
        now: Millis,
        r: &RestoredFault,
        cfg: &EngineConfig,
        out: &mut Output,
    ) {
        let (rung, attempt, acted, verify_from, verify_until) = match &r.last_step {
            Some((rung, attempt, kind, at)) => {
                let verify = cfg
                    .ladder(r.kind)
                    .and_then(|l| l.rungs.get(*rung))
                    .map_or(30_000, |x| x.verify_ms);
                let informative = matches!(kind, ActionKind::Alert | ActionKind::CaptureEvidence);
                (*rung, *attempt, !informative, *at, Some(now + verify))
            }
            None => (0, 1, false, r.located, None),
        };
        // A step a restart interrupted is resumed (its remaining steps run
        // within this fault): it is in flight again, not verified yet, and
        // the domain state it leaves behind is ours, not a new fault.
        let (pending, verify_until) = match &r.interrupted {
            Some((id, kind)) => (Some((*id, kind.clone())), None),
            // Known to have failed: nothing to verify, the ladder goes on.
            None if r.last_failed => (None, Some(now)),
            None => (None, verify_until),
        };
        // A quarantined VM's fault is held: seen, never repaired.
        let held = self.quarantine.is_some();
        let (pending, verify_until) = if held {
            (None, None)
        } else {
            (pending, verify_until)
        };
        self.fault = Some(ActiveFault {
            id: r.id,
            kind: r.kind,
            subject: r.subject.clone(),
            onset: r.onset,
            last_seen: now,
            detected: r.detected,
            located: r.located,
            rung,
            attempt,
            pending,
            verify_until,
            verify_from,
            next_try_at: now,
            held,
            acted,
            suppressed_noted: false,
            flaps: 0,
            quiet_since: None,
            reopened_at: None,
        });
        self.settle(&format!("{} resumed from the journal", r.kind), out);
    }

    /// Quarantined when the last run ended (`why`: what quarantined it
    /// then): still, until released. Its fault, if one is open, is held (no
    /// evidence or alert again: both were taken when it was quarantined).
    pub fn restore_quarantine(&mut self, _now: Millis, why: &str, out: &mut Output) {
        if self.quarantine.is_some() {
            return;
        }
        self.quarantine = Some(why.to_string());
        if let Some(f) = self.fault.as_mut() {
            f.held = true;
            f.pending = None;
            f.verify_until = None;
        }
        self.settle(
            &format!("quarantined before vigild restarted ({why}): no more repairs until released"),
            out,
        );
    }

    /// Convert the active fault into a host-wide one (breaker tripped).
    pub fn host_wide(&mut self, now: Millis, ctx: &mut Ctx<'_>, out: &mut Output) {
        let Some(f) = &self.fault else { return };
        if f.kind == FaultKind::HostWide {
            return;
        }
        let (onset, detected, was) = (f.onset, f.detected, f.kind);
        let ev = vec![format!("was {was}; many VMs faulted together")];
        self.locate(
            now,
            Onset::exact(onset),
            detected,
            FaultKind::HostWide,
            None,
            ev,
            ctx,
            out,
        );
    }

    /// Remember where a recovered fault's ladder stood (one per kind and
    /// subject, the oldest forgotten first past `MAX_RECOVERED`).
    pub fn remember_recovered(&mut self, r: Recovered) {
        self.recovered
            .retain(|x| !(x.kind == r.kind && x.subject == r.subject));
        if self.recovered.len() >= MAX_RECOVERED {
            self.recovered.pop_front();
        }
        self.recovered.push_back(r);
    }

    /// Close the active fault.
    /// The fault closed last comes back within the flap window: open it
    /// again (same id, one more flap) where its ladder stood. `false` if
    /// there is no such fault.
    fn reopen(
        &mut self,
        now: Millis,
        kind: FaultKind,
        subject: &Option<String>,
        evidence: &[String],
        ctx: &mut Ctx<'_>,
        out: &mut Output,
    ) -> bool {
        let window = ctx.cfg.flap_window_ms;
        let Some((mut f, _)) = self.last_closed.take().filter(|(f, at)| {
            f.kind == kind && f.subject == *subject && now.saturating_sub(*at) <= window
        }) else {
            return false;
        };
        f.flaps += 1;
        f.reopened_at = Some(now);
        f.quiet_since = None;
        f.last_seen = now;
        // Recovery must be shown anew. One an action closed goes on up its
        // ladder (the action did not hold); one nothing was done about
        // takes its current step again (an operator who fixed it hears it
        // is back), unless its ladder was exhausted; from the third flap
        // on it stays open and is not taken up again (`close_verified`).
        f.verify_from = now;
        let again = f.acted && !f.held;
        if !f.held {
            f.verify_until = None;
        }
        self.recovered.retain(|r| r.id != f.id);
        out.records.push(Record::Reopened {
            vm: self.name.clone(),
            id: f.id,
            kind,
            flaps: f.flaps,
            evidence: evidence.to_vec(),
        });
        if kind.layer() != Layer::Network {
            ctx.located.push(self.name.clone());
        }
        self.suspect = None;
        self.linger = None;
        let (flaps, id) = (f.flaps, f.id);
        self.fault = Some(f);
        if matches!(kind, FaultKind::GuestPanic | FaultKind::GuestHang) {
            // This time's state is evidence too.
            self.side_action(ActionKind::CaptureEvidence, id, ctx, out);
        }
        let why = format!("{kind} came back (flap {flaps})");
        if again {
            // What it took did not hold: the ladder goes on from there.
            self.escalate(now, &why, ctx, out);
        } else {
            self.settle(&why, out);
        }
        true
    }

    /// A flapping fault stayed away for the flap window: close it as of
    /// when it went quiet.
    pub fn close_quiet(&mut self, now: Millis, out: &mut Output) {
        let Some(f) = &self.fault else { return };
        let Some(quiet) = f.quiet_since else { return };
        let (how, word) = if f.acted && !f.held {
            (Closure::Recovered, "recovered")
        } else {
            (Closure::Cleared, "cleared")
        };
        let why = format!(
            "{} {word}: away for {} s after {} flaps",
            f.kind,
            now.saturating_sub(quiet) / 1000,
            f.flaps
        );
        self.close_fault_at(quiet, how, out);
        self.settle(&why, out);
    }

    pub fn close_fault(&mut self, now: Millis, how: Closure, out: &mut Output) {
        self.close_fault_at(now, how, out);
    }

    /// Close the fault as of `now` (for a flapping one: when it went quiet).
    fn close_fault_at(&mut self, now: Millis, how: Closure, out: &mut Output) {
        if let Some(f) = self.fault.take() {
            if matches!(how, Closure::Recovered | Closure::Cleared) {
                self.last_closed = Some((f.clone(), now));
            }
            if how == Closure::Recovered {
                self.remember_recovered(Recovered {
                    id: f.id,
                    kind: f.kind,
                    subject: f.subject.clone(),
                    rung: f.rung,
                    attempt: f.attempt,
                    at: now,
                });
            }
            out.records.push(Record::Closed {
                vm: self.name.clone(),
                id: f.id,
                kind: f.kind,
                how,
                at: now,
                detect_ms: f.detected.saturating_sub(f.onset),
                locate_ms: f.located.saturating_sub(f.detected),
                // For a reopened fault: since it came back.
                repair_ms: now.saturating_sub(f.reopened_at.unwrap_or(f.located)),
                flaps: f.flaps,
            });
        }
    }
}
