//! Silence: when a quiet guest becomes a suspect, and how the suspicion is
//! corroborated (domain state, vCPU time, I/O, the liveness probe) into a
//! located fault or dropped.

use super::*;

impl Vm {
    pub fn liveness_fault(&self) -> bool {
        self.fault
            .as_ref()
            .is_some_and(|f| f.kind.basis() == Basis::Liveness)
    }

    /// Begin corroborating silence; asks for a liveness probe.
    pub(super) fn suspect(
        &mut self,
        now: Millis,
        onset: Onset,
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
            baseline: self.stats,
            probe: None,
            closed: false,
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
        if self.operator_down.is_some_and(|(_, until)| now >= until) {
            let why = "the operator's action left the guest as it was";
            self.operator_down_over(now, Some(ctx.cfg.resume_grace_ms), why, out);
        }
        if let Some(Some(until)) = self.maintenance {
            if now >= until {
                self.end_maintenance(now, ctx, "maintenance window ended", out);
            }
        }
        if self.suspect.is_none() && !self.liveness_fault() {
            if let Some(deadline) = self.deadline(ctx.cfg) {
                if now >= deadline {
                    // The guest went quiet after its last heartbeat and
                    // before the next one was due.
                    let (onset, cause) = match self.arrivals.last() {
                        Some(last) => (
                            Onset::between(last, (last + ctx.cfg.heartbeat_interval_ms).min(now)),
                            format!(
                                "no heartbeat for {} ms (bound {} ms)",
                                now - last,
                                self.arrivals.bound(ctx.cfg)
                            ),
                        ),
                        None => (Onset::exact(now), self.no_heartbeat_yet()),
                    };
                    self.suspect(now, onset, cause, ctx, out);
                }
            }
        }
        if !self.net.pending.is_empty() {
            self.review_network(now, ctx, out);
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
    /// The hypervisor answers again after a silence: a suspicion is
    /// judged on polls from now on (none came while it was silent; the
    /// vCPU time a sample from before holds says nothing of the rate).
    pub fn hypervisor_back(&mut self, now: Millis) {
        if let Some(s) = self.suspect.as_mut() {
            s.since = s.since.max(now);
            s.baseline = None;
        }
    }

    pub fn corroborate(&mut self, now: Millis, ctx: &mut Ctx<'_>, out: &mut Output) {
        let Some(s) = self.suspect.clone() else {
            return;
        };
        let mut ev = vec![s.cause.clone()];
        if let Some(kind) = self.verdict(now, &s, ctx.cfg, ctx.hypervisor_silent, &mut ev) {
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
        blind: bool,
        ev: &mut Vec<String>,
    ) -> Option<FaultKind> {
        let silent = now.saturating_sub(s.onset.at);
        if self
            .panic_seen
            .is_some_and(|t| t + PANIC_EXPLAINS_MS >= s.onset.at && t <= now)
        {
            ev.push("agent reported a kernel panic/oops before going silent".into());
            return Some(FaultKind::GuestPanic);
        }
        let probe_done = s.probe.is_some() || now >= s.since + cfg.corroborate_ms;
        // The hypervisor's word since the suspicion began: a connection
        // that closes because the VMM died looks like an agent that quit
        // until the hypervisor says the domain is still running.
        let sample = self.stats.filter(|(t, _)| {
            *t > s.since && s.baseline.is_none_or(|(b, _)| *t >= b + MIN_SAMPLE_SPAN_MS)
        });
        // The hypervisor as a whole does not answer (a host-level fault
        // says so): the guest is judged on polls made once it answers
        // again, never named blind or on a sample that crossed the gap.
        if blind {
            return None;
        }
        let Some((cur_t, cur)) = sample else {
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
        if self.domain != DomainState::Running {
            return None; // the domain's own state decides (crashed, paused)
        }
        // A closed connection is the guest's doing only if its VMM is
        // alive: its vCPUs still run. A VMM that died closes every socket
        // too (and a probe through vhost-device-vsock is refused with no
        // guest behind it), while libvirt may say "running" for a while
        // yet: wait for the hypervisor's word, bounded.
        let vmm_runs = s
            .baseline
            .is_some_and(|(_, b)| cur.cpu_time_ns > b.cpu_time_ns);
        if s.closed && !vmm_runs && now < s.since + STATS_WAIT_MS {
            return None;
        }
        if matches!(s.probe, Some(ProbeResult::Refused | ProbeResult::Accepted)) {
            ev.push("guest kernel answered the liveness probe".into());
            ev.push("domain running".into());
            return Some(FaultKind::AgentDown);
        }
        // A connection closed from inside a guest the hypervisor says is
        // running: the guest's kernel closed it, so it is alive; the agent
        // is what went away.
        if probe_done && s.closed && s.probe != Some(ProbeResult::TimedOut) {
            ev.push("the guest closed the connection while its domain runs".into());
            return Some(FaultKind::AgentDown);
        }
        let Some((base_t, base)) = s.baseline else {
            if probe_done && now >= s.since + STATS_WAIT_MS {
                ev.push("no counters from before the silence to compare".into());
                return Some(FaultKind::TransportDown);
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
        let cpu_ms = (cur.cpu_time_ns - base.cpu_time_ns) / 1_000_000;
        let rate = cpu_ms * 1000 / cur_t.saturating_sub(base_t).max(1);
        ev.push(format!("vCPU time advancing (+{cpu_ms} ms, {rate} ms/s)"));
        ev.push(format!("liveness probe: {}", probe_text(s.probe)));
        if io {
            if silent < cfg.io_veto_limit_ms {
                return None; // busy, not hung: I/O is progressing
            }
            ev.push(format!("I/O progressing but silent for {silent} ms"));
            return Some(FaultKind::GuestHang);
        }
        ev.push("no block or network I/O progress".into());
        if rate < cfg.hang_min_vcpu_ms_per_s {
            // An idle guest that does not answer is not spinning in a hung
            // kernel: the channel to it is what is broken.
            ev.push(format!(
                "vCPUs idle (below {} ms/s): a hung kernel spins",
                cfg.hang_min_vcpu_ms_per_s
            ));
            ev.extend(self.recent_disruption(now));
            return Some(FaultKind::TransportDown);
        }
        Some(FaultKind::GuestHang)
    }

    /// What happened just before that could have broken the channel.
    fn recent_disruption(&self, now: Millis) -> Option<String> {
        const RECENT: Millis = 120_000;
        if let Some(t) = self.resumed_at.filter(|t| now.saturating_sub(*t) <= RECENT) {
            return Some(format!("domain resumed {} ms before", now - t));
        }
        if now.saturating_sub(self.added_at) <= RECENT {
            return Some(format!(
                "monitoring (re)started {} ms before",
                now - self.added_at
            ));
        }
        None
    }
}

fn probe_text(p: Option<ProbeResult>) -> &'static str {
    match p {
        Some(ProbeResult::Refused) => "refused",
        Some(ProbeResult::Accepted) => "accepted",
        Some(ProbeResult::TimedOut) => "timed out",
        Some(ProbeResult::Unsupported) => "unsupported",
        Some(ProbeResult::NoVmm) => "the VMM's socket is gone",
        None => "no answer",
    }
}
