//! The engine's tables of VMs: those monitored, and what is known of VMs
//! not monitored yet.

use super::vm::Vm;
use super::*;

/// The monitored VMs: in name order (ticks and listings go in a stable
/// order), found by name through a hash index (every input names its VM;
/// with thousands of VMs an ordered map's string comparisons showed in
/// profiles).
#[derive(Debug, Default)]
pub(super) struct VmTable {
    list: Vec<Vm>,
    index: std::collections::HashMap<VmId, usize>,
}

impl VmTable {
    pub(super) fn get(&self, name: &str) -> Option<&Vm> {
        self.index.get(name).map(|&i| &self.list[i])
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut Vm> {
        self.index.get(name).map(|&i| &mut self.list[i])
    }

    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Add `vm` (none of its name may be there), keeping name order.
    pub(super) fn insert(&mut self, vm: Vm) {
        let at = self.list.partition_point(|v| v.name < vm.name);
        self.list.insert(at, vm);
        self.reindex();
    }

    pub(super) fn remove(&mut self, name: &str) -> Option<Vm> {
        let i = self.index.get(name).copied()?;
        let v = self.list.remove(i);
        self.reindex();
        Some(v)
    }

    fn reindex(&mut self) {
        self.index = self
            .list
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), i))
            .collect();
    }

    pub(super) fn values(&self) -> std::slice::Iter<'_, Vm> {
        self.list.iter()
    }

    pub(super) fn values_mut(&mut self) -> std::slice::IterMut<'_, Vm> {
        self.list.iter_mut()
    }
}

/// Facts about a VM that is not monitored yet.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    pub(super) destructive: Vec<Millis>,
    pub(super) recovered: Vec<(RestoredFault, Millis)>,
    pub(super) fault: Option<RestoredFault>,
    /// Its domain's last state, and its agent's boot if a session is open.
    pub(super) domain: Option<DomainState>,
    pub(super) hello: Option<String>,
    /// In maintenance when the last run ended (until when, if timed).
    pub(super) maintenance: Option<Option<Millis>>,
    /// Quarantined when the last run ended, and why.
    pub(super) quarantined: Option<String>,
}
