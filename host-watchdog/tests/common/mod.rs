//! Helpers shared by the daemon and real-VM tests: drive `vigilctl` and read
//! vigild's journal through it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Run vigilctl against `socket`.
pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigilctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// Run vigilctl with `--json`; panic on failure.
pub fn ctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ctl(socket, &a);
    assert!(
        out.status.success(),
        "vigilctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every journal record, in order.
pub fn records(socket: &Path) -> Vec<(u64, Value)> {
    let out = ctl(socket, &["events", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["t"].as_u64().unwrap_or(0), v["record"].clone())
        })
        .collect()
}

/// Records of `kind` about `vm` that satisfy `pred`.
pub fn find(socket: &Path, kind: &str, vm: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    records(socket)
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r["record"] == kind && r["vm"] == vm && pred(r))
        .collect()
}

/// Wait for a record; on timeout, panic with the journal and `log`.
pub fn wait_record(
    socket: &Path,
    secs: u64,
    what: &str,
    kind: &str,
    vm: &str,
    pred: impl Fn(&Value) -> bool,
    log: impl Fn() -> String,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(r) = find(socket, kind, vm, &pred).into_iter().next() {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; journal:\n{:#?}\nlog:\n{}",
            records(socket)
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>(),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll until `f` holds.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
