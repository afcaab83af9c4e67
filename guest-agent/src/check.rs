//! `vigil-agent check`: one snapshot, judged by the health rules, printed as
//! a readable summary or JSON. Exit status: 0 healthy, 1 degraded, 2 faulted.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use vigil_protocol::snapshot::{KernelEvent, Snapshot, WatchTarget};
use vigil_protocol::Thresholds;

use crate::collect::fs::{inodes_used_percent, used_percent};
use crate::collect::Collector;
use crate::config::Config;
use crate::health::{evaluate, Finding, Status};
use crate::kmsg::{KmsgReader, ReadOutcome};

/// The result of a check.
#[derive(Debug, Serialize)]
pub struct CheckResult {
    /// Overall status.
    pub status: Status,
    /// What the rules found, worst first.
    pub findings: Vec<Finding>,
    /// The snapshot judged.
    pub snapshot: Snapshot,
}

/// This boot's classified kernel events, read without blocking.
pub fn boot_kernel_events(config: &Config) -> Result<Vec<KernelEvent>, String> {
    let mut r = KmsgReader::open(&config.kmsg, true)
        .map_err(|e| format!("{}: {e}", config.kmsg.display()))?;
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match r.read_once().map_err(|e| e.to_string())? {
            ReadOutcome::Records(evs) => out.extend(evs),
            ReadOutcome::Overwritten => {}
            ReadOutcome::Idle => break,
        }
    }
    Ok(out)
}

/// Take the snapshot and judge it.
pub fn check(config: &Config) -> CheckResult {
    let mut c = Collector::new(config);
    // Two samples so CPU utilisation covers a short real interval.
    let _ = c.snapshot();
    std::thread::sleep(Duration::from_millis(250));
    let (mut snapshot, _) = c.snapshot();
    match boot_kernel_events(config) {
        Ok(evs) => {
            snapshot.kernel_counters.events = evs.len() as u64;
            snapshot.kernel_counters.segfaults = evs
                .iter()
                .filter(|e| e.kind == vigil_protocol::snapshot::KernelEventKind::Segfault)
                .count() as u64;
            snapshot.kernel_events = evs;
        }
        Err(e) => snapshot
            .failures
            .push(vigil_protocol::snapshot::CollectorFailure {
                collector: "kmsg".into(),
                error: vigil_protocol::Text::from(vigil_protocol::limits::truncate_utf8(&e, 256)),
            }),
    }
    snapshot.crash_record = crate::pstore::newest_record(&config.sys_root.join("fs/pstore"));
    let (status, findings) = evaluate(&snapshot, &snapshot.kernel_events, &Thresholds::default());
    CheckResult {
        status,
        findings,
        snapshot,
    }
}

fn mib(b: u64) -> u64 {
    b >> 20
}

/// The readable summary.
pub fn render(r: &CheckResult) -> String {
    let s = &r.snapshot;
    let mut o = String::new();
    let _ = writeln!(o, "status: {}", r.status);
    for f in &r.findings {
        let _ = writeln!(o, "  [{}] {}: {}", f.status, f.rule, f.detail);
    }
    let _ = writeln!(o, "uptime: {} s", s.uptime_ms / 1000);
    if let Some(p) = s.processes {
        let _ = writeln!(
            o,
            "processes: {} total, {} zombie, {} uninterruptible",
            p.total, p.zombies, p.uninterruptible
        );
    }
    for w in &s.watched {
        let (kind, name) = match &w.target {
            WatchTarget::Process(n) => ("process", n),
            WatchTarget::Unit(n) => ("unit", n),
        };
        let state = match w.pid {
            Some(pid) => format!("running (pid {pid})"),
            None => "NOT RUNNING".into(),
        };
        let _ = writeln!(o, "  {kind} {name}: {state}, {} restarts", w.restarts);
    }
    if let Some(m) = s.memory {
        let _ = writeln!(
            o,
            "memory: {} MiB available of {} MiB; swap {} MiB free of {} MiB; oom kills {}",
            mib(m.available_bytes),
            mib(m.total_bytes),
            mib(m.swap_free_bytes),
            mib(m.swap_total_bytes),
            m.oom_kills.map_or("n/a".into(), |k| k.to_string())
        );
    }
    if let Some(p) = s.pressure {
        let fmt = |r: Option<vigil_protocol::snapshot::PsiResource>| {
            r.map_or("n/a".into(), |r| {
                format!("{}.{:02}%", r.some.avg10 / 100, r.some.avg10 % 100)
            })
        };
        let _ = writeln!(
            o,
            "pressure (some avg10): cpu {} memory {} io {}",
            fmt(p.cpu),
            fmt(p.memory),
            fmt(p.io)
        );
    }
    if let Some(c) = s.cpu {
        let _ = writeln!(
            o,
            "cpu: {} cpus, load {}.{:02} {}.{:02} {}.{:02}, busy {}.{:02}%, iowait {}.{:02}%, steal {}.{:02}%",
            c.cpus, c.load1 / 100, c.load1 % 100, c.load5 / 100, c.load5 % 100, c.load15 / 100, c.load15 % 100,
            c.busy / 100, c.busy % 100, c.iowait / 100, c.iowait % 100, c.steal / 100, c.steal % 100
        );
    }
    let _ = writeln!(o, "filesystems:");
    for f in &s.filesystems {
        let _ = writeln!(
            o,
            "  {:<24} {:<6} {:>8} MiB {:>3}% used {:>3}% inodes{}  {}",
            f.mount_point,
            f.fs_type,
            mib(f.size_bytes),
            used_percent(f),
            inodes_used_percent(f),
            if f.read_only { " ro" } else { "" },
            f.device
        );
    }
    let _ = writeln!(
        o,
        "kernel events this boot: {} ({} segfaults)",
        s.kernel_events.len(),
        s.kernel_counters.segfaults
    );
    for e in s.kernel_events.iter().rev().take(10) {
        let _ = writeln!(
            o,
            "  [{:>10.3}] {:?}: {}",
            e.timestamp_us as f64 / 1e6,
            e.kind,
            e.text
        );
    }
    if let Some(c) = &s.crash_record {
        let _ = writeln!(o, "previous boot crash record: {}", c.source);
    }
    for f in &s.failures {
        let _ = writeln!(o, "collector failed: {}: {}", f.collector, f.error);
    }
    o
}
