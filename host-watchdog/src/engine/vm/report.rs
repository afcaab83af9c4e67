//! What the agent's reports show: conditions located as faults, with their
//! onsets taken from the evidence, and faults closed only by evidence that
//! their condition is gone (never because an event was not repeated).

use super::*;

impl Vm {
    pub(super) fn on_report(
        &mut self,
        now: Millis,
        s: &Snapshot,
        last_good_ms: Option<u64>,
        ctx: &mut Ctx<'_>,
        out: &mut Output,
    ) {
        self.last_report = Some(now);
        // When the agent looked, and when it last looked and found nothing
        // new: what this report shows first began in between.
        let observed = self.host_time(s.uptime_ms, now).unwrap_or(now);
        let last_good = last_good_ms
            .and_then(|g| self.host_time(g, now))
            .or(self.last_observed)
            .unwrap_or(observed);
        self.last_observed = Some(observed);
        if evidence::panicking(s) {
            self.panic_seen = Some(now);
        }
        let mut conds = evidence::conditions(s, ctx.cfg);
        let pressure = evidence::memory_pressure(s, ctx.cfg, self.mem_stall);
        self.mem_stall = evidence::memory_stall_counter(s);
        match pressure {
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
                        event_at: None,
                    });
                }
            }
            None => self.pressure_streak = 0,
        }
        self.warn.report(
            now,
            &self.name,
            s,
            &ctx.cfg.warnings,
            (ctx.cfg.disk_full_percent, ctx.cfg.inodes_full_percent),
            out,
        );
        self.review_active(now, s, &conds, pressure, ctx, out);
        if let Some(n) = &s.network {
            self.net.reported(n.clone());
            // The agent last looked and found nothing new then: what this
            // report shows began after it.
            if last_good_ms.is_some() {
                self.net.last_look = Some(last_good.max(self.net.last_look.unwrap_or(0)));
            }
        }
        self.review_network(now, ctx, out);
        if self.frozen() {
            return;
        }
        self.starting_services(s, &mut conds, ctx.cfg);
        conds.sort_by_key(|c| std::cmp::Reverse(c.kind.severity()));
        let Some((kind, first)) = conds.first().map(|c| (c.kind, c.subject.clone())) else {
            return;
        };
        // The condition and the kernel's word on it (a read-only mount and
        // the ext4 line that made it so): the kernel log's own time, when
        // there is one, is the onset.
        let same: Vec<evidence::Condition> = conds
            .into_iter()
            .filter(|c| {
                c.kind == kind && evidence::same_subject(first.as_deref(), c.subject.as_deref(), s)
            })
            .collect();
        let onset = match same
            .iter()
            .filter_map(|c| c.event_at.and_then(|g| self.host_time(g, now)))
            .min()
        {
            Some(t) => Onset::exact(t),
            None => Onset::between(last_good, observed),
        };
        let subject = same.iter().find_map(|c| c.subject.clone());
        let evidence = same.into_iter().take(3).map(|c| c.evidence).collect();
        self.locate(now, onset, now, kind, subject, evidence, ctx, out);
    }

    /// Watched services not running that this boot has not seen running
    /// yet: while the boot is young (`service_start_grace_ms` of guest
    /// uptime) they are starting, not down (the agent can start before
    /// them); after it, they are down. Only what is newly located is held:
    /// an open fault is judged on the report as it is.
    fn starting_services(
        &mut self,
        s: &Snapshot,
        conds: &mut Vec<evidence::Condition>,
        cfg: &EngineConfig,
    ) {
        use vigil_protocol::snapshot::WatchTarget::{Process, Unit};
        // Bounded: a guest names at most MAX_WATCHED services a report, and
        // could name new ones in every report.
        for w in s.watched.iter().filter(|w| w.running) {
            let (Process(n) | Unit(n)) = &w.target;
            if !self.services_seen.contains(n.as_str())
                && self.services_seen.len() < 2 * vigil_protocol::limits::MAX_WATCHED
            {
                self.services_seen.insert(n.to_string());
            }
        }
        let young = s.uptime_ms < cfg.service_start_grace_ms;
        let seen = &self.services_seen;
        conds.retain(|c| {
            !(young
                && c.kind == FaultKind::ServiceDown
                && c.subject.as_ref().is_some_and(|n| !seen.contains(n)))
        });
    }

    /// Does this report show the active fault still there, gone, or back
    /// after a recovery action?
    fn review_active(
        &mut self,
        now: Millis,
        s: &Snapshot,
        conds: &[evidence::Condition],
        pressure: Option<u32>,
        ctx: &mut Ctx<'_>,
        out: &mut Output,
    ) {
        let Some(f) = self.fault.clone() else { return };
        let shows = |c: &&evidence::Condition| {
            c.kind == f.kind
                && evidence::same_subject(f.subject.as_deref(), c.subject.as_deref(), s)
        };
        match f.kind.basis() {
            Basis::Liveness | Basis::Network => {}
            Basis::State => {
                // Gone when a report shows the state good again: the thing
                // itself listed and good, not merely absent (a filesystem
                // whose statvfs failed is not a writable one).
                let still = conds.iter().any(|c| shows(&c));
                if !still
                    && now > f.verify_from
                    && evidence::shown_good(f.kind, f.subject.as_deref(), s)
                {
                    self.close_verified(now, "cleared", out);
                }
            }
            Basis::Event => {
                self.linger = evidence::lingering(f.kind, s, pressure);
                let again = conds.iter().any(|c| shows(&c) && c.event_at.is_some());
                let verifying = f.acted && f.pending.is_none() && f.verify_until.is_some();
                if again {
                    if let Some(f) = self.fault.as_mut() {
                        f.last_seen = now;
                    }
                    if verifying {
                        // Back after the action: it did not work.
                        let why = format!("{} again after the action", f.kind);
                        self.escalate_now(now, &why, ctx, out);
                    }
                    return;
                }
                if conds.iter().any(|c| shows(&c)) {
                    if let Some(f) = self.fault.as_mut() {
                        f.last_seen = now; // a state behind it (pressure)
                    }
                    return;
                }
                // Not while an action's outcome is being verified (that
                // window decides); a fault no action is working on any more
                // (never acted, or its ladder held) closes when quiet.
                if (!f.acted || f.held) && self.event_gone(now, ctx.cfg.event_quiet_ms) {
                    let why = format!(
                        "no recurrence for {} s",
                        now.saturating_sub(f.last_seen) / 1000
                    );
                    self.close_verified(now, &why, out);
                }
            }
        }
    }

    /// For the active event-based fault: no recurrence for `quiet` ms, and
    /// nothing the events point to still shown.
    pub fn event_gone(&self, now: Millis, quiet: Millis) -> bool {
        self.fault
            .as_ref()
            .is_some_and(|f| now >= f.last_seen + quiet && self.linger.is_none())
    }

    /// Close the active fault: recovered if an action ran and holds, else
    /// cleared (a held ladder's actions did not do it: it went by itself).
    pub fn close_verified(&mut self, now: Millis, why: &str, out: &mut Output) {
        // A fault that keeps flapping closes only once it stayed away for
        // the flap window (see `close_quiet`): its journal stops growing
        // with every flap.
        if let Some(f) = self.fault.as_mut().filter(|f| f.flaps >= FLAPS_HELD_OPEN) {
            f.quiet_since.get_or_insert(now);
            return;
        }
        let Some(f) = &self.fault else { return };
        let (how, word) = if f.acted && !f.held {
            (Closure::Recovered, "recovered")
        } else {
            (Closure::Cleared, "cleared")
        };
        let why = format!("{} {word}: {why}", f.kind);
        self.close_fault(now, how, out);
        self.settle(&why, out);
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
            self.close_verified(now, "alive again", out);
        }
    }
}
