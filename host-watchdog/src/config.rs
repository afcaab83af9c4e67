//! vigild's configuration: `/etc/vigil/watchdog.toml` (`deny_unknown_fields`),
//! validated with clear errors; `vigild --print-config` prints the defaults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use vigil_protocol::transport::Address;

use crate::engine::EngineConfig;

/// Default config path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vigil/watchdog.toml";

/// A config problem.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid for the schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// Out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// One monitored VM's wiring (hybrid vsock or plain Unix sockets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// libvirt domain name.
    pub domain: String,
    /// Where this VM's agent connections arrive: `hybrid:///base:PORT`
    /// (listens on `base_PORT`) or `unix:///path`. Absent: no agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Liveness probe target: `hybrid:///vmm.sock:PORT` with a port nobody
    /// listens on in the guest. Absent: no probe.
    #[serde(default)]
    pub probe: Option<String>,
    /// Known-good libvirt snapshot for the snapshot-revert rung (destroy,
    /// safety snapshot of the broken disk, revert, start).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// The guest's vsock CID, for connections to `listen`'s vsock://
    /// addresses, when the domain's XML does not carry it (a device added
    /// outside libvirt's `<vsock>`, or 1, the loopback CID, for a vigild
    /// inside the guest). Wins over the XML's.
    #[serde(default)]
    pub cid: Option<u32>,
    /// The cluster resource this VM is (`[cluster]` set): vigild never
    /// starts, stops, resets or reverts it; it asks the cluster to recover
    /// it (`crm_resource --fail`). In-guest repairs stay vigild's.
    #[serde(default)]
    pub cluster_resource: Option<String>,
}

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// libvirt URI (`test:///default` for demos, `qemu:///system` in production).
    pub libvirt_uri: String,
    /// SQLite journal path.
    pub journal: PathBuf,
    /// Records older than this many days are deleted (hourly), except
    /// those of faults still open; 0 keeps everything.
    pub journal_retention_days: u64,
    /// Control socket path (root-only, unless `control_group` is set).
    pub control_socket: PathBuf,
    /// A group whose members may read through the control socket (`list`,
    /// `status`, `events`, `report`, `health`, `probe`, `warnings`,
    /// `advise`, `config`, `host`); only root changes anything. Empty: root
    /// only. Checked on each request from the peer's credentials.
    pub control_group: String,
    /// Prometheus listen address; empty disables.
    pub metrics_listen: String,
    /// Kernel-vsock listen addresses (`vsock://any:1217`); VMs are found by
    /// the CID in their domain XML.
    pub listen: Vec<String>,
    /// How often domains that need watching are polled, ms: those not
    /// healthy (discovering, suspect, faulted, recovering, ...). A VM that
    /// turns suspect is polled at once.
    pub poll_interval_ms: u64,
    /// How often every domain is polled, ms (one bulk call): healthy VMs
    /// with a heartbeating agent need the hypervisor's word only as a
    /// fallback; their lifecycle events come at once anyway.
    pub quiet_poll_interval_ms: u64,
    /// Largest frame payload accepted from a guest.
    pub max_frame_bytes: u32,
    /// Messages per second a guest may send (burst of the same size).
    pub max_messages_per_second: u32,
    /// A guest that starts a frame and does not finish it within this is dropped.
    pub slow_sender_timeout_ms: u64,
    /// A connection must say `Hello` within this.
    pub hello_timeout_ms: u64,
    /// Liveness probe timeout.
    pub probe_timeout_ms: u64,
    /// Agent command timeout.
    pub command_timeout_ms: u64,
    /// A hypervisor action (reset, destroy, start, revert ...) not done
    /// within this is reported failed; its VM takes no other action until
    /// the call returns. Other VMs are never held up by it.
    pub action_timeout_ms: u64,
    /// Keepalive interval to agents that speak protocol 2 (never sent to a
    /// paused VM); an agent that hears nothing for a few intervals
    /// reconnects, so a half-open session does not last.
    pub keepalive_interval_ms: u64,
    /// The host's kernel log (`/dev/kmsg`; a file or FIFO of records in
    /// tests), read for host faults: QEMU killed by the host's OOM killer,
    /// machine checks, memory and disk errors, hung tasks. Empty disables.
    pub host_kmsg: PathBuf,
    /// A cheap libvirt call (a listing, a poll, a keepalive) that has not
    /// returned within this means the hypervisor does not answer: named
    /// (`hypervisor-unresponsive`), and no destructive action anywhere
    /// until it answers again.
    pub hypervisor_timeout_ms: u64,
    /// The cluster hand-off.
    pub cluster: crate::cluster::ClusterConfig,
    /// Per-VM wiring.
    pub vm: Vec<VmConfig>,
    /// Fault engine settings.
    pub engine: EngineConfig,
    /// The advisor (`vigilctl advise`).
    pub advisor: crate::advisor::AdvisorConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            libvirt_uri: "qemu:///system".into(),
            journal: "/var/lib/vigil/journal.db".into(),
            journal_retention_days: 90,
            control_socket: "/run/vigil/control.sock".into(),
            control_group: String::new(),
            metrics_listen: "127.0.0.1:9717".into(),
            listen: Vec::new(),
            poll_interval_ms: 1000,
            quiet_poll_interval_ms: 5000,
            max_frame_bytes: vigil_protocol::DEFAULT_MAX_PAYLOAD,
            max_messages_per_second: 50,
            slow_sender_timeout_ms: 5000,
            hello_timeout_ms: 5000,
            probe_timeout_ms: 1000,
            command_timeout_ms: 60_000,
            action_timeout_ms: 120_000,
            keepalive_interval_ms: 2_000,
            host_kmsg: "/dev/kmsg".into(),
            hypervisor_timeout_ms: 10_000,
            cluster: crate::cluster::ClusterConfig::default(),
            vm: Vec::new(),
            engine: EngineConfig::default(),
            advisor: Default::default(),
        }
    }
}

impl Config {
    /// Parse TOML (not yet validated).
    /// Ladders given in `[engine.ladders.KIND]` replace that kind's default
    /// ladder; the others keep their defaults.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        for (kind, ladder) in crate::engine::config::default_ladders() {
            c.engine.ladders.entry(kind).or_insert(ladder);
        }
        Ok(c)
    }

    /// Load a file; a missing file at the default path means the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Config::from_toml(&t, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    /// The defaults as TOML.
    pub fn defaults_toml() -> String {
        toml::to_string(&Config::default()).unwrap_or_default()
    }

    /// Check everything; the message names the bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.libvirt_uri.is_empty() {
            return bad("libvirt_uri is empty".into());
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(format!(
                "metrics_listen {:?} is not HOST:PORT",
                self.metrics_listen
            ));
        }
        for l in &self.listen {
            match l.parse::<Address>() {
                Ok(Address::Vsock { .. }) => {}
                Ok(_) => {
                    return bad(format!(
                        "listen {l:?}: only vsock:// addresses; per-VM sockets go in [[vm]] agent"
                    ))
                }
                Err(e) => return bad(format!("listen {l:?}: {e}")),
            }
        }
        if !self.control_group.is_empty()
            && !matches!(
                nix::unistd::Group::from_name(&self.control_group),
                Ok(Some(_))
            )
        {
            return bad(format!(
                "control_group {:?}: no such group",
                self.control_group
            ));
        }
        if !(1_000..=600_000).contains(&self.hypervisor_timeout_ms) {
            return bad(format!(
                "hypervisor_timeout_ms must be 1000..=600000, not {}",
                self.hypervisor_timeout_ms
            ));
        }
        if self.poll_interval_ms < 100 || self.poll_interval_ms > 60_000 {
            return bad("poll_interval_ms must be 100..=60000".into());
        }
        if self.quiet_poll_interval_ms < self.poll_interval_ms
            || self.quiet_poll_interval_ms > 300_000
        {
            return bad("quiet_poll_interval_ms must be poll_interval_ms..=300000".into());
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > 16 << 20 {
            return bad("max_frame_bytes must be 1024..=16777216".into());
        }
        if self.max_messages_per_second == 0 {
            return bad("max_messages_per_second must be > 0".into());
        }
        self.cluster
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("cluster: {e}")))?;
        self.advisor.validate().map_err(ConfigError::Invalid)?;
        let mut names = BTreeSet::new();
        let mut cids = BTreeSet::new();
        let mut resources = BTreeSet::new();
        for v in &self.vm {
            if let Some(r) = &v.cluster_resource {
                if !self.cluster.enabled() {
                    return bad(format!(
                        "vm {}: cluster_resource without a [cluster] kind",
                        v.domain
                    ));
                }
                if !crate::cluster::valid_name(r, false) || !resources.insert(r.as_str()) {
                    return bad(format!(
                        "vm {}: cluster_resource {r:?} is not a resource name or is listed twice",
                        v.domain
                    ));
                }
            }
            if v.domain.is_empty() || !names.insert(v.domain.as_str()) {
                return bad(format!("vm {:?}: empty or listed twice", v.domain));
            }
            if let Some(c) = v.cid {
                // 0 is the hypervisor, 2 the host, u32::MAX "any".
                if c == 0 || c == 2 || c == u32::MAX || !cids.insert(c) {
                    return bad(format!(
                        "vm {}: cid {c} is reserved or listed twice",
                        v.domain
                    ));
                }
            }
            for (what, a) in [("agent", &v.agent), ("probe", &v.probe)] {
                if let Some(a) = a {
                    match a.parse::<Address>() {
                        Ok(Address::Vsock { .. }) => {
                            return bad(format!(
                                "vm {}: {what} must be hybrid:// or unix://",
                                v.domain
                            ))
                        }
                        Ok(_) => {}
                        Err(e) => return bad(format!("vm {}: {what}: {e}", v.domain)),
                    }
                }
            }
        }
        self.engine
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("engine: {e}")))
    }
}

/// Where the config comes from, for loading it again (SIGHUP, `vigilctl
/// reload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    /// The file.
    pub path: PathBuf,
    /// A missing file is an error (else: the defaults).
    pub required: bool,
    /// `--libvirt-uri`, which wins over the file.
    pub libvirt_uri: Option<String>,
}

impl ConfigSource {
    /// Load, apply the command line's overrides, validate.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut c = Config::load(&self.path, self.required)?;
        if let Some(uri) = &self.libvirt_uri {
            c.libvirt_uri = uri.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

/// What a reload does with a new config: the settings it can apply at
/// once, and those that take a restart (sockets, connections, threads set
/// up at start), which keep their running values until then.
#[derive(Debug, Clone, PartialEq)]
pub struct Reload {
    /// The config to run with now.
    pub config: Config,
    /// Top-level settings that changed and are applied.
    pub applied: Vec<String>,
    /// Settings that changed but need a restart (kept as running).
    pub needs_restart: Vec<String>,
}

/// Settings read once at start.
const RESTART_ONLY: [&str; 14] = [
    "libvirt_uri",
    "journal",
    "control_socket",
    "control_group",
    "metrics_listen",
    "listen",
    "poll_interval_ms",
    "quiet_poll_interval_ms",
    "max_frame_bytes",
    "max_messages_per_second",
    "slow_sender_timeout_ms",
    "hello_timeout_ms",
    "action_timeout_ms",
    "host_kmsg",
];

impl Config {
    /// Compare a new, validated config with the running one: see [`Reload`].
    /// `[cluster]` and each VM's `agent` socket are restart-only too.
    pub fn reload(&self, new: Config) -> Reload {
        let (old, mut next) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(&new).unwrap_or_default(),
        );
        let mut needs_restart = Vec::new();
        for key in RESTART_ONLY.into_iter().chain(["cluster"]) {
            if old.get(key) != next.get(key) {
                needs_restart.push(key.to_string());
                next[key] = old.get(key).cloned().unwrap_or_default();
            }
        }
        let mut config: Config = serde_json::from_value(next).unwrap_or_else(|_| self.clone());
        // A VM's agent socket is bound at start, and its cluster resource
        // goes with `[cluster]`: the running ones stay.
        let running = |d: &str| self.vm.iter().find(|v| v.domain == d);
        for v in &mut config.vm {
            let (agent, resource) = running(&v.domain)
                .map(|r| (r.agent.clone(), r.cluster_resource.clone()))
                .unwrap_or_default();
            if v.agent != agent {
                needs_restart.push(format!("vm {} agent", v.domain));
                v.agent = agent;
            }
            if v.cluster_resource != resource {
                needs_restart.push(format!("vm {} cluster_resource", v.domain));
                v.cluster_resource = resource;
            }
        }
        let agent_of =
            |c: &Config, d: &str| c.vm.iter().find(|v| v.domain == d).map(|v| v.agent.clone());
        for v in &self.vm {
            if v.agent.is_some() && agent_of(&config, &v.domain).is_none() {
                needs_restart.push(format!("vm {} removed (its agent socket)", v.domain));
            }
        }
        let (old, now) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(&config).unwrap_or_default(),
        );
        let applied = old
            .as_object()
            .map(|o| {
                o.keys()
                    .filter(|k| old.get(*k) != now.get(*k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Reload {
            config,
            applied,
            needs_restart,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, ConfigError> {
        let c = Config::from_toml(text, Path::new("w.toml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn a_vm_cid_must_be_a_guest_cid_and_unique() {
        let vm = |d: &str, c: u32| format!("[[vm]]\ndomain = \"{d}\"\ncid = {c}\n");
        assert_eq!(check(&vm("a", 1)).unwrap().vm[0].cid, Some(1));
        for c in [0, 2, u32::MAX] {
            let e = check(&vm("a", c)).unwrap_err().to_string();
            assert!(e.contains("reserved"), "{e}");
        }
        let e = check(&format!("{}{}", vm("a", 5), vm("b", 5)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn a_reload_keeps_what_takes_a_restart() {
        let old = check("[[vm]]\ndomain = \"a\"\nagent = \"unix:///a.sock\"\n").unwrap();
        let new = check(
            "control_socket = \"/x.sock\"\n[engine]\nheartbeat_timeout_ms = 9000\n\
             [[vm]]\ndomain = \"a\"\nagent = \"unix:///b.sock\"\nsnapshot = \"good\"\n\
             [[vm]]\ndomain = \"b\"\n",
        )
        .unwrap();
        let r = old.reload(new);
        assert_eq!(r.applied, ["engine", "vm"]);
        assert_eq!(r.needs_restart, ["control_socket", "vm a agent"]);
        // A cluster resource goes with [cluster], which takes a restart.
        let clustered = check(
            "[cluster]\nkind = \"pacemaker\"\n[[vm]]\ndomain = \"a\"\nagent = \"unix:///a.sock\"\ncluster_resource = \"vm-a\"\n",
        )
        .unwrap();
        let r2 = old.reload(clustered);
        assert_eq!(r2.needs_restart, ["cluster", "vm a cluster_resource"]);
        r2.config.validate().unwrap();
        assert_eq!(r.config.control_socket, old.control_socket);
        assert_eq!(r.config.engine.heartbeat_timeout_ms, 9000);
        assert_eq!(r.config.vm[0].agent.as_deref(), Some("unix:///a.sock"));
        assert_eq!(r.config.vm[0].snapshot.as_deref(), Some("good"));
        assert_eq!(r.config.vm[1].domain, "b");
        // The same file again: nothing changes.
        let again = r.config.reload(r.config.clone());
        assert!(again.applied.is_empty() && again.needs_restart.is_empty());
    }

    #[test]
    fn defaults_round_trip() {
        assert_eq!(check(&Config::defaults_toml()).unwrap(), Config::default());
    }

    #[test]
    fn a_ladder_override_keeps_the_other_defaults() {
        let c = check("[engine.ladders.agent-down]\nrungs = [{ action = \"alert\", verify_ms = 2000 }]\nexhausted = \"hold\"\n").unwrap();
        assert_eq!(c.engine.ladders["agent-down"].rungs.len(), 1);
        assert_eq!(
            c.engine.ladders["guest-hang"],
            crate::engine::config::default_ladders()["guest-hang"]
        );
    }

    #[test]
    fn bad_configs_are_named() {
        let cases = [
            ("colour = 1", "unknown field `colour`"),
            ("metrics_listen = \"nine\"", "not HOST:PORT"),
            ("listen = [\"unix:///x\"]", "only vsock://"),
            (
                "[[vm]]\ndomain = \"a\"\nagent = \"tcp://x\"",
                "unknown address scheme",
            ),
            (
                "[[vm]]\ndomain = \"a\"\n[[vm]]\ndomain = \"a\"",
                "listed twice",
            ),
            ("[engine]\nheartbeat_timeout_ms = 10", "engine:"),
            (
                "[engine]\nservice_start_grace_ms = 3600000",
                "engine: service_start_grace_ms must be at most",
            ),
            ("poll_interval_ms = 5", "poll_interval_ms"),
            ("quiet_poll_interval_ms = 500", "quiet_poll_interval_ms"),
            ("hypervisor_timeout_ms = 100", "hypervisor_timeout_ms"),
            (
                "[[vm]]\ndomain = \"a\"\ncluster_resource = \"vm-a\"",
                "without a [cluster] kind",
            ),
            (
                "[cluster]\nkind = \"pacemaker\"\n[[vm]]\ndomain = \"a\"\ncluster_resource = \"vm a\"",
                "not a resource name",
            ),
            ("[cluster]\nkind = \"corosync\"", "unknown variant"),
            ("[cluster]\nkind = \"pacemaker\"\ndampen_s = 99999", "cluster: dampen_s"),
            ("control_group = \"no-such-group-here\"", "no such group"),
        ];
        for (text, want) in cases {
            let e = check(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
