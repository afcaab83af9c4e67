//! Silence: when a quiet guest becomes a suspect, and how the suspicion is
//! corroborated (domain state, vCPU time, I/O, the liveness probe) into a
//! located fault or dropped.

use super::*;

impl Vm {
    pub fn liveness_fault(&self) -> bool {
        self.fault.as_ref().is_some_and(|f| {
            matches!(
                f.kind,
                FaultKind::VmCrashed
                    | FaultKind::GuestPanic
                    | FaultKind::GuestHang
                    | FaultKind::VcpuStalled
                    | FaultKind::AgentDown
                    | FaultKind::HostStorage
                    | FaultKind::HostWide
            )
        })
    }

    /// Begin corroborating silence; asks for a liveness probe.
    pub(super) fn suspect(
        &mut self,
        now: Millis,
        onset: Millis,
        cause: String,
        ctx: &mut Ctx<'_>,
        out: &mut Output,
    ) {
        if self.suspect.is_some() || self.liveness_fault() {
            return;
        }
        self.suspect = Some(Suspicion {
            since: now,
            onset,
            cause: cause.clone(),
            baseline: self.stats.map(|(_, s)| s),
            probe: None,
        });
        if self.domain == DomainState::Running {
            let id = ctx.action_id();
            out.actions.push(Action {
                id,
                vm: self.name.clone(),
                kind: ActionKind::LivenessProbe,
                fault: 0,
                memory_kib: None,
            });
        }
        self.settle(&cause, out);
    }

    /// Deadlines and corroboration at a tick.
    pub fn tick(&mut self, now: Millis, ctx: &mut Ctx<'_>, out: &mut Output) {
        if let Some(Some(until)) = self.maintenance {
            if now >= until {
                self.end_maintenance(now, ctx, "maintenance window ended", out);
            }
        }
        if self.suspect.is_none() && !self.liveness_fault() {
            if let Some(deadline) = self.deadline(ctx.cfg) {
                if now >= deadline {
                    let (onset, cause) = match self.arrivals.last() {
                        Some(last) => (
                            last,
                            format!(
                                "no heartbeat for {} ms (bound {} ms)",
                                now - last,
                                self.arrivals.bound(ctx.cfg)
                            ),
                        ),
                        None => (now, self.no_heartbeat_yet()),
                    };
                    self.suspect(now, onset, cause, ctx, out);
                }
            }
        }
        self.corroborate(now, ctx, out);
    }

    /// Why a VM with no heartbeat since its last (re)start is suspect.
    fn no_heartbeat_yet(&self) -> String {
        match &self.clean_bye {
            None => "no heartbeat within the boot grace".into(),
            Some(ByeReason::Reboot) => "agent said bye (reboot) and has not come back".into(),
            Some(ByeReason::Shutdown) => {
                "agent said bye (shutdown) but the domain is still running".into()
            }
            Some(ByeReason::Stopped) => "agent said bye (stopped) and has not come back".into(),
            Some(ByeReason::Other(why)) => {
                format!(
                    "agent said bye ({}) and has not come back",
                    vigil_protocol::limits::truncate_utf8(why, vigil_protocol::limits::MAX_TEXT)
                )
            }
        }
    }

    /// Name a silent VM's fault once the evidence is in.
    pub fn corroborate(&mut self, now: Millis, ctx: &mut Ctx<'_>, out: &mut Output) {
        let Some(s) = self.suspect.clone() else {
            return;
        };
        let mut ev = vec![s.cause.clone()];
        if let Some(kind) = self.verdict(now, &s, ctx.cfg, &mut ev) {
            self.locate(now, s.onset, s.since, kind, None, ev, ctx, out);
        }
    }

    /// The fault a suspicion adds up to, with its evidence appended to
    /// `ev`; None while the evidence is not in yet.
    fn verdict(
        &self,
        now: Millis,
        s: &Suspicion,
        cfg: &EngineConfig,
        ev: &mut Vec<String>,
    ) -> Option<FaultKind> {
        let silent = now.saturating_sub(s.onset);
        if self
            .panic_seen
            .is_some_and(|t| t + PANIC_EXPLAINS_MS >= s.onset && t <= now)
        {
            ev.push("agent reported a kernel panic/oops before going silent".into());
            return Some(FaultKind::GuestPanic);
        }
        if matches!(s.probe, Some(ProbeResult::Refused | ProbeResult::Accepted)) {
            ev.push("guest kernel answered the liveness probe".into());
            return Some(FaultKind::AgentDown);
        }
        let sample = self.stats.filter(|(t, _)| *t > s.since).map(|(_, st)| st);
        let probe_done = s.probe.is_some() || now >= s.since + cfg.corroborate_ms;
        let (Some(cur), Some(base)) = (sample, s.baseline) else {
            // No counters to compare. A closed connection with a running
            // domain and no probe verdict is the agent's fault; otherwise
            // wait for a sample, then decide on what there is.
            if probe_done
                && s.probe != Some(ProbeResult::TimedOut)
                && !self.session_open
                && s.cause.contains("closed")
            {
                ev.push("domain running".into());
                return Some(FaultKind::AgentDown);
            }
            if probe_done && now >= s.since + STATS_WAIT_MS {
                // The hypervisor itself does not answer: a host problem,
                // never a reason for a blind reset.
                ev.push(format!(
                    "no hypervisor poll answered for {} ms",
                    now - s.since
                ));
                ev.push(format!("liveness probe: {}", probe_text(s.probe)));
                return Some(FaultKind::VcpuStalled);
            }
            return None;
        };
        if cur.cpu_time_ns <= base.cpu_time_ns {
            ev.push(format!(
                "vCPU time frozen at {} ns while the domain is running",
                cur.cpu_time_ns
            ));
            return Some(FaultKind::VcpuStalled);
        }
        if !probe_done {
            return None;
        }
        let io = cur.block_ops > base.block_ops || cur.net_packets > base.net_packets;
        ev.push(format!(
            "vCPU time advancing (+{} ms)",
            (cur.cpu_time_ns - base.cpu_time_ns) / 1_000_000
        ));
        ev.push(format!("liveness probe: {}", probe_text(s.probe)));
        if io {
            if silent < cfg.io_veto_limit_ms {
                return None; // busy, not hung: I/O is progressing
            }
            ev.push(format!("I/O progressing but silent for {silent} ms"));
        } else {
            ev.push("no block or network I/O progress".into());
        }
        Some(FaultKind::GuestHang)
    }
}

fn probe_text(p: Option<ProbeResult>) -> &'static str {
    match p {
        Some(ProbeResult::Refused) => "refused",
        Some(ProbeResult::Accepted) => "accepted",
        Some(ProbeResult::TimedOut) => "timed out",
        Some(ProbeResult::Unsupported) => "unsupported",
        None => "no answer",
    }
}
