//! The core's side of the hypervisor: domain polls (VMs appear, change
//! state, disappear) and libvirt events.

use super::*;
use crate::engine::{DomainState, PauseReason};

impl Core {
    pub(super) fn on_polled(
        &mut self,
        now: Millis,
        polls: Vec<(DomainDef, Result<crate::backend::DomainPoll, String>)>,
        full: bool,
    ) {
        let seen: std::collections::BTreeSet<String> =
            polls.iter().map(|(d, _)| d.name.clone()).collect();
        for (def, poll) in polls {
            let name = def.name.clone();
            let poll = match poll {
                Ok(p) => p,
                Err(e) => {
                    log::debug!("vm={name} poll failed: {e}");
                    continue;
                }
            };
            let known = self.engine.state(&name).is_some();
            let was = self.engine.domain(&name);
            let v = self.vms.entry(name.clone()).or_default();
            v.uuid = def.uuid.clone();
            let agent = v.cfg.as_ref().is_some_and(|c| c.agent.is_some())
                || (def.vsock_cid.is_some() && !self.cfg.listen.is_empty());
            let cluster = self.cfg.cluster.enabled()
                && v.cfg.as_ref().is_some_and(|c| c.cluster_resource.is_some());
            v.def = Some(def);
            if was != Some(poll.state) && poll.state.guest_gone() {
                v.boot_ended();
            }
            // A VM new to the engine takes what the engine already knew of
            // it (its journal history, a lifecycle event or an agent's
            // Hello that came before the listing) when it is added.
            self.step(
                now,
                &name,
                Input::VmAdded {
                    agent,
                    memory_kib: poll.memory_kib,
                    cluster,
                },
            );
            if !known {
                if let Some((id, kind, at)) = self.engine.take_resume(&name) {
                    self.resume_interrupted(&name, id, kind, at);
                }
                log::info!("monitoring vm={name} agent={agent}");
                // Discovering: watched closely until healthy.
                let _ = self.backend.send(BackendReq::Watch {
                    vm: name.clone(),
                    hot: true,
                });
                let uuid = uuid_of(&self.vms, &name);
                self.metrics.set_state(&name, &uuid, State::Discovering);
            }
            if self.engine.domain(&name).map(DomainState::plain) != Some(poll.state.plain()) {
                self.step(now, &name, Input::Domain(poll.state));
            }
            if let Some(stats) = poll.stats {
                self.step(now, &name, Input::Stats(stats));
            }
        }
        if !full {
            return; // only the domains that need watching were polled
        }
        self.tell_storage_disks();
        let gone: Vec<String> = self
            .vms
            .iter()
            .filter(|(n, v)| v.def.is_some() && !seen.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            log::info!("vm={name} no longer defined");
            if let Some(v) = self.vms.get_mut(&name) {
                v.def = None;
                v.session = None;
            }
            self.step(now, &name, Input::VmRemoved);
        }
    }

    /// Finish what a restart interrupted (a start after the destroy of a
    /// reset), within the fault it belongs to.
    fn resume_interrupted(&mut self, vm: &str, id: u64, kind: ActionKind, at: Millis) {
        log::warn!(
            "vm={vm} action=#{id} {} was interrupted by a restart; resuming what is left of it",
            kind.name()
        );
        self.action_kinds.insert(id, kind.name().to_string());
        let snapshot = self
            .vms
            .get(vm)
            .and_then(|v| v.cfg.as_ref())
            .and_then(|c| c.snapshot.clone());
        let req = BackendReq::Act {
            id,
            vm: vm.to_string(),
            kind,
            memory_kib: None,
            snapshot,
            now: at,
            resume: true,
        };
        if self.backend.send(req).is_err() {
            self.done(id, vm, false, "backend thread gone");
        }
    }

    pub(super) fn on_hv(&mut self, now: Millis, ev: HvEvent) {
        match ev {
            HvEvent::Definitions => {
                let _ = self.backend.send(BackendReq::Relist);
            }
            HvEvent::State(name, st) => {
                if self.engine.domain(&name) == Some(st) {
                    return;
                }
                if st.plain() == DomainState::Paused(PauseReason::IoError) {
                    self.look_at_storage();
                }
                if st.guest_gone() {
                    if let Some(v) = self.vms.get_mut(&name) {
                        v.boot_ended();
                    }
                }
                log::info!("vm={name} hypervisor event: {st:?}");
                self.step(now, &name, Input::Domain(st));
            }
            HvEvent::Rebooted(name) => {
                log::info!("vm={name} hypervisor event: reboot");
                if let Some(v) = self.vms.get_mut(&name) {
                    v.boot_ended();
                }
                self.reboot_seen(now, &name);
                self.step(now, &name, Input::Rebooted);
            }
            HvEvent::Devices(name) => self.ask_nics(now, &name),
        }
    }
}
