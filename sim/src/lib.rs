//! Scenario simulator (a development crate: nothing the product ships
//! depends on it): scripted observations on a virtual clock, run
//! through the engine, rendered as a decision log (compared with goldens).
//!
//! A scenario is a text file, one directive per line (`#` comments):
//!
//! ```text
//! vm NAME [agent|noagent] [memory=CUR/MAX] [cluster]   monitor a VM (KiB; a cluster resource)
//! at T EVENT                                   one event at T ms
//! every P EVENT from T [until U]               repeated events
//! on ACTION VM +D EVENT                        when the engine emits ACTION
//! on ACTION VM +D every P EVENT [for F]          for VM, schedule relative to it
//! fail ACTION VM [N]                           the next N such actions fail
//! liveness VM refused|accepted|timed-out|unsupported   probe answer from now on
//! slow ACTION VM MS                            such actions take MS (default 100)
//! unlisted VM                                  not listed until `listed VM`
//! end T                                        stop at T
//! ```
//!
//! Events: `domain VM STATE` (running, paused:REASON, shutoff:REASON,
//! crashed[:panicked]), `hello VM boot=ID`, `heartbeat VM`, `report VM
//! [service=NAME:up|down] [disk=MOUNT:PCT] [ro=MOUNT] [kernel=KIND[@-MS]]
//! [psi=PCT[/STALL_MS]] [blocked=N] [net=IF:up|down|nocarrier|noaddr [route=none]
//! [gw=unresolved] [tcp=ADDR:PORT:ok|fail]]`, `nics VM MAC:up|down ...`
//! (the host's view of the vNICs; the Nth `net=` interface has MAC
//! 52:54:00:00:00:0N), `notice VM maintenance=SECS|maintenance-end`, `bye VM
//! shutdown|reboot|stopped`, `closed VM`, `rebooted VM`, `stats VM
//! cpu=+MS block=+N net=+N`, `operator VM maintenance-on [for=MS] |
//! maintenance-off | release | act=reset|reboot|shutdown|destroy|start|resume`, `stop heartbeat|stats|all VM`, `disarm`,
//! `arm`, `removed VM`, `liveness VM RESULT`, `host kernel TEXT` (a line
//! of the host's kernel log), `host fs MOUNT size=MIB avail=MIB
//! [inodes=N free-inodes=N] [vms=A,B] [dev=D,E]` (a look at the host
//! filesystem under those VMs' disks, on those devices); for the core harness only
//! (the engine alone ignores them): `restart` (vigild killed and started),
//! `journal locked|unlocked`, `listed VM`, `unlisted VM`.
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

pub mod audit;
mod core;
mod parse;

pub use crate::core::run_core;

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
    /// The daemon's world only (the core harness; the engine alone has
    /// none of these and ignores them): vigild is killed and started again.
    Restart,
    /// Another process holds (true) or lets go of (false) the journal's
    /// write lock: the core's writes fail meanwhile.
    JournalLocked(bool),
    /// The domain appears in (true) or disappears from (false) the
    /// hypervisor's listing.
    Listed(VmId, bool),
    /// A record of the host's kernel log, as its text.
    HostKernel(String),
    /// A look at the host's storage: one filesystem, and the block devices
    /// under it.
    HostFs(storage::FsSample, Vec<String>),
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
    vms: Vec<(VmId, bool, (u64, u64), bool)>,
    timeline: Vec<(Millis, usize, Event)>,
    streams: Vec<(Millis, Stream)>,
    reactions: Vec<Reaction>,
    failures: Vec<(String, VmId, u32)>,
    /// Actions that take longer than the default 100 ms.
    slow: Vec<(String, VmId, Millis)>,
    /// VMs not listed by the hypervisor until a `listed` event.
    unlisted: Vec<VmId>,
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
    // Block device → VMs with disks on it (from `host fs` looks).
    let mut devices: HashMap<String, Vec<VmId>> = HashMap::new();
    let mut failures = sc.failures.clone();
    for (name, agent, mem, cluster) in &sc.vms {
        let out = engine.step(
            0,
            name,
            Input::VmAdded {
                agent: *agent,
                memory_kib: *mem,
                cluster: *cluster,
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
                    stop(&mut streams, &what, &vm);
                }
                Event::Liveness(vm, r) => {
                    liveness.insert(vm, r);
                }
                Event::Restart | Event::JournalLocked(_) | Event::Listed(..) => {}
                Event::HostKernel(text) => {
                    let _ = writeln!(log, "{t:>7} {:<8} kernel: {text}", "(host)");
                    if let Some(ev) = vigil_watchdog::host::kmsg::classify(&text) {
                        let signal = ev.signal(|d| devices.get(d).cloned().unwrap_or_default());
                        let out = engine.host_signal(t, &signal, &text);
                        emit(t, out, &mut log, &mut journal, &mut actions);
                    }
                }
                Event::HostFs(fs, devs) => {
                    for d in devs {
                        devices.insert(d, fs.vms.clone());
                    }
                    let out = engine.host_storage(t, vec![fs]);
                    emit(t, out, &mut log, &mut journal, &mut actions);
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
    metrics_lines(&mut log, &journal, sc.end);
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
        let took = action_ms(sc, name, &a.vm);
        push(
            queue,
            t + took,
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
            let at = t + took + r.delay;
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

/// The decision log's summary: per-VM metrics over the run.
fn metrics_lines(log: &mut String, journal: &[(Millis, Record)], end: Millis) {
    let _ = writeln!(log, "-- metrics over 0..{} ms", end);
    for m in metrics::compute(journal, 0, end) {
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
}

/// `stop heartbeat|stats|all VM`: end the VM's matching streams.
fn stop(streams: &mut [(Millis, Stream, bool)], what: &str, vm: &str) {
    for (_, s, live) in streams.iter_mut() {
        let (is_hb, is_stats, target) = match &s.event {
            Event::Input(v, Input::Heartbeat { .. }) => (true, false, v),
            Event::Stats(v, _) => (false, true, v),
            _ => continue,
        };
        let hit = match what {
            "heartbeat" => is_hb,
            "stats" => is_stats,
            _ => true,
        };
        if hit && target == vm {
            *live = false;
        }
    }
}

/// How long the simulated executor takes for `action` on `vm`.
fn action_ms(sc: &Scenario, action: &str, vm: &str) -> Millis {
    sc.slow
        .iter()
        .find(|(a, v, _)| a == action && v == vm)
        .map_or(ACTION_MS, |s| s.2)
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

/// The actions of a log (`vm #id`) whose outcome it never shows.
pub fn actions_without_outcome(log: &str) -> Vec<String> {
    let tagged = |tag: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let i = w.iter().position(|x| *x == tag)?;
                Some(format!("{} {}", w.get(i.checked_sub(1)?)?, w.get(i + 1)?))
            })
            .collect()
    };
    let outcomes = tagged("outcome");
    tagged("ACTION")
        .into_iter()
        .filter(|a| !outcomes.contains(a))
        .collect()
}

/// Run every `*.scn` in `dir` with `run` and compare its log with the
/// `.golden` beside it (`VIGIL_BLESS` set: write the goldens instead).
/// Returns how many ran, or the names that differ (their logs printed).
pub fn check_goldens(
    dir: &std::path::Path,
    run: impl Fn(&Scenario) -> String,
) -> Result<usize, Vec<String>> {
    let bless = std::env::var_os("VIGIL_BLESS").is_some();
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| vec![format!("{}: {e}", dir.display())])?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    names.sort();
    let mut failed = Vec::new();
    for path in &names {
        let name = path.display().to_string();
        let sc = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Scenario::parse(&t).map_err(|e| e.to_string()))
        {
            Ok(sc) => sc,
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                continue;
            }
        };
        let log = run(&sc);
        // Blessed or not, an action's outcome is always journaled.
        let unanswered = actions_without_outcome(&log);
        if !unanswered.is_empty() {
            failed.push(format!("{name}: no outcome for {unanswered:?}"));
        }
        let golden = path.with_extension("golden");
        if bless {
            if let Err(e) = std::fs::write(&golden, &log) {
                failed.push(format!("{}: {e}", golden.display()));
            }
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == log => {}
            Ok(want) => {
                let first = want.lines().zip(log.lines()).position(|(a, b)| a != b);
                eprintln!(
                    "--- {name} differs at line {:?}\n{log}",
                    first.map(|i| i + 1)
                );
                failed.push(name);
            }
            Err(_) => failed.push(format!("{name} (no golden)")),
        }
    }
    if failed.is_empty() {
        Ok(names.len())
    } else {
        Err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::actions_without_outcome;

    #[test]
    fn an_action_without_its_outcome_is_named() {
        let log = "   8000 (host)   ACTION #1 alert\n   9000 web      ACTION #2 reset (rung 0 attempt 1)\n   9100 web      outcome #2 ok: done\n";
        assert_eq!(actions_without_outcome(log), vec!["(host) #1".to_string()]);
    }
}
