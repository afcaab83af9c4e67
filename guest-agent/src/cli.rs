//! The command line (shared with the man page and completion generator).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// Vigil's in-guest health agent.
#[derive(Debug, Parser)]
#[command(name = "vigil-agent", version)]
pub struct Args {
    /// Print the default configuration (TOML) and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Report to the host until stopped.
    Run {
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Host address: vsock://CID:PORT, unix:///path or hybrid:///path:PORT.
        #[arg(long, env = "VIGIL_AGENT_CONNECT")]
        connect: Option<String>,
    },
    /// Declare maintenance from inside the guest (root): while it is on,
    /// the host acts on no fault of this VM. Talks to the running agent.
    Maintenance {
        /// `on`, `off` or `status`.
        #[arg(value_parser = ["on", "off", "status"])]
        mode: String,
        /// How long, with `on` (`30m`, `2h`, seconds); the host may cap it.
        #[arg(long = "for", default_value = "30m")]
        duration: String,
        /// Why, with `on` (shown on the host).
        #[arg(long, default_value = "")]
        reason: String,
        /// Run as a package manager hook: never fails, does nothing when
        /// the config turns the hook off, and `off` closes only the
        /// hook's own window.
        #[arg(long, value_parser = ["apt"])]
        hook: Option<String>,
        /// Config file (for the runtime directory and the hook switch).
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Take one snapshot and judge it: exit 0 healthy, 1 degraded, 2 faulted.
    Check {
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}
