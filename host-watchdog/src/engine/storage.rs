//! The host's filesystems under VM disks and the journal (pure): full now,
//! or full within the horizon at the rate they have been filling. A fill
//! rate is a least-squares slope over the recent samples, started over at
//! every delete (a drop in use), so a cleanup does not read as a negative
//! rate and a steady writer is not hidden by one.

use std::collections::BTreeMap;

use super::trend::{words, Fit, Series};
use super::{Millis, VmId};

/// One host filesystem as sampled (statvfs), and who depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsSample {
    /// Its mount point.
    pub mount: String,
    /// Bytes in all, as `df` counts them (used plus available: a
    /// reserve only root may use left out).
    pub size: u64,
    /// Bytes free to unprivileged writers.
    pub avail: u64,
    /// Inodes in all (0: the filesystem has no fixed count).
    pub inodes: u64,
    /// Inodes free.
    pub inodes_avail: u64,
    /// VMs with disks on it.
    pub vms: Vec<VmId>,
    /// vigild's journal is on it.
    pub journal: bool,
}

impl FsSample {
    fn used(&self) -> u64 {
        self.size.saturating_sub(self.avail)
    }

    /// Space and inode use, percent.
    fn use_percent(&self) -> (f64, f64) {
        let pct = |total: u64, free: u64| {
            if total == 0 {
                0.0
            } else {
                100.0 * total.saturating_sub(free) as f64 / total as f64
            }
        };
        (
            pct(self.size, self.avail),
            pct(self.inodes, self.inodes_avail),
        )
    }

    /// Who depends on it, in words.
    fn holders(&self) -> String {
        let mut parts = Vec::new();
        if !self.vms.is_empty() {
            parts.push(format!("disks of {}", self.vms.join(", ")));
        }
        if self.journal {
            parts.push("vigild's journal".to_string());
        }
        parts.join(" and ")
    }
}

/// How a fill rate is fitted: at most 64 samples over 30 minutes, trusted
/// from 4 samples over a minute.
const FIT: Fit = Fit {
    max_samples: 64,
    window_ms: 30 * 60_000,
    min_span_ms: 60_000,
    min_samples: 4,
};

/// Fill-rate samples are kept at least this far apart, so that the 64 kept
/// cover the 30 min window (the host is sampled every few seconds: kept
/// every time, they covered five minutes).
const SPACING_MS: Millis = FIT.window_ms / FIT.max_samples as Millis;

/// A rate is projected at most this many times as far ahead as it was
/// seen: a minute's burst of writes (a build, an install) says nothing of
/// the next six hours; half an hour of steady filling does.
const PROJECT: Millis = 12;

#[derive(Debug)]
struct Track {
    last: FsSample,
    /// Bytes used since the last delete.
    used: Series,
    full: bool,
    /// A VM's write found no space here with this much free (a write needs
    /// more than a percentage mark can tell): full until clearly more is.
    enospc: Option<u64>,
    /// Predicted full at this time (an open prediction).
    eta: Option<Millis>,
}

/// How much more than when a write found no space makes space again: 1 %
/// of the filesystem, at least 1 MiB.
fn slack(size: u64) -> u64 {
    (size / 100).max(1 << 20)
}

/// What is wrong with one filesystem.
#[derive(Debug, Clone, PartialEq)]
pub struct Trouble {
    /// Its mount point.
    pub mount: String,
    /// Full now (else predicted full).
    pub full: bool,
    /// What was seen.
    pub why: String,
}

/// The host's filesystems under VM disks.
#[derive(Debug, Default)]
pub struct Storage {
    fs: BTreeMap<String, Track>,
}

impl Storage {
    /// Take a round of samples; filesystems not in it hold no VM disk any
    /// more and are forgotten.
    pub fn sample(&mut self, now: Millis, samples: Vec<FsSample>, full_pct: u8, horizon: Millis) {
        self.fs
            .retain(|mount, _| samples.iter().any(|s| &s.mount == mount));
        for s in samples {
            let t = self.fs.entry(s.mount.clone()).or_insert_with(|| Track {
                last: s.clone(),
                used: Series::default(),
                full: false,
                enospc: None,
                eta: None,
            });
            let used = s.used();
            // A delete (a drop of more than 1 % of the size) starts the
            // rate over.
            if t.used
                .last()
                .is_some_and(|u| u > (used + s.size / 100) as f64)
            {
                t.used.clear();
            }
            if t.used
                .newest()
                .is_none_or(|at| now.saturating_sub(at) >= SPACING_MS)
            {
                t.used.push(now, used as f64, FIT);
            }
            let (space, inodes) = s.use_percent();
            let high = f64::from(full_pct);
            // Full at the mark; space again one point below it.
            let mark = if t.full { high - 1.0 } else { high };
            let short = t.enospc.is_some_and(|a| s.avail <= a + slack(s.size));
            if !short {
                t.enospc = None;
            }
            t.full = space >= mark || inodes >= mark || short;
            t.last = s;
            t.eta = if horizon == 0 || t.full {
                None
            } else {
                let was = t.eta.is_some();
                predict(&t.used, &t.last, full_pct).and_then(|ms| {
                    // Hysteresis: a prediction holds until it moves out to
                    // twice the horizon.
                    let bound = if was { 2 * horizon } else { horizon };
                    (ms <= bound).then_some(now + ms)
                })
            };
        }
    }

    /// Filesystems full or predicted full, with why.
    pub fn troubles(&self, now: Millis) -> Vec<Trouble> {
        self.fs
            .iter()
            .filter_map(|(mount, t)| {
                let (space, inodes) = t.last.use_percent();
                let free = t.last.avail / (1 << 20);
                let why = if t.full {
                    let inodes = match t.last.inodes {
                        0 => String::new(),
                        _ => format!(" and {inodes:.1}% of inodes"),
                    };
                    let short = match t.enospc {
                        Some(a) => format!("a disk write found no space with {} MiB free; ", a >> 20),
                        None => String::new(),
                    };
                    format!(
                        "{mount} is full: {short}{space:.1}% of space{inodes} used, {free} MiB free; holds {}",
                        t.last.holders()
                    )
                } else {
                    let eta = t.eta?;
                    format!(
                        "{mount} will be full in {} at the rate it fills ({space:.1}% used, {free} MiB free); holds {}",
                        words(eta.saturating_sub(now)),
                        t.last.holders()
                    )
                };
                Some(Trouble {
                    mount: mount.clone(),
                    full: t.full,
                    why,
                })
            })
            .collect()
    }

    /// A VM's write found no space on `mount` (the hypervisor said so):
    /// it is full, whatever its use, until clearly more space is free.
    pub fn ran_out(&mut self, mount: &str) {
        if let Some(t) = self.fs.get_mut(mount) {
            t.enospc.get_or_insert(t.last.avail);
            t.full = true;
            t.eta = None;
        }
    }

    /// Of the filesystems under `vm`'s disks, the one with the least room
    /// (where a write of its would first find none).
    pub fn tightest(&self, vm: &str) -> Option<&str> {
        self.fs
            .iter()
            .filter(|(_, t)| t.last.vms.iter().any(|v| v == vm))
            .min_by(|a, b| {
                let room = |t: &Track| t.last.avail as f64 / t.last.size.max(1) as f64;
                room(a.1).total_cmp(&room(b.1))
            })
            .map(|(m, _)| m.as_str())
    }

    /// The VMs with disks on `mount`.
    pub fn vms_on(&self, mount: &str) -> Vec<VmId> {
        self.fs
            .get(mount)
            .map_or(Vec::new(), |t| t.last.vms.clone())
    }

    /// The filesystems holding `vm`'s disks: (mount, full now); empty when
    /// no sample names the VM.
    pub fn of_vm(&self, vm: &str) -> Vec<(&str, bool)> {
        self.fs
            .iter()
            .filter(|(_, t)| t.last.vms.iter().any(|v| v == vm))
            .map(|(m, t)| (m.as_str(), t.full))
            .collect()
    }
}

/// Milliseconds until `s` reaches `full_pct` at the fitted rate (none
/// when it does not fill, too little is known, or it is further ahead than
/// the rate was seen for can tell).
fn predict(used: &Series, s: &FsSample, full_pct: u8) -> Option<Millis> {
    used.until(s.size as f64 * f64::from(full_pct) / 100.0, FIT)
        .filter(|ms| *ms <= used.span().saturating_mul(PROJECT))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const HOUR: Millis = 3_600_000;

    fn fs(avail_mib: u64) -> FsSample {
        FsSample {
            mount: "/var/lib/libvirt/images".into(),
            size: 1000 * MIB,
            avail: avail_mib * MIB,
            inodes: 1000,
            inodes_avail: 900,
            vms: vec!["web".into(), "db".into()],
            journal: false,
        }
    }

    #[test]
    fn full_at_the_mark_and_space_again_a_point_below() {
        let mut st = Storage::default();
        st.sample(0, vec![fs(20)], 99, 0);
        assert!(st.troubles(0).is_empty(), "98 % used is not full");
        st.sample(1, vec![fs(5)], 99, 0);
        let t = st.troubles(1);
        assert!(t[0].full, "{t:?}");
        assert!(
            t[0].why.contains("is full") && t[0].why.contains("disks of web, db"),
            "{t:?}"
        );
        assert_eq!(st.of_vm("db"), [("/var/lib/libvirt/images", true)]);
        st.sample(2, vec![fs(15)], 99, 0);
        assert!(st.troubles(2)[0].full, "98.5 % used: still full");
        st.sample(3, vec![fs(25)], 99, 0);
        assert!(st.troubles(3).is_empty());
        assert_eq!(st.of_vm("web"), [("/var/lib/libvirt/images", false)]);
        assert!(st.of_vm("other").is_empty());
        // No inodes left is full too.
        let mut s = fs(500);
        s.inodes_avail = 0;
        st.sample(4, vec![s], 99, 0);
        assert!(st.troubles(4)[0].why.contains("100.0% of inodes"));
    }

    /// A write that needs more than is left fails with some space still
    /// free, under the percentage mark: full all the same, until clearly
    /// more is free (a VM resumed then would only pause again).
    #[test]
    fn a_write_that_found_no_space_marks_the_filesystem_full() {
        let mut st = Storage::default();
        let mut other = fs(900);
        other.mount = "/srv/big".into();
        st.sample(0, vec![fs(15), other.clone()], 99, 0);
        assert!(st.troubles(0).is_empty(), "98.5 % used: under the mark");
        assert_eq!(st.tightest("web"), Some("/var/lib/libvirt/images"));
        st.ran_out("/var/lib/libvirt/images");
        assert!(st.troubles(0)[0].full);
        st.sample(1, vec![fs(20), other.clone()], 99, 0);
        assert!(st.troubles(1)[0].full, "5 MiB more than then: not enough");
        st.sample(2, vec![fs(40), other], 99, 0);
        assert!(st.troubles(2).is_empty(), "25 MiB more: space again");
        st.ran_out("/nowhere");
    }

    #[test]
    fn a_steady_fill_is_predicted_and_a_delete_starts_the_rate_over() {
        let mut st = Storage::default();
        // 1 MiB a minute with 500 MiB left: full in about 8 h, beyond a
        // 6 h horizon.
        for i in 0..10 {
            st.sample(i * 60_000, vec![fs(500 - i)], 99, 6 * HOUR);
        }
        assert!(st.troubles(9 * 60_000).is_empty());
        // 4 MiB a minute: full in about 2 h.
        for i in 10..20 {
            st.sample(i * 60_000, vec![fs(491 - 4 * (i - 9))], 99, 6 * HOUR);
        }
        let t = st.troubles(19 * 60_000);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(!t[0].full && t[0].why.contains("will be full in"), "{t:?}");
        // A delete frees 300 MiB: the rate starts over, no prediction
        // from the samples before it.
        st.sample(20 * 60_000, vec![fs(750)], 99, 6 * HOUR);
        assert!(st.troubles(20 * 60_000).is_empty());
        // Nothing is predicted from too short a span.
        st.sample(20 * 60_000 + 10_000, vec![fs(700)], 99, 6 * HOUR);
        assert!(st.troubles(20 * 60_000 + 10_000).is_empty());
    }

    #[test]
    fn a_prediction_holds_until_twice_the_horizon() {
        let mut st = Storage::default();
        let mut at = 0;
        let mut avail = 900;
        // 10 MiB a minute: full in under 2 h with a 2 h horizon, once
        // seen for 7 minutes (12 × 7 min is more than the 82 min left).
        for _ in 0..8 {
            st.sample(at, vec![fs(avail)], 99, 2 * HOUR);
            at += 60_000;
            avail -= 10;
        }
        assert_eq!(st.troubles(at).len(), 1);
        // Slower, to about 3 h: still held (under 4 h).
        for _ in 0..30 {
            st.sample(at, vec![fs(avail)], 99, 2 * HOUR);
            at += 60_000;
            avail -= 4;
        }
        assert_eq!(st.troubles(at).len(), 1);
        // Stopped filling: dropped.
        for _ in 0..40 {
            st.sample(at, vec![fs(avail)], 99, 2 * HOUR);
            at += 60_000;
        }
        assert!(st.troubles(at).is_empty());
    }

    /// A burst of writes (a build, an install: 200 MiB a minute with
    /// 50 GiB free, sampled every 5 s) is not projected six hours ahead
    /// from a minute or two; the same rate kept up is.
    #[test]
    fn a_burst_of_writes_is_not_projected_hours_ahead() {
        let big = |avail_mib: u64| FsSample {
            size: 100 * 1024 * MIB,
            ..fs(avail_mib)
        };
        let mut st = Storage::default();
        let mut avail = 50 * 1024;
        let mut at = 0;
        let mut run = |st: &mut Storage, minutes: u64| {
            for _ in 0..minutes * 12 {
                st.sample(at, vec![big(avail)], 99, 6 * HOUR);
                at += 5_000;
                avail -= 200 / 12;
            }
            at - 5_000
        };
        let now = run(&mut st, 2);
        assert!(st.troubles(now).is_empty(), "{:?}", st.troubles(now));
        // Kept up for 25 minutes: full in about 4 h, predicted.
        let now = run(&mut st, 23);
        let t = st.troubles(now);
        assert!(
            t.len() == 1 && t[0].why.contains("will be full in 3h"),
            "{t:?}"
        );
    }

    #[test]
    fn a_filesystem_no_longer_sampled_is_forgotten() {
        let mut st = Storage::default();
        st.sample(0, vec![fs(1)], 99, 0);
        assert_eq!(st.troubles(0).len(), 1);
        st.sample(1, vec![], 99, 0);
        assert!(st.troubles(1).is_empty());
        assert_eq!(words(30_000), "30s");
        assert_eq!(words(45 * 60_000), "45m");
        assert_eq!(words(3 * HOUR + 12 * 60_000), "3h 12m");
    }
}
