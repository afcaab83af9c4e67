//! Carrying out one action on the hypervisor (on an executor thread):
//! reset with its fallback, the snapshot revert, and what is left of an
//! action a vigild restart interrupted.

use super::backend_thread::BackendReq;
use crate::backend::{DomainDef, Hypervisor};
use crate::engine::{ActionKind, DomainState, Millis, PauseReason};

/// Carry out one action (on an executor thread).
pub fn act(hv: &mut dyn Hypervisor, req: &BackendReq) -> Result<String, String> {
    let BackendReq::Act {
        vm,
        kind,
        memory_kib,
        snapshot,
        now,
        resume,
        ..
    } = req
    else {
        return Err("not an action".into());
    };
    let e = |e: crate::backend::BackendError| e.to_string();
    if *resume {
        return resume_action(hv, vm, kind, snapshot.as_deref(), *now);
    }
    match kind {
        // A crashed domain kept for evidence (on_crash=preserve) cannot be
        // reset in place: fall back to destroy + start.
        ActionKind::Reset => reset(hv, vm),
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
        ActionKind::SetLinkUp(mac) => hv
            .set_link(vm, mac, true)
            .map_err(e)
            .map(|_| format!("link of {mac} set up")),
        ActionKind::ReplugNic(mac) => hv
            .replug_nic(vm, mac)
            .map_err(e)
            .map(|_| format!("{mac} detached and attached again")),
        ActionKind::SnapshotRevert => {
            let good = snapshot
                .as_deref()
                .ok_or("no known-good snapshot configured for this VM")?;
            snapshot_revert(hv, vm, good, &format!("vigil-safety-{now}"))
        }
        ActionKind::Reconfigure(r) => hv.resize(vm, r).map_err(e),
        other => Err(format!("{} is not a hypervisor action", other.name())),
    }
}

/// What is left of a multi-step action a vigild restart interrupted. A
/// domain found running had its action completed (or was started by
/// someone else): nothing is repeated. A domain left shut off by the
/// interrupted destroy gets the rest: the revert (same safety snapshot
/// name, taken only if missing) and the start.
fn resume_action(
    hv: &mut dyn Hypervisor,
    vm: &str,
    kind: &ActionKind,
    snapshot: Option<&str>,
    at: Millis,
) -> Result<String, String> {
    let e = |e: crate::backend::BackendError| e.to_string();
    match state(hv, vm) {
        Some(DomainState::Running) => {
            Ok("resumed after a vigild restart: domain already running; nothing repeated".into())
        }
        Some(
            DomainState::ShutOff(_)
            | DomainState::Crashed { .. }
            | DomainState::Paused(PauseReason::Panicked),
        ) => {
            if *kind == ActionKind::SnapshotRevert {
                let good = snapshot.ok_or("no known-good snapshot configured for this VM")?;
                let r = snapshot_revert(hv, vm, good, &format!("vigil-safety-{at}"))?;
                return Ok(format!("resumed after a vigild restart: {r}"));
            }
            if matches!(
                state(hv, vm),
                Some(DomainState::Crashed { .. } | DomainState::Paused(_))
            ) {
                hv.destroy(vm).map_err(e)?;
            }
            hv.start(vm).map_err(e)?;
            Ok(format!(
                "resumed after a vigild restart: {} completed (started)",
                kind.name()
            ))
        }
        Some(other) => Err(format!(
            "resumed after a vigild restart: domain {other}; left as it is"
        )),
        None => Err("resumed after a vigild restart: domain state unknown".into()),
    }
}

/// A domain's run state, if the hypervisor can say.
fn state(hv: &mut dyn Hypervisor, vm: &str) -> Option<DomainState> {
    let def = DomainDef {
        name: vm.to_string(),
        uuid: String::new(),
        vsock_cid: None,
        disks: Vec::new(),
        sources: Vec::new(),
        interfaces: Vec::new(),
        nics: Vec::new(),
    };
    hv.poll(&def).ok().map(|p| p.state)
}

/// Reset a domain. A crashed domain kept for evidence (on_crash=preserve)
/// keeps its panicked run state across a reset, and a reset can fail: in
/// both cases destroy + start instead.
fn reset(hv: &mut dyn Hypervisor, vm: &str) -> Result<String, String> {
    let crashed = matches!(
        state(hv, vm),
        Some(DomainState::Crashed { .. } | DomainState::Paused(PauseReason::Panicked))
    );
    let e = |e: crate::backend::BackendError| e.to_string();
    if crashed {
        let _ = hv.destroy(vm);
        return hv
            .start(vm)
            .map_err(e)
            .map(|_| "domain crashed (kept for evidence): destroyed and started".into());
    }
    match hv.reset(vm) {
        Ok(()) => Ok("reset".into()),
        Err(first) => {
            let _ = hv.destroy(vm); // may already be off
            hv.start(vm)
                .map_err(e)
                .map(|_| format!("reset failed ({first}); destroyed and started instead"))
        }
    }
}

/// Revert to the known-good snapshot `good`, keeping the broken state as
/// the snapshot `safety`: destroy → snapshot of the shut-off domain (an
/// internal snapshot of each qcow2 disk) → revert → start. Done on a
/// shut-off domain because a running one cannot always be snapshotted
/// (vhost-user devices forbid memory and internal snapshots), and the
/// guest is broken anyway when the ladder gets here. Nothing is destroyed
/// unless `good` exists; a failure after the destroy starts the domain
/// again as it was.
fn snapshot_revert(
    hv: &mut dyn Hypervisor,
    vm: &str,
    good: &str,
    safety: &str,
) -> Result<String, String> {
    let e = |e: crate::backend::BackendError| e.to_string();
    if !hv.snapshots(vm).map_err(e)?.iter().any(|s| s == good) {
        return Err(format!("{vm} has no snapshot named {good}"));
    }
    if !matches!(state(hv, vm), Some(DomainState::ShutOff(_))) {
        hv.destroy(vm).map_err(e)?;
    }
    // A resumed revert may find its safety snapshot already taken.
    let taken = hv.snapshots(vm).map_err(e)?.iter().any(|s| s == safety);
    let reverted = if taken {
        hv.snapshot_revert(vm, good)
    } else {
        hv.snapshot_create(vm, safety)
            .and_then(|()| hv.snapshot_revert(vm, good))
    };
    // A snapshot of a running state comes back running.
    let start = if matches!(state(hv, vm), Some(DomainState::Running)) {
        Ok(())
    } else {
        hv.start(vm)
    };
    match (reverted, start) {
        (Ok(()), Ok(())) => Ok(format!(
            "destroyed, safety snapshot {safety} taken, reverted to {good}, started"
        )),
        (Ok(()), Err(s)) => Err(format!("reverted to {good}, but {s}")),
        (Err(r), _) => Err(format!("not reverted: {r}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, DomainPoll};

    /// A hypervisor whose reset fails, counting calls.
    #[derive(Default)]
    struct Fake {
        calls: Vec<&'static str>,
        reset_fails: bool,
        crashed: bool,
        off: bool,
        snapshots: Vec<String>,
        create_fails: bool,
    }

    fn no(op: &'static str) -> Result<(), BackendError> {
        Err(BackendError::Call {
            op,
            domain: "vm".into(),
            message: "domain is not running".into(),
        })
    }

    impl Hypervisor for Fake {
        fn worker(&self) -> Box<dyn Hypervisor> {
            Box::new(Fake::default())
        }
        fn list(&mut self) -> Result<Vec<DomainDef>, BackendError> {
            Ok(vec![])
        }
        fn poll(&mut self, _: &DomainDef) -> Result<DomainPoll, BackendError> {
            let state = if self.crashed {
                DomainState::Crashed { panicked: true }
            } else if self.off {
                DomainState::ShutOff(crate::engine::StopReason::Destroyed)
            } else {
                DomainState::Running
            };
            Ok(DomainPoll {
                state,
                stats: Some(Default::default()),
                memory_kib: (1, 1),
            })
        }
        fn reset(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("reset");
            if self.reset_fails {
                no("reset")
            } else {
                Ok(())
            }
        }
        fn reboot(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("reboot");
            Ok(())
        }
        fn shutdown(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("shutdown");
            Ok(())
        }
        fn destroy(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("destroy");
            (self.off, self.crashed) = (true, false);
            Ok(())
        }
        fn start(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("start");
            self.off = false;
            Ok(())
        }
        fn resume(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("resume");
            Ok(())
        }
        fn set_memory(&mut self, _: &str, _: u64) -> Result<(), BackendError> {
            self.calls.push("set-memory");
            Ok(())
        }
        fn set_vcpus(&mut self, _: &str, _: u32) -> Result<(), BackendError> {
            self.calls.push("set-vcpus");
            Ok(())
        }
        fn snapshots(&mut self, _: &str) -> Result<Vec<String>, BackendError> {
            Ok(self.snapshots.clone())
        }
        fn snapshot_create(&mut self, _: &str, s: &str) -> Result<(), BackendError> {
            self.calls.push("snapshot-create");
            if self.create_fails {
                return no("snapshot-create");
            }
            self.snapshots.push(s.into());
            Ok(())
        }
        fn snapshot_revert(&mut self, _: &str, _: &str) -> Result<(), BackendError> {
            self.calls.push("snapshot-revert");
            Ok(())
        }
    }

    fn req(kind: ActionKind, snapshot: Option<&str>) -> BackendReq {
        BackendReq::Act {
            id: 1,
            vm: "vm".into(),
            kind,
            memory_kib: Some(4096),
            snapshot: snapshot.map(Into::into),
            now: 7,
            resume: false,
        }
    }

    #[test]
    fn a_resumed_action_does_only_what_is_left() {
        // Killed after the destroy: the domain is off; only the start runs.
        let mut hv = Fake {
            off: true,
            ..Fake::default()
        };
        let mut r = req(ActionKind::DestroyStart, None);
        if let BackendReq::Act { resume, .. } = &mut r {
            *resume = true;
        }
        let d = act(&mut hv, &r).unwrap();
        assert_eq!(hv.calls, ["start"], "{d}");
        // Killed after the start: nothing is repeated.
        let mut hv = Fake::default();
        assert!(act(&mut hv, &r).unwrap().contains("nothing repeated"));
        assert!(hv.calls.is_empty());
        // A revert killed after its safety snapshot: revert and start only.
        let mut hv = Fake {
            off: true,
            snapshots: vec!["known-good".into(), "vigil-safety-7".into()],
            ..Fake::default()
        };
        let mut r = req(ActionKind::SnapshotRevert, Some("known-good"));
        if let BackendReq::Act { resume, .. } = &mut r {
            *resume = true;
        }
        act(&mut hv, &r).unwrap();
        assert_eq!(hv.calls, ["snapshot-revert", "start"]);
    }

    #[test]
    fn reset_of_a_crashed_domain_falls_back_to_destroy_and_start() {
        let mut hv = Fake {
            reset_fails: true,
            ..Fake::default()
        };
        let r = act(&mut hv, &req(ActionKind::Reset, None)).unwrap();
        assert!(r.contains("destroyed and started"), "{r}");
        assert_eq!(hv.calls, ["reset", "destroy", "start"]);
        let mut hv = Fake {
            crashed: true,
            ..Fake::default()
        };
        assert!(act(&mut hv, &req(ActionKind::Reset, None))
            .unwrap()
            .contains("kept for evidence"));
        assert_eq!(hv.calls, ["destroy", "start"]);
        let mut hv = Fake::default();
        assert_eq!(
            act(&mut hv, &req(ActionKind::Reset, None)).unwrap(),
            "reset"
        );
        assert_eq!(hv.calls, ["reset"]);
    }

    #[test]
    fn snapshot_revert_stops_the_domain_keeps_a_safety_snapshot_and_starts_it_again() {
        let mut hv = Fake {
            snapshots: vec!["known-good".into()],
            ..Fake::default()
        };
        let r = act(
            &mut hv,
            &req(ActionKind::SnapshotRevert, Some("known-good")),
        )
        .unwrap();
        assert_eq!(
            hv.calls,
            ["destroy", "snapshot-create", "snapshot-revert", "start"]
        );
        assert_eq!(hv.snapshots, ["known-good", "vigil-safety-7"]);
        assert!(
            r.contains("vigil-safety-7") && r.contains("known-good"),
            "{r}"
        );
        assert!(!hv.off);
    }

    #[test]
    fn snapshot_revert_destroys_nothing_without_a_known_good_snapshot() {
        let mut hv = Fake::default();
        assert!(act(&mut hv, &req(ActionKind::SnapshotRevert, None))
            .unwrap_err()
            .contains("no known-good"));
        let e = act(
            &mut hv,
            &req(ActionKind::SnapshotRevert, Some("known-good")),
        )
        .unwrap_err();
        assert!(e.contains("no snapshot named known-good"), "{e}");
        assert!(hv.calls.is_empty());
    }

    #[test]
    fn a_failed_safety_snapshot_reverts_nothing_and_starts_the_domain_again() {
        let mut hv = Fake {
            snapshots: vec!["known-good".into()],
            create_fails: true,
            ..Fake::default()
        };
        let e = act(
            &mut hv,
            &req(ActionKind::SnapshotRevert, Some("known-good")),
        )
        .unwrap_err();
        assert!(e.contains("not reverted"), "{e}");
        assert_eq!(hv.calls, ["destroy", "snapshot-create", "start"]);
        assert!(!hv.off);
    }

    #[test]
    fn agent_actions_are_not_hypervisor_actions() {
        let mut hv = Fake::default();
        assert!(act(&mut hv, &req(ActionKind::Alert, None)).is_err());
        assert!(hv.calls.is_empty());
    }
}
