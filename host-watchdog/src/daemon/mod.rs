//! `vigild`: sessions, hypervisor backend, engine, executor, journal,
//! metrics and control, wired together.
//!
//! One task (the core) owns the engine, the journal and every VM's runtime
//! state; sessions, the backend thread, probes, the control server and the
//! tick talk to it over one bounded channel ([`CoreMsg`]). Records are
//! committed to the journal before any action they announce is dispatched.

pub mod act;
pub mod backend_thread;
pub mod clock;
pub mod cluster;
pub mod control;
pub mod executor;
pub mod handover;
pub mod host_kmsg;
pub mod host_storage;
pub mod hv_watch;
mod io_counters;
pub mod metrics;
pub mod net_metrics;
pub mod probe;
pub mod schedule;
pub mod session;
pub mod vsock;
pub mod warn_metrics;
pub mod writer;

pub mod core;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use vigil_protocol::transport::{bind_unix, hybrid_listen_path, Address};
use vigil_protocol::{Hello, Message};

use self::control::{Request, Response};
use crate::backend::{DomainDef, DomainPoll};
use crate::config::Config;
use crate::engine::ProbeResult;

/// Everything the core hears about.
pub enum CoreMsg {
    /// A connection said `Hello` for `vm`.
    Hello {
        /// VM (from the socket it arrived on).
        vm: String,
        /// The hello.
        hello: Hello,
        /// What it takes to hand the session over to the next vigild.
        handle: Option<session::Handle>,
        /// The core's answer.
        reply: oneshot::Sender<session::HelloReply>,
    },
    /// A message on a session.
    Session {
        /// VM (shared: one per message would be an allocation each).
        vm: std::sync::Arc<str>,
        /// Session id.
        session: u64,
        /// Message.
        msg: Box<Message>,
    },
    /// A session ended.
    Closed {
        /// VM.
        vm: String,
        /// Session id.
        session: u64,
        /// Why.
        why: String,
    },
    /// A guest-driven limit was hit.
    Rejected {
        /// VM.
        vm: String,
        /// Metrics label.
        reason: &'static str,
    },
    /// Domain polls: every domain's (`full`, so a domain missing from it
    /// is no longer defined), or only those that need watching.
    Polled {
        /// Each polled domain's result.
        polls: Vec<(DomainDef, Result<DomainPoll, String>)>,
        /// Every defined domain was polled.
        full: bool,
    },
    /// A hypervisor event.
    Hv(crate::backend::events::HvEvent),
    /// A domain's vNICs as the host sees them now.
    Nics {
        /// Domain.
        vm: String,
        /// Its vNICs.
        nics: Vec<crate::engine::HostNic>,
    },
    /// VMs' sizes, for an advice request.
    Sizing {
        /// The request.
        token: u64,
        /// Each VM's size, or why not.
        sizes: Vec<(String, Result<crate::backend::Sizing, String>)>,
    },
    /// A record of the host's kernel log that tells about the host.
    HostKernel(host_kmsg::HostKernel),
    /// The host's filesystems under VM disks, sampled, and which VMs sit
    /// on which block device.
    HostStorage {
        /// The filesystems.
        filesystems: Vec<crate::engine::storage::FsSample>,
        /// Block device name → VMs with disks on it.
        devices: std::collections::BTreeMap<String, Vec<String>>,
    },
    /// The host's memory and I/O pressure (PSI `full` avg60, %).
    HostPressure {
        /// Memory.
        memory: Option<f64>,
        /// I/O.
        io: Option<f64>,
    },
    /// An action finished.
    ActionDone {
        /// Action id.
        id: u64,
        /// VM.
        vm: String,
        /// Success.
        ok: bool,
        /// Detail.
        detail: String,
    },
    /// A liveness probe finished.
    Probed {
        /// VM.
        vm: String,
        /// Result.
        result: ProbeResult,
    },
    /// A control request.
    Control(Request, oneshot::Sender<Response>),
    /// Which VM has this vsock CID?
    ResolveCid {
        /// Peer CID.
        cid: u32,
        /// The domain name, if one has this CID.
        reply: oneshot::Sender<Option<String>>,
    },
    /// The journal writer answered.
    Journal(writer::Written),
    /// Time passes.
    Tick,
    /// An agent command or control probe got no answer in time.
    RequestTimeout(u32),
    /// Stop.
    Shutdown,
}

/// Run vigild until SIGTERM/SIGINT.
pub fn run(config: Config, source: Option<crate::config::ConfigSource>) -> anyhow::Result<()> {
    // Before any thread: the descriptors a previous vigild stored.
    let adopted = handover::take();
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start runtime")?;
    rt.block_on(run_async(config, source, adopted))
}

/// Two descriptors per connected guest (and one more while handing them
/// over): take all the open-file limit allows (the soft limit up to the
/// hard one), and say what it is.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => log::info!("open files limit raised from {soft} to {hard}"),
            Err(e) => log::warn!("open files limit stays {soft}: {e}"),
        },
        Ok((soft, _)) => log::info!("open files limit {soft}"),
        Err(e) => log::warn!("cannot read the open files limit: {e}"),
    }
}

async fn run_async(
    config: Config,
    source: Option<crate::config::ConfigSource>,
    adopted: handover::Taken,
) -> anyhow::Result<()> {
    let clock = clock::Clock::new();
    // libvirt's event loop must be registered before the connection opens.
    crate::backend::events::start_event_loop()
        .map_err(|e| anyhow::anyhow!("libvirt event loop: {e}"))?;
    // libvirtd down at start is not vigild's end: its agents' sessions are
    // served, and the backend thread connects when it can.
    let lv = crate::backend::libvirt::Libvirt::unconnected(&config.libvirt_uri);
    if let Err(e) = lv.reconnect() {
        log::error!("{e}; vigild goes on and connects when libvirtd answers");
    }
    let (core_tx, core_rx) = mpsc::channel::<CoreMsg>(4096);
    // Events: libvirt thread → std channel → bridge thread → core; they are
    // registered again on each new connection.
    let (ev_tx, ev_rx) = std::sync::mpsc::channel();
    lv.watch_events(ev_tx)
        .map_err(|e| anyhow::anyhow!("libvirt events: {e}"))?;
    {
        let tx = core_tx.clone();
        std::thread::Builder::new()
            .name("events-bridge".into())
            .spawn(move || {
                while let Ok(ev) = ev_rx.recv() {
                    if tx.blocking_send(CoreMsg::Hv(ev)).is_err() {
                        return;
                    }
                }
            })?;
    }
    let (be_tx, be_rx) = std::sync::mpsc::channel();
    let hv_watch: Arc<hv_watch::CallWatch> = Arc::default();
    {
        let tx = core_tx.clone();
        let every = backend_thread::Cadence {
            hot: Duration::from_millis(config.poll_interval_ms),
            quiet: Duration::from_millis(config.quiet_poll_interval_ms),
        };
        let io_uri = config.libvirt_uri.clone();
        let me = be_tx.clone();
        let timeout = Duration::from_millis(config.action_timeout_ms);
        let watched = backend_thread::Watched {
            watch: hv_watch.clone(),
            clock,
        };
        std::thread::Builder::new()
            .name("backend".into())
            .spawn(move || {
                backend_thread::run(Box::new(lv), io_uri, be_rx, me, tx, every, timeout, watched)
            })?;
    }
    {
        let tx = core_tx.clone();
        std::thread::Builder::new()
            .name("host-pressure".into())
            .spawn(move || host_kmsg::pressure(std::path::Path::new("/proc"), &tx))?;
    }
    if !config.host_kmsg.as_os_str().is_empty() {
        let (tx, path) = (core_tx.clone(), config.host_kmsg.clone());
        std::thread::Builder::new()
            .name("host-kmsg".into())
            .spawn(move || host_kmsg::run(path, "/proc".into(), tx))?;
    }
    let (storage_tx, storage_rx) = std::sync::mpsc::channel();
    {
        let (tx, journal) = (core_tx.clone(), config.journal.clone());
        std::thread::Builder::new()
            .name("host-storage".into())
            .spawn(move || host_storage::run(journal, storage_rx, tx))?;
    }
    let cluster_tx = if config.cluster.enabled() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (core, cfg) = (core_tx.clone(), config.cluster.clone());
        std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || cluster::run(cfg, rx, core))?;
        Some(tx)
    } else {
        None
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let open = || {
        crate::journal::Journal::open(&config.journal)
            .with_context(|| format!("cannot open journal {}", config.journal.display()))
    };
    // A damaged journal is moved aside, never truncated, and a fresh one
    // begun: vigild watches on, and the old one is there to be read.
    let (read, moved) = crate::journal::check::open_or_move_aside(&config.journal)
        .with_context(|| format!("cannot open journal {}", config.journal.display()))?;
    if let Some((aside, why)) = &moved {
        log::error!(
            "journal {} is damaged ({why}): moved aside to {} and a fresh one begun; \
             `vigild --check-journal {}` tells what is in it",
            config.journal.display(),
            aside.display(),
            aside.display()
        );
    }
    let journals = core::Journals {
        read,
        write: open()?,
    };
    let limits = session::Limits::from_config(&config);
    // Agent sockets, one per configured VM.
    for vm in &config.vm {
        let Some(agent) = &vm.agent else { continue };
        let addr: Address = agent.parse().context("agent address")?;
        let path = match &addr {
            Address::Unix(p) => p.clone(),
            Address::Hybrid { path, port } => hybrid_listen_path(path, *port),
            Address::Vsock { .. } => {
                anyhow::bail!("vm {}: agent must be unix:// or hybrid://", vm.domain)
            }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let std_listener = bind_unix(&path)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        let (name, tx) = (vm.domain.clone(), core_tx.clone());
        tokio::spawn(async move {
            // Accept errors (out of descriptors, above all) back off up to
            // 1 s and are said once a minute, with a count: no spinning.
            let mut said = vigil_protocol::limits::LogLimit::new(1);
            let mut backoff = Duration::from_millis(50);
            let started = std::time::Instant::now();
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        backoff = Duration::from_millis(50);
                        let fd = Some(std::os::fd::AsRawFd::as_raw_fd(&s));
                        tokio::spawn(session::connection(s, name.clone(), tx.clone(), limits, fd));
                    }
                    Err(e) => {
                        let now = started.elapsed().as_millis() as u64;
                        if let Some(n) = said.allow(now) {
                            log::warn!("accept failed on {name}'s socket: {e} ({n} more since the last report)");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        });
        log::info!("listening for {}'s agent on {}", vm.domain, path.display());
    }
    // Kernel vsock listeners (identity from the peer CID).
    for l in &config.listen {
        if let Ok(Address::Vsock { cid, port }) = l.parse::<Address>() {
            let tx = core_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = vsock::serve(cid, port, tx, limits).await {
                    log::error!("vsock listener vsock://{cid}:{port} failed: {e}");
                }
            });
            log::info!("listening for agents on {l}");
        }
    }
    // Control socket.
    let (control, access) = core::control_listener(&config.control_socket, &config.control_group)?;
    tokio::spawn(core::serve_control(control, core_tx.clone(), access));
    // Metrics.
    if !config.metrics_listen.is_empty() {
        let addr = config.metrics_listen.parse().context("metrics_listen")?;
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, m).await {
                log::error!("metrics server failed: {e}");
            }
        });
        log::info!("metrics on http://{addr}/metrics");
    }
    // Tick.
    {
        let tx = core_tx.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(100));
            loop {
                iv.tick().await;
                if tx.send(CoreMsg::Tick).await.is_err() {
                    return;
                }
            }
        });
    }
    // Signals.
    {
        let tx = core_tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        // The answer goes to the log (no one waits for it).
                        let (reply, _) = oneshot::channel();
                        let _ = tx.send(CoreMsg::Control(Request::Reload, reply)).await;
                    }
                }
            }
            let _ = tx.send(CoreMsg::Shutdown).await;
        });
    }
    let journal_path = config.journal.clone();
    let mut core = core::Core::new(
        config,
        clock,
        journals,
        metrics,
        be_tx,
        core_tx,
        Box::new(core::NetProber),
    )
    .with_context(|| {
        format!(
            "cannot open journal {}: what the last run left unfinished cannot be settled \
             (vigild does not start without it)",
            journal_path.display()
        )
    })?;
    core.adopt(adopted.sessions);
    core.hold_orphans(adopted.orphans);
    core.config_source(source);
    core.journal_moved_aside(moved);
    core.watch_hypervisor(hv_watch);
    core.watch_storage(storage_tx);
    if let Some(tx) = cluster_tx {
        core.join_cluster(tx);
    }
    core.run(core_rx).await
}
