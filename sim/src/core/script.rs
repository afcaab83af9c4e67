//! What the scenario says happens, as the core hears it: agents' Hellos
//! and messages on their sessions, the domain's lifecycle, operators'
//! control requests, the journal locked by another process.

use super::*;

impl Harness<'_> {
    pub(super) async fn hello(&mut self, vm: &str, boot: &str) {
        let (reply, answer) = oneshot::channel();
        let hello = Hello {
            versions: VersionRange {
                min: vigil_protocol::SUPPORTED.min,
                max: vigil_protocol::SUPPORTED.max,
            },
            agent_version: "sim".into(),
            boot_id: boot.into(),
            hostname: vm.into(),
            kernel_release: "sim".into(),
            capabilities: Vec::new(),
        };
        self.deliver(CoreMsg::Hello {
            vm: vm.into(),
            hello,
            handle: None,
            reply,
        })
        .await;
        self.hellos.push((vm.into(), boot.into(), answer));
        self.answered();
    }

    /// Hellos the core has answered (one held while it was stalled is
    /// answered when it runs again).
    pub(super) fn answered(&mut self) -> bool {
        let mut any = false;
        for (vm, boot, mut answer) in std::mem::take(&mut self.hellos) {
            let vm = vm.as_str();
            let boot = boot.as_str();
            match answer.try_recv() {
                Ok(Ok((session, _, rx))) => {
                    self.agents.insert(
                        vm.into(),
                        AgentLink {
                            session,
                            rx,
                            boot: boot.into(),
                        },
                    );
                }
                Ok(Err(r)) => self.say(vm, format_args!("hello refused: {}", r.reason)),
                Err(oneshot::error::TryRecvError::Empty) => {
                    self.hellos.push((vm.into(), boot.into(), answer));
                    continue;
                }
                Err(_) => self.say(vm, format_args!("hello not answered")),
            }
            any = true;
        }
        any
    }

    pub(super) async fn control(&mut self, req: Request) -> Option<Response> {
        let (tx, mut rx) = oneshot::channel();
        self.deliver(CoreMsg::Control(req, tx)).await;
        self.settle().await;
        rx.try_recv().ok()
    }

    fn hv_watch(&self) -> std::sync::Arc<vigil_watchdog::daemon::hv_watch::CallWatch> {
        self.core.hypervisor_watch()
    }

    pub(super) async fn scripted(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Input(vm, input) => self.input(vm, input).await,
            Event::Global(Global::Stalled { ms }) => {
                let _ = writeln!(self.log, "{now:>7} *        vigild stalled for {ms} ms");
                self.stalled_until = now + ms;
            }
            Event::Global(Global::Disarm) => {
                self.control(Request::Disarm).await;
            }
            Event::Global(Global::Arm) => {
                self.control(Request::Arm).await;
            }
            Event::Global(Global::Tick) => {}
            // A libvirt call of the backend's that began `for_ms` ago and
            // has not returned, as the backend thread marks it.
            Event::Global(Global::HypervisorSilent {
                for_ms,
                lost: false,
            }) => {
                self.hv_watch().begin(now.saturating_sub(for_ms).max(1));
            }
            // The connection found lost (libvirtd stopped), as the backend
            // thread marks it; its calls fail at once until it is back.
            Event::Global(Global::HypervisorSilent { lost: true, .. }) => {
                let _ = writeln!(self.log, "{now:>7} *        libvirtd connection lost");
                self.hv_watch().lose(now);
            }
            Event::Global(Global::HypervisorAnswers) => {
                self.hv_watch().end();
                self.hv_watch().regain();
            }
            Event::Stop(what, vm) => stop(&mut self.streams, &what, &vm),
            Event::Liveness(vm, r) => {
                self.liveness.insert(vm, r);
            }
            Event::Stats(vm, inc) => self.hv.with(|w| {
                if let Some(d) = w.doms.get_mut(&vm) {
                    d.stats.cpu_time_ns += inc.cpu_time_ns;
                    d.stats.block_ops += inc.block_ops;
                    d.stats.net_packets += inc.net_packets;
                }
            }),
            Event::Restart => self.restart().await,
            Event::HostKernel(text) => {
                // As the host kernel-log thread tells it (a VM only for
                // an OOM kill, which has its own event).
                if let Some(event) = vigil_watchdog::host::kmsg::classify(&text) {
                    let record = vigil_watchdog::host::kmsg::HostRecord {
                        seq: 0,
                        event,
                        text,
                    };
                    let h = vigil_watchdog::daemon::host_kmsg::HostKernel {
                        record,
                        vm: None,
                        left_out: 0,
                    };
                    self.deliver(CoreMsg::HostKernel(h)).await
                }
            }
            Event::HostFs(fs, devs) => {
                let devices = devs.into_iter().map(|d| (d, fs.vms.clone())).collect();
                let msg = CoreMsg::HostStorage {
                    filesystems: vec![fs],
                    devices,
                };
                self.deliver(msg).await
            }
            Event::JournalLocked(on) => {
                let _ = writeln!(
                    self.log,
                    "{now:>7} *        journal {}",
                    if on {
                        "locked by another process"
                    } else {
                        "unlocked"
                    }
                );
                self.lock = if on { self.lock_journal() } else { None };
            }
            Event::Listed(vm, on) => self.hv.with(|w| {
                if let Some(d) = w.doms.get_mut(&vm) {
                    d.listed = on;
                }
            }),
        }
    }

    fn lock_journal(&mut self) -> Option<rusqlite::Connection> {
        let db = rusqlite::Connection::open(&self.journal_path).ok()?;
        db.execute_batch("BEGIN IMMEDIATE").ok()?;
        Some(db)
    }

    async fn input(&mut self, vm: VmId, input: Input) {
        let now = self.now;
        let session = self.agents.get(&vm).map(|a| a.session);
        match input {
            Input::Domain(st) => {
                let listed = self.hv.with(|w| {
                    let d = w.doms.get_mut(&vm)?;
                    d.state = Some(st);
                    Some(d.listed)
                });
                // A lost connection's events never arrive: the next poll
                // after it is back shows the state.
                let lost = self.hv_watch().lost_since().is_some();
                if listed.is_some() && !lost {
                    self.deliver(CoreMsg::Hv(HvEvent::State(vm, st))).await;
                }
            }
            Input::Rebooted => self.deliver(CoreMsg::Hv(HvEvent::Rebooted(vm))).await,
            Input::HostOomKill { line } => {
                // As the host kernel-log thread tells it: the victim's VM
                // already found from its PID.
                let record = vigil_watchdog::host::kmsg::HostRecord {
                    seq: 0,
                    event: vigil_watchdog::host::kmsg::HostEvent::OomKill {
                        pid: 0,
                        comm: "qemu-system-x86".into(),
                    },
                    text: line,
                };
                let h = vigil_watchdog::daemon::host_kmsg::HostKernel {
                    record,
                    vm: Some(vm),
                    left_out: 0,
                };
                self.deliver(CoreMsg::HostKernel(h)).await
            }
            Input::Hello { boot_id } => self.hello(&vm, &boot_id).await,
            Input::Heartbeat { .. } => {
                if let Some(s) = session {
                    let msg = Message::Heartbeat(Heartbeat {
                        seq: now / 500,
                        uptime_ms: now,
                    });
                    self.send(&vm, s, msg).await;
                }
            }
            Input::Report { mut snapshot, .. } => {
                snapshot.uptime_ms = now;
                for e in &mut snapshot.kernel_events {
                    e.timestamp_us = now.saturating_sub(e.timestamp_us) * 1000;
                }
                if let Some(s) = session {
                    let msg = Message::Report(Report {
                        seq: now,
                        trigger: ReportTrigger::Periodic,
                        snapshot: *snapshot,
                    });
                    self.send(&vm, s, msg).await;
                }
            }
            Input::Notice(n) => {
                if let Some(s) = session {
                    self.send(&vm, s, Message::Notice(n)).await;
                }
            }
            Input::Bye(reason) => {
                if let Some(s) = session {
                    self.send(&vm, s, Message::Bye(Bye { reason })).await;
                }
            }
            Input::SessionClosed => {
                if let Some(a) = self.agents.remove(&vm) {
                    self.deliver(CoreMsg::Closed {
                        vm,
                        session: a.session,
                        why: "closed by the agent".into(),
                    })
                    .await;
                }
            }
            Input::VmRemoved => self.hv.with(|w| {
                if let Some(d) = w.doms.get_mut(&vm) {
                    d.listed = false;
                }
            }),
            Input::Operator(cmd) => {
                let req = match cmd {
                    OperatorCommand::MaintenanceOn { until } => Request::Maintenance {
                        domain: vm.clone(),
                        on: true,
                        for_ms: until,
                    },
                    OperatorCommand::MaintenanceOff => Request::Maintenance {
                        domain: vm.clone(),
                        on: false,
                        for_ms: None,
                    },
                    OperatorCommand::Release => Request::Release { domain: vm.clone() },
                    OperatorCommand::Act { kind } => Request::Act {
                        domain: vm.clone(),
                        action: kind.name().to_string(),
                    },
                };
                match self.control(req).await {
                    Some(r) if r.ok => {}
                    Some(r) => self.say(&vm, format_args!("operator refused: {}", r.data)),
                    None => self.say(&vm, format_args!("operator got no answer")),
                }
            }
            // The hypervisor's vNICs change; the core reads them when the
            // guest's network changes shape.
            Input::Nics(nics) => self.hv.with(|w| {
                if let Some(d) = w.doms.get_mut(&vm) {
                    d.nics = nics;
                }
            }),
            other => self.say(&vm, format_args!("not in the core harness: {other:?}")),
        }
    }
}
