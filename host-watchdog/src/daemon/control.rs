//! The control API: JSON lines over a root-only Unix socket. `vigilctl`
//! sends one [`Request`] per line and reads one [`Response`] per line.

use serde::{Deserialize, Serialize};

use crate::engine::Millis;

/// The most records one `Events` answer carries.
pub const EVENTS_PAGE: u32 = 1000;

/// A request to vigild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case")]
pub enum Request {
    /// Every monitored VM with its state.
    List,
    /// One VM in detail.
    Status {
        /// Domain name.
        domain: String,
    },
    /// Whether a VM is all right or being repaired, or faulted beyond
    /// what vigild can do (a cluster's monitor asks), by domain or by its
    /// cluster resource.
    Health {
        /// Domain name.
        #[serde(default)]
        domain: Option<String>,
        /// Cluster resource name (`[[vm]] cluster_resource`).
        #[serde(default)]
        resource: Option<String>,
    },
    /// A live snapshot from the VM's agent.
    Probe {
        /// Domain name.
        domain: String,
    },
    /// Journal records since a time or after a row.
    Events {
        /// Only records at or after this time (ms since the epoch).
        since: Option<Millis>,
        /// Only records after this row (for following).
        after: Option<i64>,
        /// At most this many (the server caps it at [`EVENTS_PAGE`]); the
        /// client asks for the next page after the last row it got.
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Open warnings (of one VM, or all).
    Warnings {
        /// Domain name; all VMs when absent.
        #[serde(default)]
        domain: Option<String>,
    },
    /// The advisor's recommendations (of one VM, or all).
    Advise {
        /// Domain name; all VMs when absent.
        #[serde(default)]
        domain: Option<String>,
    },
    /// Apply a VM's applicable recommendations: all, or those named.
    AdviseApply {
        /// Domain name.
        domain: String,
        /// Recommendation items (`memory`, `vcpus`); all when empty.
        #[serde(default)]
        items: Vec<String>,
        /// Also to the running domain, where it allows.
        #[serde(default)]
        live: bool,
    },
    /// Undo a reconfigure action (one `advise --apply` made).
    AdviseRevert {
        /// Domain name.
        domain: String,
        /// The reconfigure action's id.
        action: u64,
    },
    /// Per-VM metrics since a time.
    Report {
        /// Window start (ms since the epoch); default: the journal's start.
        since: Option<Millis>,
    },
    /// Maintenance on (optionally for a while) or off.
    Maintenance {
        /// Domain name.
        domain: String,
        /// On or off.
        on: bool,
        /// Duration in ms, for `on`.
        for_ms: Option<u64>,
    },
    /// Release a quarantined VM.
    Release {
        /// Domain name.
        domain: String,
    },
    /// Run a hypervisor action by hand (journaled like the engine's own):
    /// reset, reboot, shutdown, destroy, start, resume, agent-reboot.
    Act {
        /// Domain name.
        domain: String,
        /// Action name.
        action: String,
    },
    /// The host's own health and its reasons; with `clear`, an operator
    /// says its hardware and disks were seen to first.
    Host {
        /// Clear the hardware and disk reasons.
        #[serde(default)]
        clear: bool,
    },
    /// Stop taking recovery actions host-wide.
    Disarm,
    /// Take recovery actions again.
    Arm,
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether it worked.
    pub ok: bool,
    /// The result (shape depends on the verb).
    #[serde(default)]
    pub data: serde_json::Value,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Error class, for the exit status: `usage`, `not-found`, `unavailable`, `internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

impl Response {
    /// A successful reply.
    pub fn ok(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            data,
            error: None,
            class: None,
        }
    }

    /// A failed reply.
    pub fn err(class: &str, msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            data: serde_json::Value::Null,
            error: Some(msg.into()),
            class: Some(class.into()),
        }
    }
}

/// One VM as `list` and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    /// Domain name.
    pub domain: String,
    /// UUID.
    pub uuid: String,
    /// Engine state.
    pub state: String,
    /// Hypervisor state.
    pub domain_state: String,
    /// An agent is expected.
    pub agent_expected: bool,
    /// An agent is connected.
    pub agent_connected: bool,
    /// Age of the last heartbeat, ms.
    pub heartbeat_age_ms: Option<u64>,
    /// Active fault: kind.
    pub fault: Option<String>,
    /// Active fault: id.
    pub fault_id: Option<u64>,
    /// Guest hostname from the agent (a cross-check, not an identity).
    pub hostname: Option<String>,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Boot id.
    pub boot_id: Option<String>,
}
