//! `vigilctl`: talk to vigild's control socket.
//!
//! Exit status: 0 success; 1 vigild reported an internal error; 2 usage
//! error (also a refused request, e.g. releasing a VM that is not
//! quarantined); 3 no such domain; 4 unavailable (vigild not reachable, no
//! agent, VM not running).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_watchdog::ctl;

/// Control Vigil's host watchdog.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// vigild's control socket.
    #[arg(
        long,
        default_value = "/run/vigil/control.sock",
        env = "VIGIL_CONTROL_SOCKET",
        global = true
    )]
    socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
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
    /// Per-VM faults, fault rate, MTTD/MTTL/MTTR and availability.
    Report {
        /// Window start: seconds ago (`600`, `10m`, `2h`) or ms since the epoch.
        #[arg(long)]
        since: Option<String>,
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
    /// Run a hypervisor action by hand (journaled): reset, reboot,
    /// shutdown, destroy, start, resume.
    Action {
        /// Domain name.
        domain: String,
        /// The action.
        #[arg(value_parser = ["reset", "reboot", "shutdown", "destroy", "start", "resume"])]
        action: String,
    },
    /// Stop taking recovery actions (detect and record only).
    Disarm,
    /// Take recovery actions again.
    Arm,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let c = ctl::Client::new(args.socket);
    let r = match args.verb {
        Verb::List => c.list(args.json),
        Verb::Status { domain } => c.status(&domain, args.json),
        Verb::Probe { domain } => c.probe(&domain, args.json),
        Verb::Events { since, follow } => c.events(since.as_deref(), follow, args.json),
        Verb::Report { since } => c.report(since.as_deref(), args.json),
        Verb::Maintenance {
            domain,
            mode,
            duration,
        } => c.maintenance(&domain, mode == "on", duration.as_deref(), args.json),
        Verb::Release { domain } => c.release(&domain, args.json),
        Verb::Action { domain, action } => c.act(&domain, &action, args.json),
        Verb::Disarm => c.arm(false, args.json),
        Verb::Arm => c.arm(true, args.json),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigilctl: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
