//! The core's side of the network: the host's view of each VM's vNICs
//! (asked of the backend when the guest's network changes shape, at most
//! twice a second per VM), and per-interface metrics.

use super::*;
use crate::engine::HostNic;
use vigil_protocol::snapshot::Network;

/// Least time between two reads of one VM's vNICs (a guest that flaps its
/// links cannot make vigild read libvirt faster than this).
const NICS_EVERY_MS: Millis = 500;
/// Every VM's vNICs are read at least this often, at most
/// [`SWEEP_PER_TICK`] VMs per tick: nothing tells vigild of `virsh
/// domif-setlink`, and a guest without an agent, or one that does not use
/// the NIC, sees no change to report.
const SWEEP_EVERY_MS: Millis = 60_000;
const SWEEP_PER_TICK: usize = 5;

impl Core {
    /// The guest's network changed shape (or this is its first report):
    /// the host's side is read again, now or when the limit allows.
    pub(super) fn guest_network(
        &mut self,
        now: Millis,
        vm: &str,
        before: Option<&Network>,
        n: &Network,
    ) {
        if before.map(Network::shape) != Some(n.shape()) {
            self.ask_nics(now, vm);
        }
        self.metrics
            .set_guest_network(vm, &uuid_of(&self.vms, vm), n);
    }

    /// Read a VM's vNICs now, or as soon as the limit allows.
    pub(super) fn ask_nics(&mut self, now: Millis, vm: &str) {
        let Some(v) = self.vms.get_mut(vm) else {
            return;
        };
        if v.nics_asked
            .is_some_and(|t| now.saturating_sub(t) < NICS_EVERY_MS)
        {
            v.nics_due = true;
            return;
        }
        v.nics_asked = Some(now);
        v.nics_due = false;
        let _ = self.backend.send(BackendReq::Nics(vm.to_string()));
    }

    /// On the tick: the reads the limit held back, and a few of the VMs
    /// whose guest cannot say, read again.
    pub(super) fn nics_due(&mut self, now: Millis) {
        let mut due: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, v)| v.nics_due)
            .map(|(n, _)| n.clone())
            .collect();
        let stale = |v: &VmRt| {
            v.def.as_ref().is_some_and(|d| !d.nics.is_empty())
                && v.nics_asked
                    .is_none_or(|t| now.saturating_sub(t) >= SWEEP_EVERY_MS)
        };
        due.extend(
            self.vms
                .iter()
                .filter(|(_, v)| !v.nics_due && stale(v))
                .take(SWEEP_PER_TICK)
                .map(|(n, _)| n.clone()),
        );
        for vm in due {
            self.ask_nics(now, &vm);
        }
    }

    /// The host's view of a VM's vNICs: the engine hears of a change.
    pub(super) fn on_nics(&mut self, now: Millis, vm: &str, nics: Vec<HostNic>) {
        let Some(v) = self.vms.get_mut(vm) else {
            return;
        };
        if v.nics.as_ref() == Some(&nics) {
            return;
        }
        v.nics = Some(nics.clone());
        self.metrics.set_vnics(vm, &uuid_of(&self.vms, vm), &nics);
        self.step(now, vm, Input::Nics(nics));
    }
}

/// A snapshot as JSON for the control API, with its network (which the
/// wire carries apart from the rest).
pub(super) fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(n) = &s.network {
        v["network"] = serde_json::to_value(n).unwrap_or_default();
    }
    v
}
