//! The core harness: a scenario run through vigild's real core — sessions'
//! handshake and messages, the engine, the SQLite journal, control
//! requests, the action executor's contract (one action at a time per VM,
//! concurrent across VMs) and the real action code (`daemon::act::act`)
//! — with a fake hypervisor, in-memory agent transports, scripted probe
//! answers and tokio's paused clock as the virtual clock.
//!
//! Beyond the engine simulator it sees what the wiring does: polls every
//! second carry state and counters (the I/O veto's input), lifecycle
//! events come from the fake hypervisor as libvirt's would, agents speak
//! through sessions the core hands out, a locked journal fails writes, a
//! stalled core gets its messages late, and a restarted core resumes from
//! the journal while its agents reconnect.
//!
//! The log has the journal's records as the engine simulator renders them,
//! and the harness's view of the world: actions the executor runs
//! (`exec`), commands agents receive (`agent`), liveness probes, and the
//! harness's own disruptions (`*`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use vigil_protocol::{
    Bye, CommandAction, CommandOutcome, CommandResult, Heartbeat, Hello, Message, Report,
    ReportTrigger, VersionRange,
};
use vigil_watchdog::backend::events::HvEvent;
use vigil_watchdog::backend::Hypervisor;
use vigil_watchdog::config::{Config, VmConfig};
use vigil_watchdog::daemon::act::act;
use vigil_watchdog::daemon::backend_thread::BackendReq;
use vigil_watchdog::daemon::clock::Clock;
use vigil_watchdog::daemon::cluster::ClusterReq;
use vigil_watchdog::daemon::control::{Request, Response};
use vigil_watchdog::daemon::core::{Core, Journals};
use vigil_watchdog::daemon::metrics::Metrics;
use vigil_watchdog::daemon::schedule::{self, Schedule};
use vigil_watchdog::daemon::session::HelloReply;
use vigil_watchdog::daemon::writer::Written;
use vigil_watchdog::daemon::CoreMsg;
use vigil_watchdog::engine::*;
use vigil_watchdog::journal::Journal;

use crate::{action_ms, metrics_lines, settings, stop, Event, Scenario, Stream, PROBE_MS, TICK_MS};

/// How long an agent takes to reconnect after vigild went away.
const RECONNECT_MS: Millis = 1000;

mod fake;
mod script;
use fake::{Dom, FakeHv, ScriptedProber, World};

/// What the harness has queued to happen.
enum Due {
    Scripted(Event),
    /// An action the executor runs finishes.
    Finish(BackendReq, u64),
    /// An agent answers a command.
    Answer {
        vm: VmId,
        session: u64,
        id: u32,
        ok: bool,
    },
    Probed(VmId),
    /// The backend reads a VM's vNICs.
    Nics(VmId),
    /// An agent connects again after vigild went away.
    Reconnect(VmId),
}

/// An agent's session as the agent holds it.
struct AgentLink {
    session: u64,
    rx: mpsc::Receiver<Box<Message>>,
    boot: String,
}

struct Harness<'a> {
    sc: &'a Scenario,
    cfg: Config,
    clock: Clock,
    journal_path: PathBuf,
    core: Core,
    core_rx: mpsc::Receiver<CoreMsg>,
    written: mpsc::UnboundedReceiver<Written>,
    be_rx: std::sync::mpsc::Receiver<BackendReq>,
    /// What the core asks of the cluster.
    cluster_rx: std::sync::mpsc::Receiver<ClusterReq>,
    /// Bumped by a restart: what the old core started reports to no one.
    generation: u64,
    hv: FakeHv,
    prober: ScriptedProber,
    agents: HashMap<VmId, AgentLink>,
    /// VMs with an action running, and the actions waiting for it.
    busy: HashSet<VmId>,
    waiting: HashMap<VmId, VecDeque<BackendReq>>,
    queue: BTreeMap<(Millis, u64), Due>,
    seq: u64,
    streams: Vec<(Millis, Stream, bool)>,
    liveness: HashMap<VmId, ProbeResult>,
    failures: Vec<(String, VmId, u32)>,
    /// Messages held while the core is stalled, and until when.
    stalled_until: Millis,
    backlog: Vec<CoreMsg>,
    lock: Option<rusqlite::Connection>,
    /// Hellos waiting for the core's answer.
    hellos: Vec<(VmId, String, oneshot::Receiver<HelloReply>)>,
    reader: Journal,
    read_to: i64,
    log: String,
    /// The backend's polling schedule (the real one), on the virtual
    /// clock: `t0` is virtual time 0.
    schedule: Schedule,
    t0: std::time::Instant,
    now: Millis,
}

/// Run a scenario through the real core; return the decision log.
pub fn run_core(sc: &Scenario, engine: EngineConfig) -> String {
    let engine = match settings(engine, &sc.engine) {
        Ok(c) => c,
        Err(e) => return format!("bad engine settings: {e}\n"),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return format!("no runtime: {e}\n"),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return format!("no temporary directory: {e}\n"),
    };
    rt.block_on(async {
        match Harness::new(sc, engine, dir.path()) {
            Ok(h) => h.run().await,
            Err(e) => format!("harness failed to start: {e:#}\n"),
        }
    })
}

impl<'a> Harness<'a> {
    fn new(sc: &'a Scenario, engine: EngineConfig, dir: &Path) -> anyhow::Result<Harness<'a>> {
        let t0 = std::time::Instant::now();
        let schedule = new_schedule(&Config::default(), t0);
        let journal_path = dir.join("journal.db");
        let mut cfg = Config {
            journal: journal_path.clone(),
            control_socket: dir.join("control.sock"),
            metrics_listen: String::new(),
            engine,
            ..Config::default()
        };
        let mut world = World::default();
        if sc.vms.iter().any(|v| v.3) {
            cfg.cluster = vigil_watchdog::cluster::ClusterConfig {
                kind: vigil_watchdog::cluster::ClusterKind::Pacemaker,
                node: "hv1".into(),
                ..Default::default()
            };
        }
        for (name, agent, memory, cluster) in &sc.vms {
            cfg.vm.push(VmConfig {
                domain: name.clone(),
                agent: agent.then(|| format!("unix://{}/{name}.sock", dir.display())),
                probe: Some(format!("unix://{}/{name}.probe", dir.display())),
                snapshot: Some("known-good".into()),
                cid: None,
                cluster_resource: cluster.then(|| format!("vm-{name}")),
            });
            world.doms.insert(
                name.clone(),
                Dom {
                    state: None,
                    stats: DomainStats::default(),
                    memory: *memory,
                    listed: !sc.unlisted.contains(name),
                    snapshots: vec!["known-good".into()],
                    nics: Vec::new(),
                },
            );
        }
        let clock = Clock::starting_at(0);
        let prober = ScriptedProber::default();
        let (core, core_rx, written, be_rx, cluster_rx) =
            start_core(&cfg, clock, &journal_path, &prober)?;
        let reader = Journal::open(&journal_path)?;
        Ok(Harness {
            sc,
            cfg,
            clock,
            journal_path,
            core,
            core_rx,
            written,
            be_rx,
            cluster_rx,
            generation: 0,
            hv: FakeHv(Arc::new(Mutex::new(world))),
            prober,
            agents: HashMap::new(),
            busy: HashSet::new(),
            waiting: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            streams: sc
                .streams
                .iter()
                .map(|(f, s)| (*f, s.clone(), true))
                .collect(),
            liveness: HashMap::new(),
            failures: sc.failures.clone(),
            stalled_until: 0,
            backlog: Vec::new(),
            lock: None,
            hellos: Vec::new(),
            reader,
            read_to: 0,
            log: String::new(),
            now: 0,
            schedule,
            t0,
        })
    }

    fn push(&mut self, t: Millis, d: Due) {
        self.seq += 1;
        self.queue.insert((t, self.seq), d);
    }

    fn say(&mut self, vm: &str, what: std::fmt::Arguments) {
        let _ = writeln!(self.log, "{:>7} {vm:<8} {what}", self.now);
    }

    async fn run(mut self) -> String {
        for (t, _, e) in &self.sc.timeline {
            self.push(*t, Due::Scripted(e.clone()));
        }
        loop {
            self.turn().await;
            if self.now >= self.sc.end {
                break;
            }
            self.now += 10;
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        self.finish().await
    }

    /// Everything due at `now`, then the core's answers until it is quiet.
    async fn turn(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        for (next, s, live) in self.streams.iter_mut() {
            while *live && *next <= now {
                if *next < s.until {
                    due.push((*next, s.event.clone()));
                    *next += s.period;
                } else {
                    *live = false;
                }
            }
        }
        for (t, e) in due {
            self.push(t, Due::Scripted(e));
        }
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let d = entry.remove();
            self.happen(d).await;
            self.settle().await;
        }
        let at = self.at(now);
        match self.schedule.due(at) {
            schedule::Due::Nothing => {}
            schedule::Due::All => self.poll(None).await,
            schedule::Due::Some(vms) => self.poll(Some(vms)).await,
        }
        if now % TICK_MS == 0 {
            self.deliver(CoreMsg::Tick).await;
        }
        self.settle().await;
        if self.stalled_until != 0 && now >= self.stalled_until {
            self.stalled_until = 0;
            for msg in std::mem::take(&mut self.backlog) {
                self.deliver(msg).await;
            }
            self.settle().await;
        }
    }

    /// Virtual time `ms` as the schedule's instant.
    fn at(&self, ms: Millis) -> std::time::Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Poll every domain (`None`) or these; nothing comes back while the
    /// hypervisor is scripted silent (its calls do not return) or its
    /// connection lost (the backend thread polls nothing then).
    async fn poll(&mut self, only: Option<Vec<String>>) {
        let w = self.core.hypervisor_watch();
        if w.since().is_some() || w.lost_since().is_some() {
            return;
        }
        let mut hv = self.hv.clone();
        let defs = hv.list().unwrap_or_default();
        let full = only.is_none();
        let polls = defs
            .into_iter()
            .filter(|d| only.as_ref().is_none_or(|o| o.contains(&d.name)))
            .map(|d| {
                let p = hv.poll(&d).map_err(|e| e.to_string());
                (d, p)
            })
            .collect();
        self.deliver(CoreMsg::Polled { polls, full }).await;
    }

    /// Hand a message to the core (or hold it while the core is stalled).
    async fn deliver(&mut self, msg: CoreMsg) {
        if self.stalled_until != 0 {
            self.backlog.push(msg);
            return;
        }
        self.core.handle(msg).await;
        // The writer thread answers in real time: wait for it, so that the
        // run does not depend on how fast the disk is.
        while self.core.journal_busy() {
            match self.written.try_recv() {
                Ok(w) => {
                    self.core.handle(CoreMsg::Journal(w)).await;
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        self.read_journal();
    }

    fn read_journal(&mut self) {
        let Ok(entries) = self.reader.after(self.read_to) else {
            return;
        };
        for e in entries {
            self.read_to = self.read_to.max(e.seq);
            let _ = writeln!(self.log, "{}", render(e.t, &e.record));
        }
    }

    /// Let the core's spawned tasks run and take in what they, the
    /// executor, the prober and the agents' sessions produced, until
    /// nothing more comes.
    async fn settle(&mut self) {
        for _ in 0..100 {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let mut any = false;
            while let Ok(msg) = self.core_rx.try_recv() {
                any = true;
                self.deliver(msg).await;
            }
            while let Ok(req) = self.be_rx.try_recv() {
                any = true;
                self.execute(req);
            }
            while let Ok(req) = self.cluster_rx.try_recv() {
                // A failed resource told to the cluster: scripted like a
                // hypervisor action (its reactions follow it).
                if let ClusterReq::Fail { id, vm, .. } = req {
                    any = true;
                    self.execute(BackendReq::Act {
                        id,
                        vm,
                        kind: ActionKind::AskCluster,
                        memory_kib: None,
                        snapshot: None,
                        now: self.now,
                        resume: false,
                    });
                }
            }
            let probes: Vec<String> =
                std::mem::take(&mut *self.prober.0.lock().unwrap_or_else(|e| e.into_inner()));
            for vm in probes {
                any = true;
                self.say(&vm, format_args!("probe liveness"));
                self.push(self.now + PROBE_MS, Due::Probed(vm));
            }
            let events = self.hv.with(|w| std::mem::take(&mut w.events));
            // A lost connection's events never arrive.
            let lost = self.core.hypervisor_watch().lost_since().is_some();
            for ev in events.into_iter().filter(|_| !lost) {
                any = true;
                self.deliver(CoreMsg::Hv(ev)).await;
            }
            any |= self.answered();
            any |= self.agents_read();
            if !any {
                return;
            }
        }
        let _ = writeln!(self.log, "{:>7} *        the core did not settle", self.now);
    }

    /// Commands the core sent to agents: answered after the scripted time.
    fn agents_read(&mut self) -> bool {
        let mut got = Vec::new();
        for (vm, link) in self.agents.iter_mut() {
            while let Ok(msg) = link.rx.try_recv() {
                if let Message::Command(c) = *msg {
                    got.push((vm.clone(), link.session, c));
                }
            }
        }
        let any = !got.is_empty();
        for (vm, session, c) in got {
            let (name, arg) = match &c.action {
                CommandAction::RestartService(s) => ("restart-service", s.to_string()),
                CommandAction::Repair(s) => ("repair", s.to_string()),
                CommandAction::Reboot => ("agent-reboot", String::new()),
            };
            self.say(&vm, format_args!("agent command {name} {arg}"));
            let ok = self.take_failure(name, &vm);
            let took = action_ms(self.sc, name, &vm);
            self.push(
                self.now + took,
                Due::Answer {
                    vm: vm.clone(),
                    session,
                    id: c.id,
                    ok,
                },
            );
            if ok {
                self.react(name, &vm, took);
            }
        }
        any
    }

    /// `false` if a `fail` line claims this action.
    fn take_failure(&mut self, action: &str, vm: &str) -> bool {
        for (a, v, n) in self.failures.iter_mut() {
            if a == action && v == vm && *n > 0 {
                *n -= 1;
                return false;
            }
        }
        true
    }

    /// The scenario's reactions to an action that succeeds after `took`.
    fn react(&mut self, action: &str, vm: &str, took: Millis) {
        let reactions: Vec<_> = self
            .sc
            .reactions
            .iter()
            .filter(|r| r.action == action && r.vm == vm)
            .cloned()
            .collect();
        for r in reactions {
            let at = self.now + took + r.delay;
            match r.every {
                None => self.push(at, Due::Scripted(r.event)),
                Some((period, dur)) => self.streams.push((
                    at,
                    Stream {
                        period,
                        until: at + dur,
                        event: r.event,
                    },
                    true,
                )),
            }
        }
    }

    /// The executor's contract: one action at a time per VM, concurrently
    /// across VMs.
    fn execute(&mut self, req: BackendReq) {
        let at = self.at(self.now);
        match &req {
            BackendReq::Watch { vm, hot } => {
                // The fake's I/O counters are fresh at once.
                self.schedule.watch(vm, *hot, at);
                if *hot {
                    self.schedule.soon(vm);
                }
                return;
            }
            BackendReq::Relist => return self.schedule.all_soon(at),
            BackendReq::Nics(vm) => return self.push(self.now, Due::Nics(vm.clone())),
            _ => {}
        }
        let BackendReq::Act { vm, kind, .. } = &req else {
            return; // relists: the harness polls the world as it is
        };
        if self.busy.contains(vm) {
            self.waiting.entry(vm.clone()).or_default().push_back(req);
            return;
        }
        let (vm, name) = (vm.clone(), kind.name().to_string());
        let took = action_ms(self.sc, &name, &vm);
        self.say(&vm, format_args!("exec {name} started"));
        self.busy.insert(vm);
        self.push(self.now + took, Due::Finish(req, self.generation));
    }

    async fn finish_action(&mut self, req: BackendReq, generation: u64) {
        let BackendReq::Act { id, vm, kind, .. } = &req else {
            return;
        };
        let (id, vm, name) = (*id, vm.clone(), kind.name().to_string());
        let result = if self.core.hypervisor_watch().lost_since().is_some() {
            Err("libvirt: not connected".into())
        } else if !self.take_failure(&name, &vm) {
            Err("scripted failure".into())
        } else if *kind == ActionKind::AskCluster {
            Ok("the cluster was told".into())
        } else {
            act(&mut self.hv.clone(), &req)
        };
        let ok = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        self.say(&vm, format_args!("exec {name} finished: {detail}"));
        if ok {
            self.react(&name, &vm, 0);
        }
        self.busy.remove(&vm);
        self.schedule.soon(&vm); // the backend shows an action's effect at once
        if generation == self.generation {
            self.deliver(CoreMsg::ActionDone {
                id,
                vm: vm.clone(),
                ok,
                detail,
            })
            .await;
        }
        if let Some(next) = self.waiting.get_mut(&vm).and_then(VecDeque::pop_front) {
            self.execute(next);
        }
    }

    async fn happen(&mut self, d: Due) {
        match d {
            Due::Scripted(e) => self.scripted(e).await,
            Due::Finish(req, generation) => self.finish_action(req, generation).await,
            Due::Nics(vm) => {
                use vigil_watchdog::backend::Hypervisor;
                if let Ok(nics) = self.hv.clone().nics(&vm) {
                    self.deliver(CoreMsg::Nics { vm, nics }).await;
                }
            }
            Due::Answer {
                vm,
                session,
                id,
                ok,
            } => {
                let outcome = if ok {
                    CommandOutcome::Succeeded
                } else {
                    CommandOutcome::Failed {
                        exit_code: Some(1),
                        detail: "scripted failure".into(),
                    }
                };
                let msg = Message::CommandResult(CommandResult { id, outcome });
                self.send(&vm, session, msg).await;
            }
            Due::Probed(vm) => {
                let result = self
                    .liveness
                    .get(&vm)
                    .copied()
                    .unwrap_or(ProbeResult::Refused);
                self.deliver(CoreMsg::Probed { vm, result }).await;
            }
            Due::Reconnect(vm) => {
                if let Some(boot) = self.agents.remove(&vm).map(|a| a.boot) {
                    self.hello(&vm, &boot).await;
                }
            }
        }
    }

    /// A message on `vm`'s session, if that session is still the agent's.
    async fn send(&mut self, vm: &str, session: u64, msg: Message) {
        if self.agents.get(vm).is_some_and(|a| a.session == session) {
            self.deliver(CoreMsg::Session {
                vm: vm.into(),
                session,
                msg: Box::new(msg),
            })
            .await;
        }
    }

    /// vigild is killed and started again: its sessions end with it (the
    /// agents reconnect a second later), what it had started still runs to
    /// its end in the hypervisor but reports to no one, and the new core
    /// resumes from the journal.
    async fn restart(&mut self) {
        let _ = writeln!(
            self.log,
            "{:>7} *        vigild killed and started again",
            self.now
        );
        self.generation += 1;
        self.stalled_until = 0;
        self.backlog.clear();
        self.hellos.clear();
        let vms: Vec<VmId> = self.agents.keys().cloned().collect();
        for vm in vms {
            self.push(self.now + RECONNECT_MS, Due::Reconnect(vm));
        }
        match start_core(&self.cfg, self.clock, &self.journal_path, &self.prober) {
            Ok((core, rx, written, be, cl)) => {
                self.core = core;
                self.core_rx = rx;
                self.written = written;
                self.be_rx = be;
                self.cluster_rx = cl;
                // A new vigild's backend starts its schedule over.
                self.schedule = new_schedule(&self.cfg, self.at(self.now));
            }
            Err(e) => {
                let _ = writeln!(self.log, "{:>7} *        restart failed: {e:#}", self.now);
            }
        }
        self.read_journal();
    }

    async fn finish(mut self) -> String {
        self.lock = None;
        self.settle().await;
        let entries: Vec<(Millis, Record)> = self
            .reader
            .since(0)
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.t, e.record))
            .collect();
        metrics_lines(&mut self.log, &entries, self.sc.end);
        if let Some(r) = self.control(Request::List).await {
            for v in r.data["vms"].as_array().into_iter().flatten() {
                let name = v["domain"].as_str().unwrap_or("?");
                let state = v["state"].as_str().unwrap_or("?");
                let domain = v["domain_state"].as_str().unwrap_or("?");
                let agent = if v["agent_connected"].as_bool() == Some(true) {
                    "connected"
                } else {
                    "not connected"
                };
                let _ = writeln!(
                    self.log,
                    "{name:<8} final state {state} (domain {domain}, agent {agent})"
                );
            }
        }
        self.log
    }
}

type Started = (
    Core,
    mpsc::Receiver<CoreMsg>,
    mpsc::UnboundedReceiver<Written>,
    std::sync::mpsc::Receiver<BackendReq>,
    std::sync::mpsc::Receiver<ClusterReq>,
);

fn start_core(
    cfg: &Config,
    clock: Clock,
    journal: &Path,
    prober: &ScriptedProber,
) -> anyhow::Result<Started> {
    let (tx, rx) = mpsc::channel(4096);
    let (be_tx, be_rx) = std::sync::mpsc::channel();
    // The writer does not wait for a lock: a locked journal is a failed
    // write at once, retried on the core's ticks.
    let journals = Journals {
        read: Journal::open(journal)?,
        write: Journal::open_waiting(journal, Duration::ZERO)?,
    };
    let mut core = Core::new(
        cfg.clone(),
        clock,
        journals,
        Arc::new(Metrics::new()),
        be_tx,
        tx,
        Box::new(prober.clone()),
    )?;
    let written = core
        .take_written()
        .ok_or_else(|| anyhow::anyhow!("no journal writer"))?;
    // The cluster's tools are scripted like the hypervisor: what the core
    // asks of them is taken in by the harness.
    let (cl_tx, cl_rx) = std::sync::mpsc::channel();
    if cfg.cluster.enabled() {
        core.join_cluster(cl_tx);
    }
    Ok((core, rx, written, be_rx, cl_rx))
}

/// The backend's schedule for `cfg`, its first pass due at `now`.
fn new_schedule(cfg: &Config, now: std::time::Instant) -> Schedule {
    Schedule::new(
        Duration::from_millis(cfg.poll_interval_ms),
        Duration::from_millis(cfg.quiet_poll_interval_ms),
        now,
    )
}
