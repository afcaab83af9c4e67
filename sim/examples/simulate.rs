//! Print the decision log of one scenario file, through the engine alone
//! or (`--core`) through vigild's real core:
//! `cargo run -p vigil-sim --example simulate -- [--core] FILE.scn`.

use vigil_sim::{run, run_core, Scenario};
use vigil_watchdog::engine::EngineConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let core = args.first().is_some_and(|a| a == "--core");
    if core {
        args.remove(0);
    }
    let path = args.first().ok_or("usage: simulate [--core] FILE.scn")?;
    let sc = Scenario::parse(&std::fs::read_to_string(path)?)?;
    if core {
        print!("{}", run_core(&sc, EngineConfig::default()));
    } else {
        print!("{}", run(&sc, EngineConfig::default()));
    }
    Ok(())
}
