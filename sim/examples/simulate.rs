//! Print the decision log of one scenario file:
//! `cargo run -p vigil-sim --example simulate -- FILE.scn`.

use vigil_sim::{run, Scenario};
use vigil_watchdog::engine::EngineConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: simulate FILE.scn")?;
    let sc = Scenario::parse(&std::fs::read_to_string(&path)?)?;
    print!("{}", run(&sc, EngineConfig::default()));
    Ok(())
}
