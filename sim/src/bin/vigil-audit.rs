//! `vigil-audit DIR`: check a soak's journal (`DIR/journal.db`) against
//! its injection log (`DIR/injections.jsonl`); one line per violation, a
//! summary table; exit 0 when the soak met its targets, 1 when not, 2 on
//! bad input.

use std::process::ExitCode;

use vigil_sim::audit::{audit, Injection};

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: vigil-audit DIR (a soak's directory: journal.db, injections.jsonl)");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(dir.join("injections.jsonl")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "vigil-audit: {}: {e}",
                dir.join("injections.jsonl").display()
            );
            return ExitCode::from(2);
        }
    };
    let log: Result<Vec<Injection>, String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Injection::parse)
        .collect();
    let log = match log {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vigil-audit: bad injection log line: {e}");
            return ExitCode::from(2);
        }
    };
    let entries = match vigil_watchdog::journal::Journal::open(&dir.join("journal.db"))
        .and_then(|j| j.since(0))
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("vigil-audit: {}: {e}", dir.join("journal.db").display());
            return ExitCode::from(2);
        }
    };
    let a = audit(&entries, &log);
    for v in &a.violations {
        println!("VIOLATION {v}");
    }
    print!("{}", a.table());
    if a.passed() {
        println!("soak PASSED");
        ExitCode::SUCCESS
    } else {
        println!("soak FAILED");
        ExitCode::FAILURE
    }
}
