//! The I/O-counter thread: the quiet pass's one bulk call (every domain's
//! state, vCPU time, block and network counters and balloon), and the hot
//! domains' I/O counters, on a connection of its own: they may need the
//! VMM's monitor, which a stuck QEMU does not answer, and then only this
//! thread waits.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::backend_thread::{BackendReq, Cadence};
use crate::backend::{DomainDef, DomainPoll};

pub(super) type IoCounters = Arc<Mutex<HashMap<String, crate::backend::libvirt::IoFigures>>>;

/// What the backend thread asks of the I/O thread.
#[derive(Debug)]
pub(super) enum IoReq {
    /// A domain turned hot: its counters now.
    Now(String),
    /// The quiet pass: one bulk call, its polls told back on `me`.
    Full,
}

/// The polls of a quiet pass's bulk call, by domain.
pub type BulkPolls = HashMap<String, DomainPoll>;

/// How long the backend thread waits for a quiet pass's bulk call before
/// it polls every domain itself (and how old the call's figures may be
/// when they are used).
pub(super) const BULK_WAIT: Duration = Duration::from_secs(1);

/// The backend thread's side of the quiet pass's bulk call: asked once at
/// a time; answered within [`BULK_WAIT`], its polls stand for the quiet
/// domains' (one RPC for all instead of one each); later, the pass goes on
/// domain by domain and the late answer is dropped (its figures are old).
#[derive(Debug)]
pub(super) struct BulkLink {
    tx: Sender<IoReq>,
    asked: Option<Instant>,
    gave_up: bool,
}

impl BulkLink {
    pub(super) fn new(tx: Sender<IoReq>) -> BulkLink {
        BulkLink {
            tx,
            asked: None,
            gave_up: false,
        }
    }

    /// A domain turned hot: its counters at once.
    pub(super) fn now(&self, vm: String) {
        let _ = self.tx.send(IoReq::Now(vm));
    }

    /// Ask for the quiet pass's bulk call; false when the last one is not
    /// answered yet (the I/O thread is stuck: poll each domain meanwhile).
    pub(super) fn ask(&mut self, now: Instant) -> bool {
        if self.asked.is_some() || self.tx.send(IoReq::Full).is_err() {
            return false;
        }
        self.asked = Some(now);
        self.gave_up = false;
        true
    }

    /// The answer came: its polls if they are still fresh.
    pub(super) fn answered(&mut self, polls: BulkPolls, now: Instant) -> Option<BulkPolls> {
        let asked = self.asked.take()?;
        let fresh = !std::mem::take(&mut self.gave_up) && now.duration_since(asked) <= BULK_WAIT;
        fresh.then_some(polls)
    }

    /// True once, when the answer is overdue: go on without it.
    pub(super) fn overdue(&mut self, now: Instant) -> bool {
        match self.asked {
            Some(at) if !self.gave_up && now.duration_since(at) > BULK_WAIT => {
                self.gave_up = true;
                true
            }
            _ => false,
        }
    }

    /// When to give up waiting, if waiting.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.asked
            .filter(|_| !self.gave_up)
            .map(|at| at + BULK_WAIT + Duration::from_millis(1))
    }
}

/// The I/O-counter thread. Block and network counters need the VMM's
/// monitor, which a stuck QEMU does not answer; here that stalls only these
/// counters (which then show no progress) and the bulk call, which the
/// backend thread then does without, never the state and vCPU polls or the
/// actions. Every domain's in one bulk call when asked (`Full`); the hot
/// ones' (`hot`, kept by the backend thread) at the poll interval, and a
/// domain's at once when it turns hot (`Now`), told back on `me`.
pub(super) fn io_thread(
    uri: String,
    defs: Arc<Mutex<Vec<DomainDef>>>,
    hot: Arc<Mutex<std::collections::BTreeSet<String>>>,
    now_rx: Receiver<IoReq>,
    me: std::sync::mpsc::Sender<BackendReq>,
    out: IoCounters,
    every: Cadence,
) {
    // Its own connection, opened after the main one is set up.
    // (libvirtd restarted: opened again, at most every 2 s, like the main one.)
    let mut hv = crate::backend::libvirt::Libvirt::unconnected(&uri);
    let mut next_hot = Instant::now();
    let mut last_try: Option<Instant> = None;
    loop {
        if !hv.alive() && last_try.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            last_try = Some(Instant::now());
            match hv.reconnect() {
                Ok(()) => log::info!("I/O counter connection open"),
                Err(e) => log::debug!("I/O counter connection: {e}; retrying"),
            }
        }
        match now_rx.recv_timeout(next_hot.saturating_duration_since(Instant::now())) {
            Ok(IoReq::Full) => {
                let list = defs.lock().map(|d| d.clone()).unwrap_or_default();
                let pass = hv.full(&list);
                if let Ok(mut m) = out.lock() {
                    *m = pass.io;
                }
                if me.send(BackendReq::Bulk(pass.polls)).is_err() {
                    return;
                }
                continue;
            }
            Ok(IoReq::Now(vm)) => {
                // Many at once (vigild starting: every VM discovering):
                // one bulk call instead of one call each.
                let mut vms: std::collections::BTreeSet<String> = [vm].into();
                let mut full = false;
                for r in now_rx.try_iter() {
                    match r {
                        IoReq::Now(vm) => drop(vms.insert(vm)),
                        IoReq::Full => full = true,
                    }
                }
                let list = defs.lock().map(|d| d.clone()).unwrap_or_default();
                let counters = if vms.len() > BULK_FROM || full {
                    let pass = hv.full(&list);
                    if full && me.send(BackendReq::Bulk(pass.polls)).is_err() {
                        return;
                    }
                    pass.io
                } else {
                    let some: Vec<DomainDef> =
                        list.into_iter().filter(|d| vms.contains(&d.name)).collect();
                    hv.io_some(&some)
                };
                if let Ok(mut m) = out.lock() {
                    m.extend(counters);
                }
                for vm in vms {
                    if me.send(BackendReq::IoFresh(vm)).is_err() {
                        return;
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        next_hot = Instant::now() + every.hot;
        let hot = hot.lock().map(|h| h.clone()).unwrap_or_default();
        if hot.is_empty() {
            continue;
        }
        let list = defs.lock().map(|d| d.clone()).unwrap_or_default();
        let some: Vec<DomainDef> = list.into_iter().filter(|d| hot.contains(&d.name)).collect();
        if !some.is_empty() {
            let counters = hv.io_some(&some);
            if let Ok(mut m) = out.lock() {
                m.extend(counters);
            }
        }
    }
}

/// More domains than this turning hot at once get their I/O counters in
/// one bulk call.
const BULK_FROM: usize = 16;
