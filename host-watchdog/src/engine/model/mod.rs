//! The engine's vocabulary: what goes in (observations), what comes out
//! (actions and journal records), and the names of states, faults and layers.

use std::fmt;

use serde::{Deserialize, Serialize};
use vigil_protocol::snapshot::Snapshot;
use vigil_protocol::{ByeReason, Notice};

/// Milliseconds on the engine's clock (the caller's; never read inside).
pub type Millis = u64;

/// A VM's name as the journal and operators know it (the libvirt domain name).
pub type VmId = String;

/// Per-VM state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Booting or just found: waiting for the first heartbeat (bounded grace).
    Discovering,
    /// All evidence is good.
    Healthy,
    /// Heartbeats are late; corroborating before naming a fault.
    Suspect,
    /// A fault is located; a recovery action is due.
    Faulted,
    /// A recovery action ran; verifying that it worked.
    Recovering,
    /// Operator or guest maintenance: deadlines frozen, no actions.
    Maintenance,
    /// Paused by the hypervisor or an operator (user, migration, save,
    /// snapshot): deadlines frozen.
    Paused,
    /// Shut off on purpose (clean guest shutdown, operator stop).
    Off,
    /// The ladder is exhausted or a budget ran out: only an operator's
    /// release leaves this state.
    Quarantined,
}

impl State {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            State::Discovering => "discovering",
            State::Healthy => "healthy",
            State::Suspect => "suspect",
            State::Faulted => "faulted",
            State::Recovering => "recovering",
            State::Maintenance => "maintenance",
            State::Paused => "paused",
            State::Off => "off",
            State::Quarantined => "quarantined",
        }
    }

    /// Every state, for metrics.
    pub const ALL: [State; 9] = [
        State::Discovering,
        State::Healthy,
        State::Suspect,
        State::Faulted,
        State::Recovering,
        State::Maintenance,
        State::Paused,
        State::Off,
        State::Quarantined,
    ];
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a fault is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// The host (scheduler, storage, QEMU process).
    Host,
    /// The hypervisor (QEMU/libvirt).
    Hypervisor,
    /// The guest kernel.
    GuestKernel,
    /// A service inside the guest.
    GuestService,
    /// The guest's storage.
    GuestStorage,
    /// The guest's memory/CPU resources.
    GuestResources,
    /// The agent itself.
    Agent,
    /// The host↔guest channel (the VMM's vsock device), not the guest.
    Transport,
    /// The host's own memory or CPU.
    HostResources,
    /// The host's storage (the filesystems and devices under VM disks).
    HostStorage,
    /// The host's hardware (CPU, memory: machine checks, ECC).
    HostHardware,
    /// The host's side of a VM's network: its vNIC's link, tap and bridge.
    HostNetwork,
    /// The guest's network configuration: interfaces, addresses, routes.
    GuestNetwork,
    /// The network beyond this host: nothing on it can mend it.
    Network,
}

impl Layer {
    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Host => "host",
            Layer::Hypervisor => "hypervisor",
            Layer::GuestKernel => "guest-kernel",
            Layer::GuestService => "guest-service",
            Layer::GuestStorage => "guest-storage",
            Layer::GuestResources => "guest-resources",
            Layer::Agent => "agent",
            Layer::Transport => "transport",
            Layer::HostResources => "host-resources",
            Layer::HostStorage => "host-storage",
            Layer::HostHardware => "host-hardware",
            Layer::HostNetwork => "host-network",
            Layer::GuestNetwork => "guest-network",
            Layer::Network => "network",
        }
    }
}

/// What failed (DESIGN.md §4's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Domain shut off/crashed without a clean `Bye`; QEMU gone.
    VmCrashed,
    /// Guest kernel panic (pvpanic, crashed event, or a reported panic).
    GuestPanic,
    /// Heartbeats stopped, vCPU time advancing, no I/O, kernel not answering.
    GuestHang,
    /// Heartbeats stopped and vCPU time frozen while "running".
    VcpuStalled,
    /// Domain paused for an I/O error on the host.
    HostStorage,
    /// Agent gone while the guest kernel is alive.
    AgentDown,
    /// The agent's channel is silent and the guest's vCPUs idle: the
    /// transport (vsock device) is broken, not the guest.
    TransportDown,
    /// A watched service is not running.
    ServiceDown,
    /// A guest filesystem is full.
    DiskFull,
    /// A guest filesystem went read-only.
    FsReadonly,
    /// Guest block or filesystem I/O errors.
    IoErrors,
    /// OOM kills or sustained memory pressure.
    MemoryExhaustion,
    /// Hung tasks, soft lockups or RCU stalls while heartbeats continue.
    KernelDegraded,
    /// Many VMs faulted at once: a host problem; act on none.
    HostWide,
    /// The host's OOM killer killed the VM's QEMU.
    HostOom,
    /// libvirt calls do not return: vigild cannot see or act on the
    /// hypervisor (a host-level fault).
    HypervisorUnresponsive,
    /// A host filesystem under VM disks (or the journal) is full, or will
    /// be within the horizon (a host-level fault, one per filesystem).
    HostStorageFull,
    /// Block I/O errors on a host device under VM disks (a host-level
    /// fault, one per device).
    HostDiskErrors,
    /// Uncorrected machine checks or memory errors, or a storm of
    /// corrected ones (a host-level fault).
    HostHardware,
    /// A vNIC's link is down on the host (libvirt's link state, its tap
    /// down or off its bridge): the guest sees no carrier.
    VnicLinkDown,
    /// The host's link is up, but in the guest an interface that worked
    /// is down, or lost its addresses or its default route.
    NetworkDown,
    /// Links and configuration are fine on both sides, yet the gateway
    /// does not answer or the TCP checks fail: outside this host.
    NetworkUnreachable,
    /// Several VMs lost the same gateway at once: the host's uplink, not
    /// their networks (a host-level fault, one per gateway).
    HostUplink,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 23] = [
        FaultKind::VmCrashed,
        FaultKind::GuestPanic,
        FaultKind::GuestHang,
        FaultKind::VcpuStalled,
        FaultKind::HostStorage,
        FaultKind::AgentDown,
        FaultKind::TransportDown,
        FaultKind::ServiceDown,
        FaultKind::DiskFull,
        FaultKind::FsReadonly,
        FaultKind::IoErrors,
        FaultKind::MemoryExhaustion,
        FaultKind::KernelDegraded,
        FaultKind::HostWide,
        FaultKind::HostOom,
        FaultKind::HypervisorUnresponsive,
        FaultKind::HostStorageFull,
        FaultKind::HostDiskErrors,
        FaultKind::HostHardware,
        FaultKind::VnicLinkDown,
        FaultKind::NetworkDown,
        FaultKind::NetworkUnreachable,
        FaultKind::HostUplink,
    ];

    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::VmCrashed => "vm-crashed",
            FaultKind::GuestPanic => "guest-panic",
            FaultKind::GuestHang => "guest-hang",
            FaultKind::VcpuStalled => "vcpu-stalled",
            FaultKind::HostStorage => "host-storage",
            FaultKind::AgentDown => "agent-down",
            FaultKind::TransportDown => "transport-down",
            FaultKind::ServiceDown => "service-down",
            FaultKind::DiskFull => "disk-full",
            FaultKind::FsReadonly => "fs-readonly",
            FaultKind::IoErrors => "io-errors",
            FaultKind::MemoryExhaustion => "memory-exhaustion",
            FaultKind::KernelDegraded => "kernel-degraded",
            FaultKind::HostWide => "host-wide",
            FaultKind::HostOom => "host-oom",
            FaultKind::HypervisorUnresponsive => "hypervisor-unresponsive",
            FaultKind::HostStorageFull => "host-storage-full",
            FaultKind::HostDiskErrors => "host-disk-errors",
            FaultKind::HostHardware => "host-hardware",
            FaultKind::VnicLinkDown => "vnic-link-down",
            FaultKind::NetworkDown => "network-down",
            FaultKind::NetworkUnreachable => "network-unreachable",
            FaultKind::HostUplink => "host-uplink",
        }
    }

    /// Parse a kebab-case name.
    pub fn from_name(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The layer this kind of fault is in.
    pub fn layer(self) -> Layer {
        match self {
            FaultKind::VmCrashed | FaultKind::HypervisorUnresponsive => Layer::Hypervisor,
            FaultKind::GuestPanic | FaultKind::GuestHang | FaultKind::KernelDegraded => {
                Layer::GuestKernel
            }
            FaultKind::VcpuStalled | FaultKind::HostWide => Layer::Host,
            FaultKind::HostStorage | FaultKind::HostStorageFull | FaultKind::HostDiskErrors => {
                Layer::HostStorage
            }
            FaultKind::HostHardware => Layer::HostHardware,
            FaultKind::AgentDown => Layer::Agent,
            FaultKind::TransportDown => Layer::Transport,
            FaultKind::ServiceDown => Layer::GuestService,
            FaultKind::DiskFull | FaultKind::FsReadonly | FaultKind::IoErrors => {
                Layer::GuestStorage
            }
            FaultKind::MemoryExhaustion => Layer::GuestResources,
            FaultKind::HostOom => Layer::HostResources,
            FaultKind::VnicLinkDown | FaultKind::HostUplink => Layer::HostNetwork,
            FaultKind::NetworkDown => Layer::GuestNetwork,
            FaultKind::NetworkUnreachable => Layer::Network,
        }
    }

    /// Higher preempts lower when a VM has more than one problem.
    pub fn severity(self) -> u8 {
        match self {
            FaultKind::HostWide
            | FaultKind::HypervisorUnresponsive
            | FaultKind::HostStorageFull
            | FaultKind::HostDiskErrors
            | FaultKind::HostHardware
            | FaultKind::HostUplink => 14,
            FaultKind::HostOom => 13,
            FaultKind::VmCrashed => 12,
            FaultKind::GuestPanic => 11,
            FaultKind::GuestHang => 10,
            FaultKind::VcpuStalled => 9,
            FaultKind::HostStorage => 8,
            FaultKind::AgentDown | FaultKind::TransportDown | FaultKind::VnicLinkDown => 7,
            FaultKind::ServiceDown | FaultKind::NetworkDown => 6,
            FaultKind::MemoryExhaustion => 5,
            FaultKind::FsReadonly => 4,
            FaultKind::DiskFull => 3,
            FaultKind::IoErrors => 2,
            FaultKind::KernelDegraded | FaultKind::NetworkUnreachable => 1,
        }
    }

    /// Whether the VM's workload is down while this fault lasts (counts
    /// against availability).
    pub fn is_outage(self) -> bool {
        matches!(
            self,
            FaultKind::VmCrashed
                | FaultKind::GuestPanic
                | FaultKind::GuestHang
                | FaultKind::VcpuStalled
                | FaultKind::HostStorage
                | FaultKind::HostWide
                | FaultKind::HostOom
                | FaultKind::VnicLinkDown
                | FaultKind::NetworkDown
        )
    }
}

/// What a fault kind rests on, and so what ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Signs of life (heartbeats, domain state): ends when the VM shows
    /// life again after detection.
    Liveness,
    /// A state every report shows (a service running, a filesystem's use
    /// and writability): ends when a report shows it good again.
    State,
    /// One-off events (kernel log lines): ends after a quiet period with no
    /// recurrence, and only when the state the event points to (blocked
    /// tasks, memory pressure) is gone too. Never because the next report
    /// does not repeat the event.
    Event,
    /// What the agent's reports and the host's view of the vNICs show
    /// together, held for a hold-off: ends when neither shows it
    /// (`engine/network.rs`).
    Network,
}

impl FaultKind {
    /// The evidence this kind rests on (one place; the compiler checks it
    /// covers every kind).
    pub fn basis(self) -> Basis {
        match self {
            FaultKind::VmCrashed
            | FaultKind::GuestPanic
            | FaultKind::GuestHang
            | FaultKind::VcpuStalled
            | FaultKind::HostStorage
            | FaultKind::AgentDown
            | FaultKind::TransportDown
            | FaultKind::HostWide
            | FaultKind::HostOom
            | FaultKind::HypervisorUnresponsive
            | FaultKind::HostStorageFull
            | FaultKind::HostDiskErrors
            | FaultKind::HostHardware
            | FaultKind::HostUplink => Basis::Liveness,
            FaultKind::ServiceDown | FaultKind::DiskFull | FaultKind::FsReadonly => Basis::State,
            FaultKind::IoErrors | FaultKind::MemoryExhaustion | FaultKind::KernelDegraded => {
                Basis::Event
            }
            FaultKind::VnicLinkDown | FaultKind::NetworkDown | FaultKind::NetworkUnreachable => {
                Basis::Network
            }
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod inputs;
mod outputs;

pub use inputs::*;
pub use outputs::*;
