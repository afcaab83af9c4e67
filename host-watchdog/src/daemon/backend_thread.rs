//! The backend thread: owns the hypervisor connection (all calls block),
//! polls every domain at the poll interval, and carries out actions.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::CoreMsg;
use crate::backend::{DomainDef, Hypervisor};
use crate::engine::{ActionKind, Millis};

/// A request for the backend thread.
#[derive(Debug)]
pub enum BackendReq {
    /// Carry out an action and report `ActionDone`.
    Act {
        /// Action id.
        id: u64,
        /// Domain.
        vm: String,
        /// What.
        kind: ActionKind,
        /// For add-memory.
        memory_kib: Option<u64>,
        /// Known-good snapshot for revert.
        snapshot: Option<String>,
        /// Time, for naming the safety snapshot.
        now: Millis,
    },
    /// Re-read domain definitions now.
    Relist,
}

fn act(hv: &mut dyn Hypervisor, req: &BackendReq) -> Result<String, String> {
    let BackendReq::Act {
        vm,
        kind,
        memory_kib,
        snapshot,
        now,
        ..
    } = req
    else {
        return Err("not an action".into());
    };
    let e = |e: crate::backend::BackendError| e.to_string();
    match kind {
        ActionKind::Reset => hv.reset(vm).map_err(e).map(|_| "reset".into()),
        ActionKind::Reboot => hv
            .reboot(vm)
            .map_err(e)
            .map(|_| "ACPI reboot requested".into()),
        ActionKind::Start => hv.start(vm).map_err(e).map(|_| "started".into()),
        ActionKind::Resume => hv.resume(vm).map_err(e).map(|_| "resumed".into()),
        ActionKind::Shutdown => hv
            .shutdown(vm)
            .map_err(e)
            .map(|_| "ACPI shutdown requested".into()),
        ActionKind::Destroy => hv.destroy(vm).map_err(e).map(|_| "destroyed".into()),
        ActionKind::DestroyStart => {
            hv.destroy(vm).map_err(e)?;
            hv.start(vm)
                .map_err(e)
                .map(|_| "destroyed and started".into())
        }
        ActionKind::AddMemory => {
            let kib = memory_kib.ok_or("no target size")?;
            hv.set_memory(vm, kib)
                .map_err(e)
                .map(|_| format!("memory set to {kib} KiB"))
        }
        ActionKind::SnapshotRevert => {
            let good = snapshot
                .as_deref()
                .ok_or("no known-good snapshot configured for this VM")?;
            let safety = format!("vigil-safety-{now}");
            hv.snapshot_create(vm, &safety).map_err(e)?;
            hv.snapshot_revert(vm, good).map_err(e)?;
            Ok(format!(
                "safety snapshot {safety} taken, reverted to {good}"
            ))
        }
        other => Err(format!("{} is not a hypervisor action", other.name())),
    }
}

/// Run until the core goes away.
pub fn run(
    mut hv: Box<dyn Hypervisor>,
    rx: Receiver<BackendReq>,
    core: Sender<CoreMsg>,
    interval: Duration,
) {
    let mut defs: Vec<DomainDef> = Vec::new();
    let mut relist = true;
    let mut next_poll = Instant::now();
    let mut last_list = Instant::now();
    loop {
        let wait = next_poll.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(BackendReq::Relist) => relist = true,
            Ok(req @ BackendReq::Act { .. }) => {
                let BackendReq::Act { id, ref vm, .. } = req else {
                    continue;
                };
                let (ok, detail) = match act(hv.as_mut(), &req) {
                    Ok(d) => (true, d),
                    Err(d) => (false, d),
                };
                let vm = vm.clone();
                if core
                    .blocking_send(CoreMsg::ActionDone { id, vm, ok, detail })
                    .is_err()
                {
                    return;
                }
                next_poll = Instant::now(); // show the effect at once
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() < next_poll {
            continue;
        }
        next_poll = Instant::now() + interval;
        if relist || last_list.elapsed() > Duration::from_secs(30) {
            match hv.list() {
                Ok(d) => {
                    defs = d;
                    relist = false;
                    last_list = Instant::now();
                }
                Err(e) => log::warn!("cannot list domains: {e}"),
            }
        }
        let polled = defs
            .iter()
            .map(|d| (d.clone(), hv.poll(d).map_err(|e| e.to_string())))
            .collect();
        if core.blocking_send(CoreMsg::Polled(polled)).is_err() {
            return;
        }
    }
}
