//! The core: owns the engine, the journal and every VM's runtime state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vigil_protocol::limits::LogLimit;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use vigil_protocol::snapshot::Snapshot;
use vigil_protocol::transport::Address;
use vigil_protocol::*;

use super::backend_thread::BackendReq;
use super::clock::Clock;
use super::control::{Request, Response, VmView};
use super::metrics::{FaultLabels, Metrics, RecoveryLabels, RejectLabels, VmLabels};
use super::CoreMsg;
use crate::backend::events::HvEvent;
use crate::backend::DomainDef;
use crate::config::{Config, VmConfig};
use crate::engine::{self, ActionKind, Engine, Input, Millis, Output, ProbeResult, Record, State};

use super::writer::{WriteReq, Written};
use crate::journal::Journal;

mod advise;
mod control;
mod dispatch;
mod guest;
mod host;
mod hypervisor;
mod journaling;
mod network;
mod observe;
mod own_world;
mod resume;
mod sessions;

use super::control::{supplementary_groups, Access, Peer};
pub use control::{control_listener, serve_control};

/// A live agent session.
struct Session {
    id: u64,
    tx: mpsc::Sender<Box<Message>>,
    /// Negotiated protocol version.
    version: u8,
    /// When a keepalive was last queued.
    keepalive_at: Millis,
    hostname: String,
    agent_version: String,
    boot_id: String,
    /// The guest this session spoke for is gone (reset, rebooted, stopped):
    /// nothing more is written to it. On hybrid vsock (vhost-device-vsock)
    /// a write to a connection the rebooted guest no longer has wedges the
    /// device, and the new boot's agent never gets through. It is kept open,
    /// silent, until the new boot's agent replaces it.
    past_boot: bool,
    /// What it takes to hand the session over to the next vigild.
    handle: Option<crate::daemon::session::Handle>,
}

/// Runtime facts about one VM.
#[derive(Default)]
struct VmRt {
    uuid: String,
    def: Option<DomainDef>,
    cfg: Option<VmConfig>,
    session: Option<Session>,
    first_hostname: Option<String>,
    /// The boot the last agent session spoke for.
    last_boot_id: Option<String>,
    last_report: Option<Box<Snapshot>>,
    /// The vNICs as the engine was last told.
    nics: Option<Vec<crate::engine::HostNic>>,
    /// When the vNICs were last asked for, and whether another read is due.
    nics_asked: Option<Millis>,
    nics_due: bool,
}

impl VmRt {
    /// The session that may be written to: one of the guest's current boot.
    fn live_session(&self) -> Option<&Session> {
        self.session.as_ref().filter(|s| !s.past_boot)
    }

    /// The guest's boot ended (reset, reboot, stop, crash): its session is
    /// left alone from now on.
    fn boot_ended(&mut self) {
        if let Some(s) = self.session.as_mut() {
            s.past_boot = true;
        }
    }
}

/// A control probe waiting for the agent's reply.
struct PendingProbe {
    reply: oneshot::Sender<Response>,
}

/// The core.
pub struct Core {
    cfg: Config,
    clock: Clock,
    engine: Engine,
    journal: Journal,
    metrics: Arc<Metrics>,
    backend: std::sync::mpsc::Sender<BackendReq>,
    tx: mpsc::Sender<CoreMsg>,
    vms: BTreeMap<String, VmRt>,
    next_session: u64,
    next_probe: u32,
    /// Agent command id → (action id, vm).
    commands: HashMap<u32, (u64, String)>,
    /// Action id → kind (for metrics labels).
    action_kinds: HashMap<u64, String>,
    probes: HashMap<u32, PendingProbe>,
    /// Open faults' metric labels, by fault id (`vigil_fault_active`).
    open_faults: HashMap<u64, FaultLabels>,
    /// Advice requests waiting for the VMs' sizes, by token.
    advising: HashMap<u64, (advise::Ask, oneshot::Sender<Response>)>,
    next_advice: u64,
    last_metrics: Millis,
    /// When old journal records were last pruned.
    last_prune: Millis,
    /// Per VM: when a rejection was last logged, and how many were not.
    reject_logged: HashMap<String, LogLimit>,
    /// Sessions the previous vigild handed over, served once the first
    /// poll has named every VM.
    /// Connections a killed vigild left, by VM, until their guests run.
    orphans: Vec<(String, std::os::fd::OwnedFd)>,
    /// Every domain polled once: what is not listed is gone.
    listed: bool,
    to_adopt: Vec<(
        String,
        crate::daemon::session::Adopted,
        std::os::fd::OwnedFd,
    )>,
    /// When the core last handled a message (a long gap is its own stall).
    last_ran: Millis,
    /// The backend thread's libvirt call under way, if any.
    hv_watch: Arc<super::hv_watch::CallWatch>,
    /// No verdict on the hypervisor before then (vigild itself stalled).
    hv_judged_from: Millis,
    /// How a guest's liveness is probed.
    prober: Box<dyn Prober>,
    /// The journal writer's requests, its answers, and its thread.
    writer: Option<std::sync::mpsc::Sender<WriteReq>>,
    written_rx: Option<mpsc::UnboundedReceiver<Written>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// Requests the writer has not answered yet, oldest first: the write
    /// batch's number, or none (retry, prune).
    unanswered: std::collections::VecDeque<Option<u64>>,
    /// The last write batch numbered, the last one answered, and the last
    /// one known durable.
    last_batch: u64,
    answered_batch: u64,
    durable_batch: u64,
    /// Actions waiting for their intents to be durable: (batch, time, action).
    held: std::collections::VecDeque<(u64, Millis, engine::Action)>,
    /// Since when the journal has refused writes, why, and how many
    /// records wait.
    journal_down_since: Option<Millis>,
    journal_error: String,
    journal_waiting: usize,
    /// Availability since start, kept record by record.
    uptime: crate::metrics::Uptime,
    /// The host-storage thread, and the VMs' disk sources it last got.
    storage: Option<std::sync::mpsc::Sender<super::host_storage::StorageReq>>,
    storage_disks: Option<BTreeMap<String, Vec<String>>>,
    /// Block device name → the VMs with disks on it (the last look).
    disk_devices: BTreeMap<String, Vec<String>>,
    /// The cluster thread, when a cluster is configured.
    cluster: Option<std::sync::mpsc::Sender<super::cluster::ClusterReq>>,
    /// Where the config is loaded from again (none: not from a file).
    source: Option<crate::config::ConfigSource>,
    /// A damaged journal found at start: where it went, and why.
    journal_moved: Option<(std::path::PathBuf, String)>,
}

/// The journal's two connections: the core reads on one (control
/// requests, the start-up settling); the writer thread writes on the other.
pub struct Journals {
    /// For reading.
    pub read: Journal,
    /// For the writer thread.
    pub write: Journal,
}

/// How the core probes a guest kernel's liveness: a real connection to the
/// guest's probe port in vigild, scripted answers in the core harness. The
/// answer comes back as [`CoreMsg::Probed`].
pub trait Prober: Send {
    /// Probe `target` (none: the VM has no probe port) within `timeout`.
    fn probe(
        &self,
        vm: String,
        target: Option<Address>,
        timeout: Duration,
        done: mpsc::Sender<CoreMsg>,
    );
}

/// The real prober: a connection to the guest's probe port.
pub struct NetProber;

impl Prober for NetProber {
    fn probe(
        &self,
        vm: String,
        target: Option<Address>,
        timeout: Duration,
        done: mpsc::Sender<CoreMsg>,
    ) {
        tokio::spawn(async move {
            let result = match target {
                Some(t) => crate::daemon::probe::probe(&t, timeout).await,
                None => ProbeResult::Unsupported,
            };
            let _ = done.send(CoreMsg::Probed { vm, result }).await;
        });
    }
}

impl Core {
    /// Build the core; settles what a previous run left open in the journal.
    pub fn new(
        cfg: Config,
        clock: Clock,
        journals: Journals,
        metrics: Arc<Metrics>,
        backend: std::sync::mpsc::Sender<BackendReq>,
        tx: mpsc::Sender<CoreMsg>,
        prober: Box<dyn Prober>,
    ) -> anyhow::Result<Core> {
        let Journals {
            read: mut journal,
            write,
        } = journals;
        let mut engine = Engine::new(cfg.engine.clone());
        let now = clock.now();
        resume::resume(&mut engine, &mut journal, &cfg, &metrics, now)?;
        let mut vms: BTreeMap<String, VmRt> = BTreeMap::new();
        for v in &cfg.vm {
            vms.entry(v.domain.clone()).or_default().cfg = Some(v.clone());
        }
        let (written_tx, written_rx) = mpsc::unbounded_channel();
        let (writer, writer_thread) =
            super::writer::spawn(write, written_tx).context("cannot start the journal writer")?;
        let core = Core {
            cfg,
            clock,
            engine,
            journal,
            metrics,
            backend,
            tx,
            vms,
            next_session: 1,
            next_probe: 1,
            commands: HashMap::new(),
            action_kinds: HashMap::new(),
            probes: HashMap::new(),
            advising: HashMap::new(),
            open_faults: HashMap::new(),
            next_advice: 0,
            last_metrics: 0,
            last_prune: 0,
            reject_logged: HashMap::new(),
            to_adopt: Vec::new(),
            orphans: Vec::new(),
            listed: false,
            last_ran: now,
            hv_watch: Arc::default(),
            hv_judged_from: now,
            prober,
            writer: Some(writer),
            written_rx: Some(written_rx),
            writer_thread: Some(writer_thread),
            unanswered: Default::default(),
            last_batch: 0,
            answered_batch: 0,
            durable_batch: 0,
            held: Default::default(),
            journal_down_since: None,
            journal_error: String::new(),
            journal_waiting: 0,
            uptime: crate::metrics::Uptime::new(clock.started()),
            storage: None,
            storage_disks: None,
            disk_devices: BTreeMap::new(),
            cluster: None,
            source: None,
            journal_moved: None,
        };
        Ok(core)
    }
}

/// A gap between two turns of the core loop this long means vigild itself
/// did not run (its tick comes every 100 ms).
const SELF_STALL_MS: Millis = 1_000;

fn uuid_of(vms: &BTreeMap<String, VmRt>, vm: &str) -> String {
    vms.get(vm).map(|v| v.uuid.clone()).unwrap_or_default()
}

impl Core {
    fn labels(&self, vm: &str) -> VmLabels {
        VmLabels {
            domain: vm.into(),
            uuid: uuid_of(&self.vms, vm),
        }
    }

    /// Run until shutdown.
    pub async fn run(&mut self, mut rx: mpsc::Receiver<CoreMsg>) -> anyhow::Result<()> {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        log::info!(
            "vigild running: libvirt={} journal={}",
            self.cfg.libvirt_uri,
            self.cfg.journal.display()
        );
        let Some(mut written) = self.take_written() else {
            anyhow::bail!("the core runs once");
        };
        loop {
            let msg = tokio::select! {
                biased;
                Some(w) = written.recv() => CoreMsg::Journal(w),
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            if !self.handle(msg).await {
                break;
            }
        }
        Ok(())
    }

    /// The journal writer's answers, for whoever runs the core's loop.
    pub fn take_written(&mut self) -> Option<mpsc::UnboundedReceiver<Written>> {
        self.written_rx.take()
    }

    /// The writer has requests not answered yet.
    pub fn journal_busy(&self) -> bool {
        !self.unanswered.is_empty()
    }

    /// Handle one message; `false` once the core has stopped (Shutdown).
    pub async fn handle(&mut self, msg: CoreMsg) -> bool {
        {
            let now = self.clock.now();
            // The tick comes every 100 ms: a longer gap is vigild itself not
            // running (stopped, starved, frozen, a slow disk). What went
            // unheard then is not the guests' silence: start every VM's
            // deadlines over before judging any.
            let gap = now.saturating_sub(std::mem::replace(&mut self.last_ran, now));
            if gap >= SELF_STALL_MS {
                log::warn!(
                    "vigild did not run for {gap} ms: every VM's deadlines start over, none is judged on it"
                );
                let out = self.engine.global(now, engine::Global::Stalled { ms: gap });
                self.apply(now, out);
                // A call under way while vigild was stopped is not the
                // hypervisor's silence.
                self.hv_judged_from = now + self.cfg.hypervisor_timeout_ms;
            }
            match msg {
                CoreMsg::Shutdown => {
                    log::info!("stopping");
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                    if !self.hand_over().await {
                        self.close_sessions_for_exit().await;
                    }
                    self.keep_orphans_for_exit();
                    self.stop_writer();
                    return false;
                }
                CoreMsg::Journal(w) => self.on_written(now, w),
                CoreMsg::Tick => {
                    self.judge_hypervisor(now);
                    self.release_orphans();
                    let out = self.engine.global(now, engine::Global::Tick);
                    self.apply(now, out);
                    self.nics_due(now);
                    // The systemd watchdog is fed from the main loop, so a
                    // stuck core stops feeding it.
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    self.keepalives(now);
                    if self.journal_down_since.is_some() && self.unanswered.is_empty() {
                        self.request(WriteReq::Retry, None);
                    }
                    if now.saturating_sub(self.last_prune) >= 3_600_000 {
                        self.last_prune = now;
                        self.prune_journal(now);
                    }
                    if now.saturating_sub(self.last_metrics) >= 1000 {
                        self.last_metrics = now;
                        self.refresh_metrics(now);
                    }
                }
                CoreMsg::Hello {
                    vm,
                    hello,
                    handle,
                    reply,
                } => self.on_hello(now, vm, hello, handle, reply),
                CoreMsg::Session { vm, session, msg } => self.on_session(now, &vm, session, *msg),
                CoreMsg::Closed { vm, session, why } => {
                    let current = self
                        .vms
                        .get(&vm)
                        .and_then(|v| v.session.as_ref())
                        .is_some_and(|s| s.id == session);
                    if current {
                        log::info!("vm={vm} agent session {session} closed: {why}");
                        if let Some(v) = self.vms.get_mut(&vm) {
                            v.session = None;
                        }
                        self.step(now, &vm, Input::SessionClosed);
                    }
                }
                CoreMsg::Rejected { vm, reason } => {
                    // Guest-triggered: at most one line per VM per second.
                    let limit = self
                        .reject_logged
                        .entry(vm.clone())
                        .or_insert_with(|| LogLimit::new(60));
                    if let Some(suppressed) = limit.allow(now) {
                        log::warn!("vm={vm} guest input rejected: reason={reason} (and {suppressed} more not logged)");
                    }
                    let l = RejectLabels {
                        domain: vm.clone(),
                        uuid: uuid_of(&self.vms, &vm),
                        reason: reason.into(),
                    };
                    self.metrics.rejected.get_or_create(&l).inc();
                }
                CoreMsg::Polled { polls, full } => {
                    self.on_polled(now, polls, full);
                    self.adopt_handed_over();
                    self.listed |= full;
                }
                CoreMsg::Hv(ev) => self.on_hv(now, ev),
                CoreMsg::Nics { vm, nics } => self.on_nics(now, &vm, nics),
                CoreMsg::Sizing { token, sizes } => self.on_sizing(now, token, sizes),
                CoreMsg::HostKernel(h) => self.on_host_kernel(now, h),
                CoreMsg::HostStorage {
                    filesystems,
                    devices,
                } => self.on_host_storage(now, filesystems, devices),
                CoreMsg::HostPressure { memory, io } => {
                    let out = self.engine.host_pressure(now, memory, io);
                    self.apply(now, out);
                }
                CoreMsg::ActionDone { id, vm, ok, detail } => {
                    let nic = self
                        .action_kinds
                        .get(&id)
                        .is_some_and(|k| k == "set-link-up" || k == "replug-nic");
                    if let Some(kind) = self.action_kinds.remove(&id) {
                        let l = RecoveryLabels {
                            domain: vm.clone(),
                            uuid: uuid_of(&self.vms, &vm),
                            action: kind.clone(),
                            result: if ok { "ok" } else { "failed" }.into(),
                        };
                        self.metrics.recoveries.get_or_create(&l).inc();
                        log::info!("vm={vm} action=#{id} {kind} ok={ok} detail={detail}");
                    }
                    self.step(now, &vm, Input::ActionDone { id, ok, detail });
                    if nic {
                        self.ask_nics(now, &vm); // show its effect at once
                    }
                }
                CoreMsg::Probed { vm, result } => self.step(now, &vm, Input::Probe(result)),
                CoreMsg::ResolveCid { cid, reply } => {
                    // Re-resolved on every connection from the config
                    // and the current definitions (refreshed on lifecycle
                    // events); the config's word wins.
                    let by = |f: &dyn Fn(&VmRt) -> Option<u32>| {
                        self.vms
                            .iter()
                            .find(|(_, v)| f(v) == Some(cid))
                            .map(|(n, _)| n.clone())
                    };
                    let vm = by(&|v| v.cfg.as_ref().and_then(|c| c.cid))
                        .or_else(|| by(&|v| v.def.as_ref().and_then(|d| d.vsock_cid)));
                    let _ = reply.send(vm);
                }
                CoreMsg::Control(req, reply) => self.on_control(now, req, reply),
                CoreMsg::RequestTimeout(id) => {
                    if let Some((action, vm)) = self.commands.remove(&id) {
                        self.step(
                            now,
                            &vm,
                            Input::ActionDone {
                                id: action,
                                ok: false,
                                detail: "agent did not answer in time".into(),
                            },
                        );
                    }
                    if let Some(p) = self.probes.remove(&id) {
                        let _ = p.reply.send(Response::err(
                            "unavailable",
                            "the agent did not answer the probe in time",
                        ));
                    }
                }
            }
        }
        true
    }

    /// Delete journal records past the retention (faults still open stay).
    fn prune_journal(&mut self, now: Millis) {
        let days = self.cfg.journal_retention_days;
        if days == 0 {
            return;
        }
        let cutoff = now.saturating_sub(days.saturating_mul(86_400_000));
        self.request(WriteReq::Prune { cutoff }, None);
    }

    fn step(&mut self, now: Millis, vm: &str, input: Input) {
        let out = self.engine.step(now, vm, input);
        self.apply(now, out);
    }
}
