//! The libvirt implementation of [`Hypervisor`] (the `virt` crate).
//!
//! `test:///default` or `test:///abs/path/node.xml` (libvirt's built-in test
//! driver) for tests and demos, `qemu:///system` in production. Every call
//! blocks: the daemon runs this on a thread of its own.

use virt::connect::Connect;
use virt::domain::{
    Domain, DomainCrashedReason, DomainPausedReason, DomainShutoffReason, DomainState as LvState,
    DomainStateReason,
};
use virt::enumutil::Enum;

use super::{BackendError, DomainDef, DomainPoll, Hypervisor};

mod bulk;
mod link;
mod nics;
mod sizing;
use crate::engine::{DomainState, DomainStats, PauseReason, StopReason};
pub use bulk::{Bulk, IoFigures};

/// What one bulk call gave, by domain name.
#[derive(Debug, Default)]
pub struct FullPass {
    /// I/O counters and memory.
    pub io: std::collections::HashMap<String, IoFigures>,
    /// State with reason and vCPU time.
    pub polls: std::collections::HashMap<String, DomainPoll>,
}

/// A libvirt connection.
pub struct Libvirt {
    uri: String,
    link: std::sync::Arc<link::Link>,
    /// The link's generation this handle's domain handles are of.
    gen: u64,
    /// Domain handles the poll looked up, by name, with the UUID they were
    /// for: one lookup per domain, not one per poll (each is an RPC on a
    /// real host). A handle whose domain is gone or redefined is looked up
    /// again.
    handles: std::collections::HashMap<String, (String, Domain)>,
    /// Per domain: the run state its info last gave, the state with reason
    /// that went with it, and when. The reason (one more call) is asked
    /// only when the run state changed since a recent poll; lifecycle
    /// events carry reasons too.
    states: std::collections::HashMap<
        String,
        (
            virt::domain::DomainStateEnum,
            DomainState,
            std::time::Instant,
        ),
    >,
}

/// How long a domain's state reason is taken as still good while its run
/// state is unchanged (a few hot polls; a quiet domain is asked again).
const REASON_KEPT: std::time::Duration = std::time::Duration::from_secs(10);

fn call(op: &'static str, domain: &str, e: virt::error::Error) -> BackendError {
    if e.code() == Enum::Known(virt::error::ErrorNumber::NoDomain) {
        return BackendError::NoDomain(domain.to_string());
    }
    BackendError::Call {
        op,
        domain: domain.to_string(),
        message: e.message().to_string(),
    }
}

impl Libvirt {
    /// Open `uri`. Silences libvirt's default stderr error printer (errors
    /// are returned and logged by the daemon instead).
    pub fn open(uri: &str) -> Result<Libvirt, BackendError> {
        let lv = Libvirt::unconnected(uri);
        lv.reconnect()?;
        Ok(lv)
    }

    /// A handle on `uri` that is not connected yet: every call fails until
    /// [`Libvirt::reconnect`] succeeds (vigild starting while libvirtd is
    /// down keeps its agents' sessions and connects when it can).
    pub fn unconnected(uri: &str) -> Libvirt {
        virt::error::clear_error_callback();
        Libvirt {
            uri: uri.into(),
            link: std::sync::Arc::new(link::Link::new(uri)),
            gen: 0,
            handles: Default::default(),
            states: Default::default(),
        }
    }

    /// Open the connection again, for every handle of this link, and
    /// register the event callbacks on it (when events are watched).
    pub fn reconnect(&self) -> Result<(), BackendError> {
        self.link.reconnect()
    }

    /// Send the domains' events to `tx`, on this connection and each one
    /// after a reconnect.
    pub fn watch_events(
        &self,
        tx: std::sync::mpsc::Sender<super::events::HvEvent>,
    ) -> Result<(), BackendError> {
        self.link.watch_events(tx)
    }

    /// The connection is open and libvirtd on its other end (the
    /// keepalive libvirt runs on remote connections says when not).
    pub fn alive(&self) -> bool {
        self.conn().is_ok_and(|c| c.is_alive().unwrap_or(false))
    }

    /// The shared connection, as it is now.
    fn conn(&self) -> Result<Connect, BackendError> {
        self.link.conn()
    }

    /// Domain handles of an older connection are dropped.
    fn fresh(&mut self) {
        let gen = self.link.generation();
        if gen != self.gen {
            self.gen = gen;
            self.handles.clear();
            self.states.clear();
        }
    }

    /// The URI this connection was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn domain(&self, name: &str) -> Result<Domain, BackendError> {
        self.conn()?
            .lookup_domain_by_name(name)
            .map_err(|e| call("lookup", name, e))
    }
}

/// Whether a domain paused by a disk error ran out of space on the host
/// (libvirt's disk errors say so: `virsh domblkerror`).
fn out_of_space(d: &Domain) -> bool {
    use virt::sys;
    let mut errs: [sys::virDomainDiskError; 16] = [sys::virDomainDiskError {
        disk: std::ptr::null_mut(),
        error: 0,
    }; 16];
    // SAFETY: `d` is a live domain; libvirt fills at most 16 entries and
    // allocates each `disk` string, freed below.
    let n = unsafe { sys::virDomainGetDiskErrors(d.as_ptr(), errs.as_mut_ptr(), 16, 0) };
    let n = usize::try_from(n).unwrap_or(0).min(errs.len());
    let mut full = false;
    for e in &errs[..n] {
        full |= e.error == sys::VIR_DOMAIN_DISK_ERROR_NO_SPACE as i32;
        // SAFETY: allocated by libvirt for the caller to free.
        unsafe { nix::libc::free(e.disk as *mut nix::libc::c_void) };
    }
    full
}

/// Parse the parts of a domain's XML the daemon uses: pure.
pub fn parse_domain_xml(name: &str, uuid: &str, xml: &str) -> DomainDef {
    let mut def = DomainDef {
        name: name.into(),
        uuid: uuid.into(),
        vsock_cid: None,
        disks: Vec::new(),
        sources: Vec::new(),
        interfaces: Vec::new(),
        nics: nics::parse_nics(xml),
    };
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return def;
    };
    for node in doc.descendants() {
        match node.tag_name().name() {
            "disk" => {
                if let Some(dev) = node
                    .children()
                    .find(|c| c.has_tag_name("target"))
                    .and_then(|t| t.attribute("dev"))
                {
                    def.disks.push(dev.to_string());
                }
                let source = node.children().find(|c| c.has_tag_name("source"));
                if let Some(src) = source.and_then(|s| s.attribute("file").or(s.attribute("dev"))) {
                    def.sources.push(src.to_string());
                }
            }
            "interface" => {
                if let Some(dev) = node
                    .children()
                    .find(|c| c.has_tag_name("target"))
                    .and_then(|t| t.attribute("dev"))
                {
                    def.interfaces.push(dev.to_string());
                }
            }
            "vsock" => {
                def.vsock_cid = node
                    .children()
                    .find(|c| c.has_tag_name("cid"))
                    .and_then(|c| c.attribute("address"))
                    .and_then(|a| a.parse().ok());
            }
            _ => {}
        }
    }
    def
}

/// Map libvirt's raw state and reason numbers (a bulk stats record's) to
/// the engine's: pure.
pub fn map_raw(state: i32, reason: i32) -> DomainState {
    use virt::domain::{
        DomainCrashedReasonEnum, DomainPausedReasonEnum, DomainShutoffReasonEnum, DomainStateEnum,
    };
    let Enum::Known(state) = DomainStateEnum::from_raw(state as virt::sys::virDomainState) else {
        return DomainState::Unknown;
    };
    let reason = match state {
        LvState::Paused => Some(DomainStateReason::Paused(DomainPausedReasonEnum::from_raw(
            reason as virt::sys::virDomainPausedReason,
        ))),
        LvState::Shutoff => Some(DomainStateReason::Shutoff(
            DomainShutoffReasonEnum::from_raw(reason as virt::sys::virDomainShutoffReason),
        )),
        LvState::Crashed => Some(DomainStateReason::Crashed(
            DomainCrashedReasonEnum::from_raw(reason as virt::sys::virDomainCrashedReason),
        )),
        _ => None,
    };
    map_state(state, reason)
}

/// Map libvirt's state and reason to the engine's: pure.
pub fn map_state(state: LvState, reason: Option<DomainStateReason>) -> DomainState {
    match state {
        LvState::Running | LvState::Blocked => DomainState::Running,
        LvState::Paused => {
            let r = match reason {
                Some(DomainStateReason::Paused(Enum::Known(r))) => match r {
                    DomainPausedReason::User => PauseReason::User,
                    DomainPausedReason::Migration | DomainPausedReason::PostCopy => {
                        PauseReason::Migration
                    }
                    DomainPausedReason::Save | DomainPausedReason::Dump => PauseReason::Save,
                    DomainPausedReason::Snapshot | DomainPausedReason::FromSnapshot => {
                        PauseReason::Snapshot
                    }
                    DomainPausedReason::IOError => PauseReason::IoError,
                    DomainPausedReason::Watchdog => PauseReason::Watchdog,
                    DomainPausedReason::Crashed => PauseReason::Panicked,
                    _ => PauseReason::Other,
                },
                _ => PauseReason::Other,
            };
            DomainState::Paused(r)
        }
        LvState::Shutoff => {
            let r = match reason {
                Some(DomainStateReason::Shutoff(Enum::Known(r))) => match r {
                    DomainShutoffReason::Shutdown => StopReason::Shutdown,
                    DomainShutoffReason::Destroyed => StopReason::Destroyed,
                    DomainShutoffReason::Crashed => StopReason::Crashed,
                    DomainShutoffReason::Migrated => StopReason::Migrated,
                    DomainShutoffReason::Saved => StopReason::Saved,
                    DomainShutoffReason::Failed => StopReason::Failed,
                    DomainShutoffReason::FromSnapshot => StopReason::FromSnapshot,
                    _ => StopReason::Other,
                },
                _ => StopReason::Other,
            };
            DomainState::ShutOff(r)
        }
        LvState::Crashed => DomainState::Crashed {
            panicked: matches!(
                reason,
                Some(DomainStateReason::Crashed(Enum::Known(
                    DomainCrashedReason::Panicked
                )))
            ),
        },
        LvState::Shutdown => DomainState::ShuttingDown,
        LvState::NoState | LvState::PMSuspended => DomainState::Unknown,
    }
}

impl Hypervisor for Libvirt {
    fn worker(&self) -> Box<dyn Hypervisor> {
        Box::new(Libvirt {
            uri: self.uri.clone(),
            link: self.link.clone(), // one connection, shared
            gen: 0,
            handles: Default::default(),
            states: Default::default(),
        })
    }

    fn ping(&mut self) -> Result<(), BackendError> {
        self.conn()?
            .num_of_domains()
            .map(|_| ())
            .map_err(|e| call("ping", "*", e))
    }

    fn connected(&mut self) -> bool {
        self.alive()
    }

    fn reconnect(&mut self) -> Result<(), BackendError> {
        Libvirt::reconnect(self)
    }

    fn list(&mut self) -> Result<Vec<DomainDef>, BackendError> {
        self.fresh();
        let doms = self
            .conn()?
            .list_all_domains(0)
            .map_err(|e| call("list", "*", e))?;
        let mut out = Vec::with_capacity(doms.len());
        let mut handles = std::collections::HashMap::with_capacity(doms.len());
        for d in doms {
            let name = d.name().map_err(|e| call("name", "?", e))?;
            let uuid = d.uuid_string().unwrap_or_default();
            let xml = d.xml_desc(0).map_err(|e| call("xml", &name, e))?;
            out.push(parse_domain_xml(&name, &uuid, &xml));
            handles.insert(name, (uuid, d));
        }
        // The poll's handles: those of the domains defined now.
        self.states.retain(|n, _| handles.contains_key(n));
        self.handles = handles;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn poll(&mut self, def: &DomainDef) -> Result<DomainPoll, BackendError> {
        self.fresh();
        let d = match self.handles.get(&def.name) {
            Some((uuid, d)) if *uuid == def.uuid => d.clone(),
            _ => {
                let d = self.domain(&def.name)?;
                self.handles
                    .insert(def.name.clone(), (def.uuid.clone(), d.clone()));
                d
            }
        };
        let forget = |me: &mut Libvirt, e: BackendError| {
            me.handles.remove(&def.name);
            me.states.remove(&def.name);
            e
        };
        // info() reports errors; state() gives the reason but hides errors.
        let info = match d.info() {
            Ok(i) => i,
            Err(e) => return Err(forget(self, call("info", &def.name, e))),
        };
        // A reason known from long ago may not be this state's (paused by
        // the user then, by an I/O error now): asked again after a while.
        let recent = |at: &std::time::Instant| at.elapsed() < REASON_KEPT;
        let state = match self.states.get(&def.name) {
            Some((raw, known, at)) if *raw == info.state && recent(at) => *known,
            _ => {
                let (state, reason) = match d.state() {
                    Ok(s) => s,
                    Err(e) => return Err(forget(self, call("state", &def.name, e))),
                };
                let state = match state {
                    Enum::Known(s) => map_state(
                        s,
                        match reason {
                            Enum::Known(r) => Some(r),
                            Enum::Unknown(_) => None,
                        },
                    ),
                    Enum::Unknown(_) => DomainState::Unknown,
                };
                let state = match state {
                    DomainState::Paused(PauseReason::IoError) if out_of_space(&d) => {
                        DomainState::Paused(PauseReason::NoSpace)
                    }
                    s => s,
                };
                self.states.insert(
                    def.name.clone(),
                    (info.state, state, std::time::Instant::now()),
                );
                state
            }
        };
        let stats = DomainStats {
            cpu_time_ns: info.cpu_time,
            ..DomainStats::default()
        };
        Ok(DomainPoll {
            state,
            stats: Some(stats),
            memory_kib: (info.memory, info.max_mem),
        })
    }

    // No bulk call here: on libvirt 9.0 virConnectGetAllDomainStats,
    // even for state and vCPU time only and with NOWAIT, blocked 13.8 s on
    // a SIGSTOPped QEMU (after a suspend/resume), and would stall every
    // domain's poll; per-domain info and state do not (measured). The
    // quiet pass takes the I/O thread's bulk call when it answers in time.
    fn reset(&mut self, name: &str) -> Result<(), BackendError> {
        self.domain(name)?
            .reset()
            .map_err(|e| call("reset", name, e))
    }

    fn reboot(&mut self, name: &str) -> Result<(), BackendError> {
        self.domain(name)?
            .reboot(0)
            .map_err(|e| call("reboot", name, e))
    }

    fn shutdown(&mut self, name: &str) -> Result<(), BackendError> {
        self.domain(name)?
            .shutdown()
            .map_err(|e| call("shutdown", name, e))
    }

    fn destroy(&mut self, name: &str) -> Result<(), BackendError> {
        self.domain(name)?
            .destroy()
            .map_err(|e| call("destroy", name, e))
    }

    fn start(&mut self, name: &str) -> Result<(), BackendError> {
        self.domain(name)?
            .create()
            .map_err(|e| call("start", name, e))
    }

    fn resume(&mut self, name: &str) -> Result<(), BackendError> {
        self.domain(name)?
            .resume()
            .map_err(|e| call("resume", name, e))
    }

    fn set_memory(&mut self, name: &str, kib: u64) -> Result<(), BackendError> {
        // set_memory_flags, not set_memory: the latter is ambiguous about
        // live vs config on a running domain.
        self.domain(name)?
            .set_memory_flags(kib, virt::sys::VIR_DOMAIN_MEM_LIVE)
            .map_err(|e| call("set-memory", name, e))
    }

    fn set_vcpus(&mut self, name: &str, n: u32) -> Result<(), BackendError> {
        self.domain(name)?
            .set_vcpus_flags(n, virt::sys::VIR_DOMAIN_VCPU_CONFIG)
            .map_err(|e| call("set-vcpus", name, e))
    }

    fn snapshots(&mut self, name: &str) -> Result<Vec<String>, BackendError> {
        let d = self.domain(name)?;
        d.list_all_snapshots(0)
            .and_then(|all| all.iter().map(|s| s.name()).collect())
            .map_err(|e| call("snapshot-list", name, e))
    }

    fn snapshot_create(&mut self, name: &str, snapshot: &str) -> Result<(), BackendError> {
        let xml = format!("<domainsnapshot><name>{snapshot}</name></domainsnapshot>");
        let d = self.domain(name)?;
        d.create_snapshot_xml(&xml, 0)
            .map(|_| ())
            .map_err(|e| call("snapshot-create", name, e))
    }

    fn nics(&mut self, name: &str) -> Result<Vec<crate::engine::HostNic>, BackendError> {
        self.nics_now(name)
    }

    fn sizing(&mut self, name: &str) -> Result<super::Sizing, BackendError> {
        self.sizing_now(name)
    }

    fn resize(&mut self, name: &str, r: &crate::engine::Resize) -> Result<String, BackendError> {
        self.resize_now(name, r)
    }

    fn set_link(&mut self, name: &str, mac: &str, up: bool) -> Result<(), BackendError> {
        self.set_link_now(name, mac, up)
    }

    fn replug_nic(&mut self, name: &str, mac: &str) -> Result<(), BackendError> {
        self.replug_now(name, mac)
    }

    fn snapshot_revert(&mut self, name: &str, snapshot: &str) -> Result<(), BackendError> {
        let d = self.domain(name)?;
        let s = Domain::lookup_snapshot_by_name(&d, snapshot, 0)
            .map_err(|e| call("snapshot-lookup", name, e))?;
        s.revert(0).map_err(|e| call("snapshot-revert", name, e))
    }
}

impl Libvirt {
    /// One bulk call for every listed domain: its I/O counters and memory,
    /// and its poll (state with reason, vCPU time) where the record has
    /// one. It may need a VMM's monitor, so it runs on a thread of its own.
    /// A domain the call left the counters out of (a driver without them
    /// in bulk) is asked for them alone.
    pub fn full(&mut self, defs: &[DomainDef]) -> FullPass {
        use virt::sys;
        const ALL: u32 = sys::VIR_DOMAIN_STATS_STATE
            | sys::VIR_DOMAIN_STATS_CPU_TOTAL
            | sys::VIR_DOMAIN_STATS_BLOCK
            | sys::VIR_DOMAIN_STATS_INTERFACE
            | sys::VIR_DOMAIN_STATS_BALLOON;
        let bulk: std::collections::HashMap<String, Bulk> =
            self.bulk(ALL).unwrap_or_default().into_iter().collect();
        let mut pass = FullPass::default();
        for d in defs {
            let b = bulk.get(&d.name);
            if let Some(p) = b.and_then(Bulk::poll) {
                pass.polls.insert(d.name.clone(), p);
            }
            let memory = b.and_then(Bulk::memory);
            let (block_ops, net_packets) = match b {
                Some(b) if b.io_seen => (b.block_ops, b.net_packets),
                // Not running: no counters to have.
                Some(b) if b.state.is_some_and(|(s, _)| s != 1) => continue,
                // Left out (a driver without them in bulk): ask it.
                _ => match self.io_counters(d) {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            let f = IoFigures {
                block_ops,
                net_packets,
                memory,
            };
            pass.io.insert(d.name.clone(), f);
        }
        pass
    }

    /// These domains' I/O counters, asked of each (the hot few between
    /// bulk passes); memory is left to the bulk pass.
    pub fn io_some(&mut self, defs: &[DomainDef]) -> std::collections::HashMap<String, IoFigures> {
        defs.iter()
            .filter_map(|d| {
                let (block_ops, net_packets) = self.io_counters(d).ok()?;
                let f = IoFigures {
                    block_ops,
                    net_packets,
                    memory: None,
                };
                Some((d.name.clone(), f))
            })
            .collect()
    }

    fn io_counters(&mut self, def: &DomainDef) -> Result<(u64, u64), BackendError> {
        if def.disks.is_empty() && def.interfaces.is_empty() {
            return Ok((0, 0)); // nothing to count, nothing to ask
        }
        let d = self.domain(&def.name)?;
        let (mut block, mut net) = (0u64, 0u64);
        for disk in &def.disks {
            if let Ok(b) = d.block_stats(disk) {
                block += (b.rd_req.max(0) + b.wr_req.max(0)) as u64;
            }
        }
        for nic in &def.interfaces {
            if let Ok(n) = d.interface_stats(nic) {
                net += (n.rx_packets.max(0) + n.tx_packets.max(0)) as u64;
            }
        }
        Ok((block, net))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_xml_parts() {
        let xml = r#"<domain type='kvm'><name>web</name><devices>
            <disk type='file' device='disk'><source file='/x.qcow2'/><target dev='vda' bus='virtio'/></disk>
            <disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/></disk>
            <disk type='network' device='disk'><source protocol='rbd' name='p/i'/><target dev='vdc'/></disk>
            <interface type='network'><target dev='vnet3'/></interface>
            <vsock model='virtio'><cid auto='no' address='7'/></vsock>
        </devices></domain>"#;
        let d = parse_domain_xml("web", "u", xml);
        assert_eq!(
            (d.disks, d.interfaces, d.vsock_cid),
            (
                vec!["vda".into(), "vdb".into(), "vdc".into()],
                vec!["vnet3".into()],
                Some(7)
            )
        );
        assert_eq!(d.sources, ["/x.qcow2", "/dev/sdb"]);
        assert_eq!(parse_domain_xml("x", "u", "<not xml").disks.len(), 0);
    }

    #[test]
    fn the_packaged_vsock_fragment_defines_and_maps_its_cid() {
        let fragment = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../packaging/libvirt/vsock-kernel.xml"),
        )
        .unwrap();
        let xml = format!(
            "<domain type='test'><name>vsockvm</name><memory>1024</memory><os><type>hvm</type></os>\
             <devices>{fragment}</devices></domain>"
        );
        let mut lv = Libvirt::open("test:///default").unwrap();
        lv.conn().unwrap().define_domain_xml(&xml).unwrap();
        let def = lv
            .list()
            .unwrap()
            .into_iter()
            .find(|d| d.name == "vsockvm")
            .unwrap();
        assert_eq!(def.vsock_cid, Some(3));
    }

    #[test]
    fn test_driver_lists_and_polls_the_default_domain() {
        let mut lv = Libvirt::open("test:///default").unwrap();
        let doms = lv.list().unwrap();
        let test = doms.iter().find(|d| d.name == "test").unwrap();
        let p = lv.poll(test).unwrap();
        assert_eq!(p.state, DomainState::Running);
        assert!(p.memory_kib.1 > 0);
        lv.destroy("test").unwrap();
        assert_eq!(
            lv.poll(test).unwrap().state,
            DomainState::ShutOff(StopReason::Destroyed)
        );
        lv.start("test").unwrap();
        assert_eq!(lv.poll(test).unwrap().state, DomainState::Running);
        assert!(matches!(lv.reset("nope"), Err(BackendError::NoDomain(_))));
    }
}
