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
