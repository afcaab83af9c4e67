//! Agent configuration: a TOML file (`deny_unknown_fields`), validated with
//! clear errors; flags and environment override the file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use vigil_protocol::transport::Address;

/// Default config file path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vigil/agent.toml";
/// Default host address: the host CID, Vigil's port.
pub const DEFAULT_CONNECT: &str = "vsock://2:1217";

/// Why a config is unusable.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What toml said (line, column, field).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Which host action an allow-list entry permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllowedAction {
    /// `Command::RestartService(name)`.
    RestartService,
    /// `Command::Repair(name)`.
    Repair,
    /// `Command::Reboot` (`name` must be `reboot`).
    Reboot,
}

/// One allow-listed host command. Only `argv` is ever run; nothing from the
/// wire is passed to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowed {
    /// Which action.
    pub action: AllowedAction,
    /// The name the host uses.
    pub name: String,
    /// Program and arguments to run (absolute program path).
    pub argv: Vec<String>,
    /// Kill it after this many seconds.
    #[serde(default = "default_command_timeout")]
    pub timeout_s: u64,
}

fn default_command_timeout() -> u64 {
    30
}

/// What to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Watch {
    /// Process names (`comm`, at most 15 bytes as the kernel keeps them).
    pub processes: Vec<String>,
    /// systemd unit names, found through their cgroup.
    pub units: Vec<String>,
}

/// Which network interfaces are reported (loopback never is).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Only these (names, or prefixes ending in `*`); empty: all.
    pub include: Vec<String>,
    /// Never these (names, or prefixes ending in `*`).
    pub exclude: Vec<String>,
}

impl NetworkConfig {
    /// Whether interface `name` is reported.
    pub fn reports(&self, name: &str) -> bool {
        let hit = |p: &String| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        };
        (self.include.is_empty() || self.include.iter().any(hit)) && !self.exclude.iter().any(hit)
    }
}

/// One "can I reach what I serve" check: a TCP connect to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpTarget {
    /// `address:port` (an IP address: no name lookups in the agent).
    pub target: String,
    /// Connect timeout, ms.
    #[serde(default = "default_tcp_timeout")]
    pub timeout_ms: u64,
    /// Check this often, ms.
    #[serde(default = "default_tcp_every")]
    pub every_ms: u64,
}

fn default_tcp_timeout() -> u64 {
    2000
}
fn default_tcp_every() -> u64 {
    5000
}

/// Active checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// TCP connect checks (`[[check.tcp]]`).
    pub tcp: Vec<TcpTarget>,
}

/// Guest-declared maintenance (`vigil-agent maintenance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Maintenance {
    /// The APT hook the package ships declares maintenance while dpkg runs
    /// (a service restarted by an upgrade is not "recovered" on top).
    pub apt_hook: bool,
    /// How long the APT hook's window lasts at most, in seconds (it ends
    /// when dpkg is done).
    pub apt_window_s: u32,
}

impl Default for Maintenance {
    fn default() -> Self {
        Self {
            apt_hook: true,
            apt_window_s: 1800,
        }
    }
}

/// Bounds on what the agent forwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Kernel events forwarded per minute (burst of the same size).
    pub kernel_events_per_minute: u32,
    /// Longest back-off between reconnect attempts, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            kernel_events_per_minute: 60,
            max_backoff_ms: 5000,
        }
    }
}

/// The agent's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the host listens.
    pub connect: String,
    /// procfs root.
    pub proc_root: PathBuf,
    /// sysfs root.
    pub sys_root: PathBuf,
    /// Kernel log device (or a file of kmsg records, for tests).
    pub kmsg: PathBuf,
    /// Root the mount points are resolved under (for statvfs).
    pub fs_root: PathBuf,
    /// Runtime state (cleared at boot): remembers a reported pstore record.
    pub state_dir: PathBuf,
    /// Watch list.
    pub watch: Watch,
    /// Host commands this guest permits.
    pub allow: Vec<Allowed>,
    /// Rate and size bounds.
    pub limits: Limits,
    /// Guest-declared maintenance.
    pub maintenance: Maintenance,
    /// Network interfaces reported.
    pub network: NetworkConfig,
    /// Active checks.
    pub check: Checks,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT.into(),
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            kmsg: "/dev/kmsg".into(),
            fs_root: "/".into(),
            state_dir: "/run/vigil-agent".into(),
            watch: Watch::default(),
            allow: Vec::new(),
            limits: Limits::default(),
            maintenance: Maintenance::default(),
            network: NetworkConfig::default(),
            check: Checks::default(),
        }
    }
}

impl Config {
    /// Parse TOML text (not yet validated).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Load a file; a missing file at the default path means the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    /// The defaults, as TOML.
    pub fn defaults_toml() -> String {
        toml::to_string(&Config::default()).unwrap_or_default()
    }

    /// The parsed host address.
    pub fn address(&self) -> Result<Address, ConfigError> {
        self.connect
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("connect: {e}")))
    }

    /// Check ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        self.address()?;
        for (name, p) in [
            ("proc_root", &self.proc_root),
            ("sys_root", &self.sys_root),
            ("kmsg", &self.kmsg),
            ("fs_root", &self.fs_root),
            ("state_dir", &self.state_dir),
        ] {
            if !p.is_absolute() {
                return bad(format!(
                    "{name} must be an absolute path, got {}",
                    p.display()
                ));
            }
        }
        let watched = self.watch.processes.len() + self.watch.units.len();
        if watched > vigil_protocol::limits::MAX_WATCHED {
            return bad(format!(
                "watch lists {watched} entries, at most {} allowed",
                vigil_protocol::limits::MAX_WATCHED
            ));
        }
        for p in &self.watch.processes {
            if p.is_empty() || p.len() > 15 || p.contains('/') {
                return bad(format!(
                    "watch.processes: {p:?} is not a process name (1-15 bytes, no '/')"
                ));
            }
        }
        for u in &self.watch.units {
            if u.is_empty() || u.contains('/') || !u.contains('.') {
                return bad(format!(
                    "watch.units: {u:?} is not a unit name (e.g. nginx.service)"
                ));
            }
        }
        let mut seen = HashSet::new();
        for a in &self.allow {
            if a.name.is_empty() {
                return bad("allow: an entry has an empty name".into());
            }
            if !seen.insert((a.action, a.name.as_str())) {
                return bad(format!(
                    "allow: {:?} {:?} is listed twice",
                    a.action, a.name
                ));
            }
            if a.action == AllowedAction::Reboot && a.name != "reboot" {
                return bad(format!(
                    "allow: a reboot entry must be named \"reboot\", got {:?}",
                    a.name
                ));
            }
            match a.argv.first() {
                Some(prog) if prog.starts_with('/') => {}
                _ => {
                    return bad(format!(
                        "allow {:?}: argv must start with an absolute program path",
                        a.name
                    ))
                }
            }
            if a.timeout_s == 0 || a.timeout_s > 3600 {
                return bad(format!("allow {:?}: timeout_s must be 1..=3600", a.name));
            }
        }
        if self.limits.kernel_events_per_minute == 0 || self.limits.kernel_events_per_minute > 6000
        {
            return bad("limits.kernel_events_per_minute must be 1..=6000".into());
        }
        if !(1..=crate::maintenance::MAX_WINDOW_S).contains(&self.maintenance.apt_window_s) {
            return bad(format!(
                "maintenance.apt_window_s must be 1..={}",
                crate::maintenance::MAX_WINDOW_S
            ));
        }
        if !(100..=600_000).contains(&self.limits.max_backoff_ms) {
            return bad("limits.max_backoff_ms must be 100..=600000".into());
        }
        for p in self.network.include.iter().chain(&self.network.exclude) {
            let stem = p.strip_suffix('*').unwrap_or(p);
            if stem.is_empty() && p != "*" || stem.contains(['*', '/']) || stem.len() > 15 {
                return bad(format!(
                    "network: {p:?} is not an interface name or a prefix ending in '*'"
                ));
            }
        }
        let max = vigil_protocol::limits::MAX_TCP_CHECKS;
        if self.check.tcp.len() > max {
            return bad(format!(
                "check.tcp: {} checks, at most {max} allowed",
                self.check.tcp.len()
            ));
        }
        for t in &self.check.tcp {
            if t.target.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!(
                    "check.tcp: target {:?} is not address:port (an IP address, [v6]:port for IPv6)",
                    t.target
                ));
            }
            if !(100..=30_000).contains(&t.timeout_ms) {
                return bad(format!(
                    "check.tcp {:?}: timeout_ms must be 100..=30000",
                    t.target
                ));
            }
            if !(1000..=3_600_000).contains(&t.every_ms) || t.every_ms < t.timeout_ms {
                return bad(format!(
                    "check.tcp {:?}: every_ms must be 1000..=3600000 and at least timeout_ms",
                    t.target
                ));
            }
        }
        Ok(())
    }

    /// The allow-list entry for `action`/`name`, if any.
    pub fn allowed(&self, action: AllowedAction, name: &str) -> Option<&Allowed> {
        self.allow
            .iter()
            .find(|a| a.action == action && a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c = Config::from_toml(text, Path::new("t.toml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn network_filters_and_tcp_checks() {
        let c = parse(
            r#"
            [network]
            exclude = ["docker*", "veth*"]
            [[check.tcp]]
            target = "10.0.2.2:8080"
            [[check.tcp]]
            target = "[fec0::2]:443"
            timeout_ms = 500
            "#,
        )
        .unwrap();
        assert!(c.network.reports("eth0"));
        assert!(!c.network.reports("docker0") && !c.network.reports("veth12"));
        assert_eq!(
            (c.check.tcp[0].timeout_ms, c.check.tcp[0].every_ms),
            (2000, 5000)
        );
        for (bad, word) in [
            ("[[check.tcp]]\ntarget = \"example:80\"", "address:port"),
            ("[[check.tcp]]\ntarget = \"10.0.2.2\"", "address:port"),
            (
                "[[check.tcp]]\ntarget = \"10.0.2.2:1\"\ntimeout_ms = 5",
                "timeout_ms",
            ),
            ("[network]\ninclude = [\"e*th\"]", "prefix"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(word), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_round_trip_and_validate() {
        let c = parse(&Config::defaults_toml()).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn a_full_config_parses() {
        let c = parse(
            r#"
            connect = "unix:///run/vigil/agent.sock"
            [watch]
            processes = ["sshd"]
            units = ["nginx.service"]
            [[allow]]
            action = "restart-service"
            name = "nginx"
            argv = ["/usr/bin/systemctl", "restart", "nginx.service"]
            "#,
        )
        .unwrap();
        assert_eq!(
            c.allowed(AllowedAction::RestartService, "nginx")
                .unwrap()
                .timeout_s,
            30
        );
        assert!(c.allowed(AllowedAction::Repair, "nginx").is_none());
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            ("bogus = 1", "unknown field `bogus`"),
            ("connect = \"tcp://x:1\"", "unknown address scheme"),
            (
                "[watch]\nprocesses = [\"a-very-long-process-name\"]",
                "not a process name",
            ),
            ("[watch]\nunits = [\"nginx\"]", "not a unit name"),
            (
                "[[allow]]\naction = \"repair\"\nname = \"x\"\nargv = [\"rm\"]",
                "absolute program path",
            ),
            (
                "[[allow]]\naction = \"reboot\"\nname = \"x\"\nargv = [\"/sbin/reboot\"]",
                "named \"reboot\"",
            ),
            (
                "[[allow]]\naction = \"explode\"\nname = \"x\"\nargv = [\"/x\"]",
                "unknown variant",
            ),
            (
                "[limits]\nkernel_events_per_minute = 0",
                "kernel_events_per_minute",
            ),
            ("proc_root = \"proc\"", "absolute path"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
