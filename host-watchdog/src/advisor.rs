//! The advisor (pure): each VM's sizing and settings from what it went
//! through — its journal over a window, its open warnings, its last report
//! and its learned heartbeat spread. Every recommendation carries its
//! evidence and the exact change; those libvirt can make (memory, vCPUs)
//! carry a [`Resize`] that `vigilctl advise --apply` makes. Nothing is
//! recommended from less evidence than `min_evidence` events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_protocol::snapshot::Snapshot;

use crate::backend::Sizing;
use crate::engine::trend::words;
use crate::engine::warn::{Warning, WarningKind};
use crate::engine::{ActionKind, Closure, FaultKind, Millis, Record, Resize};

/// Advisor settings (`[advisor]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvisorConfig {
    /// The least events (faults, warnings, actions) a recommendation is
    /// made from.
    pub min_evidence: u32,
    /// How far back the journal is read.
    pub window_ms: Millis,
    /// Memory grows by this share per recommendation (percent).
    pub memory_step_percent: u32,
}

impl Default for AdvisorConfig {
    fn default() -> Self {
        AdvisorConfig {
            min_evidence: 2,
            window_ms: 7 * 24 * 3_600_000,
            memory_step_percent: 50,
        }
    }
}

impl AdvisorConfig {
    /// Check ranges; the message names the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_evidence == 0 {
            return Err("advisor.min_evidence must be > 0".into());
        }
        if self.window_ms == 0 {
            return Err("advisor.window_ms must be > 0".into());
        }
        if !(10..=400).contains(&self.memory_step_percent) {
            return Err("advisor.memory_step_percent must be 10..=400".into());
        }
        Ok(())
    }
}

/// A VM's learned heartbeat arrivals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Gaps learned from.
    pub samples: u32,
    /// The silence the VM is suspect after now (adaptive, clamped).
    pub bound_ms: Millis,
    /// What the spread alone gives (mean + k·sd), unclamped.
    pub learned_ms: Millis,
    /// The configured floor and ceiling.
    pub min_timeout_ms: Millis,
    /// The ceiling.
    pub timeout_ms: Millis,
}

/// What the advisor reads of one VM.
pub struct Facts<'a> {
    /// Domain name.
    pub vm: &'a str,
    /// Its size now.
    pub sizing: Sizing,
    /// Its journal records within the window, in order.
    pub history: &'a [(Millis, Record)],
    /// Its open warnings.
    pub warnings: &'a [Warning],
    /// Its agent's last report.
    pub last: Option<&'a Snapshot>,
    /// Its heartbeat arrivals.
    pub heartbeat: Option<Spread>,
}

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    /// What it is about: `memory`, `vcpus` (applicable), `disk:/data`,
    /// `heartbeat`, `ladder:KIND`, `steal`.
    pub item: String,
    /// In a line.
    pub summary: String,
    /// What it rests on.
    pub evidence: Vec<String>,
    /// The exact change.
    pub change: String,
    /// What `--apply` does, where it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<Resize>,
}

/// Round `kib` up to a whole 128 MiB.
fn round_up_kib(kib: u64) -> u64 {
    const STEP: u64 = 128 * 1024;
    kib.div_ceil(STEP) * STEP
}

/// Every recommendation for one VM.
pub fn advise(f: &Facts<'_>, cfg: &AdvisorConfig) -> Vec<Advice> {
    let mut out = Vec::new();
    memory(f, cfg, &mut out);
    cpu(f, cfg, &mut out);
    disks(f, &mut out);
    heartbeat(f, cfg, &mut out);
    ladders(f, cfg, &mut out);
    out
}

/// Warnings of `kind` raised in the window.
fn raised(f: &Facts<'_>, kind: WarningKind) -> usize {
    f.history
        .iter()
        .filter(|(_, r)| matches!(r, Record::Warning { kind: k, .. } if *k == kind))
        .count()
}

fn memory(f: &Facts<'_>, cfg: &AdvisorConfig, out: &mut Vec<Advice>) {
    let faults = f
        .history
        .iter()
        .filter(|(_, r)| {
            matches!(r, Record::Fault { kind, .. } if *kind == FaultKind::MemoryExhaustion)
        })
        .count();
    let grown = f
        .history
        .iter()
        .filter(|(_, r)| {
            matches!(r, Record::Intent { action, .. } if action.kind == ActionKind::AddMemory)
        })
        .count();
    let warned = raised(f, WarningKind::RecurringOom) + raised(f, WarningKind::MemoryGrowth);
    let kills = f
        .last
        .and_then(|s| s.memory.as_ref())
        .and_then(|m| m.oom_kills)
        .unwrap_or(0);
    let n = faults + grown + warned;
    if n < cfg.min_evidence as usize {
        return;
    }
    let s = f.sizing;
    let to = round_up_kib(s.memory_kib * u64::from(100 + cfg.memory_step_percent) / 100);
    let mut evidence = vec![format!(
        "{faults} memory-exhaustion faults (OOM kills, memory pressure), {grown} add-memory actions, {warned} memory warnings in the last {}",
        words(cfg.window_ms)
    )];
    if kills > 0 {
        evidence.push(format!("{kills} OOM kills since the guest's boot"));
    }
    if s.current_kib >= s.memory_kib {
        evidence.push(format!(
            "the balloon is at the maximum ({} MiB): add-memory has nothing left to give",
            s.memory_kib / 1024
        ));
    }
    out.push(Advice {
        item: "memory".into(),
        summary: format!(
            "raise memory from {} MiB to {} MiB",
            s.memory_kib / 1024,
            to / 1024
        ),
        evidence,
        change: format!(
            "virsh setmaxmem {vm} {to}KiB --config; virsh setmem {vm} {to}KiB --config (and --live up to the running maximum)",
            vm = f.vm
        ),
        resize: Some(Resize {
            memory_kib: Some((s.memory_kib, to)),
            vcpus: None,
            live: false,
        }),
    });
}

fn cpu(f: &Facts<'_>, cfg: &AdvisorConfig, out: &mut Vec<Advice>) {
    let s = f.sizing;
    let pressure = raised(f, WarningKind::CpuPressure)
        + usize::from(
            f.warnings
                .iter()
                .any(|w| w.kind == WarningKind::CpuPressure),
        );
    let load = f.last.and_then(|r| r.cpu.as_ref()).map(|c| {
        (
            f64::from(c.load5) / 100.0,
            u32::from(c.cpus.max(1)),
            c.steal,
        )
    });
    if pressure >= cfg.min_evidence as usize {
        if s.vcpus >= s.host_cpus {
            out.push(Advice {
                item: "vcpus".into(),
                summary: format!(
                    "CPU-starved, but it has the host's {} CPUs already",
                    s.host_cpus
                ),
                evidence: vec![format!("{pressure} CPU-pressure warnings")],
                change: "move it to a larger host, or take load off it".into(),
                resize: None,
            });
        } else {
            let mut evidence = vec![format!(
                "{pressure} CPU-pressure warnings in the last {}",
                words(cfg.window_ms)
            )];
            if let Some((l, cpus, _)) = load {
                evidence.push(format!("5-minute load {l:.2} on {cpus} CPUs"));
            }
            let to = s.vcpus + 1;
            out.push(Advice {
                item: "vcpus".into(),
                summary: format!("add a vCPU: {} to {to}", s.vcpus),
                evidence,
                change: format!(
                    "virsh setvcpus {vm} {to} --config --maximum; virsh setvcpus {vm} {to} --config (--live where its maximum allows)",
                    vm = f.vm
                ),
                resize: Some(Resize {
                    memory_kib: None,
                    vcpus: Some((s.vcpus, to)),
                    live: false,
                }),
            });
        }
    }
    let steal = raised(f, WarningKind::CpuSteal);
    if steal >= cfg.min_evidence as usize {
        out.push(Advice {
            item: "steal".into(),
            summary: "the host takes its CPU (steal): more vCPUs would not help".into(),
            evidence: vec![format!(
                "{steal} CPU-steal warnings in the last {}{}",
                words(cfg.window_ms),
                load.map(|(_, _, st)| format!("; steal {}.{:02}% now", st / 100, st % 100))
                    .unwrap_or_default()
            )],
            change:
                "lower the host's CPU overcommit (fewer vCPUs across its VMs), pin it, or move it"
                    .into(),
            resize: None,
        });
    }
}

fn disks(f: &Facts<'_>, out: &mut Vec<Advice>) {
    for w in f
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::PredictedFull)
    {
        let Some(mount) = w.subject.as_deref() else {
            continue;
        };
        let fs = f.last.and_then(|s| {
            s.filesystems
                .iter()
                .find(|x| x.mount_point.as_str() == mount)
        });
        let grow = fs.map_or(String::new(), |x| {
            format!(
                " to at least {} GiB",
                (x.size_bytes + x.size_bytes / 2).div_ceil(1 << 30)
            )
        });
        out.push(Advice {
            item: format!("disk:{mount}"),
            summary: format!("grow the disk under {mount}{grow}"),
            evidence: vec![w.evidence.clone()],
            change: format!(
                "virsh blockresize {} <disk> <size>, then grow the filesystem in the guest (resize2fs / xfs_growfs {mount}); or find what fills it",
                f.vm
            ),
            resize: None,
        });
    }
}

fn heartbeat(f: &Facts<'_>, cfg: &AdvisorConfig, out: &mut Vec<Advice>) {
    let Some(h) = f.heartbeat.filter(|h| h.samples >= 100) else {
        return;
    };
    // Agent-down faults that cleared by themselves (the agent was only
    // late): the bound is too tight for this VM's arrivals.
    let late = f
        .history
        .iter()
        .filter(|(_, r)| {
            matches!(
                r,
                Record::Closed {
                    kind: FaultKind::AgentDown,
                    how: Closure::Cleared,
                    ..
                }
            )
        })
        .count();
    if h.learned_ms > h.timeout_ms || late >= cfg.min_evidence as usize {
        let to = (h.learned_ms.max(h.timeout_ms) * 3 / 2).div_ceil(500) * 500;
        out.push(Advice {
            item: "heartbeat".into(),
            summary: format!("widen the heartbeat bound: {} ms to {to} ms", h.timeout_ms),
            evidence: vec![format!(
                "its arrivals spread to {} ms (learned from {} gaps) against a {} ms ceiling (its bound now {} ms); {late} agent-down faults cleared by themselves",
                h.learned_ms, h.samples, h.timeout_ms, h.bound_ms
            )],
            change: format!("[engine] heartbeat_timeout_ms = {to} in vigild.toml (host-wide)"),
            resize: None,
        });
    } else if h.learned_ms * 3 < h.min_timeout_ms {
        // Three times the learned bound: room for a busy hour the
        // learning did not see.
        let to = (h.learned_ms * 3).div_ceil(100) * 100;
        out.push(Advice {
            item: "heartbeat".into(),
            summary: format!(
                "its heartbeats are steady: a {to} ms floor would detect silence {} ms sooner",
                h.min_timeout_ms - to
            ),
            evidence: vec![format!(
                "learned bound {} ms from {} gaps, held up by the {} ms floor",
                h.learned_ms, h.samples, h.min_timeout_ms
            )],
            change: format!("[engine] min_timeout_ms = {to} in vigild.toml (host-wide)"),
            resize: None,
        });
    }
}

/// One fault's course: its kind, the rungs tried (rung, action), and
/// whether it recovered.
type Course = (FaultKind, Vec<(usize, String)>, bool);

/// Faults whose first rung never recovered them while a later one did.
fn ladders(f: &Facts<'_>, cfg: &AdvisorConfig, out: &mut Vec<Advice>) {
    // Per fault: kind, the rung actions tried, and whether it recovered.
    let mut faults: BTreeMap<u64, Course> = BTreeMap::new();
    for (_, r) in f.history {
        match r {
            Record::Fault { id, kind, .. } => {
                faults.insert(*id, (*kind, Vec::new(), false));
            }
            Record::Intent {
                action,
                rung: Some(rung),
                ..
            } => {
                if let Some(x) = faults.get_mut(&action.fault) {
                    x.1.push((*rung, action.kind.name().to_string()));
                }
            }
            Record::Closed { id, how, .. } => {
                if let Some(x) = faults.get_mut(id) {
                    x.2 = *how == Closure::Recovered;
                }
            }
            _ => {}
        }
    }
    // kind -> (first rung action, rung that recovered) -> count
    let mut skipped: BTreeMap<(FaultKind, String, String), usize> = BTreeMap::new();
    for (kind, rungs, recovered) in faults.values() {
        let (Some(first), Some(last)) = (rungs.first(), rungs.last()) else {
            continue;
        };
        if *recovered && first.0 == 0 && last.0 > 0 {
            *skipped
                .entry((*kind, first.1.clone(), last.1.clone()))
                .or_default() += 1;
        }
    }
    for ((kind, first, worked), n) in skipped {
        if n < cfg.min_evidence as usize {
            continue;
        }
        out.push(Advice {
            item: format!("ladder:{kind}"),
            summary: format!("{kind} keeps needing {worked}: start its ladder there"),
            evidence: vec![format!(
                "{n} {kind} faults in the last {}: {first} did not recover them, {worked} did",
                words(cfg.window_ms)
            )],
            change: format!(
                "[engine.ladders.{kind}]: drop the {first} rung, or a [[vm]] override for {}",
                f.vm
            ),
            resize: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Action, Layer};

    fn sizing() -> Sizing {
        Sizing {
            memory_kib: 262_144,
            current_kib: 262_144,
            vcpus: 1,
            live_max_kib: Some(262_144),
            live_max_vcpus: Some(1),
            host_cpus: 2,
        }
    }

    fn fault(id: u64, kind: FaultKind) -> Record {
        Record::Fault {
            vm: "web".into(),
            id,
            kind,
            layer: Layer::GuestResources,
            evidence: vec![],
            subject: None,
            onset: 0,
            onset_window_ms: 0,
            detected: 0,
            located: 0,
        }
    }

    fn facts<'a>(history: &'a [(Millis, Record)], warnings: &'a [Warning]) -> Facts<'a> {
        Facts {
            vm: "web",
            sizing: sizing(),
            history,
            warnings,
            last: None,
            heartbeat: None,
        }
    }

    #[test]
    fn repeated_oom_faults_raise_memory_and_one_does_not() {
        let cfg = AdvisorConfig::default();
        let one = vec![(1, fault(1, FaultKind::MemoryExhaustion))];
        assert!(
            advise(&facts(&one, &[]), &cfg).is_empty(),
            "below min_evidence"
        );
        let two = vec![
            (1, fault(1, FaultKind::MemoryExhaustion)),
            (2, fault(2, FaultKind::MemoryExhaustion)),
        ];
        let a = advise(&facts(&two, &[]), &cfg);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].item, "memory");
        // 256 MiB + 50 % = 384 MiB, a whole 128 MiB.
        assert_eq!(
            a[0].resize.as_ref().unwrap().memory_kib,
            Some((262_144, 393_216))
        );
        assert!(a[0]
            .evidence
            .iter()
            .any(|e| e.contains("balloon is at the maximum")));
    }

    #[test]
    fn a_ladder_whose_first_rung_never_works_is_named() {
        let cfg = AdvisorConfig::default();
        let mut h = Vec::new();
        for id in 1..=2 {
            h.push((id, fault(id, FaultKind::ServiceDown)));
            for (rung, kind) in [
                (0, ActionKind::RestartService("web".into())),
                (1, ActionKind::AgentReboot),
            ] {
                h.push((
                    id,
                    Record::Intent {
                        vm: "web".into(),
                        action: Action {
                            id: id * 10 + rung as u64,
                            vm: "web".into(),
                            kind,
                            fault: id,
                            memory_kib: None,
                        },
                        rung: Some(rung),
                        attempt: 1,
                    },
                ));
            }
            h.push((
                id,
                Record::Closed {
                    vm: "web".into(),
                    id,
                    kind: FaultKind::ServiceDown,
                    how: Closure::Recovered,
                    at: 0,
                    detect_ms: 0,
                    locate_ms: 0,
                    repair_ms: 0,
                    flaps: 0,
                },
            ));
        }
        let a = advise(&facts(&h, &[]), &cfg);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].item, "ladder:service-down");
        assert!(a[0].summary.contains("agent-reboot"), "{a:?}");
        assert!(a[0].resize.is_none());
    }

    #[test]
    fn cpu_pressure_adds_a_vcpu_up_to_the_hosts() {
        let cfg = AdvisorConfig::default();
        let w = |k| Record::Warning {
            vm: "web".into(),
            kind: k,
            subject: None,
            evidence: String::new(),
            eta: None,
        };
        let h = vec![
            (1, w(WarningKind::CpuPressure)),
            (2, w(WarningKind::CpuPressure)),
        ];
        let a = advise(&facts(&h, &[]), &cfg);
        assert_eq!(a[0].resize.as_ref().unwrap().vcpus, Some((1, 2)));
        let mut f = facts(&h, &[]);
        f.sizing.vcpus = 2;
        let a = advise(&f, &cfg);
        assert!(a[0].resize.is_none(), "no more than the host has: {a:?}");
    }

    #[test]
    fn heartbeats_wider_than_the_ceiling_widen_it() {
        let cfg = AdvisorConfig::default();
        let mut f = facts(&[], &[]);
        f.heartbeat = Some(Spread {
            samples: 500,
            bound_ms: 2_500,
            learned_ms: 3_100,
            min_timeout_ms: 1_500,
            timeout_ms: 2_500,
        });
        let a = advise(&f, &cfg);
        assert_eq!(a[0].item, "heartbeat");
        assert!(a[0].change.contains("heartbeat_timeout_ms = 5000"), "{a:?}");
        f.heartbeat = Some(Spread {
            samples: 50,
            ..f.heartbeat.unwrap()
        });
        assert!(advise(&f, &cfg).is_empty(), "too few gaps to say");
    }
}
