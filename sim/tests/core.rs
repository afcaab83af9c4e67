//! The core harness's suite: every `scenarios/core/*.scn` runs through
//! vigild's real core (fake hypervisor, in-memory agents, virtual clock)
//! and its log must equal `scenarios/core/*.golden`; and every engine
//! scenario, run through the core, must decide what the engine alone
//! decides. Regenerate deliberately with
//! `VIGIL_BLESS=1 cargo test -p vigil-sim --test core`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use vigil_sim::{check_goldens, run, run_core, Scenario};
use vigil_watchdog::engine::EngineConfig;

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(sub)
}

#[test]
fn core_scenarios_match_their_goldens() {
    match check_goldens(&dir("core"), |sc| run_core(sc, EngineConfig::default())) {
        Ok(n) => assert!(n >= 20, "only {n} core scenarios"),
        Err(failed) => {
            panic!("unreviewed decision changes: {failed:?}; review, then VIGIL_BLESS=1")
        }
    }
}

/// The decisions of a log: fault kinds and layers, actions, closures and
/// final states, in order for each VM, without times and details (the core
/// polls on its own schedule, so times may differ by a poll, and so may
/// the order in which two VMs' decisions interleave).
fn decisions(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in log.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let at = |k: &str| w.iter().position(|x| *x == k);
        if let Some(i) = at("FAULT") {
            out.push(format!("{} fault {} {}", w[i - 1], w[i + 2], w[i + 3]));
        } else if let Some(i) = at("ACTION") {
            out.push(format!("{} action {}", w[i - 1], w[i + 2]));
        } else if let Some(i) = at("CLOSED") {
            out.push(format!("{} closed {} {}", w[i - 1], w[i + 2], w[i + 3]));
        } else if let Some(i) = at("final") {
            out.push(format!("{} final {}", w[i - 1], w[i + 2]));
        }
    }
    // Stable: each VM's own order is kept.
    out.sort_by(|a, b| a.split(' ').next().cmp(&b.split(' ').next()));
    out
}

#[test]
fn the_core_decides_what_the_engine_decides() {
    let mut n = 0;
    for e in std::fs::read_dir(dir("engine")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|e| e != "scn") {
            continue;
        }
        let sc = Scenario::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (engine, core) = (
            run(&sc, EngineConfig::default()),
            run_core(&sc, EngineConfig::default()),
        );
        assert!(
            !decisions(&engine).is_empty(),
            "{}: nothing to compare",
            path.display()
        );
        assert_eq!(
            decisions(&engine),
            decisions(&core),
            "{}: the core decided otherwise\n--- engine\n{engine}--- core\n{core}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 50, "only {n} engine scenarios");
}

#[test]
fn a_core_run_is_deterministic() {
    let sc = Scenario::parse(
        &std::fs::read_to_string(dir("core").join("02-slow-action-other-vm-faults.scn")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        run_core(&sc, EngineConfig::default()),
        run_core(&sc, EngineConfig::default())
    );
}
