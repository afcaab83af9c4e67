//! How each observation reaches one VM's state: the dispatch of an
//! [`Input`] to what it concerns, and maintenance's start and end.

use super::*;

impl Vm {
    pub fn on_input(&mut self, now: Millis, input: Input, ctx: &mut Ctx<'_>, out: &mut Output) {
        match input {
            Input::VmAdded { .. } | Input::VmRemoved => {}
            Input::SessionOpened => {}
            Input::Hello { boot_id } => {
                if self.boot_id.as_deref().is_some_and(|b| b != boot_id) {
                    self.awaiting_first = true;
                    self.services_seen.clear();
                    self.net.new_boot();
                    self.operator_down_over(now, None, "guest booted again", out);
                }
                self.boot_id = Some(boot_id);
                // A guest whose agent says hello after our stop-and-start
                // booted after it: that action's late stop events are
                // long in, so a stop from now on is someone else's (an
                // operator's destroy right after our reset was taken for
                // ours and left the VM's state stale).
                self.own_stop_until = None;
                self.session_open = true;
                self.clean_bye = None;
                self.closed_at = None;
                self.clock_offset = None;
                // Alive now; the first heartbeat is due within the timeout.
                self.arrivals.forget_last();
                self.grace_until = self.grace_until.max(now + ctx.cfg.heartbeat_timeout_ms);
                if self.suspect.take().is_some() {
                    self.settle("agent reconnected", out);
                }
                self.check_cleared(now, ctx, out);
            }
            Input::Heartbeat { uptime_ms, .. } => {
                self.arrivals.observe(now, ctx.cfg.heartbeat_interval_ms);
                // Transit only adds: the least host−guest difference is
                // the closest to the true offset.
                if let Ok(g) = i64::try_from(uptime_ms) {
                    let off = i64::try_from(now).unwrap_or(i64::MAX) - g;
                    self.clock_offset = Some(self.clock_offset.map_or(off, |o| o.min(off)));
                }
                let first = std::mem::take(&mut self.awaiting_first);
                if let Some(s) = self.suspect.take() {
                    let why = format!(
                        "heartbeat resumed after {} ms",
                        now.saturating_sub(s.onset.at)
                    );
                    self.settle(&why, out);
                } else if first {
                    self.settle("first heartbeat", out);
                }
                self.check_cleared(now, ctx, out);
            }
            Input::Report {
                snapshot,
                last_good_ms,
            } => self.on_report(now, &snapshot, last_good_ms, ctx, out),
            Input::Notice(Notice::MaintenanceStart { duration_s, .. }) => {
                let ms = (u64::from(duration_s) * 1000).min(ctx.cfg.max_guest_maintenance_ms);
                self.maintenance = Some(Some(now + ms));
                self.suspect = None;
                // The end is in the words: a restarted vigild reads it back.
                self.settle(
                    &format!("guest declared maintenance{}", until_words(now + ms)),
                    out,
                );
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
                if matches!(reason, ByeReason::Reboot | ByeReason::Shutdown) {
                    self.operator_down = None;
                }
                self.rearm(now, grace);
                self.clean_bye = Some(reason);
                if had_suspect {
                    self.settle("agent said bye", out);
                }
            }
            Input::SessionClosed => {
                self.session_open = false;
                if self.clean_bye.is_none() {
                    self.closed_at = Some(now);
                }
                if self.clean_bye.is_none()
                    && self.agent
                    && self.domain == DomainState::Running
                    && !self.frozen()
                {
                    let onset = self.arrivals.last().unwrap_or(now);
                    self.suspect(
                        now,
                        Onset::between(onset, now),
                        "agent connection closed without bye".into(),
                        ctx,
                        out,
                    );
                    if let Some(s) = self.suspect.as_mut() {
                        s.closed = true;
                    }
                }
            }
            Input::Domain(d) => self.on_domain(now, d, ctx, out),
            Input::HostOomKill { line } => self.host_oom = Some((now, line)),
            Input::Rebooted => {
                self.operator_down = None;
                self.awaiting_first = true;
                self.rearm(now, ctx.cfg.boot_grace_ms);
                self.settle("guest rebooted", out);
            }
            Input::Stats(s) => {
                // A healthy VM is polled only every few seconds: counters
                // from before it was last seen alive (its last heartbeat)
                // hold what it did before it went silent, so the first
                // sample after the suspicion began (polled at once) is
                // what later samples are compared with.
                if let Some(sus) = self.suspect.as_mut() {
                    let stale = sus.baseline.is_none_or(|(t, _)| t < sus.onset.at);
                    if now >= sus.since && stale {
                        sus.baseline = Some((now, s));
                    }
                }
                self.stats = Some((now, s));
            }
            Input::Probe(r) => {
                if let Some(s) = self.suspect.as_mut() {
                    s.probe = Some(r);
                }
            }
            Input::Operator(OperatorCommand::MaintenanceOn { until }) => {
                self.maintenance = Some(until);
                self.suspect = None;
                let why = until.map_or(String::new(), until_words);
                self.settle(&format!("operator maintenance{why}"), out);
            }
            Input::Operator(OperatorCommand::MaintenanceOff) => {
                self.end_maintenance(now, ctx, "operator ended maintenance", out)
            }
            Input::Operator(OperatorCommand::Act { kind }) => {
                if kind.is_destructive() {
                    self.destructive_log.push_back(now);
                    ctx.started_destructive(now);
                }
                let id = self.side_action(kind.clone(), 0, ctx, out);
                if kind.takes_guest_down() {
                    self.operator_down = Some((id, now + ctx.cfg.boot_grace_ms));
                    self.suspect = None;
                    self.settle("the operator takes the guest down", out);
                }
            }
            Input::Operator(OperatorCommand::Release) => {
                self.recovered.clear(); // the operator starts every ladder over
                if self.quarantine.take().is_some() {
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
                if !ok && self.operator_down.is_some_and(|(op, _)| op == id) {
                    let why = "the operator's action failed";
                    self.operator_down_over(now, Some(ctx.cfg.resume_grace_ms), why, out);
                }
                self.on_action_done(now, id, ok, detail, ctx, out)
            }
            Input::Nics(nics) => {
                self.net.host_seen(nics);
                self.review_network(now, ctx, out);
            }
        }
    }

    pub(super) fn end_maintenance(
        &mut self,
        now: Millis,
        ctx: &mut Ctx<'_>,
        why: &str,
        out: &mut Output,
    ) {
        if self.maintenance.take().is_some() {
            self.rearm(now, ctx.cfg.resume_grace_ms);
            self.settle(why, out);
        }
    }
}

/// How a maintenance transition names its end (ms since the epoch), read
/// back by [`maintenance_until`].
fn until_words(until: Millis) -> String {
    format!(" until {until}")
}

/// The end a maintenance transition's words name (none: until ended).
pub fn maintenance_until(why: &str) -> Option<Millis> {
    why.rsplit_once(" until ")?.1.parse().ok()
}
