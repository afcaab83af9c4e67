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
    /// Read the config file again and apply what can be applied; a bad
    /// file changes nothing.
    Reload,
    /// The config vigild runs with.
    Config,
    /// Stop taking recovery actions host-wide.
    Disarm,
    /// Take recovery actions again.
    Arm,
}

impl Request {
    /// Whether it only reads (a `control_group` member may send it):
    /// nothing about the VMs, the journal or vigild changes.
    pub fn read_only(&self) -> bool {
        match self {
            Request::List
            | Request::Status { .. }
            | Request::Health { .. }
            | Request::Probe { .. }
            | Request::Events { .. }
            | Request::Warnings { .. }
            | Request::Advise { .. }
            | Request::Report { .. }
            | Request::Config => true,
            Request::Host { clear } => !clear,
            Request::AdviseApply { .. }
            | Request::AdviseRevert { .. }
            | Request::Maintenance { .. }
            | Request::Release { .. }
            | Request::Act { .. }
            | Request::Reload
            | Request::Disarm
            | Request::Arm => false,
        }
    }

    /// The verb, as it is named on the wire.
    pub fn verb(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["verb"].as_str().map(String::from))
            .unwrap_or_default()
    }
}

/// Who may do what on the control socket: root (and vigild's own user)
/// everything; members of the control group only what reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The control group's id, if one is configured.
    pub group: Option<u32>,
    /// vigild's effective user id.
    pub owner: u32,
}

/// A peer as `SO_PEERCRED` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id (its supplementary groups are read from `/proc`).
    pub pid: Option<i32>,
}

impl Access {
    /// May `peer` (whose supplementary groups are `groups`) send `req`?
    /// The error says why not.
    pub fn check(&self, peer: Peer, groups: &[u32], req: &Request) -> Result<(), String> {
        if peer.uid == 0 || peer.uid == self.owner {
            return Ok(());
        }
        let member = self
            .group
            .is_some_and(|g| peer.gid == g || groups.contains(&g));
        match (member, req.read_only()) {
            (true, true) => Ok(()),
            (true, false) => Err(format!(
                "permission denied: `{}` changes things and is root's; the control group may only read",
                req.verb()
            )),
            (false, _) => Err(format!(
                "permission denied: uid {} is neither root nor in the control group",
                peer.uid
            )),
        }
    }
}

/// A process's supplementary groups (`Groups:` in `/proc/PID/status`);
/// none when it cannot be read.
pub fn supplementary_groups(proc: &std::path::Path, pid: i32) -> Vec<u32> {
    std::fs::read_to_string(proc.join(pid.to_string()).join("status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
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
    /// Why it is quarantined, while it is (its fault may have gone since).
    #[serde(default)]
    pub quarantine: Option<String>,
    /// Guest hostname from the agent (a cross-check, not an identity).
    pub hostname: Option<String>,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Boot id.
    pub boot_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_group_reads_and_only_root_changes() {
        let access = Access {
            group: Some(500),
            owner: 0,
        };
        let peer = |uid, gid| Peer {
            uid,
            gid,
            pid: None,
        };
        let (list, arm) = (Request::List, Request::Arm);
        assert!(access.check(peer(0, 0), &[], &arm).is_ok());
        assert!(access.check(peer(1000, 500), &[], &list).is_ok());
        assert!(access.check(peer(1000, 100), &[7, 500], &list).is_ok());
        let e = access.check(peer(1000, 500), &[], &arm).unwrap_err();
        assert!(e.contains("`arm` changes things"), "{e}");
        let e = access.check(peer(1001, 100), &[7], &list).unwrap_err();
        assert!(e.contains("uid 1001 is neither root"), "{e}");
        let clear = Request::Host { clear: true };
        assert!(access.check(peer(1000, 500), &[], &clear).is_err());
        assert!(access
            .check(peer(1000, 500), &[], &Request::Host { clear: false })
            .is_ok());
        // No group configured: root only.
        let root_only = Access {
            group: None,
            owner: 0,
        };
        assert!(root_only.check(peer(1000, 500), &[500], &list).is_err());
    }

    #[test]
    fn supplementary_groups_come_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        std::fs::write(
            dir.path().join("42/status"),
            "Name:\tvigilctl\nGroups:\t4 24 500 \nNSpgid:\t42\n",
        )
        .unwrap();
        assert_eq!(supplementary_groups(dir.path(), 42), [4, 24, 500]);
        assert!(supplementary_groups(dir.path(), 43).is_empty());
    }
}
