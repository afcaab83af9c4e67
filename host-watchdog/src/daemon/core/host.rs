//! The core's side of the host itself: its kernel log's records, its
//! pressure, and its storage under VM disks (where each VM's disks live,
//! which block devices are under them, how full those filesystems are).

use super::super::cluster::ClusterReq;
use super::super::host_kmsg::HostKernel;
use super::super::host_storage::StorageReq;
use super::super::metrics::HostEventLabels;
use super::*;
use crate::engine::storage::FsSample;

impl Core {
    /// Where the cluster is told things (the cluster thread): the host's
    /// health goes out now and on every change.
    pub fn join_cluster(&mut self, tx: std::sync::mpsc::Sender<ClusterReq>) {
        let _ = tx.send(ClusterReq::Health(self.engine.host().health()));
        self.cluster = Some(tx);
    }

    /// The host's health changed: the cluster hears of it.
    pub(super) fn tell_cluster_health(&self, h: crate::engine::host::HostHealth) {
        if let Some(tx) = &self.cluster {
            let _ = tx.send(ClusterReq::Health(h));
        }
    }

    /// A cluster-managed VM failed beyond what vigild may do: the cluster
    /// recovers it.
    pub(super) fn ask_cluster(&mut self, id: u64, vm: &str) {
        let resource = self
            .vms
            .get(vm)
            .and_then(|v| v.cfg.as_ref())
            .and_then(|c| c.cluster_resource.clone());
        match (&self.cluster, resource) {
            (Some(tx), Some(resource)) => {
                let req = ClusterReq::Fail {
                    id,
                    vm: vm.to_string(),
                    resource,
                };
                if tx.send(req).is_err() {
                    self.done(id, vm, false, "cluster thread gone");
                }
            }
            _ => self.done(id, vm, false, "not a cluster resource here"),
        }
    }

    /// Where host storage is looked at (the host-storage thread).
    pub fn watch_storage(&mut self, tx: std::sync::mpsc::Sender<StorageReq>) {
        self.storage = Some(tx);
        self.storage_disks = None;
    }

    /// After a full poll: each VM's disks' sources to the storage thread,
    /// when they changed.
    pub(super) fn tell_storage_disks(&mut self) {
        let Some(tx) = &self.storage else { return };
        let disks: BTreeMap<String, Vec<String>> = self
            .vms
            .iter()
            .filter_map(|(n, v)| Some((n.clone(), v.def.as_ref()?.sources.clone())))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if self.storage_disks.as_ref() != Some(&disks) {
            let _ = tx.send(StorageReq::Disks(disks.clone()));
            self.storage_disks = Some(disks);
        }
    }

    /// A VM paused for a disk error: look at the host's storage now.
    pub(super) fn look_at_storage(&self) {
        if let Some(tx) = &self.storage {
            let _ = tx.send(StorageReq::Now);
        }
    }

    /// The host's filesystems under VM disks, sampled.
    pub(super) fn on_host_storage(
        &mut self,
        now: Millis,
        filesystems: Vec<FsSample>,
        devices: BTreeMap<String, Vec<String>>,
    ) {
        self.metrics.host_fs_avail.clear();
        self.metrics.host_fs_size.clear();
        for f in &filesystems {
            let l = super::super::metrics::MountLabels {
                mount: f.mount.clone(),
            };
            self.metrics
                .host_fs_avail
                .get_or_create(&l)
                .set(f.avail as i64);
            self.metrics
                .host_fs_size
                .get_or_create(&l)
                .set(f.size as i64);
        }
        self.disk_devices = devices;
        let out = self.engine.host_storage(now, filesystems);
        self.apply(now, out);
    }

    /// A record of the host's kernel log: counted and logged; a QEMU the
    /// host's OOM killer chose explains its domain's stop that follows.
    pub(super) fn on_host_kernel(&mut self, now: Millis, h: HostKernel) {
        let class = h.record.event.class();
        self.metrics
            .host_events
            .get_or_create(&HostEventLabels {
                class: class.into(),
            })
            .inc_by(1 + h.left_out);
        let vm = h.vm.as_deref().unwrap_or("-");
        let left_out = match h.left_out {
            0 => String::new(),
            n => format!(" ({n} more of this class left out before it)"),
        };
        log::warn!(
            "host kernel: {class} seq={} (vm={vm}): {}{left_out}",
            h.record.seq,
            h.record.text
        );
        use crate::host::kmsg::HostEvent;
        let signal = h
            .record
            .event
            .signal(|dev| self.disk_devices.get(dev).cloned().unwrap_or_default());
        let out = self.engine.host_signal(now, &signal, &h.record.text);
        self.apply(now, out);
        if let (HostEvent::OomKill { .. }, Some(vm)) = (&h.record.event, &h.vm) {
            self.step(
                now,
                vm,
                Input::HostOomKill {
                    line: h.record.text.clone(),
                },
            );
        }
    }
}
