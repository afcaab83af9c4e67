//! Health rules for `vigil-agent check`: small pure functions over a
//! snapshot, each returning findings; the worst finding sets the exit status.

use std::fmt;

use serde::Serialize;
use vigil_protocol::snapshot::{KernelEvent, KernelEventKind, Snapshot};
use vigil_protocol::Thresholds;

use crate::collect::fs::{inodes_used_percent, used_percent};

/// Overall status, ordered by severity; the value is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing wrong.
    Healthy = 0,
    /// Something needs attention.
    Degraded = 1,
    /// Something is broken.
    Faulted = 2,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Faulted => "faulted",
        })
    }
}

/// One thing a rule found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub status: Status,
    /// Rule name.
    pub rule: &'static str,
    /// What, in one line.
    pub detail: String,
}

fn finding(status: Status, rule: &'static str, detail: String) -> Finding {
    Finding {
        status,
        rule,
        detail,
    }
}

/// Space below this is "getting full" (degraded).
const DISK_WARN_PERCENT: u8 = 85;
/// Filesystem types that are read-write by nature: read-only means trouble.
const WRITABLE: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs",
];

/// Disk space and inodes.
pub fn disks(s: &Snapshot, t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    for f in &s.filesystems {
        let (used, inodes) = (used_percent(f), inodes_used_percent(f));
        if used >= t.disk_full_percent || inodes >= t.inodes_full_percent {
            let d = format!(
                "{} is full: {used}% space, {inodes}% inodes used",
                f.mount_point
            );
            out.push(finding(Status::Faulted, "disk-full", d));
        } else if used >= DISK_WARN_PERCENT || inodes >= DISK_WARN_PERCENT {
            let d = format!(
                "{} is filling: {used}% space, {inodes}% inodes used",
                f.mount_point
            );
            out.push(finding(Status::Degraded, "disk-filling", d));
        }
        if f.read_only && WRITABLE.contains(&f.fs_type.as_str()) {
            let d = format!(
                "{} ({} on {}) is read-only",
                f.mount_point, f.fs_type, f.device
            );
            out.push(finding(Status::Faulted, "fs-readonly", d));
        }
    }
    out
}

/// Watched services.
pub fn services(s: &Snapshot) -> Vec<Finding> {
    s.watched
        .iter()
        .filter(|w| !w.running)
        .map(|w| {
            finding(
                Status::Faulted,
                "service-down",
                format!("{:?} is not running", w.target),
            )
        })
        .collect()
}

/// Kernel errors seen this boot.
pub fn kernel(events: &[KernelEvent]) -> Vec<Finding> {
    use KernelEventKind as K;
    events
        .iter()
        .filter(|e| e.kind != K::Segfault)
        .map(|e| {
            let status = if e.kind == K::OomKill {
                Status::Degraded
            } else {
                Status::Faulted
            };
            finding(status, "kernel-error", format!("{:?}: {}", e.kind, e.text))
        })
        .collect()
}

/// Memory and pressure.
pub fn memory(s: &Snapshot, t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(m) = s.memory {
        if m.total_bytes > 0 && m.available_bytes * 20 < m.total_bytes {
            let d = format!(
                "only {} MiB of {} MiB available",
                m.available_bytes >> 20,
                m.total_bytes >> 20
            );
            out.push(finding(Status::Degraded, "memory-low", d));
        }
    }
    if let Some(mp) = s.pressure.and_then(|p| p.memory) {
        if mp.some.avg10 >= t.memory_pressure_avg10 {
            let d = format!(
                "memory pressure {}.{:02}% (avg10)",
                mp.some.avg10 / 100,
                mp.some.avg10 % 100
            );
            out.push(finding(Status::Degraded, "memory-pressure", d));
        }
    }
    out
}

/// Process table.
pub fn processes(s: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(p) = s.processes {
        if p.uninterruptible >= 10 {
            out.push(finding(
                Status::Degraded,
                "d-state",
                format!("{} tasks in uninterruptible sleep", p.uninterruptible),
            ));
        }
        if p.zombies >= 50 {
            out.push(finding(
                Status::Degraded,
                "zombies",
                format!("{} zombie processes", p.zombies),
            ));
        }
    }
    out
}

/// Collectors that failed.
pub fn collectors(s: &Snapshot) -> Vec<Finding> {
    s.failures
        .iter()
        .map(|f| {
            finding(
                Status::Degraded,
                "collector-failed",
                format!("{}: {}", f.collector, f.error),
            )
        })
        .collect()
}

/// All rules; returns the overall status and the findings, worst first.
pub fn evaluate(
    s: &Snapshot,
    kernel_events: &[KernelEvent],
    t: &Thresholds,
) -> (Status, Vec<Finding>) {
    let mut all = disks(s, t);
    all.extend(services(s));
    all.extend(kernel(kernel_events));
    all.extend(memory(s, t));
    all.extend(processes(s));
    all.extend(collectors(s));
    all.sort_by_key(|f| std::cmp::Reverse(f.status));
    let status = all.first().map_or(Status::Healthy, |f| f.status);
    (status, all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_protocol::snapshot::*;

    fn fs(mp: &str, size: u64, avail: u64, ro: bool) -> Filesystem {
        Filesystem {
            mount_point: mp.into(),
            device: "/dev/vda1".into(),
            fs_type: "ext4".into(),
            size_bytes: size,
            avail_bytes: avail,
            inodes_total: 100,
            inodes_free: 90,
            read_only: ro,
        }
    }

    #[test]
    fn rule_table() {
        let t = Thresholds::default();
        let ev = |kind| KernelEvent {
            kind,
            seq: 1,
            timestamp_us: 1,
            subject: None,
            text: "t".into(),
        };
        let cases: Vec<(Snapshot, Vec<KernelEvent>, Status)> = vec![
            (Snapshot::default(), vec![], Status::Healthy),
            (
                Snapshot {
                    filesystems: vec![fs("/", 100, 50, false)],
                    ..Default::default()
                },
                vec![],
                Status::Healthy,
            ),
            (
                Snapshot {
                    filesystems: vec![fs("/", 100, 10, false)],
                    ..Default::default()
                },
                vec![],
                Status::Degraded,
            ),
            (
                Snapshot {
                    filesystems: vec![fs("/", 100, 2, false)],
                    ..Default::default()
                },
                vec![],
                Status::Faulted,
            ),
            (
                Snapshot {
                    filesystems: vec![fs("/", 100, 50, true)],
                    ..Default::default()
                },
                vec![],
                Status::Faulted,
            ),
            (
                Snapshot {
                    watched: vec![WatchedService {
                        target: WatchTarget::Process("x".into()),
                        running: false,
                        pid: None,
                        restarts: 0,
                    }],
                    ..Default::default()
                },
                vec![],
                Status::Faulted,
            ),
            (
                Snapshot::default(),
                vec![ev(KernelEventKind::IoError)],
                Status::Faulted,
            ),
            (
                Snapshot::default(),
                vec![ev(KernelEventKind::OomKill)],
                Status::Degraded,
            ),
            (
                Snapshot::default(),
                vec![ev(KernelEventKind::Segfault)],
                Status::Healthy,
            ),
            (
                Snapshot {
                    memory: Some(Memory {
                        total_bytes: 1000,
                        available_bytes: 10,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                vec![],
                Status::Degraded,
            ),
            (
                Snapshot {
                    failures: vec![CollectorFailure {
                        collector: "cpu".into(),
                        error: "x".into(),
                    }],
                    ..Default::default()
                },
                vec![],
                Status::Degraded,
            ),
        ];
        for (i, (s, k, want)) in cases.into_iter().enumerate() {
            assert_eq!(evaluate(&s, &k, &t).0, want, "case {i}");
        }
    }
}
