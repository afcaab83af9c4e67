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
use vigil_protocol::snapshot::Snapshot;

use super::trend::{Fit, Series};
use super::{Millis, Output, Record};

mod findings;
#[cfg(test)]
mod tests;

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
}
