//! Engine settings: timeouts, budgets, and the escalation ladder per fault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{ActionKind, FaultKind, Millis};

/// What happens when a ladder runs out of rungs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exhausted {
    /// Quarantine the VM until an operator releases it.
    Quarantine,
    /// Stay faulted (alerted) until the condition clears.
    Hold,
}

/// One rung of a ladder. The special names `restart-service` and `repair`
/// take the service or repair name from the fault's evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// Action name (see [`ActionKind::name`]).
    pub action: String,
    /// Attempts on this rung before moving up.
    #[serde(default = "one")]
    pub attempts: u32,
    /// How long to wait for recovery after the action, ms.
    #[serde(default = "default_verify")]
    pub verify_ms: Millis,
    /// Wait before a repeated attempt, ms (doubles per attempt).
    #[serde(default = "default_backoff")]
    pub backoff_ms: Millis,
}

fn one() -> u32 {
    1
}
fn default_verify() -> Millis {
    30_000
}
fn default_backoff() -> Millis {
    5_000
}

/// A fault kind's escalation ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ladder {
    /// Rungs, least drastic first.
    pub rungs: Vec<Rung>,
    /// After the last rung.
    pub exhausted: Exhausted,
}

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Heartbeat interval the agents are asked for.
    pub heartbeat_interval_ms: Millis,
    /// Silence that is always suspect, however jittery the VM is.
    pub heartbeat_timeout_ms: Millis,
    /// Silence that is never suspect, however steady the VM is.
    pub min_timeout_ms: Millis,
    /// Adaptive bound: mean + k·σ of the VM's own inter-arrival times.
    pub adaptive_k: f64,
    /// Longest wait for the first heartbeat after a start or reboot.
    pub boot_grace_ms: Millis,
    /// A watched service not running in a boot younger than this (the
    /// guest's uptime), and not yet seen running in it, is starting, not
    /// down: an agent can start before the services it watches.
    pub service_start_grace_ms: Millis,
    /// Grace after resume, maintenance end or release before deadlines count.
    pub resume_grace_ms: Millis,
    /// After the agent says bye because the guest shuts down: how long the
    /// domain may keep running before the silence is suspect (a stuck
    /// shutdown).
    pub shutdown_grace_ms: Millis,
    /// After the agent says bye because it was stopped (upgrade, operator):
    /// how long it may stay away before the silence is suspect. (A reboot
    /// bye gets `boot_grace_ms`.)
    pub agent_stopped_grace_ms: Millis,
    /// A fault of the same kind (and subject) this soon after one a
    /// recovery action closed continues that fault's ladder (the action did
    /// not hold) instead of starting it over.
    pub recurrence_window_ms: Millis,
    /// A fault that closed and comes back within this window is reopened
    /// (the same fault, a flap counted) and closes only once it stayed
    /// away this long: a flapping condition is one fault, not a fault per
    /// flap.
    pub flap_window_ms: Millis,
    /// After a liveness probe or stats sample, how long a silent VM with I/O
    /// progress is given before it is called hung anyway.
    pub io_veto_limit_ms: Millis,
    /// How long to wait for a probe or a stats sample before deciding without it.
    pub corroborate_ms: Millis,
    /// A silent guest is called hung only if its vCPUs burn at least this
    /// many ms of CPU per second (a hung kernel spins, ~1000 per stuck
    /// vCPU); below it, with the probe unanswered, the channel is what is
    /// broken (transport-down), not the guest.
    pub hang_min_vcpu_ms_per_s: u64,
    /// An event-based fault (kernel I/O errors, hung tasks, OOM kills)
    /// closes after this long without a recurrence, and only when what the
    /// event points to (blocked tasks, memory pressure) is gone too.
    pub event_quiet_ms: Millis,
    /// A domain someone stopped outside vigild (`virsh destroy` or
    /// `shutdown`: libvirt's reason *destroyed* / *shutdown*) is off on
    /// purpose and left off (false, the default), or started again like a
    /// crashed one (true: always-on semantics). A VMM that died (reason
    /// *crashed* / *failed*) is always a crash.
    pub restart_stopped_by_operator: bool,
    /// Destructive actions allowed per VM per window.
    pub reset_budget: u32,
    /// The window for `reset_budget`.
    pub reset_window_ms: Millis,
    /// Host-wide: at least this many VMs ...
    pub host_wide_min_vms: usize,
    /// ... more than this share of them faulting within the window ...
    pub host_wide_share: f64,
    /// ... within this window, is a host-wide fault.
    pub host_wide_window_ms: Millis,
    /// Destructive actions allowed host-wide per minute.
    pub destructive_per_minute: u32,
    /// A fault found from silence (hang, stall, agent-down) waits this long
    /// before its first destructive action, so that a host-wide event seen
    /// one VM at a time trips the breaker before any VM is reset.
    pub destructive_holdoff_ms: Millis,
    /// Memory PSI some avg10 (× 100) that counts as pressure.
    pub memory_pressure_avg10: u32,
    /// Consecutive pressured reports that make a fault.
    pub memory_pressure_reports: u32,
    /// Disk use percent that is full.
    pub disk_full_percent: u8,
    /// Inode use percent that is full (no file can be made).
    pub inodes_full_percent: u8,
    /// Use percent (space or inodes) at which a host filesystem under VM
    /// disks is full.
    pub host_storage_full_percent: u8,
    /// A host filesystem predicted full within this is a fault already
    /// (0: no prediction).
    pub host_storage_horizon_ms: Millis,
    /// A network condition (a link, an address, a route, the gateway, a
    /// TCP check) must hold this long before it is a fault: a flap shorter
    /// than this is not one.
    pub network_hold_ms: Millis,
    /// Grow memory by this share of the current size per step (percent).
    pub memory_step_percent: u8,
    /// Longest guest-declared maintenance window.
    pub max_guest_maintenance_ms: Millis,
    /// What is a warning (`[engine.warnings]`).
    pub warnings: super::warn::WarnConfig,
    /// Ladders by fault kind name.
    pub ladders: BTreeMap<String, Ladder>,
}

fn rung(action: &str, attempts: u32, verify_ms: Millis) -> Rung {
    Rung {
        action: action.into(),
        attempts,
        verify_ms,
        backoff_ms: 5_000,
    }
}

fn ladder(rungs: Vec<Rung>, exhausted: Exhausted) -> Ladder {
    Ladder { rungs, exhausted }
}

/// The default ladders: least drastic first.
pub fn default_ladders() -> BTreeMap<String, Ladder> {
    use Exhausted::{Hold, Quarantine};
    let mut m = BTreeMap::new();
    let mut put = |k: FaultKind, l: Ladder| {
        m.insert(k.name().to_string(), l);
    };
    put(
        FaultKind::VmCrashed,
        ladder(vec![rung("start", 2, 60_000)], Quarantine),
    );
    // The host ran out of memory and chose this VM: start it once (the
    // host may have room again), then alert; a VM that keeps being chosen
    // needs a host with more memory, or less on it.
    put(
        FaultKind::HostOom,
        ladder(
            vec![rung("start", 1, 60_000), rung("alert", 1, 300_000)],
            Hold,
        ),
    );
    put(
        FaultKind::GuestPanic,
        ladder(
            vec![rung("reset", 2, 60_000), rung("snapshot-revert", 1, 90_000)],
            Quarantine,
        ),
    );
    put(
        FaultKind::GuestHang,
        ladder(
            vec![rung("reset", 2, 60_000), rung("snapshot-revert", 1, 90_000)],
            Quarantine,
        ),
    );
    put(
        FaultKind::VcpuStalled,
        ladder(vec![rung("alert", 1, 300_000)], Hold),
    );
    put(
        FaultKind::HostStorage,
        ladder(vec![rung("alert", 1, 300_000)], Hold),
    );
    // The guest's kernel answers: its workload may be fine, only the
    // monitoring is not. Alert and hold; a reboot rung is opt-in
    // (`[engine.ladders.agent-down]`).
    put(
        FaultKind::AgentDown,
        ladder(vec![rung("alert", 1, 60_000)], Hold),
    );
    // The channel is broken, not the guest: nothing in the guest to
    // repair. On vhost-device-vsock only destroy + start mends the device;
    // that rung is opt-in (`[engine.ladders.transport-down]`).
    put(
        FaultKind::TransportDown,
        ladder(vec![rung("alert", 1, 60_000)], Hold),
    );
    put(
        FaultKind::ServiceDown,
        ladder(
            vec![
                rung("restart-service", 2, 15_000),
                rung("agent-reboot", 1, 90_000),
                rung("reset", 1, 90_000),
            ],
            Quarantine,
        ),
    );
    put(
        FaultKind::DiskFull,
        ladder(vec![rung("alert", 1, 300_000)], Hold),
    );
    put(
        FaultKind::FsReadonly,
        ladder(vec![rung("alert", 1, 300_000)], Hold),
    );
    put(
        FaultKind::IoErrors,
        ladder(vec![rung("alert", 1, 300_000)], Hold),
    );
    put(
        FaultKind::MemoryExhaustion,
        ladder(
            vec![
                rung("add-memory", 2, 30_000),
                rung("agent-reboot", 1, 90_000),
            ],
            Hold,
        ),
    );
    put(
        FaultKind::KernelDegraded,
        ladder(vec![rung("alert", 1, 300_000)], Hold),
    );
    put(
        FaultKind::HostWide,
        ladder(vec![rung("alert", 1, 300_000)], Hold),
    );
    // The host's side of the link: set it up, then plug the NIC in again
    // (a tap recreated, put back on its bridge), then tell an operator.
    put(
        FaultKind::VnicLinkDown,
        ladder(
            vec![
                rung("set-link-up", 1, 15_000),
                rung("replug-nic", 1, 30_000),
                rung("alert", 1, 300_000),
            ],
            Hold,
        ),
    );
    // The guest's own configuration: its allow-listed network restart,
    // then a clean reboot, then tell an operator.
    put(
        FaultKind::NetworkDown,
        ladder(
            vec![
                rung("restart-network", 1, 20_000),
                rung("agent-reboot", 1, 90_000),
                rung("alert", 1, 300_000),
            ],
            Hold,
        ),
    );
    for kind in [
        FaultKind::NetworkUnreachable,
        FaultKind::HostUplink,
        FaultKind::HypervisorUnresponsive,
        FaultKind::HostStorageFull,
        FaultKind::HostDiskErrors,
        FaultKind::HostHardware,
    ] {
        put(kind, ladder(vec![rung("alert", 1, 300_000)], Hold));
    }
    m
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            heartbeat_interval_ms: 500,
            heartbeat_timeout_ms: 2_500,
            min_timeout_ms: 1_500,
            adaptive_k: 6.0,
            boot_grace_ms: 60_000,
            service_start_grace_ms: 30_000,
            resume_grace_ms: 5_000,
            shutdown_grace_ms: 120_000,
            agent_stopped_grace_ms: 600_000,
            recurrence_window_ms: 600_000,
            flap_window_ms: 120_000,
            io_veto_limit_ms: 60_000,
            corroborate_ms: 1_500,
            hang_min_vcpu_ms_per_s: 500,
            event_quiet_ms: 60_000,
            restart_stopped_by_operator: false,
            reset_budget: 3,
            reset_window_ms: 3_600_000,
            host_wide_min_vms: 4,
            host_wide_share: 0.5,
            host_wide_window_ms: 30_000,
            destructive_per_minute: 10,
            destructive_holdoff_ms: 2_000,
            memory_pressure_avg10: 4_000,
            memory_pressure_reports: 2,
            disk_full_percent: 95,
            inodes_full_percent: 95,
            host_storage_full_percent: 99,
            host_storage_horizon_ms: 6 * 3_600_000,
            network_hold_ms: 5_000,
            memory_step_percent: 25,
            max_guest_maintenance_ms: 3_600_000,
            warnings: Default::default(),
            ladders: default_ladders(),
        }
    }
}

/// Parse a rung's action name (arguments come from the fault).
pub fn action_of(name: &str, service: Option<&str>) -> Option<ActionKind> {
    Some(match name {
        "restart-service" => ActionKind::RestartService(service?.to_string()),
        "repair" => ActionKind::Repair(service?.to_string()),
        "agent-reboot" => ActionKind::AgentReboot,
        "reboot" => ActionKind::Reboot,
        "reset" => ActionKind::Reset,
        "start" => ActionKind::Start,
        "destroy-start" => ActionKind::DestroyStart,
        "snapshot-revert" => ActionKind::SnapshotRevert,
        "add-memory" => ActionKind::AddMemory,
        "capture-evidence" => ActionKind::CaptureEvidence,
        "alert" => ActionKind::Alert,
        "resume" => ActionKind::Resume,
        "set-link-up" => ActionKind::SetLinkUp(service?.to_string()),
        "replug-nic" => ActionKind::ReplugNic(service?.to_string()),
        // The guest's own allow-listed repair of that name.
        "restart-network" => ActionKind::Repair("restart-network".into()),
        _ => return None,
    })
}

impl EngineConfig {
    /// Check ranges and ladders; the message names the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval_ms == 0 {
            return Err("heartbeat_interval_ms must be > 0".into());
        }
        if self.min_timeout_ms < self.heartbeat_interval_ms {
            return Err("min_timeout_ms must be at least heartbeat_interval_ms".into());
        }
        if self.heartbeat_timeout_ms < self.min_timeout_ms {
            return Err("heartbeat_timeout_ms must be at least min_timeout_ms".into());
        }
        if !(self.adaptive_k > 0.0 && self.adaptive_k < 100.0) {
            return Err("adaptive_k must be in (0, 100)".into());
        }
        if !(self.host_wide_share > 0.0 && self.host_wide_share < 1.0) {
            return Err("host_wide_share must be in (0, 1)".into());
        }
        if self.event_quiet_ms == 0 {
            return Err("event_quiet_ms must be > 0".into());
        }
        for (name, p) in [
            ("disk_full_percent", self.disk_full_percent),
            ("inodes_full_percent", self.inodes_full_percent),
            ("host_storage_full_percent", self.host_storage_full_percent),
        ] {
            if !(1..=100).contains(&p) {
                return Err(format!("{name} must be 1..=100"));
            }
        }
        if self.host_storage_horizon_ms > 30 * 24 * 3_600_000 {
            return Err(
                "host_storage_horizon_ms must be at most 30 days (0: no prediction)".into(),
            );
        }
        if self.service_start_grace_ms > 600_000 {
            return Err("service_start_grace_ms must be at most 600000 (10 min)".into());
        }
        if self.network_hold_ms > 600_000 {
            return Err("network_hold_ms must be at most 600000 (10 min)".into());
        }
        self.warnings.validate()?;
        if self.reset_budget == 0 || self.reset_window_ms == 0 {
            return Err("reset_budget and reset_window_ms must be > 0".into());
        }
        for (name, l) in &self.ladders {
            if FaultKind::from_name(name).is_none() {
                return Err(format!("ladders: unknown fault kind {name:?}"));
            }
            for r in &l.rungs {
                if action_of(&r.action, Some("x")).is_none() {
                    return Err(format!("ladders.{name}: unknown action {:?}", r.action));
                }
                if r.attempts == 0 {
                    return Err(format!("ladders.{name}: attempts must be > 0"));
                }
            }
        }
        for k in FaultKind::ALL {
            if !self.ladders.contains_key(k.name()) {
                return Err(format!("ladders: no ladder for {}", k.name()));
            }
        }
        Ok(())
    }

    /// The ladder for a fault kind (validated to exist).
    pub fn ladder(&self, kind: FaultKind) -> Option<&Ladder> {
        self.ladders.get(kind.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_cover_every_kind() {
        EngineConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_ladders_are_named() {
        let mut c = EngineConfig::default();
        c.ladders.insert(
            "guest-hang".into(),
            ladder(vec![rung("explode", 1, 1)], Exhausted::Hold),
        );
        assert!(c
            .validate()
            .unwrap_err()
            .contains("unknown action \"explode\""));
        let mut c = EngineConfig::default();
        c.ladders.remove("disk-full");
        assert!(c
            .validate()
            .unwrap_err()
            .contains("no ladder for disk-full"));
    }
}
