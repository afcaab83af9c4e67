//! `vigil-agent`: parse arguments, build the config, run.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use vigil_agent::cli::{Args, Cmd};
use vigil_agent::client::{Agent, Stopper};
use vigil_agent::config::{Config, DEFAULT_CONFIG_PATH};

/// Exit status for usage and config errors (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit status for a runtime failure.
const EXIT_FAILURE: u8 = 3;

fn load(path: &Path, connect: Option<String>) -> anyhow::Result<Config> {
    let required = path.as_os_str() != DEFAULT_CONFIG_PATH;
    let mut config = Config::load(path, required)?;
    if let Some(c) = connect {
        config.connect = c;
    }
    config.validate()?;
    Ok(config)
}

/// Block the stop signals in every thread and turn them into a stop request.
fn on_stop_signal(stopper: Stopper) -> anyhow::Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("cannot block signals")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                log::info!("received {sig}");
                stopper.stop();
            }
        })?;
    Ok(())
}

fn run(config: Config) -> anyhow::Result<()> {
    lock_in_memory();
    let agent = Agent::new(config);
    on_stop_signal(agent.stopper())?;
    agent.run()
}

/// Keep the agent's pages in RAM (each as it is first touched): a guest
/// that runs out of memory evicts every program's code and thrashes before
/// its OOM killer acts; an agent paged out with them stops heartbeating
/// and reporting for that whole time, and the host sees an agent down
/// where the guest is out of memory. Locked, it keeps reporting the
/// memory pressure. Needs CAP_IPC_LOCK (or a large RLIMIT_MEMLOCK); the
/// agent runs on without it.
fn lock_in_memory() {
    use nix::sys::mman::{mlockall, MlockAllFlags};
    let flags = MlockAllFlags::MCL_CURRENT
        | MlockAllFlags::MCL_FUTURE
        | MlockAllFlags::from_bits_retain(nix::libc::MCL_ONFAULT);
    match mlockall(flags) {
        Ok(()) => log::info!("locked in memory: stays responsive when the guest thrashes"),
        Err(e) => log::warn!(
            "cannot lock the agent in memory ({e}): if the guest runs out of memory its \
             heartbeats may stall before the OOM killer acts"
        ),
    }
}

/// `vigil-agent maintenance`: ask the running agent. As a hook it never
/// fails (a package manager must not stop over it).
fn maintenance(
    mode: &str,
    duration: &str,
    reason: String,
    hook: Option<String>,
    config: &Path,
) -> ExitCode {
    use vigil_agent::maintenance::{ask, now_ms, render, Request};
    let hooked = hook.is_some();
    let fail = |code: u8, msg: String| {
        eprintln!("vigil-agent: {msg}");
        ExitCode::from(if hooked { 0 } else { code })
    };
    let config = match load(config, None) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, format!("{e:#}")),
    };
    if hooked && !config.maintenance.apt_hook {
        return ExitCode::SUCCESS; // turned off: maintenance.apt_hook = false
    }
    let req = match mode {
        "on" => {
            let for_s = if hooked {
                Ok(u64::from(config.maintenance.apt_window_s))
            } else {
                vigil_protocol::duration::parse_ms(duration).map(|ms| ms / 1000)
            };
            match for_s {
                Ok(s) => Request::On {
                    for_s: s.min(u64::from(u32::MAX)) as u32,
                    reason: if reason.is_empty() && hooked {
                        "package upgrade (apt)".into()
                    } else {
                        reason
                    },
                    hook,
                },
                Err(e) => return fail(2, e),
            }
        }
        "off" => Request::Off { hook },
        _ => Request::Status,
    };
    match ask(&config.state_dir, &req) {
        Ok(r) => {
            print!("{}", render(&r, now_ms()));
            if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        // As a hook, an agent that is not running is normal (an image
        // being built in a chroot, a guest not booted yet): say nothing.
        Err(_) if hooked => ExitCode::SUCCESS,
        Err(e) => fail(
            EXIT_FAILURE,
            format!(
                "the agent is not running or not reachable ({}: {e})",
                config
                    .state_dir
                    .join(vigil_agent::maintenance::SOCKET)
                    .display()
            ),
        ),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if args.print_config {
        print!("{}", Config::defaults_toml());
        return ExitCode::SUCCESS;
    }
    match args.command {
        None => {
            eprintln!(
                "vigil-agent: a subcommand is required (run, check, maintenance); see --help"
            );
            ExitCode::from(2)
        }
        Some(Cmd::Run { config, connect }) => {
            let config = match load(&config, connect) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vigil-agent: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-agent: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Some(Cmd::Maintenance {
            mode,
            duration,
            reason,
            hook,
            config,
        }) => maintenance(&mode, &duration, reason, hook, &config),
        Some(Cmd::Check { config, json }) => {
            let config = match load(&config, None) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vigil-agent: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let result = vigil_agent::check::check(&config);
            if json {
                match serde_json::to_string_pretty(&result) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("vigil-agent: cannot render JSON: {e}");
                        return ExitCode::from(EXIT_FAILURE);
                    }
                }
            } else {
                print!("{}", vigil_agent::check::render(&result));
            }
            ExitCode::from(result.status as u8)
        }
    }
}
