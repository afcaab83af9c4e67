//! `vigilctl`: talk to vigild's control socket.
//!
//! Exit status: 0 success; 1 vigild reported an internal error; 2 usage
//! error (also a refused request, e.g. releasing a VM that is not
//! quarantined); 3 no such domain; 4 unavailable (vigild not reachable, no
//! agent, VM not running); 77 not permitted (not root, and not a member of
//! vigild's `control_group`, or a member asking for a change).

use std::process::ExitCode;

use clap::Parser;
use vigil_watchdog::cli::{Verb, VigilctlArgs as Args};
use vigil_watchdog::ctl;

fn main() -> ExitCode {
    // Like other command-line tools: a closed pipe (`vigilctl events
    // --follow | head`) ends the program quietly instead of a panic.
    // SAFETY: restoring the default disposition of SIGPIPE before any other
    // thread exists; no handler code runs.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let args = Args::parse();
    let c = ctl::Client::new(args.socket);
    let r = match args.verb {
        Verb::List => c.list(args.json),
        Verb::Status { domain } => c.status(&domain, args.json),
        Verb::Probe { domain } => c.probe(&domain, args.json),
        Verb::Events { since, follow } => c.events(since.as_deref(), follow, args.json),
        Verb::Advise {
            domain,
            items,
            apply,
            live,
            revert,
        } => c.advise(domain.as_deref(), &items, apply, live, revert, args.json),
        Verb::Warnings { domain } => c.warnings(domain.as_deref(), args.json),
        Verb::Report {
            since,
            html: Some(file),
        } => c.report_html(since.as_deref(), &file),
        Verb::Report { since, html: None } => c.report(since.as_deref(), args.json),
        Verb::Maintenance {
            domain,
            mode,
            duration,
        } => c.maintenance(&domain, mode == "on", duration.as_deref(), args.json),
        Verb::Release { domain } => c.release(&domain, args.json),
        Verb::Action { domain, action } => c.act(&domain, &action, args.json),
        Verb::Host { clear } => c.host(clear, args.json),
        Verb::Health {
            domain,
            resource,
            unreachable_ok,
        } => c.with_timeout(std::time::Duration::from_secs(2)).health(
            domain,
            resource,
            unreachable_ok,
            args.json,
        ),
        Verb::Reload => c.reload(args.json),
        Verb::Config => c.config(args.json),
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
