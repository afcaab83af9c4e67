//! The host's own health (pure): healthy, degraded or failed, from what
//! its kernel log tells (machine checks, memory and disk errors, OOM
//! kills, hung tasks) and from the host-level faults (the hypervisor not
//! answering, many VMs faulting at once). Each reason holds the health
//! down for a while after its last sign; hardware errors hold it until an
//! operator clears them (a DIMM that threw an uncorrected error does not
//! heal). Changes are journaled; the cluster hand-off reads the result.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Millis, VmId};

/// The host's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostHealth {
    /// Nothing wrong known.
    #[default]
    Healthy,
    /// Something wrong that VMs can live with for now.
    Degraded,
    /// The host should not run VMs (the cluster moves them).
    Failed,
}

impl HostHealth {
    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            HostHealth::Healthy => "healthy",
            HostHealth::Degraded => "degraded",
            HostHealth::Failed => "failed",
        }
    }

    /// 0, 1, 2 (the metric).
    pub fn level(self) -> i64 {
        self as i64
    }
}

impl std::fmt::Display for HostHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the host's kernel log told about the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSignal {
    /// A machine check or firmware hardware-error report.
    MachineCheck {
        /// Not corrected (or fatal).
        uncorrected: bool,
    },
    /// EDAC memory errors.
    MemoryErrors {
        /// Uncorrected.
        uncorrected: bool,
        /// How many.
        count: u64,
    },
    /// A block I/O error on a host device.
    DiskError {
        /// The device (`sdb`, `nvme0n1`).
        dev: String,
        /// The VMs with disks on it.
        vms: Vec<VmId>,
    },
    /// The host's OOM killer killed a process.
    OomKill,
    /// A task blocked in the kernel for long.
    HungTask,
}

/// Corrected memory errors within [`STORM_WINDOW_MS`] that make a storm.
pub const CORRECTED_STORM: u64 = 100;
/// The window corrected errors are counted over.
pub const STORM_WINDOW_MS: Millis = 3_600_000;
/// How long a disk error holds the health down after the last one.
const DISK_HOLD_MS: Millis = 3_600_000;
/// How long an OOM kill or a hung task does.
const PRESSURE_HOLD_MS: Millis = 600_000;
/// Memory pressure (PSI `full`, over a minute, % of time) that degrades
/// the host, and below which it no longer does.
pub const MEMORY_PRESSURE: (f64, f64) = (10.0, 5.0);
/// The same for I/O.
pub const IO_PRESSURE: (f64, f64) = (20.0, 10.0);

/// Why the health is down, by reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReason {
    /// How far down.
    pub health: HostHealth,
    /// Since when.
    pub since: Millis,
    /// Until when, if it passes by itself (none: until cleared or the
    /// host-level fault ends).
    pub until: Option<Millis>,
    /// The last evidence.
    pub why: String,
}

/// I/O errors seen on one host device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskErrors {
    /// The first, and the last.
    pub since: Millis,
    /// The last.
    pub last: Millis,
    /// How many (those told; a storm is cut to a rate before).
    pub count: u64,
    /// The VMs with disks on the device.
    pub vms: Vec<VmId>,
    /// The last line.
    pub line: String,
}

/// Devices with I/O errors remembered, at most (a failing controller
/// names many).
const MAX_DISKS: usize = 64;

/// The host's health and its reasons.
#[derive(Debug, Default)]
pub struct HostState {
    reasons: BTreeMap<&'static str, HostReason>,
    disks: BTreeMap<String, DiskErrors>,
    corrected: VecDeque<(Millis, u64)>,
    health: HostHealth,
}

impl HostState {
    /// The health now.
    pub fn health(&self) -> HostHealth {
        self.health
    }

    /// The reasons holding it down, by name.
    pub fn reasons(&self) -> impl Iterator<Item = (&'static str, &HostReason)> {
        self.reasons.iter().map(|(k, r)| (*k, r))
    }

    /// Take a signal from the host's kernel log.
    pub fn signal(&mut self, now: Millis, s: &HostSignal, line: &str) {
        let mut put = |name: &'static str, health: HostHealth, hold: Option<Millis>| {
            let since = self.reasons.get(name).map_or(now, |r| r.since);
            let r = HostReason {
                health,
                since,
                until: hold.map(|h| now + h),
                why: line.to_string(),
            };
            self.reasons.insert(name, r);
        };
        match s {
            HostSignal::MachineCheck { uncorrected: true }
            | HostSignal::MemoryErrors {
                uncorrected: true, ..
            } => put("hardware", HostHealth::Failed, None),
            HostSignal::MachineCheck { uncorrected: false } => self.corrected(now, 1, line),
            HostSignal::MemoryErrors { count, .. } => self.corrected(now, *count, line),
            HostSignal::DiskError { dev, vms } => {
                put("disk-errors", HostHealth::Degraded, Some(DISK_HOLD_MS));
                self.disk_error(now, dev, vms, line);
            }
            HostSignal::OomKill => put("oom", HostHealth::Degraded, Some(PRESSURE_HOLD_MS)),
            HostSignal::HungTask => put("hung-tasks", HostHealth::Degraded, Some(PRESSURE_HOLD_MS)),
        }
    }

    fn disk_error(&mut self, now: Millis, dev: &str, vms: &[VmId], line: &str) {
        if !self.disks.contains_key(dev) && self.disks.len() >= MAX_DISKS {
            return; // the reason holds the health down all the same
        }
        let d = self
            .disks
            .entry(dev.to_string())
            .or_insert_with(|| DiskErrors {
                since: now,
                last: now,
                count: 0,
                vms: Vec::new(),
                line: String::new(),
            });
        d.last = now;
        d.count += 1;
        d.vms = vms.to_vec();
        d.line = line.to_string();
    }

    /// Devices with I/O errors within the hold, by name.
    pub fn disk_errors(&self) -> impl Iterator<Item = (&str, &DiskErrors)> {
        self.disks.iter().map(|(k, d)| (k.as_str(), d))
    }

    fn corrected(&mut self, now: Millis, count: u64, line: &str) {
        self.corrected.push_back((now, count.max(1)));
        while self
            .corrected
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) >= STORM_WINDOW_MS)
        {
            self.corrected.pop_front();
        }
        let n: u64 = self.corrected.iter().map(|(_, c)| c).sum();
        if n >= CORRECTED_STORM {
            let since = self
                .reasons
                .get("corrected-errors")
                .map_or(now, |r| r.since);
            self.reasons.insert(
                "corrected-errors",
                HostReason {
                    health: HostHealth::Degraded,
                    since,
                    until: Some(now + STORM_WINDOW_MS),
                    why: format!("{n} corrected hardware errors within an hour; last: {line}"),
                },
            );
        }
    }

    /// A host-level condition (the hypervisor not answering, the
    /// host-wide breaker) holds the health down while `on`.
    pub fn condition(&mut self, now: Millis, name: &'static str, on: Option<(HostHealth, String)>) {
        match on {
            Some((health, why)) => {
                let since = self.reasons.get(name).map_or(now, |r| r.since);
                self.reasons.insert(
                    name,
                    HostReason {
                        health,
                        since,
                        until: None,
                        why,
                    },
                );
            }
            None => {
                self.reasons.remove(name);
            }
        }
    }

    /// The host's memory and I/O pressure (PSI `full` over the last
    /// minute, % of time; none where the kernel has no PSI): sustained
    /// stalls degrade the host, with hysteresis.
    pub fn pressure(&mut self, now: Millis, memory: Option<f64>, io: Option<f64>) {
        let on = self.reasons.contains_key("pressure");
        let over = |v: Option<f64>, (high, low): (f64, f64)| {
            v.is_some_and(|v| if on { v >= low } else { v >= high })
        };
        let (m, i) = (over(memory, MEMORY_PRESSURE), over(io, IO_PRESSURE));
        let why = match (m, i) {
            (false, false) => None,
            _ => Some(format!(
                "tasks stalled for memory {:.1}% and for I/O {:.1}% of the last minute",
                memory.unwrap_or(0.0),
                io.unwrap_or(0.0)
            )),
        };
        self.condition(now, "pressure", why.map(|w| (HostHealth::Degraded, w)));
    }

    /// An operator says the hardware and disks were seen to (replaced,
    /// checked): those reasons go.
    pub fn clear(&mut self) {
        self.reasons.retain(|k, _| {
            !matches!(
                *k,
                "hardware" | "corrected-errors" | "disk-errors" | "restored"
            )
        });
        self.corrected.clear();
        self.disks.clear();
    }

    /// Go on from the health a previous run journaled: a failed host stays
    /// failed until cleared (its hardware did not heal over a restart),
    /// a degraded one for the longest hold.
    pub fn restore(&mut self, now: Millis, health: HostHealth, why: &str) {
        if health == HostHealth::Healthy {
            return;
        }
        let until = (health != HostHealth::Failed).then_some(now + DISK_HOLD_MS);
        self.reasons.insert(
            "restored",
            HostReason {
                health,
                since: now,
                until,
                why: format!("before vigild restarted: {why}"),
            },
        );
        self.health = health;
    }

    /// Drop reasons (and devices' errors) whose time passed.
    pub fn expire(&mut self, now: Millis) {
        self.reasons
            .retain(|_, r| r.until.is_none_or(|until| now < until));
        self.disks
            .retain(|_, d| now.saturating_sub(d.last) < DISK_HOLD_MS);
    }

    /// Drop reasons whose time passed; the new health, with why, when it
    /// changed.
    pub fn settle(&mut self, now: Millis) -> Option<(HostHealth, HostHealth, String)> {
        self.expire(now);
        let health = self
            .reasons
            .values()
            .map(|r| r.health)
            .max()
            .unwrap_or_default();
        if health == self.health {
            return None;
        }
        let from = std::mem::replace(&mut self.health, health);
        let why = if self.reasons.is_empty() {
            "nothing wrong known any more".to_string()
        } else {
            self.reasons
                .iter()
                .map(|(k, r)| format!("{k}: {}", r.why))
                .collect::<Vec<_>>()
                .join("; ")
        };
        Some((from, health, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncorrected_error_fails_the_host_until_cleared() {
        let mut h = HostState::default();
        h.signal(
            10,
            &HostSignal::MemoryErrors {
                uncorrected: true,
                count: 1,
            },
            "EDAC MC0: 1 UE",
        );
        let (from, to, why) = h.settle(10).unwrap();
        assert_eq!((from, to), (HostHealth::Healthy, HostHealth::Failed));
        assert!(why.contains("hardware: EDAC MC0: 1 UE"), "{why}");
        assert_eq!(h.settle(100 * STORM_WINDOW_MS), None, "no time heals it");
        h.clear();
        assert_eq!(
            h.settle(100 * STORM_WINDOW_MS).map(|c| c.1),
            Some(HostHealth::Healthy)
        );
    }

    #[test]
    fn corrected_errors_degrade_only_as_a_storm_and_it_passes() {
        let mut h = HostState::default();
        let ce = |n| HostSignal::MemoryErrors {
            uncorrected: false,
            count: n,
        };
        h.signal(0, &ce(60), "EDAC MC0: 60 CE");
        assert_eq!(h.settle(0), None, "60 corrected errors are not a storm");
        h.signal(1_000, &ce(40), "EDAC MC0: 40 CE");
        assert_eq!(h.settle(1_000).map(|c| c.1), Some(HostHealth::Degraded));
        assert_eq!(
            h.settle(1_000 + STORM_WINDOW_MS).map(|c| c.1),
            Some(HostHealth::Healthy)
        );
        // Spread thinner than the window: never a storm.
        for i in 0..200 {
            h.signal(i * STORM_WINDOW_MS / 50, &ce(1), "EDAC MC0: 1 CE");
        }
        assert_eq!(h.health(), HostHealth::Healthy);
    }

    #[test]
    fn a_failed_host_stays_failed_over_a_restart_until_cleared() {
        let mut h = HostState::default();
        h.restore(5, HostHealth::Failed, "hardware: EDAC MC0: 1 UE");
        assert_eq!(h.health(), HostHealth::Failed);
        assert_eq!(h.settle(10 * DISK_HOLD_MS), None);
        h.clear();
        assert_eq!(
            h.settle(10 * DISK_HOLD_MS).map(|c| c.1),
            Some(HostHealth::Healthy)
        );
    }

    #[test]
    fn the_worst_reason_wins_and_conditions_hold_while_on() {
        let mut h = HostState::default();
        let sdb = HostSignal::DiskError {
            dev: "sdb".into(),
            vms: vec!["web".into()],
        };
        h.signal(0, &sdb, "I/O error, dev sdb");
        h.condition(
            0,
            "host-wide",
            Some((HostHealth::Failed, "5 of 6 VMs".into())),
        );
        assert_eq!(h.settle(0).map(|c| c.1), Some(HostHealth::Failed));
        h.condition(10, "host-wide", None);
        assert_eq!(h.settle(10).map(|c| c.1), Some(HostHealth::Degraded));
        assert_eq!(
            h.reasons().map(|(k, _)| k).collect::<Vec<_>>(),
            ["disk-errors"]
        );
        assert_eq!(
            h.settle(DISK_HOLD_MS).map(|c| c.1),
            Some(HostHealth::Healthy)
        );
    }

    #[test]
    fn sustained_pressure_degrades_with_hysteresis() {
        let mut h = HostState::default();
        h.pressure(0, Some(8.0), Some(0.0));
        assert_eq!(h.settle(0), None, "under the mark");
        h.pressure(1, Some(12.0), None);
        assert_eq!(h.settle(1).map(|c| c.1), Some(HostHealth::Degraded));
        h.pressure(2, Some(6.0), Some(1.0));
        assert_eq!(h.settle(2), None, "held until below the lower mark");
        h.pressure(3, Some(1.0), Some(25.0));
        assert_eq!(h.settle(3), None, "I/O now");
        h.pressure(4, Some(1.0), Some(2.0));
        assert_eq!(h.settle(4).map(|c| c.1), Some(HostHealth::Healthy));
        h.pressure(5, None, None);
        assert_eq!(h.settle(5), None, "no PSI: nothing known");
    }

    /// A storm from the host's kernel log (a failing DIMM, a dying disk)
    /// journals one change of health, not one record per line.
    #[test]
    fn a_flood_of_host_errors_is_one_change_of_health() {
        let mut e = super::super::Engine::new(super::super::EngineConfig::default());
        let mut records = Vec::new();
        for i in 0..10_000 {
            let ce = HostSignal::MemoryErrors {
                uncorrected: false,
                count: 1,
            };
            records.extend(e.host_signal(i, &ce, "EDAC MC0: 1 CE").records);
            let sdb = HostSignal::DiskError {
                dev: "sdb".into(),
                vms: vec![],
            };
            records.extend(e.host_signal(i, &sdb, "I/O error, dev sdb").records);
        }
        // One change of health, and one host-level fault (with its alert)
        // per kind and device: host-disk-errors on sdb (the corrected
        // errors are a storm from the 100th on: host-hardware).
        use super::super::Record;
        let kinds: Vec<&str> = records
            .iter()
            .map(|r| match r {
                Record::Fault { kind, .. } => kind.name(),
                Record::Intent { .. } => "intent",
                Record::HostHealth { .. } => "host-health",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "host-disk-errors",
                "intent",
                "host-health",
                "host-hardware",
                "intent"
            ],
            "{records:?}"
        );
        assert_eq!(e.host().health(), HostHealth::Degraded);
    }
}
