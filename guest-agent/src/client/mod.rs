//! The reporter: connect, handshake, heartbeat from a thread of its own,
//! report periodically and at once on trouble, answer probes and commands,
//! say `Bye` on stop, reconnect with capped exponential backoff and jitter.
//!
//! Threads: the heartbeat ticker (whole agent lifetime; writes a heartbeat
//! when connected and pings the systemd watchdog), the kmsg follower, one
//! reader per connection, at most one command runner. The main thread owns
//! the collector and all decisions; the others talk to it over a channel.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use vigil_protocol::io::{write_message, MessageReader};
use vigil_protocol::snapshot::{KernelEventKind, Snapshot};
use vigil_protocol::transport::{self, Address, Stream};
use vigil_protocol::*;

use crate::collect::{Changes, Collector, KernelLog};
use crate::config::Config;
use crate::kmsg::{KmsgReader, ReadOutcome};
use crate::{commands, pstore};
use vigil_protocol::limits::RateLimit;

mod handshake;
mod session;
mod shutdown;
mod threads;

use handshake::{handshake, HandshakeError};
use shutdown::{going_down, stop_reason};
use threads::{heartbeat_thread, kmsg_thread, reader_thread, systemd_notify};

/// How long to wait for `Welcome` after `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that takes longer than this means the host is stuck: reconnect.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the cheap checks run between reports: watched pids, and each
/// filesystem's writability and fill (a full or read-only filesystem is
/// reported within about a second, not at the next periodic report).
const WATCH_TICK: Duration = Duration::from_secs(1);
/// With protocol 2 the host sends keepalives; silence for this many of its
/// intervals (and at least `MIN_HOST_SILENCE`) means the session is dead
/// (a close the VMM lost, a host that died without a word): reconnect.
const KEEPALIVES_MISSED: u32 = 3;
/// The least host silence taken for a dead session.
const MIN_HOST_SILENCE: Duration = Duration::from_secs(6);
/// How long an agent that said the system is going down waits to be
/// stopped before it takes the shutdown for cancelled and connects again.
const GOING_DOWN_WAIT: Duration = Duration::from_secs(120);

/// Something for the main thread.
enum Event {
    /// New kernel events are queued; `urgent` if any warrants a report now.
    Kernel { urgent: bool },
    /// A message from the host on connection `conn`.
    Host(u64, Box<Message>),
    /// Connection `conn` ended (read error, EOF, failed heartbeat).
    Closed(u64, String),
    /// A command finished.
    CommandDone(CommandResult),
    /// Stop was requested (wakes the main loop at once).
    Stop,
    /// A maintenance window opened or closed (`vigil-agent maintenance`).
    Maintenance(crate::maintenance::Change),
}

/// Asks a running agent to stop: say `Bye` and return from `run`.
#[derive(Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    tx: Sender<Event>,
}

impl Stopper {
    /// Request the stop.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Event::Stop);
    }
}

/// The current connection's writer, shared with the heartbeat ticker.
struct Link {
    conn: u64,
    stream: Stream,
    version: u8,
    seq: u64,
}

type Slot = Arc<Mutex<Option<Link>>>;

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Option<Link>> {
    // A panicking holder cannot leave a half-written frame we could fix; the
    // stream will fail and reconnect, so recover the guard.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// Clamp host-requested settings to what this agent accepts.
pub fn clamp(s: Settings) -> Settings {
    Settings {
        heartbeat_interval_ms: s.heartbeat_interval_ms.clamp(50, 60_000),
        report_interval_ms: s.report_interval_ms.clamp(1000, 3_600_000),
        thresholds: s.thresholds,
    }
}

/// The error's underlying cause as text ("" when it has none).
fn source_text(e: &dyn std::error::Error) -> String {
    e.source().map(|s| s.to_string()).unwrap_or_default()
}

/// Why a session ended.
enum End {
    /// Stop requested; `Bye` was sent.
    Stopped,
    /// The system is going down (a reboot or power-off under way); `Bye`
    /// was sent, the agent waits for its own stop.
    GoingDown,
    /// The connection broke or the host closed it.
    Lost(String),
}

/// The agent's main loop state.
pub struct Agent {
    config: Config,
    stop: Arc<AtomicBool>,
    collector: Collector,
    kernel: Arc<Mutex<KernelLog>>,
    slot: Slot,
    heartbeat_ms: Arc<std::sync::atomic::AtomicU32>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    conn: u64,
    command_running: bool,
    deny_log: RateLimit,
    started: Instant,
    /// The current session's protocol version.
    version: u8,
    /// When the host last said anything on the current session, and how
    /// often it says it will (protocol 2 keepalives).
    host_heard: Instant,
    keepalive_ms: u32,
    /// The guest-declared maintenance window.
    maint: crate::maintenance::Shared,
    /// Set when the system was found going down (a reboot or power-off
    /// queued): the session says `Bye` with it and reports nothing more.
    going_down: Option<ByeReason>,
}

impl Agent {
    /// An agent for `config`; it runs until its [`Stopper`] is used.
    pub fn new(config: Config) -> Agent {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        Agent {
            collector: Collector::new(&config),
            kernel: Arc::default(),
            slot: Arc::default(),
            heartbeat_ms: Arc::new(Settings::default().heartbeat_interval_ms.into()),
            tx,
            rx,
            conn: 0,
            command_running: false,
            deny_log: RateLimit::new(10),
            started: Instant::now(),
            version: 1,
            host_heard: Instant::now(),
            keepalive_ms: 2000,
            maint: Arc::new(Mutex::new(crate::maintenance::State::load(
                &config.state_dir,
            ))),
            going_down: None,
            config,
            stop,
        }
    }

    /// A handle that stops this agent.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: self.stop.clone(),
            tx: self.tx.clone(),
        }
    }

    /// Run until stopped. Returns only on stop (or a fatal setup error).
    pub fn run(mut self) -> anyhow::Result<()> {
        let addr: Address = self.config.address()?;
        {
            let (c, k, t) = (self.config.clone(), self.kernel.clone(), self.tx.clone());
            let start = self.started;
            thread::Builder::new()
                .name("kmsg".into())
                .spawn(move || kmsg_thread(c, k, t, start))?;
        }
        {
            let (slot, ms, tx, stop) = (
                self.slot.clone(),
                self.heartbeat_ms.clone(),
                self.tx.clone(),
                self.stop.clone(),
            );
            let proc_root = self.config.proc_root.clone();
            let uptime = move || crate::collect::uptime_ms(&proc_root).unwrap_or(0);
            thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || heartbeat_thread(slot, ms, uptime, tx, stop))?;
        }
        self.serve_maintenance();
        self.collector.start_tcp_checks(&self.config);
        let max_backoff = Duration::from_millis(self.config.limits.max_backoff_ms);
        let mut backoff = Duration::from_millis(100);
        let mut notified = false;
        let mut last_error = String::new();
        while !self.stop.load(Ordering::Relaxed) {
            let attempt = transport::connect(&addr, HANDSHAKE_TIMEOUT)
                .map_err(|e| format!("{e}: {}", source_text(&e)))
                .and_then(|mut s| {
                    handshake(&mut s, &self.config)
                        .map(|(w, r)| (s, w, r))
                        .map_err(|e| {
                            if matches!(e, HandshakeError::Refused(_)) {
                                backoff = max_backoff;
                            }
                            e.to_string()
                        })
                });
            if !notified {
                systemd_notify(&[sd_notify::NotifyState::Ready]);
                notified = true;
            }
            match attempt {
                Ok((stream, welcome, reader)) => {
                    info!("connected: addr={addr} version={}", welcome.version);
                    last_error.clear();
                    let began = Instant::now();
                    match self.session(stream, welcome, reader) {
                        End::Stopped => break,
                        End::GoingDown => {
                            // The system stops the agent soon; if it does
                            // not (a shutdown cancelled), connect again.
                            self.sleep_interruptibly(GOING_DOWN_WAIT);
                            if self.stop.load(Ordering::Relaxed) {
                                break;
                            }
                            warn!("the system did not go down; connecting again");
                        }
                        End::Lost(why) => warn!("disconnected: addr={addr} reason={why}"),
                    }
                    if began.elapsed() > Duration::from_secs(10) {
                        backoff = Duration::from_millis(100);
                    }
                }
                Err(e) => {
                    // Log each distinct failure once, not every retry.
                    if e != last_error {
                        warn!("cannot reach host: addr={addr} error={e}; retrying with back-off");
                        last_error = e;
                    }
                }
            }
            self.sleep_interruptibly(jitter(backoff, self.started.elapsed().subsec_nanos()));
            backoff = (backoff * 2).min(max_backoff);
        }
        info!("stopped");
        Ok(())
    }

    /// Serve `vigil-agent maintenance` on the runtime directory's socket:
    /// a change is passed to the main loop, which tells the host.
    fn serve_maintenance(&self) {
        use crate::maintenance::{bind, now_ms, serve};
        let listener = match bind(&self.config.state_dir) {
            Ok(l) => l,
            Err(e) => {
                warn!(
                    "maintenance socket unavailable in {}: {e}",
                    self.config.state_dir.display()
                );
                return;
            }
        };
        let (maint, slot, tx) = (self.maint.clone(), self.slot.clone(), self.tx.clone());
        let handle = move |req| {
            let (mut reply, change) = maint
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .apply(req, now_ms());
            if let Some(c) = change {
                info!("maintenance: {}", reply.message);
                let _ = tx.send(Event::Maintenance(c));
            }
            reply.connected = lock(&slot).is_some();
            reply
        };
        if let Err(e) = thread::Builder::new()
            .name("control".into())
            .spawn(move || serve(listener, handle))
        {
            warn!("cannot serve the maintenance socket: {e}");
        }
    }

    /// Tell the host about a maintenance window change.
    fn tell_maintenance(&mut self, c: crate::maintenance::Change) -> io::Result<()> {
        use crate::maintenance::Change;
        let notice = match c {
            Change::Start(duration_s, reason) => Notice::MaintenanceStart {
                duration_s,
                reason: Text::from(reason),
            },
            Change::End => Notice::MaintenanceEnd,
        };
        self.send(&Message::Notice(notice))
    }

    fn sleep_interruptibly(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= until {
                return;
            }
            // Drain stray events (a dead connection's reader, kernel events
            // keep queueing in the bounded log).
            let _ = self.rx.recv_timeout(until - now);
        }
    }

    fn send(&mut self, msg: &Message) -> io::Result<()> {
        let mut guard = lock(&self.slot);
        let Some(link) = guard.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "not connected"));
        };
        if let Err(e) = write_message(&mut link.stream, msg, link.version, DEFAULT_MAX_PAYLOAD) {
            let _ = link.stream.shutdown();
            *guard = None;
            return Err(io::Error::other(format!("{e}: {}", source_text(&e))));
        }
        Ok(())
    }

    /// Remember how far into this boot's kernel log the host was told
    /// (a snapshot with `events` was delivered).
    fn delivered(&self, events: &[vigil_protocol::snapshot::KernelEvent]) {
        if let Some(seq) = events.iter().map(|e| e.seq).max() {
            let boot = crate::kmsg::boot_id(&self.config.proc_root);
            if let Err(e) = crate::kmsg::mark_reported_up_to(&self.config.state_dir, &boot, seq) {
                warn!("cannot remember the kernel log position: {e}");
            }
        }
    }

    /// Whether a snapshot with a watched service down was taken while the
    /// system is going down: then the service was stopped by the shutdown,
    /// not lost, and the session ends with a `Bye` instead of a report.
    /// Asked of systemd only when something is down (a fork, 2 s bound).
    /// The snapshot's kernel events go back to the queue, unsent.
    fn shutting_down(&mut self, snapshot: &mut Snapshot) -> bool {
        if self.going_down.is_none() && snapshot.watched.iter().any(|w| !w.running) {
            self.going_down = going_down();
            if let Some(r) = &self.going_down {
                info!("a watched service stopped while the system is going down ({r:?})");
            }
        }
        if self.going_down.is_some() {
            self.kernel
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .requeue(std::mem::take(&mut snapshot.kernel_events));
        }
        self.going_down.is_some()
    }

    fn snapshot(&mut self) -> (Snapshot, Changes) {
        let (mut s, changes) = self.collector.snapshot();
        let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        s.kernel_events = k.drain();
        s.kernel_counters = k.counters;
        (s, changes)
    }

    fn report(&mut self, seq: &mut u64, trigger: ReportTrigger) -> io::Result<()> {
        let (mut snapshot, changes) = self.snapshot();
        if self.shutting_down(&mut snapshot) {
            return Ok(());
        }
        let trigger = match trigger {
            ReportTrigger::Periodic if changes.read_only => ReportTrigger::ReadOnlyRemount,
            ReportTrigger::Periodic if changes.service => ReportTrigger::ServiceChange,
            t => t,
        };
        let crash = pstore::unreported(
            &self.config.sys_root.join("fs/pstore"),
            &self.config.state_dir,
        );
        snapshot.crash_record = crash.clone();
        *seq += 1;
        let events = snapshot.kernel_events.clone();
        match self.send(&Message::Report(Report {
            seq: *seq,
            trigger,
            snapshot,
        })) {
            Ok(()) => {
                self.delivered(&events);
                if crash.is_some() {
                    if let Err(e) = pstore::mark_reported(&self.config.state_dir) {
                        warn!("cannot remember pstore record as reported: {e}");
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.kernel
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .requeue(events);
                Err(e)
            }
        }
    }
}

/// ±20 % jitter from a cheap seed (no RNG dependency needed for this).
fn jitter(d: Duration, seed: u32) -> Duration {
    let x = seed.wrapping_mul(2_654_435_761) % 401; // 0..=400
    d * (800 + x) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for seed in [0, 1, 7, 12345, u32::MAX] {
            let j = jitter(Duration::from_millis(1000), seed);
            assert!(
                j >= Duration::from_millis(800) && j <= Duration::from_millis(1200),
                "{j:?}"
            );
        }
    }

    #[test]
    fn settings_are_clamped() {
        let s = clamp(Settings {
            heartbeat_interval_ms: 1,
            report_interval_ms: u32::MAX,
            ..Settings::default()
        });
        assert_eq!(
            (s.heartbeat_interval_ms, s.report_interval_ms),
            (50, 3_600_000)
        );
    }
}
