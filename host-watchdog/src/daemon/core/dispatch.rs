//! Handing the engine's actions to whoever carries them out: the agent
//! (through its session), the backend's executor, the cluster, or the
//! core itself (an alert, an evidence capture, a liveness probe).

use super::*;

impl Core {
    pub(super) fn done(&self, id: u64, vm: &str, ok: bool, detail: impl Into<String>) {
        let tx = self.tx.clone();
        let msg = CoreMsg::ActionDone {
            id,
            vm: vm.to_string(),
            ok,
            detail: detail.into(),
        };
        tokio::spawn(async move {
            let _ = tx.send(msg).await;
        });
    }

    pub(super) fn dispatch(&mut self, now: Millis, a: engine::Action) {
        match &a.kind {
            ActionKind::AskCluster => self.ask_cluster(a.id, &a.vm),
            ActionKind::RestartService(_) | ActionKind::Repair(_) | ActionKind::AgentReboot => {
                let action = match &a.kind {
                    ActionKind::RestartService(n) => {
                        CommandAction::RestartService(n.as_str().into())
                    }
                    ActionKind::Repair(n) => CommandAction::Repair(n.as_str().into()),
                    _ => CommandAction::Reboot,
                };
                // Never write to a VM's vsock unless its domain is running.
                let session = self
                    .vms
                    .get(&a.vm)
                    .and_then(VmRt::live_session)
                    .map(|s| s.tx.clone());
                match (session, self.engine.may_talk_to(&a.vm)) {
                    (Some(tx), true) => {
                        let cid = self.next_probe;
                        self.next_probe = self.next_probe.wrapping_add(1).max(1);
                        self.commands.insert(cid, (a.id, a.vm.clone()));
                        let reboot = matches!(action, CommandAction::Reboot);
                        if tx
                            .try_send(Box::new(Message::Command(Command { id: cid, action })))
                            .is_err()
                        {
                            self.commands.remove(&cid);
                            self.done(a.id, &a.vm, false, "agent queue full or closed");
                            return;
                        }
                        if reboot {
                            // The guest is asked to reboot: this boot is
                            // ending, its session takes no more writes (a
                            // write racing the reset wedges hybrid vsock).
                            if let Some(v) = self.vms.get_mut(&a.vm) {
                                v.boot_ended();
                            }
                        }
                        // Give up on an answer after the command timeout.
                        let core = self.tx.clone();
                        let timeout = Duration::from_millis(self.cfg.command_timeout_ms);
                        tokio::spawn(async move {
                            tokio::time::sleep(timeout).await;
                            let _ = core.send(CoreMsg::RequestTimeout(cid)).await;
                        });
                    }
                    _ => self.done(
                        a.id,
                        &a.vm,
                        false,
                        "agent not connected or domain not running",
                    ),
                }
            }
            ActionKind::Alert => {
                log::warn!(
                    "ALERT vm={} fault=#{}: operator attention needed",
                    a.vm,
                    a.fault
                );
                self.done(a.id, &a.vm, true, "alert logged");
            }
            ActionKind::CaptureEvidence => {
                let summary = self.evidence(&a.vm);
                self.done(a.id, &a.vm, true, summary);
            }
            ActionKind::LivenessProbe => self.liveness_probe(&a.vm),
            _ => {
                let snapshot = self
                    .vms
                    .get(&a.vm)
                    .and_then(|v| v.cfg.as_ref())
                    .and_then(|c| c.snapshot.clone());
                let req = BackendReq::Act {
                    id: a.id,
                    vm: a.vm.clone(),
                    kind: a.kind.clone(),
                    memory_kib: a.memory_kib,
                    snapshot,
                    now,
                    resume: false,
                };
                if self.backend.send(req).is_err() {
                    self.done(a.id, &a.vm, false, "backend thread gone");
                }
            }
        }
    }
}
