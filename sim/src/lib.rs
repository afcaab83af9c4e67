//! Scenario simulator (a development crate: nothing the product ships
//! depends on it): scripted observations on a virtual clock, run
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
//! [service=NAME:up|down] [disk=MOUNT:PCT] [ro=MOUNT] [kernel=KIND[@-MS]]
//! [psi=PCT] [blocked=N]`, `notice VM maintenance=SECS|maintenance-end`, `bye VM
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

use vigil_watchdog::engine::*;
use vigil_watchdog::metrics;

mod parse;

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
    /// Engine settings the scenario sets (`key = value` lines).
    engine: Vec<String>,
    end: Millis,
}

/// `cfg` with the scenario's own settings on top.
fn settings(cfg: EngineConfig, lines: &[String]) -> Result<EngineConfig, String> {
    if lines.is_empty() {
        return Ok(cfg);
    }
    let mut t = toml::Table::try_from(&cfg).map_err(|e| e.to_string())?;
    for l in lines {
        t.extend(toml::from_str::<toml::Table>(l).map_err(|e| e.to_string())?);
    }
    t.try_into().map_err(|e: toml::de::Error| e.to_string())
}

/// Queue entry: (time, sequence) orders it.
type Queue = BTreeMap<(Millis, u64), Event>;

/// Run a scenario; return the decision log.
pub fn run(sc: &Scenario, cfg: EngineConfig) -> String {
    let cfg = match settings(cfg, &sc.engine) {
        Ok(c) => c,
        Err(e) => return format!("bad engine settings: {e}\n"),
    };
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
                    // The guest's clock reads the host's (offset 0); a
                    // kernel event's time is given relative to its report.
                    match &mut input {
                        Input::Heartbeat { uptime_ms, .. } => *uptime_ms = t,
                        Input::Report { snapshot, .. } => {
                            snapshot.uptime_ms = t;
                            for e in &mut snapshot.kernel_events {
                                e.timestamp_us = t.saturating_sub(e.timestamp_us) * 1000;
                            }
                        }
                        _ => {}
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
