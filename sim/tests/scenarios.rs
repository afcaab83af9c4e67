//! Scenario suite: every `scenarios/engine/*.scn` runs through the engine on a
//! virtual clock and its decision log must equal `scenarios/engine/*.golden`.
//! Review a change, then regenerate deliberately with
//! `VIGIL_BLESS=1 cargo test -p vigil-sim --test scenarios`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use vigil_sim::{check_goldens, run, Scenario};
use vigil_watchdog::engine::EngineConfig;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/engine")
}

#[test]
fn scenarios_match_their_goldens() {
    match check_goldens(&dir(), |sc| run(sc, EngineConfig::default())) {
        Ok(n) => assert!(n >= 30, "only {n} scenarios"),
        Err(failed) => {
            panic!("unreviewed decision changes: {failed:?}; review, then VIGIL_BLESS=1")
        }
    }
}

#[test]
fn every_scenario_is_deterministic() {
    for e in std::fs::read_dir(dir()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|e| e == "scn") {
            let sc = Scenario::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert_eq!(
                run(&sc, EngineConfig::default()),
                run(&sc, EngineConfig::default()),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn bad_scenarios_name_the_line() {
    let e = Scenario::parse("vm a\nat x heartbeat a\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("bad time"), "{e}");
    let e = Scenario::parse("vm a\nat 5 explode a\n").unwrap_err();
    assert!(e.message.contains("unknown event"), "{e}");
}
