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
use crate::engine::{ActionKind, DomainState, Millis, PauseReason};

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

/// Carry out one action (on an executor thread).
pub fn act(hv: &mut dyn Hypervisor, req: &BackendReq) -> Result<String, String> {
    let BackendReq::Act {
        vm,
        kind,
        memory_kib,
        snapshot,
        now,
        resume,
        ..
    } = req
    else {
        return Err("not an action".into());
    };
    let e = |e: crate::backend::BackendError| e.to_string();
    if *resume {
        return resume_action(hv, vm, kind, snapshot.as_deref(), *now);
    }
    match kind {
        // A crashed domain kept for evidence (on_crash=preserve) cannot be
        // reset in place: fall back to destroy + start.
        ActionKind::Reset => reset(hv, vm),
        ActionKind::Reboot => hv
            .reboot(vm)
            .map_err(e)
            .map(|_| "ACPI reboot requested".into()),
        ActionKind::Start => hv.start(vm).map_err(e).map(|_| "started".into()),
        ActionKind::Resume => hv.resume(vm).map_err(e).map(|_| "resumed".into()),
        ActionKind::Shutdown => hv
            .shutdown(vm)
            .map_err(e)
            .map(|_| "ACPI shutdown requested".into()),
        ActionKind::Destroy => hv.destroy(vm).map_err(e).map(|_| "destroyed".into()),
        ActionKind::DestroyStart => {
            hv.destroy(vm).map_err(e)?;
            hv.start(vm)
                .map_err(e)
                .map(|_| "destroyed and started".into())
        }
        ActionKind::AddMemory => {
            let kib = memory_kib.ok_or("no target size")?;
            hv.set_memory(vm, kib)
                .map_err(e)
                .map(|_| format!("memory set to {kib} KiB"))
        }
        ActionKind::SetLinkUp(mac) => hv
            .set_link(vm, mac, true)
            .map_err(e)
            .map(|_| format!("link of {mac} set up")),
        ActionKind::ReplugNic(mac) => hv
            .replug_nic(vm, mac)
            .map_err(e)
            .map(|_| format!("{mac} detached and attached again")),
        ActionKind::SnapshotRevert => {
            let good = snapshot
                .as_deref()
                .ok_or("no known-good snapshot configured for this VM")?;
            snapshot_revert(hv, vm, good, &format!("vigil-safety-{now}"))
        }
        ActionKind::Reconfigure(r) => hv.resize(vm, r).map_err(e),
        other => Err(format!("{} is not a hypervisor action", other.name())),
    }
}

/// What is left of a multi-step action a vigild restart interrupted. A
/// domain found running had its action completed (or was started by
/// someone else): nothing is repeated. A domain left shut off by the
/// interrupted destroy gets the rest: the revert (same safety snapshot
/// name, taken only if missing) and the start.
fn resume_action(
    hv: &mut dyn Hypervisor,
    vm: &str,
    kind: &ActionKind,
    snapshot: Option<&str>,
    at: Millis,
) -> Result<String, String> {
    let e = |e: crate::backend::BackendError| e.to_string();
    match state(hv, vm) {
        Some(DomainState::Running) => {
            Ok("resumed after a vigild restart: domain already running; nothing repeated".into())
        }
        Some(
            DomainState::ShutOff(_)
            | DomainState::Crashed { .. }
            | DomainState::Paused(PauseReason::Panicked),
        ) => {
            if *kind == ActionKind::SnapshotRevert {
                let good = snapshot.ok_or("no known-good snapshot configured for this VM")?;
                let r = snapshot_revert(hv, vm, good, &format!("vigil-safety-{at}"))?;
                return Ok(format!("resumed after a vigild restart: {r}"));
            }
            if matches!(
                state(hv, vm),
                Some(DomainState::Crashed { .. } | DomainState::Paused(_))
            ) {
                hv.destroy(vm).map_err(e)?;
            }
            hv.start(vm).map_err(e)?;
            Ok(format!(
                "resumed after a vigild restart: {} completed (started)",
                kind.name()
            ))
        }
        Some(other) => Err(format!(
            "resumed after a vigild restart: domain {other}; left as it is"
        )),
        None => Err("resumed after a vigild restart: domain state unknown".into()),
    }
}

/// A domain's run state, if the hypervisor can say.
fn state(hv: &mut dyn Hypervisor, vm: &str) -> Option<DomainState> {
    let def = DomainDef {
        name: vm.to_string(),
        uuid: String::new(),
        vsock_cid: None,
        disks: Vec::new(),
        sources: Vec::new(),
        interfaces: Vec::new(),
        nics: Vec::new(),
    };
    hv.poll(&def).ok().map(|p| p.state)
}

/// Reset a domain. A crashed domain kept for evidence (on_crash=preserve)
/// keeps its panicked run state across a reset, and a reset can fail: in
/// both cases destroy + start instead.
fn reset(hv: &mut dyn Hypervisor, vm: &str) -> Result<String, String> {
    let crashed = matches!(
        state(hv, vm),
        Some(DomainState::Crashed { .. } | DomainState::Paused(PauseReason::Panicked))
    );
    let e = |e: crate::backend::BackendError| e.to_string();
    if crashed {
        let _ = hv.destroy(vm);
        return hv
            .start(vm)
            .map_err(e)
            .map(|_| "domain crashed (kept for evidence): destroyed and started".into());
    }
    match hv.reset(vm) {
        Ok(()) => Ok("reset".into()),
        Err(first) => {
            let _ = hv.destroy(vm); // may already be off
            hv.start(vm)
                .map_err(e)
                .map(|_| format!("reset failed ({first}); destroyed and started instead"))
        }
    }
}

/// Revert to the known-good snapshot `good`, keeping the broken state as
/// the snapshot `safety`: destroy → snapshot of the shut-off domain (an
/// internal snapshot of each qcow2 disk) → revert → start. Done on a
/// shut-off domain because a running one cannot always be snapshotted
/// (vhost-user devices forbid memory and internal snapshots), and the
/// guest is broken anyway when the ladder gets here. Nothing is destroyed
/// unless `good` exists; a failure after the destroy starts the domain
/// again as it was.
fn snapshot_revert(
    hv: &mut dyn Hypervisor,
    vm: &str,
    good: &str,
    safety: &str,
) -> Result<String, String> {
    let e = |e: crate::backend::BackendError| e.to_string();
    if !hv.snapshots(vm).map_err(e)?.iter().any(|s| s == good) {
        return Err(format!("{vm} has no snapshot named {good}"));
    }
    if !matches!(state(hv, vm), Some(DomainState::ShutOff(_))) {
        hv.destroy(vm).map_err(e)?;
    }
    // A resumed revert may find its safety snapshot already taken.
    let taken = hv.snapshots(vm).map_err(e)?.iter().any(|s| s == safety);
    let reverted = if taken {
        hv.snapshot_revert(vm, good)
    } else {
        hv.snapshot_create(vm, safety)
            .and_then(|()| hv.snapshot_revert(vm, good))
    };
    // A snapshot of a running state comes back running.
    let start = if matches!(state(hv, vm), Some(DomainState::Running)) {
        Ok(())
    } else {
        hv.start(vm)
    };
    match (reverted, start) {
        (Ok(()), Ok(())) => Ok(format!(
            "destroyed, safety snapshot {safety} taken, reverted to {good}, started"
        )),
        (Ok(()), Err(s)) => Err(format!("reverted to {good}, but {s}")),
        (Err(r), _) => Err(format!("not reverted: {r}")),
    }
}

/// Latest I/O counters (and memory) by domain, filled by the I/O thread.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, DomainPoll};

    /// A hypervisor whose reset fails, counting calls.
    #[derive(Default)]
    struct Fake {
        calls: Vec<&'static str>,
        reset_fails: bool,
        crashed: bool,
        off: bool,
        snapshots: Vec<String>,
        create_fails: bool,
    }

    fn no(op: &'static str) -> Result<(), BackendError> {
        Err(BackendError::Call {
            op,
            domain: "vm".into(),
            message: "domain is not running".into(),
        })
    }

    impl Hypervisor for Fake {
        fn worker(&self) -> Box<dyn Hypervisor> {
            Box::new(Fake::default())
        }
        fn list(&mut self) -> Result<Vec<DomainDef>, BackendError> {
            Ok(vec![])
        }
        fn poll(&mut self, _: &DomainDef) -> Result<DomainPoll, BackendError> {
            let state = if self.crashed {
                DomainState::Crashed { panicked: true }
            } else if self.off {
                DomainState::ShutOff(crate::engine::StopReason::Destroyed)
            } else {
                DomainState::Running
            };
            Ok(DomainPoll {
                state,
                stats: Some(Default::default()),
                memory_kib: (1, 1),
            })
        }
        fn reset(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("reset");
            if self.reset_fails {
                no("reset")
            } else {
                Ok(())
            }
        }
        fn reboot(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("reboot");
            Ok(())
        }
        fn shutdown(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("shutdown");
            Ok(())
        }
        fn destroy(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("destroy");
            (self.off, self.crashed) = (true, false);
            Ok(())
        }
        fn start(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("start");
            self.off = false;
            Ok(())
        }
        fn resume(&mut self, _: &str) -> Result<(), BackendError> {
            self.calls.push("resume");
            Ok(())
        }
        fn set_memory(&mut self, _: &str, _: u64) -> Result<(), BackendError> {
            self.calls.push("set-memory");
            Ok(())
        }
        fn set_vcpus(&mut self, _: &str, _: u32) -> Result<(), BackendError> {
            self.calls.push("set-vcpus");
            Ok(())
        }
        fn snapshots(&mut self, _: &str) -> Result<Vec<String>, BackendError> {
            Ok(self.snapshots.clone())
        }
        fn snapshot_create(&mut self, _: &str, s: &str) -> Result<(), BackendError> {
            self.calls.push("snapshot-create");
            if self.create_fails {
                return no("snapshot-create");
            }
            self.snapshots.push(s.into());
            Ok(())
        }
        fn snapshot_revert(&mut self, _: &str, _: &str) -> Result<(), BackendError> {
            self.calls.push("snapshot-revert");
            Ok(())
        }
    }

    fn req(kind: ActionKind, snapshot: Option<&str>) -> BackendReq {
        BackendReq::Act {
            id: 1,
            vm: "vm".into(),
            kind,
            memory_kib: Some(4096),
            snapshot: snapshot.map(Into::into),
            now: 7,
            resume: false,
        }
    }

    #[test]
    fn a_resumed_action_does_only_what_is_left() {
        // Killed after the destroy: the domain is off; only the start runs.
        let mut hv = Fake {
            off: true,
            ..Fake::default()
        };
        let mut r = req(ActionKind::DestroyStart, None);
        if let BackendReq::Act { resume, .. } = &mut r {
            *resume = true;
        }
        let d = act(&mut hv, &r).unwrap();
        assert_eq!(hv.calls, ["start"], "{d}");
        // Killed after the start: nothing is repeated.
        let mut hv = Fake::default();
        assert!(act(&mut hv, &r).unwrap().contains("nothing repeated"));
        assert!(hv.calls.is_empty());
        // A revert killed after its safety snapshot: revert and start only.
        let mut hv = Fake {
            off: true,
            snapshots: vec!["known-good".into(), "vigil-safety-7".into()],
            ..Fake::default()
        };
        let mut r = req(ActionKind::SnapshotRevert, Some("known-good"));
        if let BackendReq::Act { resume, .. } = &mut r {
            *resume = true;
        }
        act(&mut hv, &r).unwrap();
        assert_eq!(hv.calls, ["snapshot-revert", "start"]);
    }

    #[test]
    fn reset_of_a_crashed_domain_falls_back_to_destroy_and_start() {
        let mut hv = Fake {
            reset_fails: true,
            ..Fake::default()
        };
        let r = act(&mut hv, &req(ActionKind::Reset, None)).unwrap();
        assert!(r.contains("destroyed and started"), "{r}");
        assert_eq!(hv.calls, ["reset", "destroy", "start"]);
        let mut hv = Fake {
            crashed: true,
            ..Fake::default()
        };
        assert!(act(&mut hv, &req(ActionKind::Reset, None))
            .unwrap()
            .contains("kept for evidence"));
        assert_eq!(hv.calls, ["destroy", "start"]);
        let mut hv = Fake::default();
        assert_eq!(
            act(&mut hv, &req(ActionKind::Reset, None)).unwrap(),
            "reset"
        );
        assert_eq!(hv.calls, ["reset"]);
    }

    #[test]
    fn snapshot_revert_stops_the_domain_keeps_a_safety_snapshot_and_starts_it_again() {
        let mut hv = Fake {
            snapshots: vec!["known-good".into()],
            ..Fake::default()
        };
        let r = act(
            &mut hv,
            &req(ActionKind::SnapshotRevert, Some("known-good")),
        )
        .unwrap();
        assert_eq!(
            hv.calls,
            ["destroy", "snapshot-create", "snapshot-revert", "start"]
        );
        assert_eq!(hv.snapshots, ["known-good", "vigil-safety-7"]);
        assert!(
            r.contains("vigil-safety-7") && r.contains("known-good"),
            "{r}"
        );
        assert!(!hv.off);
    }

    #[test]
    fn snapshot_revert_destroys_nothing_without_a_known_good_snapshot() {
        let mut hv = Fake::default();
        assert!(act(&mut hv, &req(ActionKind::SnapshotRevert, None))
            .unwrap_err()
            .contains("no known-good"));
        let e = act(
            &mut hv,
            &req(ActionKind::SnapshotRevert, Some("known-good")),
        )
        .unwrap_err();
        assert!(e.contains("no snapshot named known-good"), "{e}");
        assert!(hv.calls.is_empty());
    }

    #[test]
    fn a_failed_safety_snapshot_reverts_nothing_and_starts_the_domain_again() {
        let mut hv = Fake {
            snapshots: vec!["known-good".into()],
            create_fails: true,
            ..Fake::default()
        };
        let e = act(
            &mut hv,
            &req(ActionKind::SnapshotRevert, Some("known-good")),
        )
        .unwrap_err();
        assert!(e.contains("not reverted"), "{e}");
        assert_eq!(hv.calls, ["destroy", "snapshot-create", "start"]);
        assert!(!hv.off);
    }

    #[test]
    fn agent_actions_are_not_hypervisor_actions() {
        let mut hv = Fake::default();
        assert!(act(&mut hv, &req(ActionKind::Alert, None)).is_err());
        assert!(hv.calls.is_empty());
    }
}
