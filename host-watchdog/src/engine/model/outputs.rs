//! What the engine says: actions to run, journal records, and what a
//! restart restores.

use super::*;

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
    /// Tell the cluster the VM (a cluster resource) failed here, so that
    /// it recovers it by its own policy (`crm_resource --fail`): what the
    /// hypervisor-level rungs become for a cluster-managed VM.
    AskCluster,
    /// Set the vNIC with this MAC's link up (live).
    SetLinkUp(String),
    /// Detach the vNIC with this MAC and attach it again, same MAC (live).
    ReplugNic(String),
    /// Resize the domain (`vigilctl advise --apply` / `--revert`).
    Reconfigure(Resize),
}

/// A change of a domain's size: in its persistent definition (from its
/// next boot), and with `live` also now where the running domain allows
/// (memory up to its live maximum; vCPUs up to its live maximum).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resize {
    /// Memory, KiB (maximum and current alike): before, after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_kib: Option<(u64, u64)>,
    /// vCPUs: before, after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<(u32, u32)>,
    /// Also now, where the running domain allows.
    #[serde(default)]
    pub live: bool,
}

impl Resize {
    /// The change that undoes this one.
    pub fn inverse(&self) -> Resize {
        Resize {
            memory_kib: self.memory_kib.map(|(a, b)| (b, a)),
            vcpus: self.vcpus.map(|(a, b)| (b, a)),
            live: self.live,
        }
    }
}

impl fmt::Display for Resize {
    /// `memory 1048576 -> 1572864 KiB, vcpus 1 -> 2 (live)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some((a, b)) = self.memory_kib {
            parts.push(format!("memory {a} -> {b} KiB"));
        }
        if let Some((a, b)) = self.vcpus {
            parts.push(format!("vcpus {a} -> {b}"));
        }
        write!(f, "{}", parts.join(", "))?;
        if self.live {
            f.write_str(" (live)")?;
        }
        Ok(())
    }
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
                | ActionKind::AskCluster
        )
    }

    /// Whether it is a call to the hypervisor (libvirt), rather than to
    /// the guest's agent or within vigild.
    pub fn through_hypervisor(&self) -> bool {
        !matches!(
            self,
            ActionKind::LivenessProbe
                | ActionKind::RestartService(_)
                | ActionKind::Repair(_)
                | ActionKind::AgentReboot
                | ActionKind::CaptureEvidence
                | ActionKind::Alert
                | ActionKind::AskCluster
        )
    }

    /// Whether the guest goes down through it and comes back (or stays
    /// off): until it has, what the guest shows is the action's doing.
    pub fn takes_guest_down(&self) -> bool {
        matches!(
            self,
            ActionKind::AgentReboot | ActionKind::Reboot | ActionKind::Reset | ActionKind::Shutdown
        )
    }

    /// Whether a restart that interrupted it resumes what is left of it
    /// (a start after the destroy) instead of leaving the domain half done.
    pub fn resumable(&self) -> bool {
        matches!(
            self,
            ActionKind::Reset
                | ActionKind::DestroyStart
                | ActionKind::Start
                | ActionKind::SnapshotRevert
        )
    }

    /// Whether it needs the agent's connection.
    pub fn needs_agent(&self) -> bool {
        matches!(
            self,
            ActionKind::RestartService(_) | ActionKind::Repair(_) | ActionKind::AgentReboot
        )
    }

    /// The actions an operator may take by name (`vigilctl action`).
    pub const OPERATOR: &'static str =
        "reset, reboot, shutdown, destroy, start, resume, agent-reboot";

    /// An operator's action by name (one of [`ActionKind::OPERATOR`]).
    pub fn operator(name: &str) -> Option<ActionKind> {
        Some(match name {
            "reset" => ActionKind::Reset,
            "reboot" => ActionKind::Reboot,
            "shutdown" => ActionKind::Shutdown,
            "destroy" => ActionKind::Destroy,
            "start" => ActionKind::Start,
            "resume" => ActionKind::Resume,
            // The guest reboots itself: its agent runs its allow-listed
            // reboot command (a clean in-guest reboot, not ACPI).
            "agent-reboot" => ActionKind::AgentReboot,
            _ => return None,
        })
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
            ActionKind::AskCluster => "ask-cluster",
            ActionKind::SetLinkUp(_) => "set-link-up",
            ActionKind::ReplugNic(_) => "replug-nic",
            ActionKind::Reconfigure(_) => "reconfigure",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionKind::RestartService(n)
            | ActionKind::Repair(n)
            | ActionKind::SetLinkUp(n)
            | ActionKind::ReplugNic(n) => write!(f, "{} {n}", self.name()),
            ActionKind::Reconfigure(r) => write!(f, "reconfigure {r}"),
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
        /// When it began at the earliest (from evidence: the last sign of
        /// health, the kernel log's own time, the agent's last good check).
        onset: Millis,
        /// How uncertain the onset is: it lies in `onset ..= onset +
        /// onset_window_ms` (0: measured). Detection time is reported from
        /// the earliest onset, so it is an upper bound, never flattered.
        #[serde(default)]
        onset_window_ms: Millis,
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
        /// How often it came back within the flap window before it stayed
        /// away (0: it did not flap).
        #[serde(default)]
        flaps: u32,
    },
    /// A fault closed moments ago came back within the flap window: the
    /// same fault is open again (one fault, not one per flap; further
    /// flaps are counted, not journaled, until it stays away).
    Reopened {
        /// VM.
        vm: VmId,
        /// Fault id (of the fault reopened).
        id: u64,
        /// Kind.
        kind: FaultKind,
        /// Flaps so far.
        flaps: u32,
        /// What shows it again.
        evidence: Vec<String>,
    },
    /// A warning raised: what a guest's trends announce before it is a
    /// fault (no action is taken for it).
    Warning {
        /// VM.
        vm: VmId,
        /// Kind.
        kind: crate::engine::warn::WarningKind,
        /// About what (mount point, service), if anything.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// What shows it.
        evidence: String,
        /// When it is predicted to happen, where it has a time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eta: Option<Millis>,
    },
    /// A warning no longer holds.
    WarningCleared {
        /// VM.
        vm: VmId,
        /// Kind.
        kind: crate::engine::warn::WarningKind,
        /// About what.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// Why.
        why: String,
    },
    /// The host's health changed.
    HostHealth {
        /// Always `(host)`.
        vm: VmId,
        /// From.
        from: crate::engine::host::HostHealth,
        /// To.
        to: crate::engine::host::HostHealth,
        /// The reasons holding it down now.
        why: String,
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
    /// That step's action, when a restart interrupted it before its
    /// outcome was known: (action id, kind). Its remaining steps are
    /// resumed within this fault.
    pub interrupted: Option<(u64, ActionKind)>,
    /// The last step's action failed (its outcome is in the journal): the
    /// ladder goes on from it at once, with no verification to wait for.
    pub last_failed: bool,
}

/// Everything one step produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    /// Journal records, in order.
    pub records: Vec<Record>,
    /// Actions to run, in order.
    pub actions: Vec<Action>,
}
