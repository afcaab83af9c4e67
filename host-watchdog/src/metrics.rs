//! Metrics from journal records (pure): per VM over a window — fault count
//! and rate, mean and p95 of the time to detect, locate and repair, and
//! availability = uptime / total time (outage-class faults count as down
//! from onset to recovery).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::{Closure, FaultKind, Millis, Record, VmId};

/// Mean and 95th percentile of a set of durations, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Samples.
    pub count: usize,
    /// Mean.
    pub mean_ms: f64,
    /// 95th percentile (nearest rank).
    pub p95_ms: f64,
}

/// Mean and p95 (nearest rank) of `xs`.
pub fn stat(xs: &[Millis]) -> Stat {
    if xs.is_empty() {
        return Stat::default();
    }
    let mut v = xs.to_vec();
    v.sort_unstable();
    let rank = ((v.len() as f64) * 0.95).ceil() as usize;
    Stat {
        count: v.len(),
        mean_ms: v.iter().sum::<Millis>() as f64 / v.len() as f64,
        p95_ms: v[rank.clamp(1, v.len()) - 1] as f64,
    }
}

/// One VM's figures over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmMetrics {
    /// VM.
    pub vm: VmId,
    /// Faults located in the window.
    pub faults: usize,
    /// Faults per hour.
    pub fault_rate_per_hour: f64,
    /// Faults by kind.
    pub by_kind: BTreeMap<String, usize>,
    /// Faults closed as recovered.
    pub recovered: usize,
    /// Time to detect (detected − onset).
    pub detect: Stat,
    /// Time to locate (located − detected).
    pub locate: Stat,
    /// Time to repair (recovered − located), recovered faults only.
    pub repair: Stat,
    /// Uptime / total time in the window.
    pub availability: f64,
    /// Outage time in the window, ms.
    pub downtime_ms: Millis,
}

impl VmMetrics {
    /// A VM with no faults in the window.
    pub fn clean(vm: &str) -> VmMetrics {
        VmMetrics {
            vm: vm.to_string(),
            faults: 0,
            fault_rate_per_hour: 0.0,
            by_kind: BTreeMap::new(),
            recovered: 0,
            detect: Stat::default(),
            locate: Stat::default(),
            repair: Stat::default(),
            availability: 1.0,
            downtime_ms: 0,
        }
    }
}

/// Compute per-VM metrics over `[from, to)` from timestamped records.
pub fn compute(records: &[(Millis, Record)], from: Millis, to: Millis) -> Vec<VmMetrics> {
    struct Open {
        kind: FaultKind,
        onset: Millis,
    }
    let span = to.saturating_sub(from).max(1);
    #[derive(Default)]
    struct Acc {
        faults: usize,
        by_kind: BTreeMap<String, usize>,
        recovered: usize,
        detect: Vec<Millis>,
        locate: Vec<Millis>,
        repair: Vec<Millis>,
    }
    let mut per: BTreeMap<VmId, Acc> = BTreeMap::new();
    let mut open: BTreeMap<u64, (VmId, Open)> = BTreeMap::new();
    let mut outages: BTreeMap<VmId, Vec<(Millis, Millis)>> = BTreeMap::new();
    // Faults superseded by a more severe one are the same incident: the
    // successor is counted, not both.
    let superseded: std::collections::BTreeSet<u64> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Closed {
                id,
                how: Closure::Superseded,
                ..
            } => Some(*id),
            _ => None,
        })
        .collect();
    for (t, r) in records {
        match r {
            Record::Fault { vm, .. }
            | Record::Transition { vm, .. }
            | Record::Closed { vm, .. }
                if vm == crate::engine::HOST => {}
            Record::Transition { vm, .. } => {
                per.entry(vm.clone()).or_default();
            }
            Record::Fault {
                vm,
                id,
                kind,
                onset,
                detected,
                located,
                ..
            } => {
                let acc = per.entry(vm.clone()).or_default();
                open.insert(
                    *id,
                    (
                        vm.clone(),
                        Open {
                            kind: *kind,
                            onset: *onset,
                        },
                    ),
                );
                if *located < from || *located >= to || superseded.contains(id) {
                    continue;
                }
                acc.faults += 1;
                *acc.by_kind.entry(kind.name().to_string()).or_default() += 1;
                acc.detect.push(detected.saturating_sub(*onset));
                acc.locate.push(located.saturating_sub(*detected));
            }
            // A fault that came back within the flap window: down again
            // from now (an outage) until it closes.
            Record::Reopened { vm, id, kind, .. } if vm != crate::engine::HOST => {
                open.insert(
                    *id,
                    (
                        vm.clone(),
                        Open {
                            kind: *kind,
                            onset: *t,
                        },
                    ),
                );
            }
            Record::Closed {
                vm,
                id,
                how,
                repair_ms,
                at,
                ..
            } => {
                if let Some((_, o)) = open.remove(id) {
                    // A superseded outage overlaps its successor; merged below.
                    if o.kind.is_outage() {
                        let end = (*at).min(*t).max(o.onset);
                        outages.entry(vm.clone()).or_default().push((o.onset, end));
                    }
                }
                if *how == Closure::Recovered && *t >= from && *t < to {
                    if let Some(acc) = per.get_mut(vm) {
                        acc.recovered += 1;
                        acc.repair.push(*repair_ms);
                    }
                }
            }
            _ => {}
        }
    }
    for (_, (vm, o)) in open {
        if o.kind.is_outage() {
            outages.entry(vm).or_default().push((o.onset, to));
        }
    }
    per.into_iter()
        .map(|(vm, acc)| {
            let mut m = VmMetrics {
                vm,
                faults: acc.faults,
                fault_rate_per_hour: acc.faults as f64 * 3_600_000.0 / span as f64,
                by_kind: acc.by_kind,
                recovered: acc.recovered,
                detect: stat(&acc.detect),
                locate: stat(&acc.locate),
                repair: stat(&acc.repair),
                availability: 1.0,
                downtime_ms: 0,
            };
            let spans: Vec<(Millis, Millis)> = outages
                .get(&m.vm)
                .map(|v| {
                    v.iter()
                        .map(|(a, b)| ((*a).clamp(from, to), (*b).clamp(from, to)))
                        .collect()
                })
                .unwrap_or_default();
            let down = merged_down(spans);
            m.downtime_ms = down;
            m.availability = 1.0 - down as f64 / span as f64;
            m
        })
        .collect()
}

/// Total length of `spans`, overlaps (a superseded fault and its
/// successor) counted once.
fn merged_down(mut spans: Vec<(Millis, Millis)>) -> Millis {
    spans.sort_unstable();
    let mut down = 0;
    let mut cur: Option<(Millis, Millis)> = None;
    for (a, b) in spans {
        match cur {
            Some((ca, cb)) if a <= cb => cur = Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                down += cb - ca;
                cur = Some((a, b));
            }
            None => cur = Some((a, b)),
        }
    }
    if let Some((a, b)) = cur {
        down += b - a;
    }
    down
}

/// Availability since `from`, kept up to date record by record: what
/// [`compute`] gives over `[from, now)`, without reading the journal
/// again (vigild's `/metrics` gauge). Bounded per VM: past
/// [`Uptime::KEEP_SPANS`] outage spans, the older half is folded into a
/// total.
#[derive(Debug, Default)]
pub struct Uptime {
    from: Millis,
    vms: BTreeMap<VmId, VmUp>,
    /// Outage faults still open: id → (VM, onset).
    open: BTreeMap<u64, (VmId, Millis)>,
}

#[derive(Debug, Default)]
struct VmUp {
    spans: Vec<(Millis, Millis)>,
    folded: Millis,
}

impl Uptime {
    /// Outage spans kept apart per VM (later ones may overlap them).
    pub const KEEP_SPANS: usize = 64;

    /// Count from `from`.
    pub fn new(from: Millis) -> Uptime {
        Uptime {
            from,
            ..Uptime::default()
        }
    }

    /// Take in one journal record written at `t`.
    pub fn observe(&mut self, t: Millis, r: &Record) {
        match r {
            Record::Fault { vm, .. } if vm == crate::engine::HOST => {}
            Record::Fault {
                vm,
                id,
                kind,
                onset,
                ..
            } if kind.is_outage() => {
                self.open.insert(*id, (vm.clone(), *onset));
            }
            Record::Reopened { vm, id, kind, .. }
                if vm != crate::engine::HOST && kind.is_outage() =>
            {
                self.open.insert(*id, (vm.clone(), t));
            }
            Record::Closed { id, at, .. } => {
                if let Some((vm, onset)) = self.open.remove(id) {
                    let from = self.from;
                    let end = (*at).min(t).max(onset);
                    let u = self.vms.entry(vm).or_default();
                    u.spans.push((onset.max(from), end.max(from)));
                    if u.spans.len() > Self::KEEP_SPANS {
                        u.spans.sort_unstable();
                        let old: Vec<_> = u.spans.drain(..Self::KEEP_SPANS / 2).collect();
                        u.folded += merged_down(old);
                    }
                }
            }
            _ => {}
        }
    }

    /// `vm`'s availability over `[from, now)`.
    pub fn availability(&self, vm: &str, now: Millis) -> f64 {
        let span = now.saturating_sub(self.from).max(1);
        let clamp = |(a, b): (Millis, Millis)| (a.clamp(self.from, now), b.clamp(self.from, now));
        let mut spans: Vec<(Millis, Millis)> = self
            .open
            .values()
            .filter(|(v, _)| v == vm)
            .map(|(_, onset)| clamp((*onset, now)))
            .collect();
        let mut folded = 0;
        if let Some(u) = self.vms.get(vm) {
            spans.extend(u.spans.iter().copied().map(clamp));
            folded = u.folded;
        }
        1.0 - (folded + merged_down(spans)) as f64 / span as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Layer;

    #[test]
    fn stat_mean_and_p95() {
        let s = stat(&(1..=100).collect::<Vec<_>>());
        assert_eq!((s.count, s.mean_ms, s.p95_ms), (100, 50.5, 95.0));
        assert_eq!(stat(&[]), Stat::default());
        assert_eq!(stat(&[7]).p95_ms, 7.0);
    }

    #[test]
    fn availability_and_phases() {
        let fault = |id, kind, onset, detected, located| Record::Fault {
            vm: "a".into(),
            id,
            kind,
            layer: Layer::Host,
            evidence: vec![],
            subject: None,
            onset,
            onset_window_ms: 0,
            detected,
            located,
        };
        let closed = |id, kind, at, repair_ms| Record::Closed {
            vm: "a".into(),
            id,
            kind,
            how: Closure::Recovered,
            at,
            detect_ms: 0,
            locate_ms: 0,
            repair_ms,
            flaps: 0,
        };
        let recs = vec![
            (1_500, fault(1, FaultKind::GuestHang, 1_000, 1_400, 1_500)),
            (11_000, closed(1, FaultKind::GuestHang, 11_000, 9_500)),
            (
                20_000,
                fault(2, FaultKind::DiskFull, 19_500, 20_000, 20_000),
            ),
        ];
        let m = &compute(&recs, 0, 100_000)[0];
        assert_eq!(m.faults, 2);
        assert_eq!(m.recovered, 1);
        assert_eq!(m.detect.mean_ms, 450.0);
        assert_eq!(m.repair.mean_ms, 9_500.0);
        // Only the hang is an outage: 10 s of 100 s.
        assert_eq!(m.downtime_ms, 10_000);
        assert!((m.availability - 0.9).abs() < 1e-9);
        assert!((m.fault_rate_per_hour - 72.0).abs() < 1e-9);
        // Kept record by record, the same figure.
        let mut u = Uptime::new(0);
        for (t, r) in &recs {
            u.observe(*t, r);
        }
        assert!((u.availability("a", 100_000) - 0.9).abs() < 1e-9);
        assert_eq!(u.availability("b", 100_000), 1.0);
    }

    #[test]
    fn uptime_stays_bounded_and_agrees_with_compute() {
        let mut recs = Vec::new();
        for i in 0..500u64 {
            let at = i * 10_000;
            recs.push((
                at + 500,
                Record::Fault {
                    vm: "a".into(),
                    id: i + 1,
                    kind: FaultKind::GuestHang,
                    layer: crate::engine::Layer::GuestKernel,
                    evidence: vec![],
                    subject: None,
                    onset: at,
                    onset_window_ms: 0,
                    detected: at + 400,
                    located: at + 500,
                },
            ));
            recs.push((
                at + 3_000,
                Record::Closed {
                    vm: "a".into(),
                    id: i + 1,
                    kind: FaultKind::GuestHang,
                    how: Closure::Recovered,
                    at: at + 3_000,
                    detect_ms: 400,
                    locate_ms: 100,
                    repair_ms: 2_500,
                    flaps: 0,
                },
            ));
        }
        let mut u = Uptime::new(0);
        for (t, r) in &recs {
            u.observe(*t, r);
        }
        assert!(u.vms["a"].spans.len() <= Uptime::KEEP_SPANS);
        let end = 5_000_000;
        let want = compute(&recs, 0, end)[0].availability;
        assert!((u.availability("a", end) - want).abs() < 1e-9, "{want}");
    }
}
