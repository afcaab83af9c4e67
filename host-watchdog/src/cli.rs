//! The command lines of vigild and vigilctl (shared with the man page and
//! completion generator).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// Vigil's host watchdog daemon.
#[derive(Debug, Parser)]
#[command(name = "vigild", version)]
pub struct VigildArgs {
    /// Config file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH, env = "VIGILD_CONFIG")]
    pub config: PathBuf,
    /// libvirt URI (overrides the config file).
    #[arg(long, env = "VIGILD_LIBVIRT_URI")]
    pub libvirt_uri: Option<String>,
    /// Print the default configuration (TOML) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Verify a journal (the config's, or FILE) without changing it:
    /// SQLite's integrity check and every record; exit 0 when sound, 1
    /// when not.
    #[arg(long, value_name = "FILE")]
    pub check_journal: Option<Option<PathBuf>>,
}

/// Control Vigil's host watchdog.
#[derive(Debug, Parser)]
#[command(name = "vigilctl", version)]
pub struct VigilctlArgs {
    /// vigild's control socket.
    #[arg(
        long,
        default_value = "/run/vigil/control.sock",
        env = "VIGIL_CONTROL_SOCKET",
        global = true
    )]
    pub socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Monitored VMs and their state.
    List,
    /// One VM in detail.
    Status {
        /// Domain name.
        domain: String,
    },
    /// A live snapshot from the VM's agent.
    Probe {
        /// Domain name.
        domain: String,
    },
    /// Journal records (faults, actions, transitions).
    Events {
        /// Only since this time: seconds ago (`600`, `10m`, `2h`) or ms since the epoch.
        #[arg(long)]
        since: Option<String>,
        /// Keep printing new records.
        #[arg(long)]
        follow: bool,
    },
    /// Open warnings: what the guests' trends announce before it is a
    /// fault (a disk or memory filling, OOM kills or restarts that keep
    /// coming, CPU starvation), with the evidence and when.
    Warnings {
        /// Domain name (all VMs when absent).
        domain: Option<String>,
    },
    /// Recommendations from each VM's history, with the evidence and the
    /// exact change: memory, vCPUs, disks, the heartbeat bound, ladders.
    /// `--apply` makes the applicable ones (memory, vCPUs) through libvirt
    /// in the domain's definition, journaled as a `reconfigure` action;
    /// `--revert ACTION` undoes one.
    Advise {
        /// Domain name (all VMs when absent; needed with --apply/--revert).
        domain: Option<String>,
        /// With --apply: only these recommendations (`memory`, `vcpus`).
        items: Vec<String>,
        /// Apply the applicable recommendations.
        #[arg(long)]
        apply: bool,
        /// With --apply: also to the running domain, where it allows.
        #[arg(long, requires = "apply")]
        live: bool,
        /// Undo the reconfigure action with this id.
        #[arg(long, value_name = "ACTION", conflicts_with = "apply")]
        revert: Option<u64>,
    },
    /// Per-VM faults, fault rate, MTTD/MTTL/MTTR and availability.
    Report {
        /// Window start: seconds ago (`600`, `10m`, `2h`) or ms since the epoch.
        #[arg(long)]
        since: Option<String>,
        /// Write a self-contained HTML page (timelines, MTTD/MTTL/MTTR per
        /// kind, warnings, the host's events) to this file instead.
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
    },
    /// Maintenance mode for a VM: no faults acted on while on.
    Maintenance {
        /// Domain name.
        domain: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        mode: String,
        /// For how long (`30m`, `2h`, seconds), with `on`.
        #[arg(long = "for")]
        duration: Option<String>,
    },
    /// Release a quarantined VM.
    Release {
        /// Domain name.
        domain: String,
    },
    /// Run an action by hand (journaled): reset, reboot, shutdown,
    /// destroy, start, resume (the hypervisor), or agent-reboot (the
    /// guest's agent runs its allow-listed reboot command).
    Action {
        /// Domain name.
        domain: String,
        /// The action.
        #[arg(value_parser = ["reset", "reboot", "shutdown", "destroy", "start", "resume", "agent-reboot"])]
        action: String,
    },
    /// Whether a VM is all right or being repaired (exit 0), or faulted
    /// beyond what vigild can do (exit 1: quarantined, its ladder
    /// exhausted, its agent absent past the boot grace); made for
    /// Pacemaker's VirtualDomain `monitor_scripts`. Exit 3: no such VM; 4:
    /// vigild unreachable or not answering within 2 s.
    Health {
        /// Domain name (or `--resource`; under Pacemaker the resource in
        /// OCF_RESOURCE_INSTANCE).
        domain: Option<String>,
        /// The VM by its cluster resource name.
        #[arg(long)]
        resource: Option<String>,
        /// vigild unreachable is exit 0 (with a warning): a watchdog that
        /// is down is not a failed guest.
        #[arg(long)]
        unreachable_ok: bool,
    },
    /// The host's own health (healthy, degraded, failed) and why.
    Host {
        /// The host's hardware and disks were seen to: clear those reasons.
        #[arg(long)]
        clear: bool,
    },
    /// Read the config file again (as SIGHUP does): what can change
    /// without a restart is applied, what cannot is named; a bad file is
    /// rejected with its error and the running config stays.
    Reload,
    /// The config vigild runs with (TOML).
    Config,
    /// Stop taking recovery actions (detect and record only).
    Disarm,
    /// Take recovery actions again.
    Arm,
}
