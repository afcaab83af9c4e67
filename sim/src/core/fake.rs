//! The core harness's fakes: a hypervisor that behaves as libvirt does
//! towards vigild (lifecycle events, scripted failures, snapshots), and a
//! prober answered from the scenario.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use vigil_protocol::transport::Address;
use vigil_watchdog::backend::events::HvEvent;
use vigil_watchdog::backend::{BackendError, DomainDef, DomainPoll, Hypervisor};
use vigil_watchdog::daemon::core::Prober;
use vigil_watchdog::daemon::CoreMsg;
use vigil_watchdog::engine::*;

/// One domain as the fake hypervisor has it.
#[derive(Clone)]
pub(super) struct Dom {
    pub(super) state: Option<DomainState>,
    pub(super) stats: DomainStats,
    pub(super) memory: (u64, u64),
    pub(super) listed: bool,
    pub(super) snapshots: Vec<String>,
    /// Its vNICs (`nics VM ...` sets them; set-link-up and replug-nic
    /// bring a link up).
    pub(super) nics: Vec<HostNic>,
}

/// The fake hypervisor's world, shared with its handles.
#[derive(Default)]
pub(super) struct World {
    pub(super) doms: BTreeMap<String, Dom>,
    /// Lifecycle events the hypervisor emitted, for the core.
    pub(super) events: Vec<HvEvent>,
    /// Operations that fail: (operation, domain).
    pub(super) broken: Vec<(String, String)>,
}

#[derive(Clone)]
pub(super) struct FakeHv(pub(super) Arc<Mutex<World>>);

impl FakeHv {
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut w)
    }

    fn nic_op(
        &mut self,
        op: &'static str,
        name: &str,
        mac: &str,
        up: bool,
    ) -> Result<(), BackendError> {
        self.with(|w| {
            let broken = w.broken.iter().any(|(o, d)| o == op && d == name);
            let nic = w
                .doms
                .get_mut(name)
                .and_then(|d| d.nics.iter_mut().find(|n| n.mac == mac));
            match nic {
                Some(n) if !broken => {
                    n.link_up = up;
                    Ok(())
                }
                _ => Err(BackendError::Call {
                    op,
                    domain: name.into(),
                    message: if broken {
                        "scripted failure"
                    } else {
                        "no such vNIC"
                    }
                    .into(),
                }),
            }
        })
    }

    fn change(
        &mut self,
        op: &'static str,
        name: &str,
        to: Option<DomainState>,
    ) -> Result<(), BackendError> {
        self.with(|w| {
            if w.broken.iter().any(|(o, d)| o == op && d == name) {
                return Err(BackendError::Call {
                    op,
                    domain: name.into(),
                    message: "scripted failure".into(),
                });
            }
            let Some(d) = w.doms.get_mut(name) else {
                return Err(BackendError::NoDomain(name.into()));
            };
            match to {
                Some(st) => {
                    d.state = Some(st);
                    w.events.push(HvEvent::State(name.into(), st));
                }
                None => w.events.push(HvEvent::Rebooted(name.into())),
            }
            Ok(())
        })
    }
}

fn def(name: &str) -> DomainDef {
    DomainDef {
        name: name.into(),
        uuid: format!("00000000-0000-0000-0000-{:0>12}", name.len()),
        vsock_cid: None,
        disks: Vec::new(),
        sources: Vec::new(),
        interfaces: Vec::new(),
        nics: Vec::new(),
    }
}

impl Hypervisor for FakeHv {
    fn list(&mut self) -> Result<Vec<DomainDef>, BackendError> {
        Ok(self.with(|w| {
            w.doms
                .iter()
                .filter(|(_, d)| d.listed && d.state.is_some())
                .map(|(n, d)| DomainDef {
                    nics: d.nics.clone(),
                    ..def(n)
                })
                .collect()
        }))
    }
    fn poll(&mut self, def: &DomainDef) -> Result<DomainPoll, BackendError> {
        self.with(|w| match w.doms.get(&def.name) {
            Some(Dom {
                state: Some(state),
                stats,
                memory,
                ..
            }) => Ok(DomainPoll {
                state: *state,
                stats: Some(*stats),
                memory_kib: *memory,
            }),
            _ => Err(BackendError::NoDomain(def.name.clone())),
        })
    }
    fn worker(&self) -> Box<dyn Hypervisor> {
        Box::new(self.clone())
    }
    fn reset(&mut self, name: &str) -> Result<(), BackendError> {
        self.change("reset", name, None)
    }
    fn reboot(&mut self, name: &str) -> Result<(), BackendError> {
        self.change("reboot", name, None)
    }
    fn shutdown(&mut self, name: &str) -> Result<(), BackendError> {
        self.change(
            "shutdown",
            name,
            Some(DomainState::ShutOff(StopReason::Shutdown)),
        )
    }
    fn destroy(&mut self, name: &str) -> Result<(), BackendError> {
        self.change(
            "destroy",
            name,
            Some(DomainState::ShutOff(StopReason::Destroyed)),
        )
    }
    fn start(&mut self, name: &str) -> Result<(), BackendError> {
        self.change("start", name, Some(DomainState::Running))
    }
    fn resume(&mut self, name: &str) -> Result<(), BackendError> {
        self.change("resume", name, Some(DomainState::Running))
    }
    fn set_memory(&mut self, name: &str, kib: u64) -> Result<(), BackendError> {
        self.with(|w| match w.doms.get_mut(name) {
            Some(d) if kib <= d.memory.1 => {
                d.memory.0 = kib;
                Ok(())
            }
            Some(_) => Err(BackendError::Call {
                op: "set memory",
                domain: name.into(),
                message: "above the maximum".into(),
            }),
            None => Err(BackendError::NoDomain(name.into())),
        })
    }
    fn set_vcpus(&mut self, _: &str, _: u32) -> Result<(), BackendError> {
        Ok(())
    }
    fn nics(&mut self, name: &str) -> Result<Vec<HostNic>, BackendError> {
        self.with(|w| {
            w.doms
                .get(name)
                .map(|d| d.nics.clone())
                .ok_or_else(|| BackendError::NoDomain(name.into()))
        })
    }
    fn set_link(&mut self, name: &str, mac: &str, up: bool) -> Result<(), BackendError> {
        self.nic_op("set-link-up", name, mac, up)
    }
    fn replug_nic(&mut self, name: &str, mac: &str) -> Result<(), BackendError> {
        self.nic_op("replug-nic", name, mac, true)
    }
    fn snapshots(&mut self, name: &str) -> Result<Vec<String>, BackendError> {
        Ok(self.with(|w| {
            w.doms
                .get(name)
                .map(|d| d.snapshots.clone())
                .unwrap_or_default()
        }))
    }
    fn snapshot_create(&mut self, name: &str, snapshot: &str) -> Result<(), BackendError> {
        self.with(|w| {
            if let Some(d) = w.doms.get_mut(name) {
                d.snapshots.push(snapshot.into());
            }
        });
        Ok(())
    }
    fn snapshot_revert(&mut self, name: &str, snapshot: &str) -> Result<(), BackendError> {
        let known = self.with(|w| {
            w.doms
                .get(name)
                .is_some_and(|d| d.snapshots.iter().any(|s| s == snapshot))
        });
        if known {
            Ok(())
        } else {
            Err(BackendError::Call {
                op: "revert",
                domain: name.into(),
                message: format!("no snapshot {snapshot}"),
            })
        }
    }
}

/// Probes the core asks for, answered by the harness.
#[derive(Clone, Default)]
pub(super) struct ScriptedProber(pub(super) Arc<Mutex<Vec<String>>>);

impl Prober for ScriptedProber {
    fn probe(&self, vm: String, _: Option<Address>, _: Duration, _: mpsc::Sender<CoreMsg>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(vm);
    }
}
