//! `vigild`: parse arguments, load the config, run the daemon.

use std::process::ExitCode;

use clap::Parser;
use vigil_watchdog::cli::VigildArgs as Args;
use vigil_watchdog::config::{Config, ConfigSource, DEFAULT_CONFIG_PATH};

/// Exit status for config errors (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if args.print_config {
        print!("{}", Config::defaults_toml());
        return ExitCode::SUCCESS;
    }
    let source = ConfigSource {
        required: args.config.as_os_str() != DEFAULT_CONFIG_PATH,
        path: args.config,
        libvirt_uri: args.libvirt_uri,
    };
    let config = source.load();
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigild: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check_config {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    if let Some(file) = args.check_journal {
        return check_journal(&file.unwrap_or(config.journal));
    }
    match vigil_watchdog::daemon::run(config, Some(source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigild: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-journal`: what is in a journal, and whether it is sound.
fn check_journal(path: &std::path::Path) -> ExitCode {
    use vigil_watchdog::journal::check;
    if !path.exists() {
        println!("journal {}: no such file", path.display());
        return ExitCode::FAILURE;
    }
    match check::check(path) {
        Ok(r) if r.ok() => {
            let span = r.span.map_or(String::new(), |(a, b)| {
                format!(", from {a} to {b} (ms since the epoch)")
            });
            println!(
                "journal {}: sound, {} records{span}",
                path.display(),
                r.records
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            for p in &r.problems {
                println!("journal {}: {p}", path.display());
            }
            for seq in &r.unreadable {
                println!("journal {}: record {seq} does not parse", path.display());
            }
            println!(
                "journal {}: DAMAGED ({} problems, {} unreadable of {} records)",
                path.display(),
                r.problems.len(),
                r.unreadable.len(),
                r.records
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
            println!(
                "journal {}: DAMAGED or unreadable: {e}{cause}",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}
