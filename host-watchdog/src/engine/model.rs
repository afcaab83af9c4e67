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
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 13] = [
        FaultKind::VmCrashed,
        FaultKind::GuestPanic,
        FaultKind::GuestHang,
        FaultKind::VcpuStalled,
        FaultKind::HostStorage,
        FaultKind::AgentDown,
        FaultKind::ServiceDown,
        FaultKind::DiskFull,
        FaultKind::FsReadonly,
        FaultKind::IoErrors,
        FaultKind::MemoryExhaustion,
        FaultKind::KernelDegraded,
        FaultKind::HostWide,
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
            FaultKind::ServiceDown => "service-down",
            FaultKind::DiskFull => "disk-full",
            FaultKind::FsReadonly => "fs-readonly",
            FaultKind::IoErrors => "io-errors",
            FaultKind::MemoryExhaustion => "memory-exhaustion",
            FaultKind::KernelDegraded => "kernel-degraded",
            FaultKind::HostWide => "host-wide",
        }
    }

    /// Parse a kebab-case name.
    pub fn from_name(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The layer this kind of fault is in.
    pub fn layer(self) -> Layer {
        match self {
            FaultKind::VmCrashed => Layer::Hypervisor,
            FaultKind::GuestPanic | FaultKind::GuestHang | FaultKind::KernelDegraded => {
                Layer::GuestKernel
            }
            FaultKind::VcpuStalled | FaultKind::HostStorage | FaultKind::HostWide => Layer::Host,
            FaultKind::AgentDown => Layer::Agent,
            FaultKind::ServiceDown => Layer::GuestService,
            FaultKind::DiskFull | FaultKind::FsReadonly | FaultKind::IoErrors => {
                Layer::GuestStorage
            }
            FaultKind::MemoryExhaustion => Layer::GuestResources,
        }
    }

    /// Higher preempts lower when a VM has more than one problem.
    pub fn severity(self) -> u8 {
        match self {
            FaultKind::HostWide => 13,
            FaultKind::VmCrashed => 12,
            FaultKind::GuestPanic => 11,
            FaultKind::GuestHang => 10,
            FaultKind::VcpuStalled => 9,
            FaultKind::HostStorage => 8,
            FaultKind::AgentDown => 7,
            FaultKind::ServiceDown => 6,
            FaultKind::MemoryExhaustion => 5,
            FaultKind::FsReadonly => 4,
            FaultKind::DiskFull => 3,
            FaultKind::IoErrors => 2,
            FaultKind::KernelDegraded => 1,
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
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Domain run state as the hypervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainState {
    /// Running.
    Running,
    /// Paused, with why.
    Paused(PauseReason),
    /// Shut off, with why.
    ShutOff(StopReason),
    /// Crashed (kept for evidence: `on_crash=preserve`).
    Crashed {
        /// The guest signalled a panic (pvpanic).
        panicked: bool,
    },
    /// Being shut down.
    ShuttingDown,
    /// The hypervisor could not say.
    Unknown,
}

impl fmt::Display for DomainState {
    /// `running`, `paused (user)`, `shut off (destroyed)`, `crashed
    /// (panicked)`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainState::Running => f.write_str("running"),
            DomainState::Paused(r) => write!(f, "paused ({})", kebab(r)),
            DomainState::ShutOff(r) => write!(f, "shut off ({})", kebab(r)),
            DomainState::Crashed { panicked: true } => f.write_str("crashed (panicked)"),
            DomainState::Crashed { panicked: false } => f.write_str("crashed"),
            DomainState::ShuttingDown => f.write_str("shutting down"),
            DomainState::Unknown => f.write_str("unknown"),
        }
    }
}

/// A unit variant's name in kebab case (`FromSnapshot` -> `from-snapshot`).
fn kebab(v: &impl fmt::Debug) -> String {
    let mut out = String::new();
    for (i, c) in format!("{v:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Why a domain is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseReason {
    /// An operator paused it.
    User,
    /// Live migration.
    Migration,
    /// Saving state.
    Save,
    /// Taking a snapshot.
    Snapshot,
    /// A disk I/O error paused it (host storage).
    IoError,
    /// The guest's watchdog device fired with action pause.
    Watchdog,
    /// The guest panicked and the panic action pauses.
    Panicked,
    /// Anything else (starting up, post-copy, ...).
    Other,
}

/// Why a domain is shut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Clean guest shutdown.
    Shutdown,
    /// Destroyed (virsh destroy or QEMU killed).
    Destroyed,
    /// QEMU crashed.
    Crashed,
    /// Migrated away.
    Migrated,
    /// Saved to a file.
    Saved,
    /// Failed to start or run.
    Failed,
    /// Restored from a snapshot into the off state.
    FromSnapshot,
    /// Never started / unknown.
    Other,
}

/// Counters polled from the hypervisor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainStats {
    /// Cumulative vCPU time, nanoseconds.
    pub cpu_time_ns: u64,
    /// Cumulative block requests (read + write).
    pub block_ops: u64,
    /// Cumulative network packets (rx + tx).
    pub net_packets: u64,
}

/// Outcome of a guest-kernel liveness probe (a host-initiated vsock
/// connection to a port nobody listens on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeResult {
    /// Refused promptly: the guest kernel is alive.
    Refused,
    /// Something accepted it: the kernel is alive (and something listens).
    Accepted,
    /// No answer within the timeout: the kernel is not servicing vsock.
    TimedOut,
    /// The transport cannot probe this VM; decide without it.
    Unsupported,
}

/// An operator's command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorCommand {
    /// Maintenance on, optionally until a time.
    MaintenanceOn {
        /// End of the window; `None` = until turned off.
        until: Option<Millis>,
    },
    /// Maintenance off.
    MaintenanceOff,
    /// Release from quarantine.
    Release,
}

/// One observation fed to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A VM to monitor (found at start or defined later).
    VmAdded {
        /// Whether an agent is expected to report.
        agent: bool,
        /// Current memory (KiB) and the domain's maximum.
        memory_kib: (u64, u64),
    },
    /// The VM is no longer defined.
    VmRemoved,
    /// An agent connection arrived (before `Hello`).
    SessionOpened,
    /// A validated `Hello`.
    Hello {
        /// The guest's boot id: a new one means the guest rebooted.
        boot_id: String,
    },
    /// A heartbeat.
    Heartbeat {
        /// Its sequence number.
        seq: u64,
    },
    /// A health report.
    Report(Box<Snapshot>),
    /// A guest announcement.
    Notice(Notice),
    /// A clean goodbye.
    Bye(ByeReason),
    /// The agent connection closed (without `Bye` unless one came first).
    SessionClosed,
    /// Domain state from a poll or an event.
    Domain(DomainState),
    /// A reboot (reset) event: the guest restarts.
    Rebooted,
    /// Counters from a poll.
    Stats(DomainStats),
    /// A liveness probe finished.
    Probe(ProbeResult),
    /// An operator command for this VM.
    Operator(OperatorCommand),
    /// An action finished.
    ActionDone {
        /// Which action.
        id: u64,
        /// Whether it succeeded.
        ok: bool,
        /// Why not, or what it did.
        detail: String,
    },
}

/// Host-wide inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// Time passed (deadlines are checked).
    Tick,
    /// Stop taking actions (detect and record only).
    Disarm,
    /// Take actions again.
    Arm,
}

/// What to do about a fault.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Probe the guest kernel's liveness (not a recovery; evidence).
    LivenessProbe,
    /// Ask the agent to restart the named service.
    RestartService(String),
    /// Ask the agent to run the named repair.
    Repair(String),
    /// Ask the agent to reboot the guest cleanly.
    AgentReboot,
    /// ACPI reboot through the hypervisor.
    Reboot,
    /// Hard reset.
    Reset,
    /// Start a shut-off domain.
    Start,
    /// Destroy, then start.
    DestroyStart,
    /// Take a safety snapshot of the broken state, then revert to the known-good one.
    SnapshotRevert,
    /// Grow memory (balloon) towards the domain's maximum.
    AddMemory,
    /// Save what there is to see (last report, kernel events, screenshot).
    CaptureEvidence,
    /// Tell an operator.
    Alert,
    /// Resume a paused domain.
    Resume,
    /// ACPI shutdown (operator only).
    Shutdown,
    /// Power off (operator only).
    Destroy,
}

impl ActionKind {
    /// Whether it interrupts the guest (counts against the budgets).
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            ActionKind::Reset
                | ActionKind::DestroyStart
                | ActionKind::SnapshotRevert
                | ActionKind::Reboot
                | ActionKind::AgentReboot
        )
    }

    /// Whether it needs the agent's connection.
    pub fn needs_agent(&self) -> bool {
        matches!(
            self,
            ActionKind::RestartService(_) | ActionKind::Repair(_) | ActionKind::AgentReboot
        )
    }

    /// Short name (without arguments).
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::LivenessProbe => "liveness-probe",
            ActionKind::RestartService(_) => "restart-service",
            ActionKind::Repair(_) => "repair",
            ActionKind::AgentReboot => "agent-reboot",
            ActionKind::Reboot => "reboot",
            ActionKind::Reset => "reset",
            ActionKind::Start => "start",
            ActionKind::DestroyStart => "destroy-start",
            ActionKind::SnapshotRevert => "snapshot-revert",
            ActionKind::AddMemory => "add-memory",
            ActionKind::CaptureEvidence => "capture-evidence",
            ActionKind::Alert => "alert",
            ActionKind::Resume => "resume",
            ActionKind::Shutdown => "shutdown",
            ActionKind::Destroy => "destroy",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionKind::RestartService(n) | ActionKind::Repair(n) => {
                write!(f, "{} {n}", self.name())
            }
            other => f.write_str(other.name()),
        }
    }
}

/// An action for the executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Unique, increasing.
    pub id: u64,
    /// Target VM.
    pub vm: VmId,
    /// What.
    pub kind: ActionKind,
    /// The fault it answers (0 for evidence gathering outside a fault).
    pub fault: u64,
    /// For `AddMemory`: the target size in KiB.
    pub memory_kib: Option<u64>,
}

/// How a fault ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Closure {
    /// Recovery verified.
    Recovered,
    /// The condition went away without (further) action.
    Cleared,
    /// A more severe fault took its place.
    Superseded,
    /// An operator released the VM from quarantine.
    Released,
    /// The VM was removed or shut off on purpose.
    Withdrawn,
}

/// A journal record: the audit trail, and what metrics are computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    /// A state change.
    Transition {
        /// VM.
        vm: VmId,
        /// From.
        from: State,
        /// To.
        to: State,
        /// Why, in a few words.
        why: String,
    },
    /// A fault was located.
    Fault {
        /// VM.
        vm: VmId,
        /// Fault id.
        id: u64,
        /// Kind.
        kind: FaultKind,
        /// Layer.
        layer: Layer,
        /// The evidence that decided it.
        evidence: Vec<String>,
        /// What it is about (service, mount point), if anything.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// When it began (last sign of health).
        onset: Millis,
        /// When it was detected.
        detected: Millis,
        /// When it was located.
        located: Millis,
    },
    /// An action is about to run (committed before it runs).
    Intent {
        /// VM.
        vm: VmId,
        /// The action.
        action: Action,
        /// Ladder rung (0-based); `None` for actions outside the ladder
        /// (evidence capture, quarantine alerts, host-wide alerts).
        rung: Option<usize>,
        /// Attempt on that rung (1-based).
        attempt: u32,
    },
    /// An action was not taken, and why (disarmed, host-wide, budget, cap).
    Suppressed {
        /// VM.
        vm: VmId,
        /// What would have run.
        kind: ActionKind,
        /// Why not.
        why: String,
    },
    /// An action finished.
    Outcome {
        /// VM.
        vm: VmId,
        /// Action id.
        id: u64,
        /// Success.
        ok: bool,
        /// Detail.
        detail: String,
    },
    /// A fault ended.
    Closed {
        /// VM.
        vm: VmId,
        /// Fault id.
        id: u64,
        /// Kind.
        kind: FaultKind,
        /// How.
        how: Closure,
        /// When.
        at: Millis,
        /// Detection time (detected − onset).
        detect_ms: Millis,
        /// Localization time (located − detected).
        locate_ms: Millis,
        /// Repair time (closed − located).
        repair_ms: Millis,
    },
}

/// A fault carried over from a previous run of the daemon (from its journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredFault {
    /// Fault id.
    pub id: u64,
    /// Kind.
    pub kind: FaultKind,
    /// Subject.
    pub subject: Option<String>,
    /// Onset.
    pub onset: Millis,
    /// Detected.
    pub detected: Millis,
    /// Located.
    pub located: Millis,
    /// The last ladder step started: (rung, attempt, kind, when).
    pub last_step: Option<(usize, u32, ActionKind, Millis)>,
}

/// Everything one step produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    /// Journal records, in order.
    pub records: Vec<Record>,
    /// Actions to run, in order.
    pub actions: Vec<Action>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_states_read_as_words() {
        let cases = [
            (DomainState::Running, "running"),
            (
                DomainState::Paused(PauseReason::IoError),
                "paused (io-error)",
            ),
            (
                DomainState::ShutOff(StopReason::FromSnapshot),
                "shut off (from-snapshot)",
            ),
            (
                DomainState::Crashed { panicked: true },
                "crashed (panicked)",
            ),
            (DomainState::ShuttingDown, "shutting down"),
        ];
        for (d, want) in cases {
            assert_eq!(d.to_string(), want);
        }
    }
}
