//! The cluster hand-off (Pacemaker): what vigild tells the cluster and how
//! (pure: settings and the command lines; the daemon runs them).
//!
//! - The host's health goes to the node attribute `#health-vigil` (green,
//!   yellow, red for healthy, degraded, failed) with `attrd_updater`; with
//!   `node-health-strategy=migrate-on-red` the cluster moves resources off
//!   a red node. Whether it moves them is the cluster's policy.
//! - A VM that is a cluster resource (`[[vm]] cluster_resource`) is never
//!   started, destroyed, reset or reverted by vigild: those rungs become
//!   `crm_resource --fail`, and the cluster recovers it by its own policy.

use serde::{Deserialize, Serialize};

use crate::engine::host::HostHealth;

/// Which cluster manager, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterKind {
    /// No cluster: vigild acts alone.
    #[default]
    None,
    /// Pacemaker (with Corosync).
    Pacemaker,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `none` or `pacemaker`.
    pub kind: ClusterKind,
    /// This host's node name in the cluster (empty: the local node, as
    /// the cluster tools take it).
    pub node: String,
    /// The node attribute the host's health is published as (nothing else
    /// may set it).
    pub health_attribute: String,
    /// Dampening: the cluster writes a change only after it held this
    /// long, seconds (0: at once).
    pub dampen_s: u32,
    /// The `attrd_updater` command.
    pub attrd_updater: String,
    /// The `crm_resource` command.
    pub crm_resource: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            kind: ClusterKind::None,
            node: String::new(),
            health_attribute: "#health-vigil".into(),
            dampen_s: 5,
            attrd_updater: "attrd_updater".into(),
            crm_resource: "crm_resource".into(),
        }
    }
}

impl ClusterConfig {
    /// Check the settings; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind == ClusterKind::None {
            return Ok(());
        }
        if !self.health_attribute.starts_with("#health")
            || self.health_attribute.len() > 64
            || !self
                .health_attribute
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "#-_".contains(c))
        {
            return Err(format!(
                "health_attribute {:?}: must start with #health (Pacemaker reads only those as node health) and be [A-Za-z0-9#_-], at most 64",
                self.health_attribute
            ));
        }
        if self.dampen_s > 3600 {
            return Err("dampen_s must be at most 3600".into());
        }
        if !valid_name(&self.node, true) {
            return Err(format!("node {:?}: not a node name", self.node));
        }
        for (what, cmd) in [
            ("attrd_updater", &self.attrd_updater),
            ("crm_resource", &self.crm_resource),
        ] {
            if cmd.is_empty() {
                return Err(format!("{what} is empty"));
            }
        }
        Ok(())
    }

    /// Whether a cluster is configured.
    pub fn enabled(&self) -> bool {
        self.kind != ClusterKind::None
    }

    /// The command line that publishes `health` (program, arguments).
    pub fn publish(&self, health: HostHealth) -> (String, Vec<String>) {
        let mut args = vec![
            "--name".to_string(),
            self.health_attribute.clone(),
            if self.dampen_s > 0 {
                "--update-both"
            } else {
                "--update"
            }
            .to_string(),
            colour(health).to_string(),
        ];
        if self.dampen_s > 0 {
            args.extend(["--delay".to_string(), self.dampen_s.to_string()]);
        }
        if !self.node.is_empty() {
            args.extend(["--node".to_string(), self.node.clone()]);
        }
        (self.attrd_updater.clone(), args)
    }

    /// The command line that tells the cluster resource `resource` failed
    /// here, so the cluster recovers it by its own policy.
    pub fn fail(&self, resource: &str) -> (String, Vec<String>) {
        let mut args = vec![
            "--fail".to_string(),
            "--resource".to_string(),
            resource.to_string(),
        ];
        if !self.node.is_empty() {
            args.extend(["--node".to_string(), self.node.clone()]);
        }
        (self.crm_resource.clone(), args)
    }
}

/// Whether `s` may be a node or resource name (no option, no space, no
/// shell or XML metacharacter); `empty_ok` for "the local node".
pub fn valid_name(s: &str, empty_ok: bool) -> bool {
    (empty_ok || !s.is_empty())
        && s.len() <= 255
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:@".contains(c))
}

/// Pacemaker's health colour for the host's health.
pub fn colour(h: HostHealth) -> &'static str {
    match h {
        HostHealth::Healthy => "green",
        HostHealth::Degraded => "yellow",
        HostHealth::Failed => "red",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacemaker() -> ClusterConfig {
        ClusterConfig {
            kind: ClusterKind::Pacemaker,
            node: "hv1".into(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn health_goes_out_as_a_colour_with_its_dampening() {
        let (cmd, args) = pacemaker().publish(HostHealth::Failed);
        assert_eq!(cmd, "attrd_updater");
        assert_eq!(
            args.join(" "),
            "--name #health-vigil --update-both red --delay 5 --node hv1"
        );
        let mut c = pacemaker();
        c.dampen_s = 0;
        c.node.clear();
        assert_eq!(
            c.publish(HostHealth::Healthy).1.join(" "),
            "--name #health-vigil --update green"
        );
        assert_eq!(colour(HostHealth::Degraded), "yellow");
        assert_eq!(
            pacemaker().fail("vm-web").1.join(" "),
            "--fail --resource vm-web --node hv1"
        );
    }

    #[test]
    fn bad_cluster_settings_are_named() {
        let mut c = pacemaker();
        c.health_attribute = "vigil".into();
        assert!(c.validate().unwrap_err().contains("#health"));
        let mut c = pacemaker();
        c.node = "--all".into();
        assert!(c.validate().unwrap_err().contains("node"));
        let mut c = pacemaker();
        c.dampen_s = 7200;
        assert!(c.validate().unwrap_err().contains("dampen_s"));
        assert!(pacemaker().validate().is_ok());
        assert!(ClusterConfig::default().validate().is_ok());
        assert!(!valid_name("a b", false) && !valid_name("", false) && valid_name("vm-web", false));
    }
}
