//! The warnings' tests.

use super::*;
use vigil_protocol::snapshot::{Cpu, Filesystem, Memory, WatchTarget, WatchedService};

const MIB: u64 = 1 << 20;
const MIN: Millis = 60_000;

fn cfg() -> WarnConfig {
    WarnConfig {
        horizon_ms: 3_600_000,
        trend_window_ms: 10 * MIN,
        trend_min_span_ms: 2 * MIN,
        sustained_ms: 2 * MIN,
        ..WarnConfig::default()
    }
}

fn disk(used_mib: u64) -> Snapshot {
    Snapshot {
        uptime_ms: 1,
        filesystems: vec![Filesystem {
            mount_point: "/data".into(),
            device: "/dev/vdb".into(),
            fs_type: "ext4".into(),
            size_bytes: 1000 * MIB,
            avail_bytes: (1000 - used_mib) * MIB,
            inodes_total: 1000,
            inodes_free: 900,
            read_only: false,
        }],
        ..Snapshot::default()
    }
}

/// Feed `snap(i)` every 10 s for `n` reports from `from`; the records.
fn feed(
    t: &mut Trends,
    from: Millis,
    n: u64,
    snap: impl Fn(u64) -> Snapshot,
) -> (Millis, Vec<Record>) {
    let mut out = Output::default();
    let mut now = from;
    for i in 0..n {
        now = from + i * 10_000;
        let mut s = snap(i);
        s.uptime_ms = now + 1;
        t.report(now, "web", &s, &cfg(), (95, 95), &mut out);
    }
    (now, out.records)
}

fn raised(r: &[Record]) -> Vec<(WarningKind, Option<String>, Option<Millis>)> {
    r.iter()
        .filter_map(|r| match r {
            Record::Warning {
                kind, subject, eta, ..
            } => Some((*kind, subject.clone(), *eta)),
            _ => None,
        })
        .collect()
}

fn cleared(r: &[Record]) -> usize {
    r.iter()
        .filter(|r| matches!(r, Record::WarningCleared { .. }))
        .count()
}

#[test]
fn a_disk_filling_steadily_is_predicted_full_once_and_a_delete_clears_it() {
    let mut t = Trends::default();
    // 1 MiB per 10 s: from 500 MiB, 950 (95 %) is 450 reports away, 75 min.
    let (now, r) = feed(&mut t, 0, 13, |i| disk(500 + i));
    assert!(
        raised(&r).is_empty(),
        "75 min is beyond a 1 h horizon: {r:?}"
    );
    // Faster: 5 MiB per 10 s, full within the hour.
    let (now, r) = feed(&mut t, now + 10_000, 20, |i| disk(520 + 5 * i));
    let w = raised(&r);
    assert_eq!(w.len(), 1, "{r:?}");
    assert_eq!(w[0].0, WarningKind::PredictedFull);
    assert_eq!(w[0].1.as_deref(), Some("/data"));
    let eta = w[0].2.unwrap() - now;
    assert!((10 * MIN..=60 * MIN).contains(&eta), "{eta}");
    assert_eq!(t.open().count(), 1);
    // A delete: the trend starts over and the prediction is gone.
    let (_, r) = feed(&mut t, now + 10_000, 1, |_| disk(200));
    assert_eq!(cleared(&r), 1, "{r:?}");
    assert_eq!(t.open().count(), 0);
}

#[test]
fn a_file_or_two_is_no_trend() {
    let mut t = Trends::default();
    // One file made, among 1,000 inodes, in 2 minutes: a positive
    // slope, but no trend.
    let (_, r) = feed(&mut t, 0, 13, |i| {
        let mut s = disk(500);
        s.filesystems[0].inodes_free = if i > 6 { 899 } else { 900 };
        s
    });
    assert!(raised(&r).is_empty(), "{r:?}");
}

#[test]
fn a_prediction_holds_until_twice_the_horizon() {
    let mut t = Trends::default();
    let (now, r) = feed(&mut t, 0, 30, |i| disk(500 + 5 * i));
    assert_eq!(raised(&r).len(), 1);
    // Slower: 1 MiB per 20 s is ~1.8 h from ~650 MiB: between one and
    // two horizons, held; no record either way.
    let (_, r) = feed(&mut t, now + 10_000, 60, |i| disk(650 + i / 2));
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(t.open().count(), 1);
}

#[test]
fn a_full_disk_is_a_faults_turn_not_a_warnings() {
    let mut t = Trends::default();
    let (now, _) = feed(&mut t, 0, 30, |i| disk(800 + 5 * i));
    assert_eq!(t.open().count(), 1);
    let (_, r) = feed(&mut t, now + 10_000, 1, |_| disk(960));
    assert_eq!(cleared(&r), 1);
}

#[test]
fn memory_growing_towards_exhaustion_is_a_warning() {
    let mem = |used_mib: u64| Snapshot {
        memory: Some(Memory {
            total_bytes: 1024 * MIB,
            available_bytes: (1024 - used_mib) * MIB,
            ..Memory::default()
        }),
        ..Snapshot::default()
    };
    let mut t = Trends::default();
    let (_, r) = feed(&mut t, 0, 20, |i| mem(400 + 10 * i));
    assert_eq!(raised(&r)[0].0, WarningKind::MemoryGrowth, "{r:?}");
    // Flat memory raises nothing.
    let mut flat = Trends::default();
    let (_, r) = feed(&mut flat, 0, 60, |i| mem(400 + i % 3));
    assert!(raised(&r).is_empty(), "{r:?}");
}

#[test]
fn oom_kills_that_keep_coming_are_a_warning_and_a_reboot_counts_none() {
    let ooms = |n: u64| Snapshot {
        memory: Some(Memory {
            total_bytes: 1024 * MIB,
            available_bytes: 512 * MIB,
            oom_kills: Some(n),
            ..Memory::default()
        }),
        ..Snapshot::default()
    };
    let mut t = Trends::default();
    let (now, r) = feed(&mut t, 0, 3, |i| ooms(5 + i.min(1)));
    assert!(
        raised(&r).is_empty(),
        "one kill (5 before were seen first): {r:?}"
    );
    // A reboot: the counter starts at 0 again: not a kill.
    let (now, r) = feed(&mut t, now + 10_000, 2, |_| ooms(0));
    assert!(raised(&r).is_empty(), "{r:?}");
    let (now, r) = feed(&mut t, now + 10_000, 1, |_| ooms(1));
    assert_eq!(raised(&r)[0].0, WarningKind::RecurringOom, "{r:?}");
    // Quiet for the window: cleared.
    let (_, r) = feed(&mut t, now + 3_600_000 + 10_000, 1, |_| ooms(1));
    assert_eq!(cleared(&r), 1, "{r:?}");
}

#[test]
fn steal_sustained_warns_and_a_blip_does_not() {
    let steal = |v: u16| Snapshot {
        cpu: Some(Cpu {
            steal: v,
            cpus: 2,
            ..Cpu::default()
        }),
        ..Snapshot::default()
    };
    let mut t = Trends::default();
    // 1 minute at 30 %, then 10 s at 1 %: starts over.
    let (now, r) = feed(&mut t, 0, 6, |_| steal(3000));
    let (now, _) = feed(&mut t, now + 10_000, 1, |_| steal(100));
    assert!(raised(&r).is_empty());
    let (now, r) = feed(&mut t, now + 10_000, 14, |_| steal(3000));
    assert_eq!(raised(&r)[0].0, WarningKind::CpuSteal, "{r:?}");
    // Within the band (above half the mark): held.
    let (now, r) = feed(&mut t, now + 10_000, 5, |_| steal(600));
    assert!(r.is_empty(), "{r:?}");
    let (_, r) = feed(&mut t, now + 10_000, 1, |_| steal(400));
    assert_eq!(cleared(&r), 1);
}

#[test]
fn a_service_restarting_too_often_is_flapping() {
    let svc = |restarts: u32| Snapshot {
        watched: vec![WatchedService {
            target: WatchTarget::Unit("web.service".into()),
            running: true,
            pid: Some(1),
            restarts,
        }],
        ..Snapshot::default()
    };
    let mut t = Trends::default();
    let (now, r) = feed(&mut t, 0, 4, |i| svc(i as u32));
    assert_eq!(raised(&r).len(), 1, "3 restarts in 30 s: {r:?}");
    assert_eq!(raised(&r)[0].1.as_deref(), Some("web.service"));
    // The service is no longer watched: its warning closes.
    let (_, r) = feed(&mut t, now + 10_000, 1, |_| Snapshot::default());
    assert_eq!(cleared(&r), 1, "{r:?}");
}
