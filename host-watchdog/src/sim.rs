//! Scenario simulator: scripted observations on a virtual clock, run
//! through the engine, rendered as a decision log (compared with goldens).
//!
//! A scenario is a text file, one directive per line (`#` comments):
//!
//! ```text
//! vm NAME [agent|noagent] [memory=CUR/MAX]     monitor a VM (KiB)
//! at T EVENT                                   one event at T ms
//! every P EVENT from T [until U]               repeated events
//! on ACTION VM +D EVENT                        when the engine emits ACTION
//! on ACTION VM +D every P EVENT [for F]          for VM, schedule relative to it
//! fail ACTION VM [N]                           the next N such actions fail
//! liveness VM refused|accepted|timed-out|unsupported   probe answer from now on
//! end T                                        stop at T
//! ```
//!
//! Events: `domain VM STATE` (running, paused:REASON, shutoff:REASON,
//! crashed[:panicked]), `hello VM boot=ID`, `heartbeat VM`, `report VM
//! [service=NAME:up|down] [disk=MOUNT:PCT] [ro=MOUNT] [kernel=KIND]
//! [psi=PCT]`, `notice VM maintenance=SECS|maintenance-end`, `bye VM
//! shutdown|reboot|stopped`, `closed VM`, `rebooted VM`, `stats VM
//! cpu=+MS block=+N net=+N`, `operator VM maintenance-on [for=MS] |
//! maintenance-off | release`, `stop heartbeat|stats|all VM`, `disarm`,
//! `arm`, `removed VM`, `liveness VM RESULT`.
//!
//! The executor answers every action after 100 ms (`ok` unless failed by a
//! `fail` line); a liveness probe is answered after 20 ms with the VM's
//! current `liveness` setting (default `refused`). The clock ticks every
//! 100 ms.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use vigil_protocol::snapshot::*;
use vigil_protocol::{ByeReason, Notice};

use crate::engine::*;
use crate::metrics;

/// Tick resolution of the virtual clock.
pub const TICK_MS: Millis = 100;
/// How long the simulated executor takes per action.
const ACTION_MS: Millis = 100;
/// How long a simulated liveness probe takes.
const PROBE_MS: Millis = 20;

/// A scenario that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One scripted event (before it is turned into engine input).
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Input(VmId, Input),
    Global(Global),
    Stop(String, VmId),
    Liveness(VmId, ProbeResult),
    /// Stats with increments applied to the VM's running counters.
    Stats(VmId, DomainStats),
}

#[derive(Debug, Clone, PartialEq)]
struct Stream {
    period: Millis,
    until: Millis,
    event: Event,
}

#[derive(Debug, Clone)]
struct Reaction {
    action: String,
    vm: VmId,
    delay: Millis,
    every: Option<(Millis, Millis)>,
    event: Event,
}

/// A parsed scenario.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    vms: Vec<(VmId, bool, (u64, u64))>,
    timeline: Vec<(Millis, usize, Event)>,
    streams: Vec<(Millis, Stream)>,
    reactions: Vec<Reaction>,
    failures: Vec<(String, VmId, u32)>,
    end: Millis,
}

fn num(s: &str, what: &str) -> Result<u64, String> {
    s.trim_start_matches('+')
        .parse()
        .map_err(|_| format!("bad {what} {s:?}"))
}

fn probe_result(s: &str) -> Result<ProbeResult, String> {
    Ok(match s {
        "refused" => ProbeResult::Refused,
        "accepted" => ProbeResult::Accepted,
        "timed-out" => ProbeResult::TimedOut,
        "unsupported" => ProbeResult::Unsupported,
        _ => return Err(format!("bad probe result {s:?}")),
    })
}

fn domain_state(s: &str) -> Result<DomainState, String> {
    let (a, b) = s.split_once(':').unwrap_or((s, ""));
    Ok(match (a, b) {
        ("running", "") => DomainState::Running,
        ("crashed", "") => DomainState::Crashed { panicked: false },
        ("crashed", "panicked") => DomainState::Crashed { panicked: true },
        ("paused", r) => DomainState::Paused(match r {
            "user" => PauseReason::User,
            "migration" => PauseReason::Migration,
            "save" => PauseReason::Save,
            "snapshot" => PauseReason::Snapshot,
            "io-error" => PauseReason::IoError,
            "watchdog" => PauseReason::Watchdog,
            "panicked" => PauseReason::Panicked,
            "" | "other" => PauseReason::Other,
            _ => return Err(format!("bad pause reason {r:?}")),
        }),
        ("shutoff", r) => DomainState::ShutOff(match r {
            "shutdown" => StopReason::Shutdown,
            "destroyed" => StopReason::Destroyed,
            "crashed" => StopReason::Crashed,
            "migrated" => StopReason::Migrated,
            "saved" => StopReason::Saved,
            "failed" => StopReason::Failed,
            "" | "other" => StopReason::Other,
            _ => return Err(format!("bad stop reason {r:?}")),
        }),
        _ => return Err(format!("bad domain state {s:?}")),
    })
}

fn kernel_kind(s: &str) -> Result<KernelEventKind, String> {
    Ok(match s {
        "panic" => KernelEventKind::Panic,
        "oops" => KernelEventKind::Oops,
        "hung-task" => KernelEventKind::HungTask,
        "soft-lockup" => KernelEventKind::SoftLockup,
        "rcu-stall" => KernelEventKind::RcuStall,
        "oom" => KernelEventKind::OomKill,
        "io-error" => KernelEventKind::IoError,
        "fs-error" => KernelEventKind::FsError,
        "remount-ro" => KernelEventKind::RemountReadOnly,
        "mce" => KernelEventKind::MachineCheck,
        _ => return Err(format!("bad kernel event {s:?}")),
    })
}

fn report(args: &[&str]) -> Result<Snapshot, String> {
    let mut s = Snapshot::default();
    for a in args {
        let (k, v) = a.split_once('=').ok_or(format!("bad report field {a:?}"))?;
        match k {
            "service" => {
                let (name, st) = v.split_once(':').ok_or(format!("bad service {v:?}"))?;
                let running = match st {
                    "up" => true,
                    "down" => false,
                    _ => return Err(format!("bad service state {st:?}")),
                };
                s.watched.push(WatchedService {
                    target: WatchTarget::Process(name.into()),
                    running,
                    pid: running.then_some(100),
                    restarts: 0,
                });
            }
            "disk" => {
                let (mount, pct) = v.split_once(':').ok_or(format!("bad disk {v:?}"))?;
                let pct = num(pct, "percent")?.min(100);
                s.filesystems.push(Filesystem {
                    mount_point: mount.into(),
                    device: "/dev/vda".into(),
                    fs_type: "ext4".into(),
                    size_bytes: 100 << 20,
                    avail_bytes: (100 - pct) << 20,
                    inodes_total: 1000,
                    inodes_free: 900,
                    read_only: false,
                });
            }
            "ro" => s.filesystems.push(Filesystem {
                mount_point: v.into(),
                device: "/dev/vda".into(),
                fs_type: "ext4".into(),
                size_bytes: 100 << 20,
                avail_bytes: 50 << 20,
                inodes_total: 1000,
                inodes_free: 900,
                read_only: true,
            }),
            "kernel" => {
                let kind = kernel_kind(v)?;
                s.kernel_events.push(KernelEvent {
                    kind,
                    seq: s.kernel_events.len() as u64 + 1,
                    timestamp_us: 0,
                    subject: Some("vda".into()),
                    text: format!("simulated {v}").into(),
                });
            }
            "psi" => {
                let x = (v.parse::<f64>().map_err(|_| format!("bad psi {v:?}"))? * 100.0).round()
                    as u32;
                let line = PsiLine {
                    avg10: x,
                    avg60: x,
                    total_us: 0,
                };
                s.pressure = Some(Pressure {
                    memory: Some(PsiResource {
                        some: line,
                        full: None,
                    }),
                    ..Pressure::default()
                });
            }
            _ => return Err(format!("unknown report field {k:?}")),
        }
    }
    Ok(s)
}

fn event(words: &[&str]) -> Result<Event, String> {
    let vm = |i: usize| -> Result<VmId, String> {
        words
            .get(i)
            .map(|s| s.to_string())
            .ok_or_else(|| "missing VM name".to_string())
    };
    let arg = |i: usize| -> Result<&str, String> {
        words
            .get(i)
            .copied()
            .ok_or_else(|| "missing argument".to_string())
    };
    let input = |i: Input| -> Result<Event, String> { Ok(Event::Input(vm(1)?, i)) };
    match *words.first().ok_or("empty event")? {
        "domain" => input(Input::Domain(domain_state(arg(2)?)?)),
        "hello" => {
            let boot = arg(2)?.strip_prefix("boot=").ok_or("hello needs boot=ID")?;
            input(Input::Hello {
                boot_id: boot.into(),
            })
        }
        "heartbeat" => input(Input::Heartbeat { seq: 0 }),
        "report" => input(Input::Report(Box::new(report(&words[2..])?))),
        "notice" => {
            let a = arg(2)?;
            if a == "maintenance-end" {
                input(Input::Notice(Notice::MaintenanceEnd))
            } else {
                let secs = a
                    .strip_prefix("maintenance=")
                    .ok_or("notice maintenance=SECS|maintenance-end")?;
                let duration_s = num(secs, "seconds")? as u32;
                input(Input::Notice(Notice::MaintenanceStart {
                    duration_s,
                    reason: "scripted".into(),
                }))
            }
        }
        "bye" => input(Input::Bye(match arg(2)? {
            "shutdown" => ByeReason::Shutdown,
            "reboot" => ByeReason::Reboot,
            "stopped" => ByeReason::Stopped,
            other => return Err(format!("bad bye reason {other:?}")),
        })),
        "closed" => input(Input::SessionClosed),
        "opened" => input(Input::SessionOpened),
        "rebooted" => input(Input::Rebooted),
        "removed" => input(Input::VmRemoved),
        "stats" => {
            let mut d = DomainStats::default();
            for a in &words[2..] {
                let (k, v) = a.split_once('=').ok_or(format!("bad stats field {a:?}"))?;
                let v = num(v, k)?;
                match k {
                    "cpu" => d.cpu_time_ns = v * 1_000_000,
                    "block" => d.block_ops = v,
                    "net" => d.net_packets = v,
                    _ => return Err(format!("unknown stats field {k:?}")),
                }
            }
            Ok(Event::Stats(vm(1)?, d))
        }
        "probe" => input(Input::Probe(probe_result(arg(2)?)?)),
        "liveness" => Ok(Event::Liveness(vm(1)?, probe_result(arg(2)?)?)),
        "operator" => {
            let cmd = match arg(2)? {
                "maintenance-on" => {
                    let until = match words.get(3) {
                        Some(f) => Some(num(
                            f.strip_prefix("for=").ok_or("maintenance-on [for=MS]")?,
                            "duration",
                        )?),
                        None => None,
                    };
                    // Relative durations are resolved when the event fires.
                    OperatorCommand::MaintenanceOn { until }
                }
                "maintenance-off" => OperatorCommand::MaintenanceOff,
                "release" => OperatorCommand::Release,
                other => return Err(format!("bad operator command {other:?}")),
            };
            input(Input::Operator(cmd))
        }
        "stop" => Ok(Event::Stop(
            arg(1)?.to_string(),
            words.get(2).ok_or("missing VM name")?.to_string(),
        )),
        "disarm" => Ok(Event::Global(Global::Disarm)),
        "arm" => Ok(Event::Global(Global::Arm)),
        other => Err(format!("unknown event {other:?}")),
    }
}

impl Scenario {
    /// Parse scenario text.
    pub fn parse(text: &str) -> Result<Scenario, ParseError> {
        let mut sc = Scenario {
            end: 60_000,
            ..Scenario::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            sc.directive(&words, i).map_err(|message| ParseError {
                line: i + 1,
                message,
            })?;
        }
        Ok(sc)
    }

    fn directive(&mut self, w: &[&str], order: usize) -> Result<(), String> {
        match w[0] {
            "vm" => {
                let name = w.get(1).ok_or("vm NAME")?.to_string();
                let mut agent = true;
                let mut mem = (1 << 20, 2 << 20);
                for a in &w[2..] {
                    match *a {
                        "agent" => agent = true,
                        "noagent" => agent = false,
                        m if m.starts_with("memory=") => {
                            let (c, x) = m[7..].split_once('/').ok_or("memory=CUR/MAX")?;
                            mem = (num(c, "memory")?, num(x, "memory")?);
                        }
                        other => return Err(format!("unknown vm option {other:?}")),
                    }
                }
                self.vms.push((name, agent, mem));
            }
            "at" => {
                let t = num(w.get(1).ok_or("at T EVENT")?, "time")?;
                self.timeline.push((t, order, event(&w[2..])?));
            }
            "every" => {
                let (p, ev, from, until) = every(&w[1..])?;
                self.streams.push((
                    from,
                    Stream {
                        period: p,
                        until: until.unwrap_or(u64::MAX),
                        event: ev,
                    },
                ));
            }
            "on" => {
                let action = w.get(1).ok_or("on ACTION VM +D EVENT")?.to_string();
                let vm = w.get(2).ok_or("on ACTION VM +D EVENT")?.to_string();
                let delay = num(w.get(3).ok_or("on ACTION VM +D EVENT")?, "delay")?;
                let rest = &w[4..];
                let (every, ev) = if rest.first() == Some(&"every") {
                    let period = num(rest.get(1).ok_or("every P EVENT [for F]")?, "period")?;
                    let (body, dur) = match rest.iter().position(|x| *x == "for") {
                        Some(i) => (
                            &rest[2..i],
                            num(rest.get(i + 1).ok_or("for F")?, "duration")?,
                        ),
                        None => (&rest[2..], u64::MAX / 4),
                    };
                    (Some((period, dur)), event(body)?)
                } else {
                    (None, event(rest)?)
                };
                self.reactions.push(Reaction {
                    action,
                    vm,
                    delay,
                    every,
                    event: ev,
                });
            }
            "fail" => {
                let action = w.get(1).ok_or("fail ACTION VM [N]")?.to_string();
                let vm = w.get(2).ok_or("fail ACTION VM [N]")?.to_string();
                let n = w.get(3).map(|n| num(n, "count")).transpose()?.unwrap_or(1) as u32;
                self.failures.push((action, vm, n));
            }
            "liveness" => {
                let ev = event(w)?;
                self.timeline.push((0, order, ev));
            }
            "end" => self.end = num(w.get(1).ok_or("end T")?, "time")?,
            other => return Err(format!("unknown directive {other:?}")),
        }
        Ok(())
    }
}

fn every(w: &[&str]) -> Result<(Millis, Event, Millis, Option<Millis>), String> {
    let p = num(w.first().ok_or("every P EVENT from T [until U]")?, "period")?;
    let from_i = w
        .iter()
        .position(|x| *x == "from")
        .ok_or("every needs from T")?;
    let until_i = w.iter().position(|x| *x == "until");
    let ev = event(&w[1..from_i])?;
    let from = num(w.get(from_i + 1).ok_or("from T")?, "time")?;
    let until = until_i
        .map(|i| num(w.get(i + 1).ok_or("until U")?, "time"))
        .transpose()?;
    if p == 0 {
        return Err("period must be > 0".into());
    }
    Ok((p, ev, from, until))
}

/// Queue entry: (time, sequence) orders it.
type Queue = BTreeMap<(Millis, u64), Event>;

/// Run a scenario; return the decision log.
pub fn run(sc: &Scenario, cfg: EngineConfig) -> String {
    let mut engine = Engine::new(cfg);
    let mut log = String::new();
    let mut journal: Vec<(Millis, Record)> = Vec::new();
    let mut queue: Queue = BTreeMap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut Queue, t: Millis, e: Event| {
        seq += 1;
        q.insert((t, seq), e);
    };
    for (t, _, e) in &sc.timeline {
        push(&mut queue, *t, e.clone());
    }
    // Streams: materialise lazily via a stream table keyed by id.
    let mut streams: Vec<(Millis, Stream, bool)> = sc
        .streams
        .iter()
        .map(|(f, s)| (*f, s.clone(), true))
        .collect();
    let mut liveness: HashMap<VmId, ProbeResult> = HashMap::new();
    let mut counters: HashMap<VmId, DomainStats> = HashMap::new();
    let mut failures = sc.failures.clone();
    for (name, agent, mem) in &sc.vms {
        let out = engine.step(
            0,
            name,
            Input::VmAdded {
                agent: *agent,
                memory_kib: *mem,
            },
        );
        emit(0, out, &mut log, &mut journal, &mut Vec::new());
    }
    let mut now = 0;
    while now <= sc.end {
        // Stream events due now.
        for (next, s, live) in streams.iter_mut() {
            while *live && *next <= now {
                if *next < s.until {
                    push(&mut queue, *next, s.event.clone());
                    *next += s.period;
                } else {
                    *live = false;
                }
            }
        }
        // Everything queued up to now, in order.
        while let Some((&(t, _), _)) = queue.iter().next() {
            if t > now {
                break;
            }
            let Some(((t, _), ev)) = queue.pop_first() else {
                break;
            };
            let mut actions = Vec::new();
            match ev {
                Event::Input(vm, mut input) => {
                    if let Input::Operator(OperatorCommand::MaintenanceOn { until: Some(d) }) =
                        input
                    {
                        input =
                            Input::Operator(OperatorCommand::MaintenanceOn { until: Some(t + d) });
                    }
                    let out = engine.step(t, &vm, input);
                    emit(t, out, &mut log, &mut journal, &mut actions);
                }
                Event::Global(g) => {
                    let _ = writeln!(log, "{t:>7} {:<8} {g:?}", "*");
                    let out = engine.global(t, g);
                    emit(t, out, &mut log, &mut journal, &mut actions);
                }
                Event::Stop(what, vm) => {
                    for (_, s, live) in streams.iter_mut() {
                        let (is_hb, is_stats, target) = match &s.event {
                            Event::Input(v, Input::Heartbeat { .. }) => (true, false, v),
                            Event::Stats(v, _) => (false, true, v),
                            _ => continue,
                        };
                        let hit = match what.as_str() {
                            "heartbeat" => is_hb,
                            "stats" => is_stats,
                            _ => true,
                        };
                        if hit && *target == vm {
                            *live = false;
                        }
                    }
                }
                Event::Liveness(vm, r) => {
                    liveness.insert(vm, r);
                }
                Event::Stats(vm, inc) => {
                    let c = counters.entry(vm.clone()).or_default();
                    c.cpu_time_ns += inc.cpu_time_ns;
                    c.block_ops += inc.block_ops;
                    c.net_packets += inc.net_packets;
                    let out = engine.step(t, &vm, Input::Stats(*c));
                    emit(t, out, &mut log, &mut journal, &mut actions);
                }
            }
            react(
                t,
                &actions,
                sc,
                &mut failures,
                &liveness,
                &mut queue,
                &mut streams,
                &mut push,
            );
        }
        if now % TICK_MS == 0 {
            let out = engine.global(now, Global::Tick);
            let mut actions = Vec::new();
            emit(now, out, &mut log, &mut journal, &mut actions);
            react(
                now,
                &actions,
                sc,
                &mut failures,
                &liveness,
                &mut queue,
                &mut streams,
                &mut push,
            );
        }
        now += 10;
    }
    let _ = writeln!(log, "-- metrics over 0..{} ms", sc.end);
    for m in metrics::compute(&journal, 0, sc.end) {
        let _ = writeln!(
            log,
            "{:<8} faults={} recovered={} detect={:.0}/{:.0} locate={:.0}/{:.0} repair={:.0}/{:.0} (mean/p95 ms) availability={:.4}",
            m.vm,
            m.faults,
            m.recovered,
            m.detect.mean_ms,
            m.detect.p95_ms,
            m.locate.mean_ms,
            m.locate.p95_ms,
            m.repair.mean_ms,
            m.repair.p95_ms,
            m.availability
        );
    }
    for (vm, state) in engine.vms() {
        let _ = writeln!(log, "{vm:<8} final state {state}");
    }
    log
}

/// The simulated executor and world: answer actions, fire reactions.
#[allow(clippy::too_many_arguments)]
fn react(
    t: Millis,
    actions: &[Action],
    sc: &Scenario,
    failures: &mut [(String, VmId, u32)],
    liveness: &HashMap<VmId, ProbeResult>,
    queue: &mut Queue,
    streams: &mut Vec<(Millis, Stream, bool)>,
    push: &mut impl FnMut(&mut Queue, Millis, Event),
) {
    for a in actions {
        if a.kind == ActionKind::LivenessProbe {
            let r = liveness.get(&a.vm).copied().unwrap_or(ProbeResult::Refused);
            push(
                queue,
                t + PROBE_MS,
                Event::Input(a.vm.clone(), Input::Probe(r)),
            );
            continue;
        }
        let name = a.kind.name();
        let mut ok = true;
        for (act, vm, n) in failures.iter_mut() {
            if act == name && *vm == a.vm && *n > 0 {
                *n -= 1;
                ok = false;
                break;
            }
        }
        let detail = if ok {
            "done".to_string()
        } else {
            "scripted failure".to_string()
        };
        push(
            queue,
            t + ACTION_MS,
            Event::Input(
                a.vm.clone(),
                Input::ActionDone {
                    id: a.id,
                    ok,
                    detail,
                },
            ),
        );
        if !ok {
            continue;
        }
        for r in sc
            .reactions
            .iter()
            .filter(|r| r.action == name && r.vm == a.vm)
        {
            let at = t + ACTION_MS + r.delay;
            match r.every {
                None => push(queue, at, r.event.clone()),
                Some((period, dur)) => streams.push((
                    at,
                    Stream {
                        period,
                        until: at + dur,
                        event: r.event.clone(),
                    },
                    true,
                )),
            }
        }
    }
}

fn emit(
    t: Millis,
    out: Output,
    log: &mut String,
    journal: &mut Vec<(Millis, Record)>,
    actions: &mut Vec<Action>,
) {
    for r in out.records {
        let _ = writeln!(log, "{}", render(t, &r));
        journal.push((t, r));
    }
    for a in out.actions {
        if a.kind == ActionKind::LivenessProbe {
            let _ = writeln!(log, "{t:>7} {:<8} probe liveness #{}", a.vm, a.id);
        }
        actions.push(a);
    }
}

/// One journal record as a log line.
pub fn render(t: Millis, r: &Record) -> String {
    match r {
        Record::Transition { vm, from, to, why } => format!("{t:>7} {vm:<8} {from} -> {to}: {why}"),
        Record::Fault { vm, id, kind, layer, evidence, onset, detected, located, .. } => format!(
            "{t:>7} {vm:<8} FAULT #{id} {kind} layer={} detect={}ms locate={}ms evidence: {}",
            layer.name(),
            detected.saturating_sub(*onset),
            located.saturating_sub(*detected),
            evidence.join("; ")
        ),
        Record::Intent { vm, action, rung, attempt } => {
            let mem = action.memory_kib.map(|m| format!(" to {m} KiB")).unwrap_or_default();
            match rung {
                Some(r) => format!("{t:>7} {vm:<8} ACTION #{} {}{mem} (rung {r} attempt {attempt})", action.id, action.kind),
                None => format!("{t:>7} {vm:<8} ACTION #{} {}{mem}", action.id, action.kind),
            }
        }
        Record::Suppressed { vm, kind, why } => format!("{t:>7} {vm:<8} suppressed {kind}: {why}"),
        Record::Outcome { vm, id, ok, detail } => {
            format!("{t:>7} {vm:<8} outcome #{id} {}: {detail}", if *ok { "ok" } else { "FAILED" })
        }
        Record::Closed { vm, id, kind, how, detect_ms, locate_ms, repair_ms, .. } => format!(
            "{t:>7} {vm:<8} CLOSED #{id} {kind} {how:?} detect={detect_ms}ms locate={locate_ms}ms repair={repair_ms}ms"
        )
        .replace("Recovered", "recovered")
        .replace("Cleared", "cleared")
        .replace("Superseded", "superseded")
        .replace("Released", "released")
        .replace("Withdrawn", "withdrawn"),
    }
}
