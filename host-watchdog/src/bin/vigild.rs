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
    match vigil_watchdog::daemon::run(config, Some(source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigild: {e:#}");
            ExitCode::FAILURE
        }
    }
}
