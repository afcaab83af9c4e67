//! What the engine is told: the domain's state and counters, probe answers,
//! operator commands, and every input a VM or the host can send it.

use super::*;

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

impl DomainState {
    /// The state with "paused: no space" read as the plain "paused: I/O
    /// error" (libvirt's state reason says only the latter; its I/O error
    /// event says which).
    pub fn plain(self) -> DomainState {
        match self {
            DomainState::Paused(PauseReason::NoSpace) => DomainState::Paused(PauseReason::IoError),
            d => d,
        }
    }
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

impl DomainState {
    /// The guest that ran is gone: its kernel, and every connection it had.
    pub fn guest_gone(self) -> bool {
        matches!(self, DomainState::ShutOff(_) | DomainState::Crashed { .. })
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
    /// A disk write found no space on the host (ENOSPC) and paused it.
    NoSpace,
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
    /// The VMM's socket is gone (connection refused or absent): the VMM or
    /// its vsock backend is not there to ask. Says nothing of the guest.
    NoVmm,
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
    /// Take this action now (`vigilctl action`): journaled and counted
    /// against the budgets like the engine's own, so they mean the same
    /// before and after a restart; never refused (the operator decides).
    Act {
        /// What.
        kind: ActionKind,
    },
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
        /// A cluster resource: the cluster starts and stops it, vigild
        /// asks the cluster instead (`ask-cluster`).
        cluster: bool,
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
        /// The guest's clock (ms since boot) when it was sent: maps the
        /// guest's times (kernel log, snapshots) onto the host's.
        uptime_ms: u64,
    },
    /// A health report.
    Report {
        /// The snapshot.
        snapshot: Box<Snapshot>,
        /// The guest's clock (ms since boot) at the agent's last check that
        /// found nothing new, when the agent says (a report sent at once on
        /// a change); the onset of what this report shows lies after it.
        last_good_ms: Option<u64>,
    },
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
    /// The host's OOM killer killed this VM's QEMU (the host's kernel log
    /// said so; the domain's stop follows).
    HostOomKill {
        /// The kernel's line.
        line: String,
    },
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
    /// The VM's vNICs as the host sees them now.
    Nics(Vec<HostNic>),
}

/// One vNIC as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNic {
    /// Its MAC address, lowercase (the guest's interface has the same).
    pub mac: String,
    /// The host-side device (`vnet3`), when it has one (user-mode
    /// networking has none).
    pub target: Option<String>,
    /// libvirt's link state (`<link state='down'/>` is false).
    pub link_up: bool,
    /// The bridge the domain's XML puts it on, if any.
    pub bridge: Option<String>,
    /// Its tap device on the host, when it has one.
    pub tap: Option<Tap>,
}

/// A vNIC's tap device as `/sys/class/net` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tap {
    /// Administratively up.
    pub up: bool,
    /// The bridge it is enslaved to, if any.
    pub master: Option<String>,
}

impl HostNic {
    /// What is wrong with it on the host, if anything.
    pub fn problem(&self) -> Option<String> {
        let name = self.target.as_deref().unwrap_or("vNIC");
        if !self.link_up {
            return Some(format!("libvirt link state down on {name} ({})", self.mac));
        }
        match (&self.tap, &self.bridge) {
            (Some(t), _) if !t.up => Some(format!("tap {name} ({}) is down on the host", self.mac)),
            (Some(t), Some(b)) if t.master.as_deref() != Some(b.as_str()) => Some(format!(
                "tap {name} ({}) is not on its bridge {b} (on {})",
                self.mac,
                t.master.as_deref().unwrap_or("none")
            )),
            _ => None,
        }
    }
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
    /// The watchdog itself did not run for `ms` (its process stopped or
    /// starved): silence over that time is not the guests'.
    Stalled {
        /// How long.
        ms: Millis,
    },
    /// A libvirt call has not returned for `for_ms` (libvirtd stopped,
    /// stuck or gone): vigild is blind to the hypervisor.
    HypervisorSilent {
        /// How long so far.
        for_ms: Millis,
        /// The connection is lost (calls fail at once), rather than a
        /// call that does not return.
        lost: bool,
    },
    /// The hypervisor answers again.
    HypervisorAnswers,
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
