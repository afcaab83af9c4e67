//! Agent evidence: small pure rules that read a report and name the
//! conditions it shows, each with its subject and a line of evidence.

use vigil_protocol::limits::{truncate_utf8, MAX_TEXT};
use vigil_protocol::snapshot::{KernelEventKind, Snapshot, WatchTarget};

use super::config::EngineConfig;
use super::model::FaultKind;

/// A condition a report shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The fault it would be.
    pub kind: FaultKind,
    /// What it is about (service, mount point), if anything.
    pub subject: Option<String>,
    /// One line of evidence.
    pub evidence: String,
    /// From a kernel log event, with the guest's time of it (ms since
    /// boot); `None` for a state the report shows.
    pub event_at: Option<u64>,
}

/// Longest line of evidence taken from a report (its text is the guest's).
pub const MAX_EVIDENCE: usize = 2 * MAX_TEXT;

/// A condition; the guest's words in it are cut to size here, whatever the
/// agent claims to have sent (journal records, logs and labels stay small).
fn cond(kind: FaultKind, subject: Option<String>, evidence: String) -> Condition {
    Condition {
        kind,
        subject: subject.map(|s| truncate_utf8(&s, MAX_TEXT).to_string()),
        evidence: truncate_utf8(&evidence, MAX_EVIDENCE).to_string(),
        event_at: None,
    }
}

/// Watched services that are not running.
pub fn services_down(s: &Snapshot) -> Vec<Condition> {
    s.watched
        .iter()
        .filter(|w| !w.running)
        .map(|w| {
            let (kind, name) = match &w.target {
                WatchTarget::Process(n) => ("process", n),
                WatchTarget::Unit(n) => ("unit", n),
            };
            cond(
                FaultKind::ServiceDown,
                Some(name.to_string()),
                format!("watched {kind} {name} not running"),
            )
        })
        .collect()
}

/// Full and read-only filesystems.
pub fn filesystems(s: &Snapshot, cfg: &EngineConfig) -> Vec<Condition> {
    let mut out = Vec::new();
    for f in &s.filesystems {
        let used_bytes = f
            .size_bytes
            .saturating_sub(f.avail_bytes)
            .saturating_mul(100);
        let used_inodes = f
            .inodes_total
            .saturating_sub(f.inodes_free)
            .saturating_mul(100);
        // Out of inodes is as full as out of blocks: no file can be made.
        let full = match (
            used_bytes.checked_div(f.size_bytes),
            used_inodes.checked_div(f.inodes_total),
        ) {
            (Some(used), _) if used >= u64::from(cfg.disk_full_percent) => {
                Some(format!("{} {used}% full", f.mount_point))
            }
            (_, Some(used)) if used >= u64::from(cfg.inodes_full_percent) => {
                Some(format!("{} {used}% of inodes used", f.mount_point))
            }
            _ => None,
        };
        if let Some(why) = full {
            out.push(cond(
                FaultKind::DiskFull,
                Some(f.mount_point.to_string()),
                why,
            ));
        }
        let writable = matches!(
            f.fs_type.as_str(),
            "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "f2fs"
        );
        if f.read_only && writable {
            out.push(cond(
                FaultKind::FsReadonly,
                Some(f.mount_point.to_string()),
                format!("{} ({}) read-only", f.mount_point, f.device),
            ));
        }
    }
    out
}

/// Kernel events in the report, by the fault they point to.
pub fn kernel(s: &Snapshot) -> Vec<Condition> {
    use KernelEventKind as K;
    let mut out: Vec<Condition> = Vec::new();
    for e in &s.kernel_events {
        let kind = match e.kind {
            K::IoError | K::FsError => FaultKind::IoErrors,
            K::RemountReadOnly => FaultKind::FsReadonly,
            K::OomKill => FaultKind::MemoryExhaustion,
            K::HungTask | K::SoftLockup | K::RcuStall | K::Oops | K::MachineCheck => {
                FaultKind::KernelDegraded
            }
            K::Panic | K::Segfault => continue,
        };
        if out.iter().any(|c| c.kind == kind) {
            continue; // one line per kind is enough evidence
        }
        let subject = e.subject.as_ref().map(|s| s.to_string());
        let mut c = cond(kind, subject, format!("kernel: {:?}: {}", e.kind, e.text));
        c.event_at = Some(e.timestamp_us / 1000);
        out.push(c);
    }
    out
}

/// Whether a filesystem is the one a subject names: its mount point, its
/// device, or the device's name without `/dev/` (kernel lines say `vda`).
pub fn fs_is(subject: &str, f: &vigil_protocol::snapshot::Filesystem) -> bool {
    subject == f.mount_point.as_str()
        || subject == f.device.as_str()
        || f.device.strip_prefix("/dev/") == Some(subject)
}

/// Whether two subjects name the same thing, as far as the report tells
/// (equal, or a filesystem's mount point and its device); no subject
/// matches any.
pub fn same_subject(a: Option<&str>, b: Option<&str>, s: &Snapshot) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b || s.filesystems.iter().any(|f| fs_is(a, f) && fs_is(b, f)),
        _ => true,
    }
}

/// For a state-based fault: whether the report shows its subject, in a
/// state to judge (listed at all). A fault is never closed by its subject
/// missing from a report.
pub fn shown_good(kind: FaultKind, subject: Option<&str>, s: &Snapshot) -> bool {
    match (kind, subject) {
        (FaultKind::DiskFull | FaultKind::FsReadonly, Some(sub)) => {
            s.filesystems.iter().any(|f| fs_is(sub, f))
        }
        (FaultKind::ServiceDown, Some(sub)) => s.watched.iter().any(|w| match &w.target {
            WatchTarget::Process(n) | WatchTarget::Unit(n) => n.as_str() == sub,
        }),
        _ => true,
    }
}

/// For an event-based fault: the state its events point to, if the report
/// still shows it (tasks blocked in D state behind hung-task lines; memory
/// under pressure behind OOM kills). Such a fault does not close while it
/// lasts, however quiet the kernel log is.
pub fn lingering(kind: FaultKind, s: &Snapshot, pressure: Option<u32>) -> Option<String> {
    match kind {
        FaultKind::KernelDegraded => s
            .processes
            .filter(|p| p.uninterruptible > 0)
            .map(|p| format!("{} tasks in uninterruptible sleep (D)", p.uninterruptible)),
        FaultKind::MemoryExhaustion => {
            pressure.map(|p| format!("memory pressure {}.{:02}%", p / 100, p % 100))
        }
        _ => None,
    }
}

/// Whether the report shows a kernel panic or oops (a silence that follows
/// is a panic, not a hang).
pub fn panicking(s: &Snapshot) -> bool {
    s.kernel_events
        .iter()
        .any(|e| matches!(e.kind, KernelEventKind::Panic | KernelEventKind::Oops))
}

/// When the agent looked (guest uptime, ms) and the memory stall counter
/// it read (PSI some total, µs): what the next report's stall share is
/// measured from.
pub type StallCounter = (u64, u64);

/// Memory pressure in this report: PSI some avg10 over the threshold, and
/// tasks stalled on memory for as large a share of the time since the
/// previous report (`prev`). avg10 is a 10 s average: just after an OOM
/// kill it still reads 40 % while the counter has stopped, and a guest no
/// longer stalling is not under pressure. Without a counter to measure from
/// (the first report, a new boot, an agent that sends none, reports less
/// than a second apart) avg10 decides alone.
pub fn memory_pressure(
    s: &Snapshot,
    cfg: &EngineConfig,
    prev: Option<StallCounter>,
) -> Option<u32> {
    let some = s.pressure?.memory?.some;
    if some.avg10 < cfg.memory_pressure_avg10 {
        return None;
    }
    match prev {
        Some((at, stalled))
            if stalled > 0
                && s.uptime_ms >= at.saturating_add(1000)
                && some.total_us >= stalled =>
        {
            // The stalled share of the interval, in avg10's unit (% × 100);
            // the guest's numbers, so saturating.
            let share = (some.total_us - stalled).saturating_mul(10) / (s.uptime_ms - at);
            (share >= u64::from(cfg.memory_pressure_avg10)).then_some(some.avg10)
        }
        _ => Some(some.avg10),
    }
}

/// The memory stall counter a report shows, for the next report's
/// [`memory_pressure`].
pub fn memory_stall_counter(s: &Snapshot) -> Option<StallCounter> {
    Some((s.uptime_ms, s.pressure?.memory?.some.total_us))
}

/// Every condition in a report, most severe first.
pub fn conditions(s: &Snapshot, cfg: &EngineConfig) -> Vec<Condition> {
    let mut all = services_down(s);
    all.extend(filesystems(s, cfg));
    all.extend(kernel(s));
    all.sort_by_key(|c| std::cmp::Reverse(c.kind.severity()));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_protocol::snapshot::*;

    #[test]
    fn memory_pressure_is_stalling_now_not_a_lagging_average() {
        let cfg = EngineConfig::default();
        // avg10 (% × 100) and the stall counter (µs), at `uptime` ms.
        let report = |uptime_ms: u64, avg10: u32, total_us: u64| Snapshot {
            uptime_ms,
            pressure: Some(Pressure {
                memory: Some(PsiResource {
                    some: PsiLine {
                        avg10,
                        avg60: avg10,
                        total_us,
                    },
                    full: None,
                }),
                ..Pressure::default()
            }),
            ..Snapshot::default()
        };
        let p = |s: &Snapshot, prev| memory_pressure(s, &cfg, prev);
        let first = report(10_000, 6_200, 9_000_000);
        assert_eq!(
            p(&first, None),
            Some(6_200),
            "no counter yet: avg10 decides"
        );
        let before = memory_stall_counter(&first);
        // The counter stopped: avg10 lags, nothing stalls.
        assert_eq!(p(&report(15_000, 4_800, 9_000_000), before), None);
        // Stalled 2.5 s of 5 s: 50 %.
        assert_eq!(p(&report(15_000, 4_800, 11_500_000), before), Some(4_800));
        // Stalled 1 s of 5 s: 20 %, under the 40 % threshold.
        assert_eq!(p(&report(15_000, 4_800, 10_000_000), before), None);
        // Under the threshold however much it stalls now.
        assert_eq!(p(&report(15_000, 3_000, 14_000_000), before), None);
        // A new boot (counter and uptime went back), or reports too close
        // together to measure: avg10 alone.
        assert_eq!(p(&report(4_000, 4_800, 100), before), Some(4_800));
        assert_eq!(p(&report(10_500, 4_800, 9_000_000), before), Some(4_800));
        // A guest's absurd counters neither panic nor count as pressure.
        assert_eq!(p(&report(u64::MAX, 4_800, 9_000_000), before), None);
        assert_eq!(
            p(&report(15_000, 4_800, u64::MAX), before),
            Some(4_800),
            "saturates to all of it"
        );
        assert_eq!(p(&first, Some((u64::MAX, 1))), Some(6_200));
    }

    #[test]
    fn conditions_from_a_report() {
        let cfg = EngineConfig::default();
        let s = Snapshot {
            watched: vec![WatchedService {
                target: WatchTarget::Process("web".into()),
                running: false,
                pid: None,
                restarts: 0,
            }],
            filesystems: vec![Filesystem {
                mount_point: "/".into(),
                device: "/dev/vda".into(),
                fs_type: "ext4".into(),
                size_bytes: 100,
                avail_bytes: 1,
                inodes_total: 0,
                inodes_free: 0,
                read_only: true,
            }],
            kernel_events: vec![KernelEvent {
                kind: KernelEventKind::OomKill,
                seq: 1,
                timestamp_us: 1,
                subject: Some("hog".into()),
                text: "Out of memory: Killed process 1 (hog)".into(),
            }],
            ..Snapshot::default()
        };
        let kinds: Vec<FaultKind> = conditions(&s, &cfg).iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                FaultKind::ServiceDown,
                FaultKind::MemoryExhaustion,
                FaultKind::FsReadonly,
                FaultKind::DiskFull
            ]
        );
        assert_eq!(conditions(&Snapshot::default(), &cfg), vec![]);
    }

    #[test]
    fn the_guests_words_are_cut_to_size() {
        let huge = "x".repeat(100_000);
        let s = Snapshot {
            watched: vec![WatchedService {
                target: WatchTarget::Process(huge.as_str().into()),
                running: false,
                pid: None,
                restarts: 0,
            }],
            kernel_events: vec![KernelEvent {
                kind: KernelEventKind::OomKill,
                seq: 1,
                timestamp_us: 1,
                subject: Some(huge.as_str().into()),
                text: huge.as_str().into(),
            }],
            ..Snapshot::default()
        };
        let conds = conditions(&s, &EngineConfig::default());
        assert_eq!(conds.len(), 2);
        for c in conds {
            assert!(c.evidence.len() <= MAX_EVIDENCE, "{}", c.evidence.len());
            assert!(c.subject.unwrap().len() <= MAX_TEXT);
        }
    }
}
