//! The core's side of agent sessions: the handshake, guest messages, and
//! what the core asks of a guest (evidence, liveness probes).

use super::*;

impl Core {
    /// A bounded summary of what there is to see.
    pub(super) fn evidence(&self, vm: &str) -> String {
        let Some(v) = self.vms.get(vm) else {
            return "no such VM".into();
        };
        let state = self
            .engine
            .domain(vm)
            .map_or("unknown".into(), |d| d.to_string());
        let mut parts = vec![format!("domain {state}")];
        if let Some(r) = &v.last_report {
            parts.push(format!("last report at uptime {} s", r.uptime_ms / 1000));
            for e in r.kernel_events.iter().rev().take(5) {
                parts.push(format!("kernel {:?}: {}", e.kind, e.text));
            }
            for w in r.watched.iter().filter(|w| !w.running) {
                parts.push(format!("down: {:?}", w.target));
            }
            if let Some(c) = &r.crash_record {
                parts.push(format!("pstore {}", c.source));
            }
        }
        let s = parts.join("; ");
        limits::truncate_utf8(&s, 2048).to_string()
    }

    pub(super) fn liveness_probe(&mut self, vm: &str) {
        let target: Option<Address> = self
            .vms
            .get(vm)
            .and_then(|v| v.cfg.as_ref())
            .and_then(|c| c.probe.as_ref())
            .and_then(|p| p.parse().ok());
        let tx = self.tx.clone();
        let vm = vm.to_string();
        // Gate host → guest traffic on the lifecycle state.
        if target.is_none() || !self.engine.may_talk_to(&vm) {
            tokio::spawn(async move {
                let _ = tx
                    .send(CoreMsg::Probed {
                        vm,
                        result: ProbeResult::Unsupported,
                    })
                    .await;
            });
            return;
        }
        let timeout = Duration::from_millis(self.cfg.probe_timeout_ms);
        self.prober.probe(vm, target, timeout, tx);
    }
    pub(super) fn on_hello(
        &mut self,
        now: Millis,
        vm: String,
        hello: Hello,
        handle: Option<crate::daemon::session::Handle>,
        reply: oneshot::Sender<crate::daemon::session::HelloReply>,
    ) {
        let version = match negotiate(SUPPORTED, hello.versions) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("vm={vm} refused agent: {e}");
                let l = RejectLabels {
                    domain: vm.clone(),
                    uuid: uuid_of(&self.vms, &vm),
                    reason: "version".into(),
                };
                self.metrics.rejected.get_or_create(&l).inc();
                let _ = reply.send(Err(Refused {
                    supported: SUPPORTED,
                    reason: Text::from(e.to_string()),
                }));
                return;
            }
        };
        if !self.vms.contains_key(&vm) {
            let _ = reply.send(Err(Refused {
                supported: SUPPORTED,
                reason: "unknown VM".into(),
            }));
            return;
        }
        let (tx, rx) = mpsc::channel(crate::daemon::session::OUTBOUND_QUEUE);
        let id = self.next_session;
        self.next_session += 1;
        let v = self.vms.entry(vm.clone()).or_default();
        // The guest's words, cut to size before they are kept or logged.
        let cut = |t: &str| limits::truncate_utf8(t, limits::MAX_TEXT).to_string();
        let hostname = cut(&hello.hostname);
        // A self-reported hostname is a cross-check: a change raises an
        // alarm and never re-maps the connection to another VM.
        match &v.first_hostname {
            None => v.first_hostname = Some(hostname.clone()),
            Some(h) if *h != hostname => {
                log::warn!("ALARM vm={vm}: agent reports hostname {hostname:?}, previously {h:?}; identity stays {vm}");
                let l = RejectLabels {
                    domain: vm.clone(),
                    uuid: v.uuid.clone(),
                    reason: "hostname-mismatch".into(),
                };
                self.metrics.rejected.get_or_create(&l).inc();
            }
            Some(_) => {}
        }
        if let Some(old) = v.session.take() {
            log::info!("vm={vm} agent session {} replaced by {id}", old.id);
        }
        v.session = Some(Session {
            id,
            tx,
            version,
            keepalive_at: now,
            hostname,
            agent_version: cut(&hello.agent_version),
            boot_id: cut(&hello.boot_id),
            past_boot: false,
            handle,
        });
        let settings = Settings {
            heartbeat_interval_ms: self
                .cfg
                .engine
                .heartbeat_interval_ms
                .min(u64::from(u32::MAX)) as u32,
            report_interval_ms: 5000,
            thresholds: Thresholds {
                disk_full_percent: self.cfg.engine.disk_full_percent,
                inodes_full_percent: self.cfg.engine.inodes_full_percent,
                ..Thresholds::default()
            },
        };
        let (agent_version, boot_id) = (cut(&hello.agent_version), cut(&hello.boot_id));
        let rebooted = v
            .last_boot_id
            .replace(boot_id.clone())
            .is_some_and(|b| b != boot_id);
        log::info!(
            "vm={vm} agent connected: session={id} version={agent_version:?} boot={boot_id:?}"
        );
        let _ = reply.send(Ok((id, Welcome { version, settings }, rx)));
        if rebooted {
            self.reboot_seen(now, &vm); // a new boot is a reboot's answer too
        }
        self.step(now, &vm, Input::Hello { boot_id });
    }

    /// The guest rebooted: an agent reboot waiting for its answer is done
    /// (a guest that reboots at once cannot answer first; its reboot is the
    /// answer).
    pub(super) fn reboot_seen(&mut self, now: Millis, vm: &str) {
        let done: Vec<(u32, u64)> = self
            .commands
            .iter()
            .filter(|(_, (action, v))| {
                v == vm
                    && self
                        .action_kinds
                        .get(action)
                        .is_some_and(|k| k == ActionKind::AgentReboot.name())
            })
            .map(|(cid, (action, _))| (*cid, *action))
            .collect();
        for (cid, action) in done {
            self.commands.remove(&cid);
            self.step(
                now,
                vm,
                Input::ActionDone {
                    id: action,
                    ok: true,
                    detail: "the guest rebooted".into(),
                },
            );
        }
    }

    pub(super) fn on_session(&mut self, now: Millis, vm: &str, session: u64, msg: Message) {
        let current = self
            .vms
            .get(vm)
            .and_then(|v| v.session.as_ref())
            .is_some_and(|s| s.id == session);
        if !current {
            return; // a replaced session's stragglers
        }
        match msg {
            Message::Heartbeat(h) => self.step(
                now,
                vm,
                Input::Heartbeat {
                    seq: h.seq,
                    uptime_ms: h.uptime_ms,
                },
            ),
            Message::Report(r) => {
                let mut snapshot = Box::new(r.snapshot);
                if let Some(n) = snapshot.network.as_mut() {
                    n.bound(); // the guest's words, cut to size
                }
                let before = self
                    .vms
                    .get_mut(vm)
                    .and_then(|v| v.last_report.replace(snapshot.clone()));
                if let Some(n) = &snapshot.network {
                    let was = before.as_ref().and_then(|b| b.network.as_ref());
                    self.guest_network(now, vm, was, n);
                }
                let last_good_ms = match r.trigger {
                    ReportTrigger::Changed {
                        last_good_uptime_ms,
                    } => Some(last_good_uptime_ms),
                    _ => None,
                };
                self.step(
                    now,
                    vm,
                    Input::Report {
                        snapshot,
                        last_good_ms,
                    },
                );
                let open = self.engine.warnings(vm);
                self.metrics
                    .warn
                    .set(vm, &uuid_of(&self.vms, vm), now, &open);
            }
            Message::ProbeReply(p) => {
                if let Some(pending) = self.probes.remove(&p.id) {
                    let mut s = p.snapshot;
                    if let Some(n) = s.network.as_mut() {
                        n.bound();
                    }
                    let data = super::network::snapshot_json(&s);
                    let _ = pending.reply.send(Response::ok(data));
                }
            }
            Message::CommandResult(r) => {
                if let Some((action, vm)) = self.commands.remove(&r.id) {
                    let (ok, detail) = match r.outcome {
                        CommandOutcome::Succeeded => (true, "agent: succeeded".to_string()),
                        CommandOutcome::Failed { exit_code, detail } => (
                            false,
                            format!(
                                "agent: failed (exit {exit_code:?}): {}",
                                limits::truncate_utf8(&detail, limits::MAX_TEXT)
                            ),
                        ),
                        CommandOutcome::Denied => (
                            false,
                            "agent: denied (not in the guest's allow-list)".to_string(),
                        ),
                        CommandOutcome::Busy => (false, "agent: busy".to_string()),
                    };
                    self.step(
                        now,
                        &vm,
                        Input::ActionDone {
                            id: action,
                            ok,
                            detail,
                        },
                    );
                }
            }
            Message::Notice(n) => self.step(now, vm, Input::Notice(n)),
            Message::Bye(b) => {
                log::info!("vm={vm} agent said bye: {:?}", b.reason);
                if matches!(b.reason, ByeReason::Reboot | ByeReason::Shutdown) {
                    // The guest is going down: no more writes to this boot.
                    if let Some(v) = self.vms.get_mut(vm) {
                        v.boot_ended();
                    }
                }
                self.step(now, vm, Input::Bye(b.reason));
            }
            _ => {}
        }
    }
}
