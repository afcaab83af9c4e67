//! The hypervisor backend: a narrow trait over what vigild needs from
//! libvirt, so the daemon can be tested against libvirt's test driver and
//! unit-tested against a fake.

pub mod events;
pub mod libvirt;

use thiserror::Error;

use crate::engine::{DomainState, DomainStats};

/// A failed hypervisor call.
#[derive(Debug, Error)]
pub enum BackendError {
    /// Connecting failed.
    #[error("cannot connect to {uri}: {message}")]
    Connect {
        /// URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// A call about one domain failed.
    #[error("{op} {domain}: {message}")]
    Call {
        /// Operation.
        op: &'static str,
        /// Domain.
        domain: String,
        /// libvirt's message.
        message: String,
    },
    /// The domain does not exist.
    #[error("no domain named {0}")]
    NoDomain(String),
}

/// What the daemon knows about a domain from its definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDef {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// Kernel vsock CID (`<vsock><cid address=.../>`), if any.
    pub vsock_cid: Option<u32>,
    /// Disk target names (vda, ...).
    pub disks: Vec<String>,
    /// Where those disks live on the host: each one's source file or
    /// block device (network disks have none).
    pub sources: Vec<String>,
    /// Interface target names (vnet0, ...).
    pub interfaces: Vec<String>,
    /// The vNICs with their link state (taps filled in by the backend
    /// thread from the host's sysfs).
    pub nics: Vec<crate::engine::HostNic>,
}

/// A domain's live state and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainPoll {
    /// Run state with reason.
    pub state: DomainState,
    /// Counters; none from a bulk call that left the vCPU time out (a
    /// quiet domain's samples are not judged on).
    pub stats: Option<DomainStats>,
    /// Current and maximum memory, KiB.
    pub memory_kib: (u64, u64),
}

/// A domain's size: its persistent definition's, and the running
/// domain's limits (what a live change can reach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sizing {
    /// Maximum memory in the definition, KiB.
    pub memory_kib: u64,
    /// Current memory in the definition, KiB.
    pub current_kib: u64,
    /// vCPUs in the definition.
    pub vcpus: u32,
    /// The running domain's maximum memory, KiB (none when not running).
    pub live_max_kib: Option<u64>,
    /// The running domain's vCPU maximum (none when not running).
    pub live_max_vcpus: Option<u32>,
    /// The host's CPUs.
    pub host_cpus: u32,
}

/// The narrow interface to the hypervisor. All calls block.
pub trait Hypervisor: Send {
    /// Every defined domain.
    fn list(&mut self) -> Result<Vec<DomainDef>, BackendError>;
    /// State, reason, vCPU time and memory of one domain. Must not need the
    /// VMM's monitor, so a stuck QEMU cannot stall it.
    fn poll(&mut self, def: &DomainDef) -> Result<DomainPoll, BackendError>;
    /// Every listed domain's poll at once (libvirt: one bulk stats call,
    /// never waiting on a domain's job lock); by default one `poll` each.
    /// Same rule: nothing that needs a VMM's monitor.
    fn poll_all(&mut self, defs: &[DomainDef]) -> Vec<Result<DomainPoll, BackendError>> {
        defs.iter().map(|d| self.poll(d)).collect()
    }
    /// Another handle on the same connection, for another thread (the
    /// executor's).
    fn worker(&self) -> Box<dyn Hypervisor>;
    /// Whether the connection to the hypervisor is open and its other
    /// end there (libvirtd restarted leaves a dead one).
    fn connected(&mut self) -> bool {
        true
    }
    /// Open the connection again (every handle of it, and its events).
    fn reconnect(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    /// A cheap call that needs the hypervisor to answer (a keepalive).
    fn ping(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Hard reset.
    fn reset(&mut self, name: &str) -> Result<(), BackendError>;
    /// ACPI reboot.
    fn reboot(&mut self, name: &str) -> Result<(), BackendError>;
    /// ACPI shutdown.
    fn shutdown(&mut self, name: &str) -> Result<(), BackendError>;
    /// Power off.
    fn destroy(&mut self, name: &str) -> Result<(), BackendError>;
    /// Start a shut-off domain.
    fn start(&mut self, name: &str) -> Result<(), BackendError>;
    /// Resume a paused domain.
    fn resume(&mut self, name: &str) -> Result<(), BackendError>;
    /// Set the live memory size (balloon), KiB.
    fn set_memory(&mut self, name: &str, kib: u64) -> Result<(), BackendError>;
    /// Set the vCPU count in the persistent config (takes effect at boot).
    fn set_vcpus(&mut self, name: &str, n: u32) -> Result<(), BackendError>;
    /// The names of a domain's snapshots.
    fn snapshots(&mut self, name: &str) -> Result<Vec<String>, BackendError>;
    /// Create a snapshot with this name of the current state (of a shut-off
    /// domain: an internal snapshot of every qcow2 disk).
    fn snapshot_create(&mut self, name: &str, snapshot: &str) -> Result<(), BackendError>;
    /// Revert to a named snapshot.
    fn snapshot_revert(&mut self, name: &str, snapshot: &str) -> Result<(), BackendError>;
    /// The domain's size.
    fn sizing(&mut self, name: &str) -> Result<Sizing, BackendError> {
        Err(unsupported("sizing", name))
    }
    /// Resize the domain persistently, and live where it allows; says
    /// what it did.
    fn resize(&mut self, name: &str, r: &crate::engine::Resize) -> Result<String, BackendError> {
        let _ = r;
        Err(unsupported("resize", name))
    }
    /// The domain's vNICs as its live definition has them now.
    fn nics(&mut self, name: &str) -> Result<Vec<crate::engine::HostNic>, BackendError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|d| d.name == name)
            .ok_or_else(|| BackendError::NoDomain(name.into()))?
            .nics)
    }
    /// Set the link of the vNIC with this MAC up or down (live).
    fn set_link(&mut self, name: &str, mac: &str, up: bool) -> Result<(), BackendError> {
        let _ = (mac, up);
        Err(BackendError::Call {
            op: "set-link",
            domain: name.into(),
            message: "not supported by this backend".into(),
        })
    }
    /// Detach the vNIC with this MAC and attach it again (live).
    fn replug_nic(&mut self, name: &str, mac: &str) -> Result<(), BackendError> {
        let _ = mac;
        Err(BackendError::Call {
            op: "replug-nic",
            domain: name.into(),
            message: "not supported by this backend".into(),
        })
    }
}

fn unsupported(op: &'static str, name: &str) -> BackendError {
    BackendError::Call {
        op,
        domain: name.into(),
        message: "not supported by this backend".into(),
    }
}
