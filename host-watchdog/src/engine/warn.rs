//! Warnings (pure): what a guest's reports announce before it is a fault.
//! A filesystem or its inodes filling at a rate that makes it full within
//! the horizon, memory use growing towards an OOM, OOM kills that keep
//! coming, a guest starved of CPU (pressure or steal) for a sustained
//! while, a watched service restarting too often. A warning is not a fault:
//! it takes no action, has its own journal records (`warning`,
//! `warning-cleared`) and its own metrics. Each has a band between raising
//! and clearing, so that it does not flap.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use vigil_protocol::snapshot::{Snapshot, WatchTarget};

use super::trend::{words, Fit, Series};
use super::{Millis, Output, Record};

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// A guest filesystem will be full within the horizon.
    PredictedFull,
    /// A guest filesystem will run out of inodes within the horizon.
    InodesPredictedFull,
    /// Memory use grows towards exhaustion (an OOM) within the horizon.
    MemoryGrowth,
    /// OOM kills keep coming.
    RecurringOom,
    /// The guest waits for CPU (pressure) for a sustained while.
    CpuPressure,
    /// The host takes the guest's CPU (steal) for a sustained while.
    CpuSteal,
    /// A watched service restarts too often.
    ServiceFlapping,
}

impl WarningKind {
    /// Every kind.
    pub const ALL: [WarningKind; 7] = [
        WarningKind::PredictedFull,
        WarningKind::InodesPredictedFull,
        WarningKind::MemoryGrowth,
        WarningKind::RecurringOom,
        WarningKind::CpuPressure,
        WarningKind::CpuSteal,
        WarningKind::ServiceFlapping,
    ];

    /// Its name (kebab case, as journaled).
    pub fn name(self) -> &'static str {
        match self {
            WarningKind::PredictedFull => "predicted-full",
            WarningKind::InodesPredictedFull => "inodes-predicted-full",
            WarningKind::MemoryGrowth => "memory-growth",
            WarningKind::RecurringOom => "recurring-oom",
            WarningKind::CpuPressure => "cpu-pressure",
            WarningKind::CpuSteal => "cpu-steal",
            WarningKind::ServiceFlapping => "service-flapping",
        }
    }
}

impl std::fmt::Display for WarningKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An open warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    /// What.
    pub kind: WarningKind,
    /// About what (mount point, service), if anything.
    pub subject: Option<String>,
    /// What shows it, in words (updated with every report).
    pub evidence: String,
    /// When it is predicted to happen (host time), where it has a time.
    pub eta: Option<Millis>,
    /// Raised at.
    pub since: Millis,
}

/// Warning settings (`[engine.warnings]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarnConfig {
    /// Predicted within this is a warning; it clears beyond twice this.
    pub horizon_ms: Millis,
    /// How far back a trend looks.
    pub trend_window_ms: Millis,
    /// The least span of reports a trend is trusted over.
    pub trend_min_span_ms: Millis,
    /// OOM kills within `oom_window_ms` that are recurring.
    pub oom_kills: u32,
    /// The window for `oom_kills`.
    pub oom_window_ms: Millis,
    /// CPU pressure (PSI cpu `some` avg60, × 100) that starves a guest.
    /// (The kernel reports cpu `full` as zero for the whole system.)
    pub cpu_pressure_avg60: u32,
    /// CPU steal (× 100, percent of all CPUs) that starves a guest.
    pub cpu_steal: u32,
    /// How long pressure or steal lasts before it is a warning; it clears
    /// below half its mark.
    pub sustained_ms: Millis,
    /// Restarts of one service within `flap_window_ms` that are flapping.
    pub service_restarts: u32,
    /// The window for `service_restarts`.
    pub flap_window_ms: Millis,
}

impl Default for WarnConfig {
    fn default() -> Self {
        WarnConfig {
            horizon_ms: 6 * 3_600_000,
            trend_window_ms: 30 * 60_000,
            trend_min_span_ms: 5 * 60_000,
            oom_kills: 2,
            oom_window_ms: 3_600_000,
            cpu_pressure_avg60: 4_000,
            cpu_steal: 1_000,
            sustained_ms: 5 * 60_000,
            service_restarts: 3,
            flap_window_ms: 10 * 60_000,
        }
    }
}

impl WarnConfig {
    /// Check ranges; the message names the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        const DAY: Millis = 24 * 3_600_000;
        if self.horizon_ms > 30 * DAY {
            return Err("warnings.horizon_ms must be at most 30 days (0: no predictions)".into());
        }
        if self.trend_window_ms == 0 || self.trend_window_ms > DAY {
            return Err("warnings.trend_window_ms must be in 1..=86400000 (a day)".into());
        }
        if self.trend_min_span_ms > self.trend_window_ms {
            return Err("warnings.trend_min_span_ms must be at most trend_window_ms".into());
        }
        if self.oom_kills == 0 || self.service_restarts == 0 {
            return Err("warnings.oom_kills and service_restarts must be > 0".into());
        }
        if self.cpu_pressure_avg60 == 0 || self.cpu_pressure_avg60 > 10_000 {
            return Err("warnings.cpu_pressure_avg60 must be in 1..=10000 (0.01 %)".into());
        }
        if self.cpu_steal == 0 || self.cpu_steal > 10_000 {
            return Err("warnings.cpu_steal must be in 1..=10000 (0.01 %)".into());
        }
        Ok(())
    }

    fn fit(&self) -> Fit {
        Fit {
            max_samples: TREND_SAMPLES,
            window_ms: self.trend_window_ms,
            min_span_ms: self.trend_min_span_ms,
            min_samples: 4,
        }
    }
}

/// Samples one trend keeps, at most (one per window/64: memory is bounded
/// whatever the report rate).
const TREND_SAMPLES: usize = 64;
/// Events (kills, restarts) remembered per subject, at most.
const MAX_EVENTS: usize = 64;

/// One filesystem's trends.
#[derive(Debug, Default)]
struct FsTrend {
    space: Series,
    inodes: Series,
}

/// Events counted from a running total (OOM kills, a service's restarts).
#[derive(Debug, Default)]
struct Counted {
    last: Option<u64>,
    at: VecDeque<Millis>,
}

impl Counted {
    /// Take the running total now; a drop (a reboot) starts it over.
    fn take(&mut self, now: Millis, total: u64) {
        if let Some(last) = self.last.filter(|l| total > *l) {
            for _ in 0..(total - last).min(MAX_EVENTS as u64) {
                self.at.push_back(now);
            }
            while self.at.len() > MAX_EVENTS {
                self.at.pop_front();
            }
        }
        self.last = Some(total);
    }

    /// Events within `window` of `now`.
    fn within(&mut self, now: Millis, window: Millis) -> usize {
        while self
            .at
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > window)
        {
            self.at.pop_front();
        }
        self.at.len()
    }
}

/// Since when a level has held (pressure, steal).
#[derive(Debug, Default)]
struct Sustained {
    since: Option<Millis>,
}

impl Sustained {
    /// The level now against its mark: the time it has been at or over the
    /// mark, counting from when it rose; below half the mark it starts over.
    fn take(&mut self, now: Millis, level: Option<u32>, mark: u32) -> Option<Millis> {
        match level {
            Some(l) if l >= mark => Some(now - *self.since.get_or_insert(now)),
            Some(l) if l >= mark / 2 && self.since.is_some() => self.since.map(|s| now - s),
            _ => {
                self.since = None;
                None
            }
        }
    }
}

/// A finding from one report: raised or held (Some) or not (None).
type Finding = Option<(String, Option<Millis>)>;
/// A warning's key: its kind and subject.
type Key = (WarningKind, Option<String>);
/// What one report found, per key, with the words for when it is gone.
type Found = Vec<(Key, Finding, &'static str)>;

/// One VM's trends and open warnings.
#[derive(Debug, Default)]
pub struct Trends {
    fs: BTreeMap<String, FsTrend>,
    memory: Series,
    ooms: Counted,
    pressure: Sustained,
    steal: Sustained,
    services: BTreeMap<String, Counted>,
    last_uptime: Option<u64>,
    open: BTreeMap<Key, Warning>,
}

impl Trends {
    /// Open warnings, in kind order.
    pub fn open(&self) -> impl Iterator<Item = &Warning> {
        self.open.values()
    }

    /// Take a report: raise, update and clear warnings.
    pub fn report(
        &mut self,
        now: Millis,
        vm: &str,
        s: &Snapshot,
        cfg: &WarnConfig,
        full_pct: (u8, u8),
        out: &mut Output,
    ) {
        // A new boot: what was running says nothing of what runs now.
        if self.last_uptime.is_some_and(|u| s.uptime_ms < u) {
            self.memory.clear();
            for f in self.fs.values_mut() {
                f.space.clear();
                f.inodes.clear();
            }
        }
        self.last_uptime = Some(s.uptime_ms);
        let mut found: Found = Vec::new();
        self.filesystems(now, s, cfg, full_pct, &mut found);
        found.push((
            (WarningKind::MemoryGrowth, None),
            self.memory(now, s, cfg),
            "memory use no longer grows towards exhaustion",
        ));
        found.push((
            (WarningKind::RecurringOom, None),
            self.oom(now, s, cfg),
            "no longer recurring",
        ));
        let (pressure, steal) = self.cpu(now, s, cfg);
        found.push((
            (WarningKind::CpuPressure, None),
            pressure,
            "CPU pressure below half its mark",
        ));
        found.push((
            (WarningKind::CpuSteal, None),
            steal,
            "CPU steal below half its mark",
        ));
        self.services(now, s, cfg, &mut found);
        for (key, finding, gone) in found {
            self.settle(now, vm, key, finding, gone, out);
        }
        // Subjects no longer reported (unmounted, unwatched): theirs close.
        let keys: Vec<_> = self
            .open
            .keys()
            .filter(|(k, sub)| match k {
                WarningKind::PredictedFull | WarningKind::InodesPredictedFull => {
                    !self.fs.contains_key(sub.as_deref().unwrap_or(""))
                }
                WarningKind::ServiceFlapping => {
                    !self.services.contains_key(sub.as_deref().unwrap_or(""))
                }
                _ => false,
            })
            .cloned()
            .collect();
        for key in keys {
            self.settle(now, vm, key, None, "no longer reported", out);
        }
    }

    /// Close every open warning (the VM was removed).
    pub fn withdraw(&mut self, vm: &str, out: &mut Output) {
        for ((kind, subject), _) in std::mem::take(&mut self.open) {
            out.records.push(Record::WarningCleared {
                vm: vm.to_string(),
                kind,
                subject,
                why: "VM removed".into(),
            });
        }
    }

    /// Raise, update or clear one warning from what this report found.
    fn settle(
        &mut self,
        now: Millis,
        vm: &str,
        key: Key,
        finding: Finding,
        gone: &str,
        out: &mut Output,
    ) {
        match (finding, self.open.get_mut(&key)) {
            (Some((evidence, eta)), Some(w)) => {
                w.evidence = evidence;
                w.eta = eta;
            }
            (Some((evidence, eta)), None) => {
                out.records.push(Record::Warning {
                    vm: vm.to_string(),
                    kind: key.0,
                    subject: key.1.clone(),
                    evidence: evidence.clone(),
                    eta,
                });
                self.open.insert(
                    key.clone(),
                    Warning {
                        kind: key.0,
                        subject: key.1,
                        evidence,
                        eta,
                        since: now,
                    },
                );
            }
            (None, Some(_)) => {
                self.open.remove(&key);
                out.records.push(Record::WarningCleared {
                    vm: vm.to_string(),
                    kind: key.0,
                    subject: key.1,
                    why: gone.to_string(),
                });
            }
            (None, None) => {}
        }
    }

    fn filesystems(
        &mut self,
        now: Millis,
        s: &Snapshot,
        cfg: &WarnConfig,
        (space_pct, inode_pct): (u8, u8),
        found: &mut Found,
    ) {
        let fit = cfg.fit();
        let listed: Vec<&str> = s
            .filesystems
            .iter()
            .filter(|f| !f.read_only && f.size_bytes > 0)
            .map(|f| f.mount_point.as_str())
            .collect();
        self.fs.retain(|m, _| listed.contains(&m.as_str()));
        for f in s
            .filesystems
            .iter()
            .filter(|f| !f.read_only && f.size_bytes > 0)
        {
            let mount = f.mount_point.as_str().to_string();
            let t = self.fs.entry(mount.clone()).or_default();
            let used = f.size_bytes.saturating_sub(f.avail_bytes) as f64;
            let inodes = f.inodes_total.saturating_sub(f.inodes_free) as f64;
            // A delete (a drop of more than 1 %) starts the trend over.
            if t.space
                .last()
                .is_some_and(|u| u > used + f.size_bytes as f64 / 100.0)
            {
                t.space.clear();
            }
            if t.inodes
                .last()
                .is_some_and(|u| u > inodes + f.inodes_total as f64 / 100.0)
            {
                t.inodes.clear();
            }
            push_spaced(&mut t.space, now, used, fit);
            let level = |total: u64, pct: u8| total as f64 * f64::from(pct) / 100.0;
            let space = predicted(
                &t.space,
                used,
                level(f.size_bytes, space_pct),
                cfg,
                self.open
                    .contains_key(&(WarningKind::PredictedFull, Some(mount.clone()))),
                now,
            )
            .map(|(eta, rate)| {
                (
                    format!(
                        "{mount} fills at {}/h ({:.1}% used, {} MiB free): full in {}",
                        mib(rate * 3_600_000.0),
                        100.0 * used / f.size_bytes as f64,
                        f.avail_bytes >> 20,
                        words(eta - now)
                    ),
                    Some(eta),
                )
            });
            found.push((
                (WarningKind::PredictedFull, Some(mount.clone())),
                space,
                "no longer filling towards full within the horizon",
            ));
            if f.inodes_total == 0 {
                continue;
            }
            push_spaced(&mut t.inodes, now, inodes, fit);
            let key = (WarningKind::InodesPredictedFull, Some(mount.clone()));
            let open = self.open.contains_key(&key);
            let inode = predicted(
                &t.inodes,
                inodes,
                level(f.inodes_total, inode_pct),
                cfg,
                open,
                now,
            )
            .map(|(eta, rate)| {
                (
                    format!(
                        "{mount} uses {:.0} inodes/h ({} of {} free): out of inodes in {}",
                        rate * 3_600_000.0,
                        f.inodes_free,
                        f.inodes_total,
                        words(eta - now)
                    ),
                    Some(eta),
                )
            });
            found.push((
                key,
                inode,
                "no longer using inodes towards exhaustion within the horizon",
            ));
        }
    }

    fn memory(&mut self, now: Millis, s: &Snapshot, cfg: &WarnConfig) -> Finding {
        let m = s.memory.as_ref()?;
        let total = m.total_bytes.saturating_add(m.swap_total_bytes) as f64;
        let used = total - m.available_bytes.saturating_add(m.swap_free_bytes) as f64;
        // A drop of a tenth (a process gone) starts the trend over.
        if self.memory.last().is_some_and(|u| u > used + total / 10.0) {
            self.memory.clear();
        }
        push_spaced(&mut self.memory, now, used, cfg.fit());
        let open = self.open.contains_key(&(WarningKind::MemoryGrowth, None));
        // Exhausted: 2 % of memory and swap left.
        let (eta, rate) = predicted(&self.memory, used, total * 0.98, cfg, open, now)?;
        Some((
            format!(
                "memory use grows {}/h ({} MiB available, swap included): exhausted in {}",
                mib(rate * 3_600_000.0),
                (total - used) as u64 >> 20,
                words(eta - now)
            ),
            Some(eta),
        ))
    }

    fn oom(&mut self, now: Millis, s: &Snapshot, cfg: &WarnConfig) -> Finding {
        if let Some(total) = s.memory.as_ref().and_then(|m| m.oom_kills) {
            self.ooms.take(now, total);
        }
        let n = self.ooms.within(now, cfg.oom_window_ms);
        let open = self.open.contains_key(&(WarningKind::RecurringOom, None));
        // Raised at the count; held while any kill is within the window.
        if n >= cfg.oom_kills as usize || (open && n > 0) {
            Some((
                format!("{n} OOM kills in the last {}", words(cfg.oom_window_ms)),
                None,
            ))
        } else {
            None
        }
    }

    fn cpu(&mut self, now: Millis, s: &Snapshot, cfg: &WarnConfig) -> (Finding, Finding) {
        let pressure = s
            .pressure
            .as_ref()
            .and_then(|p| p.cpu.as_ref())
            .map(|c| c.some.avg60);
        let steal = s.cpu.as_ref().map(|c| u32::from(c.steal));
        let pct = |v: u32| format!("{}.{:02}%", v / 100, v % 100);
        let held = |for_ms: Option<Millis>, what: String| {
            for_ms
                .filter(|ms| *ms >= cfg.sustained_ms)
                .map(|ms| (format!("{what} for {}", words(ms)), None))
        };
        let p = self.pressure.take(now, pressure, cfg.cpu_pressure_avg60);
        let st = self.steal.take(now, steal, cfg.cpu_steal);
        (
            held(
                p,
                format!(
                    "CPU pressure (some avg60) {} (mark {})",
                    pct(pressure.unwrap_or(0)),
                    pct(cfg.cpu_pressure_avg60)
                ),
            ),
            held(
                st,
                format!(
                    "CPU steal {} (mark {})",
                    pct(steal.unwrap_or(0)),
                    pct(cfg.cpu_steal)
                ),
            ),
        )
    }

    fn services(&mut self, now: Millis, s: &Snapshot, cfg: &WarnConfig, found: &mut Found) {
        let name = |t: &WatchTarget| match t {
            WatchTarget::Process(n) | WatchTarget::Unit(n) => n.as_str().to_string(),
        };
        let listed: Vec<String> = s.watched.iter().map(|w| name(&w.target)).collect();
        self.services.retain(|n, _| listed.contains(n));
        for w in &s.watched {
            let n = name(&w.target);
            let key = (WarningKind::ServiceFlapping, Some(n.clone()));
            let open = self.open.contains_key(&key);
            let c = self.services.entry(n.clone()).or_default();
            c.take(now, u64::from(w.restarts));
            let k = c.within(now, cfg.flap_window_ms);
            let finding = (k >= cfg.service_restarts as usize || (open && k > 0)).then(|| {
                (
                    format!(
                        "{n} restarted {k} times in the last {}",
                        words(cfg.flap_window_ms)
                    ),
                    None,
                )
            });
            found.push((key, finding, "no restart within the window"));
        }
    }
}

/// Add a sample unless the last is closer than the window's share of the
/// samples kept (so the window is covered whatever the report rate).
fn push_spaced(s: &mut Series, now: Millis, v: f64, fit: Fit) {
    let gap = fit.window_ms / fit.max_samples as Millis;
    if s.newest().is_none_or(|t| now.saturating_sub(t) >= gap) {
        s.push(now, v, fit);
    }
}

/// When (host time) `now`'s value reaches `level` at the fitted rate, and
/// the rate per ms: within the horizon to raise, within twice it to hold.
fn predicted(
    s: &Series,
    now_value: f64,
    level: f64,
    cfg: &WarnConfig,
    open: bool,
    now: Millis,
) -> Option<(Millis, f64)> {
    if cfg.horizon_ms == 0 || now_value >= level {
        // Reached: a fault's turn, not a warning's.
        return None;
    }
    let fit = cfg.fit();
    let rate = s.rate(fit).filter(|r| *r > 0.0)?;
    // Noise is no trend: over its span the fit must have moved at least
    // 1 % of the level (a file or two among 512 inodes, a daemon starting
    // in a small guest, are not).
    if rate * (s.span() as f64) < level / 100.0 {
        return None;
    }
    let ms = ((level - now_value) / rate) as Millis;
    let bound = if open {
        2 * cfg.horizon_ms
    } else {
        cfg.horizon_ms
    };
    (ms <= bound).then_some((now + ms, rate))
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1u32 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_protocol::snapshot::{Cpu, Filesystem, Memory, WatchedService};

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
}
