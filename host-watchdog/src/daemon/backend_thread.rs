//! The backend thread: owns the hypervisor connection (all calls block),
//! polls the domains as the schedule says (`schedule.rs`: every one at the
//! quiet interval, those that need watching at the poll interval), and
//! hands actions to the executor.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::io_counters::{io_thread, BulkLink, IoCounters, IoReq};
use super::schedule::Due;
use super::CoreMsg;
use crate::backend::{DomainDef, Hypervisor};
use crate::engine::{ActionKind, DomainState, Millis};

/// A full relist of domain definitions this often, in case a define or
/// undefine event was missed.
const RELIST_EVERY: Duration = Duration::from_secs(300);

/// A request for the backend thread.
#[derive(Debug)]
pub enum BackendReq {
    /// Carry out an action and report `ActionDone`.
    Act {
        /// Action id.
        id: u64,
        /// Domain.
        vm: String,
        /// What.
        kind: ActionKind,
        /// For add-memory.
        memory_kib: Option<u64>,
        /// Known-good snapshot for revert.
        snapshot: Option<String>,
        /// Time, for naming the safety snapshot (the intent's time).
        now: Millis,
        /// A restart interrupted this action: do only what is left of it.
        resume: bool,
    },
    /// Re-read domain definitions now.
    Relist,
    /// Read one domain's vNICs now (its live definition and taps) and
    /// tell the core.
    Nics(String),
    /// Read VMs' sizes for an advice request and tell the core.
    Sizing {
        /// The request.
        token: u64,
        /// The VMs.
        vms: Vec<String>,
    },
    /// A domain needs watching (its I/O counters gathered at once, then
    /// polled at the poll interval) or is healthy again (left to the
    /// quiet pass).
    Watch {
        /// Domain.
        vm: String,
        /// Needs watching.
        hot: bool,
    },
    /// An executor thread finished an action.
    Finished(super::executor::Done),
    /// The I/O thread has fresh counters for a domain that just turned
    /// hot: poll it now (a suspicion's first sample holds I/O gathered
    /// after the guest went silent, never the quiet pass's).
    IoFresh(String),
    /// The I/O thread's answer to a quiet pass's bulk call.
    Bulk(super::io_counters::BulkPolls),
}

/// How often domains are polled: those that need watching, and all.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// The poll interval (hot domains).
    pub hot: Duration,
    /// The quiet pass (every domain).
    pub quiet: Duration,
}

/// Whether the hypervisor answers this thread's calls: marked on `watch`
/// with `clock`'s time (see [`super::hv_watch`]).
pub struct Watched {
    /// Where the calls under way are marked.
    pub watch: std::sync::Arc<super::hv_watch::CallWatch>,
    /// The core's clock.
    pub clock: super::clock::Clock,
}

impl Watched {
    fn call<T>(&self, f: impl FnOnce() -> T) -> T {
        self.watch.begin(self.clock.now());
        let r = f();
        self.watch.end();
        r
    }
}

/// The connection to the hypervisor while it is lost: when to try again,
/// and the back-off (doubling from 250 ms up to 5 s).
struct Lost {
    next_try: Instant,
    backoff: Duration,
    tries: u32,
}

const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// After a call failed: is the connection itself gone? Then it is marked
/// lost (the core sees it on its next tick) and reconnecting begins.
fn check_link(hv: &mut dyn Hypervisor, watched: &Watched, lost: &mut Option<Lost>) {
    if lost.is_some() || hv.connected() {
        return;
    }
    log::error!(
        "the connection to the hypervisor is lost (libvirtd stopped or restarted): \
         reconnecting; no destructive action until it is back"
    );
    watched.watch.lose(watched.clock.now());
    *lost = Some(Lost {
        next_try: Instant::now() + RECONNECT_FIRST,
        backoff: RECONNECT_FIRST,
        tries: 0,
    });
}

/// Try to connect again when it is time; `true` once connected.
fn try_reconnect(hv: &mut dyn Hypervisor, watched: &Watched, lost: &mut Option<Lost>) -> bool {
    let Some(l) = lost.as_mut() else {
        return true;
    };
    let now = Instant::now();
    if now < l.next_try {
        return false;
    }
    l.tries += 1;
    match watched.call(|| hv.reconnect()) {
        Ok(()) if hv.connected() => {
            log::warn!(
                "connected to the hypervisor again (after {} tries): domains listed again, events registered again",
                l.tries
            );
            watched.watch.regain();
            *lost = None;
            true
        }
        r => {
            if l.tries == 1 || l.tries % 20 == 0 {
                let why = r
                    .err()
                    .map_or("connected but not alive".into(), |e| e.to_string());
                log::warn!(
                    "cannot reconnect to the hypervisor (try {}): {why}",
                    l.tries
                );
            }
            l.backoff = (l.backoff * 2).min(RECONNECT_MAX);
            l.next_try = now + l.backoff;
            false
        }
    }
}

/// How often the hypervisor is asked something when nothing else was.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Run until the core goes away: poll as the schedule says, hand actions
/// to the executor (its threads report back on `me`, this thread's own
/// channel, each action given `action_timeout`). The I/O-counter thread
/// opens a second connection to `io_uri`. Every call of this thread's is
/// marked on `watched`, and one is made at least every second.
#[allow(clippy::too_many_arguments)]
pub fn run(
    mut hv: Box<dyn Hypervisor>,
    io_uri: String,
    rx: Receiver<BackendReq>,
    me: std::sync::mpsc::Sender<BackendReq>,
    core: Sender<CoreMsg>,
    every: Cadence,
    action_timeout: Duration,
    watched: Watched,
) {
    let mut executor = super::executor::Executor::new(
        hv.as_ref(),
        super::executor::WORKERS,
        action_timeout,
        me.clone(),
    );
    let shared_defs: Arc<Mutex<Vec<DomainDef>>> = Arc::default();
    let shared_hot: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    let io: IoCounters = Arc::default();
    let (io_now, io_now_rx) = std::sync::mpsc::channel::<IoReq>();
    let mut bulk = BulkLink::new(io_now);
    {
        let (d, h, o) = (shared_defs.clone(), shared_hot.clone(), io.clone());
        let me = me.clone();
        let spawned = std::thread::Builder::new()
            .name("io-counters".into())
            .spawn(move || io_thread(io_uri, d, h, io_now_rx, me, o, every));
        if let Err(e) = spawned {
            log::error!("cannot start the I/O counter thread: {e}");
        }
    }
    let mut defs: Vec<DomainDef> = Vec::new();
    // Last known memory per domain.
    let mut memory: HashMap<String, (u64, u64)> = HashMap::new();
    let live = |s: DomainState| matches!(s, DomainState::Running | DomainState::Paused(_));
    let mut relist = true;
    let mut schedule = super::schedule::Schedule::new(every.hot, every.quiet, Instant::now());
    let mut last_list = Instant::now();
    let mut from_bulk: Option<super::io_counters::BulkPolls> = None;
    let mut last_call = Instant::now();
    let mut hot_changed = false;
    let mut lost: Option<Lost> = None;
    check_link(hv.as_mut(), &watched, &mut lost);
    let tell = |d: super::executor::Done| {
        core.blocking_send(CoreMsg::ActionDone {
            id: d.id,
            vm: d.vm,
            ok: d.ok,
            detail: d.detail,
        })
        .is_ok()
    };
    loop {
        // Wake at least every 250 ms while actions run, for their timeouts.
        let now = Instant::now();
        let next = bulk
            .deadline()
            .map_or(schedule.next(now), |d| d.min(schedule.next(now)));
        let mut wait = next
            .min(last_call + PING_EVERY)
            .saturating_duration_since(now);
        if executor.busy() {
            wait = wait.min(Duration::from_millis(250));
        }
        if let Some(l) = &lost {
            wait = wait.min(l.next_try.saturating_duration_since(now));
        }
        // Every request waiting is taken before anything is polled: at
        // start thousands of VMs turn quiet at once, and a pass over VMs
        // already healthy again is thousands of wasted calls.
        let mut next = rx.recv_timeout(wait);
        loop {
            let req = match next {
                Ok(req) => req,
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => break,
            };
            match req {
                BackendReq::Relist => {
                    relist = true;
                    schedule.all_soon(Instant::now());
                }
                BackendReq::Nics(vm) if lost.is_some() => {
                    log::debug!("vm={vm} vNICs not read: the hypervisor is not connected");
                }
                BackendReq::Nics(vm) => {
                    let nics = watched.call(|| hv.nics(&vm));
                    last_call = Instant::now();
                    match nics {
                        Ok(mut nics) => {
                            crate::host::net::fill_taps(std::path::Path::new("/sys"), &mut nics);
                            if core.blocking_send(CoreMsg::Nics { vm, nics }).is_err() {
                                return;
                            }
                        }
                        Err(e) => log::debug!("vm={vm} cannot read its vNICs: {e}"),
                    }
                }
                BackendReq::Sizing { token, vms } => {
                    let sizes = vms
                        .into_iter()
                        .map(|vm| {
                            let s = watched.call(|| hv.sizing(&vm)).map_err(|e| e.to_string());
                            (vm, s)
                        })
                        .collect();
                    last_call = Instant::now();
                    if core
                        .blocking_send(CoreMsg::Sizing { token, sizes })
                        .is_err()
                    {
                        return;
                    }
                }
                BackendReq::Watch { vm, hot } => {
                    schedule.watch(&vm, hot, Instant::now());
                    hot_changed = true;
                    if hot {
                        bulk.now(vm);
                    }
                }
                BackendReq::IoFresh(vm) => schedule.soon(&vm),
                BackendReq::Bulk(polls) => from_bulk = bulk.answered(polls, Instant::now()),
                req @ BackendReq::Act { .. } => executor.submit(req),
                BackendReq::Finished(d) => {
                    schedule.soon(&d.vm); // show the effect at once
                    if let Some(d) = executor.finished(d) {
                        if !tell(d) {
                            return;
                        }
                    }
                }
            }
            next = rx.try_recv().map_err(|e| match e {
                std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            });
        }
        if std::mem::take(&mut hot_changed) {
            if let Ok(mut h) = shared_hot.lock() {
                *h = schedule.hot();
            }
        }
        for d in executor.expired(Instant::now()) {
            if !tell(d) {
                return;
            }
        }
        // While the connection is lost nothing is polled (an error is no
        // domain's state): the domains are listed again once it is back.
        if lost.is_some() {
            if !try_reconnect(hv.as_mut(), &watched, &mut lost) {
                continue;
            }
            relist = true;
            schedule.all_soon(Instant::now());
            last_call = Instant::now();
            continue;
        }
        // The quiet pass: the I/O thread's bulk call is asked for, and the
        // pass made when it answers (the hot domains polled meanwhile), or
        // domain by domain when it does not answer in time.
        let now = Instant::now();
        let mut due = schedule.due(now);
        if from_bulk.is_some() || bulk.overdue(now) {
            due = Due::All;
        } else if due == Due::All && bulk.ask(now) {
            due = Due::Some(schedule.hot().into_iter().collect());
        }
        if matches!(&due, Due::Nothing) || matches!(&due, Due::Some(v) if v.is_empty()) {
            if last_call.elapsed() >= PING_EVERY {
                if watched.call(|| hv.ping()).is_err() {
                    check_link(hv.as_mut(), &watched, &mut lost);
                }
                last_call = Instant::now();
            }
            continue;
        }
        last_call = Instant::now();
        // Definitions change with define/undefine events (a relist each);
        // a slow full relist only in case an event was missed.
        if relist || last_list.elapsed() > RELIST_EVERY {
            match watched.call(|| hv.list()) {
                Ok(mut d) => {
                    for def in &mut d {
                        crate::host::net::fill_taps(std::path::Path::new("/sys"), &mut def.nics);
                    }
                    defs = d;
                    if let Ok(mut s) = shared_defs.lock() {
                        s.clone_from(&defs);
                    }
                    relist = false;
                    last_list = Instant::now();
                }
                Err(e) => {
                    check_link(hv.as_mut(), &watched, &mut lost);
                    if lost.is_some() {
                        continue;
                    }
                    log::warn!("cannot list domains: {e}")
                }
            }
        }
        // Every domain's state and vCPU time (its info, a reason only on a
        // change); the I/O counters the other thread gathered in one bulk
        // call ride along (the busy-not-hung veto needs them), and memory:
        // from there, else as last known, else asked of the domain once.
        let (full, these): (bool, Vec<DomainDef>) = match due {
            Due::Some(vms) => (
                false,
                defs.iter()
                    .filter(|d| vms.contains(&d.name))
                    .cloned()
                    .collect(),
            ),
            _ => (true, defs.clone()),
        };
        let io = io.lock().map(|m| m.clone()).unwrap_or_default();
        // The bulk call's polls stand for the quiet domains'; the hot ones
        // (and any it left out) are asked one by one.
        let bulk_polls = from_bulk.take().unwrap_or_default();
        let hot = schedule.hot();
        let by_bulk = |d: &DomainDef| bulk_polls.get(&d.name).filter(|_| !hot.contains(&d.name));
        let ask: Vec<DomainDef> = these
            .iter()
            .filter(|d| by_bulk(d).is_none())
            .cloned()
            .collect();
        let asked = watched.call(|| hv.poll_all(&ask));
        if asked.iter().any(|p| p.is_err()) {
            check_link(hv.as_mut(), &watched, &mut lost);
            if lost.is_some() {
                continue;
            }
        }
        let mut asked = asked.into_iter();
        let polls = these.iter().map(|d| match by_bulk(d) {
            Some(p) => Ok(*p),
            None => asked
                .next()
                .unwrap_or(Err(crate::backend::BackendError::NoDomain(d.name.clone()))),
        });
        let polls: Vec<_> = polls.collect();
        let mut polled = Vec::with_capacity(these.len());
        for (d, p) in these.iter().zip(polls) {
            let p = p.map(|mut p| {
                let f = io.get(&d.name);
                if let (Some(f), Some(s)) = (f, p.stats.as_mut()) {
                    s.block_ops = f.block_ops;
                    s.net_packets = f.net_packets;
                }
                if p.memory_kib == (0, 0) {
                    let known = f.and_then(|f| f.memory).or(memory.get(&d.name).copied());
                    p.memory_kib = match known {
                        Some(m) => m,
                        None if live(p.state) => hv.poll(d).map_or((0, 0), |q| q.memory_kib),
                        None => (0, 0),
                    };
                }
                if p.memory_kib != (0, 0) {
                    memory.insert(d.name.clone(), p.memory_kib);
                }
                p
            });
            polled.push((d.clone(), p.map_err(|e| e.to_string())));
        }
        if full {
            memory.retain(|n, _| defs.iter().any(|d| &d.name == n));
            schedule.retain(|n| defs.iter().any(|d| d.name == n));
        }
        if core
            .blocking_send(CoreMsg::Polled {
                polls: polled,
                full,
            })
            .is_err()
        {
            return;
        }
    }
}
