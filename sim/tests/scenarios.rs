//! Scenario suite: every `scenarios/engine/*.scn` runs through the engine on a
//! virtual clock and its decision log must equal `scenarios/engine/*.golden`.
//! Review a change, then regenerate deliberately with
//! `VIGIL_BLESS=1 cargo test -p vigil-sim --test scenarios`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use vigil_sim::{run, Scenario};
use vigil_watchdog::engine::EngineConfig;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/engine")
}

#[test]
fn scenarios_match_their_goldens() {
    let bless = std::env::var_os("VIGIL_BLESS").is_some();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    names.sort();
    assert!(names.len() >= 30, "only {} scenarios", names.len());
    let mut failed = Vec::new();
    for path in &names {
        let text = std::fs::read_to_string(path).unwrap();
        let sc = Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let log = run(&sc, EngineConfig::default());
        let golden = path.with_extension("golden");
        if bless {
            std::fs::write(&golden, &log).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == log => {}
            Ok(want) => {
                let first = want.lines().zip(log.lines()).position(|(a, b)| a != b);
                eprintln!(
                    "--- {} differs at line {:?}\n{log}",
                    path.display(),
                    first.map(|i| i + 1)
                );
                failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
            Err(_) => failed.push(format!("{} (no golden)", path.display())),
        }
    }
    assert!(
        failed.is_empty(),
        "unreviewed decision changes: {failed:?}; review, then VIGIL_BLESS=1"
    );
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
