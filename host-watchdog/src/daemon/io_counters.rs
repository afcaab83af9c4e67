//! The I/O-counter thread: block and network counters and the balloon,
//! gathered beside the backend thread's state polls on a connection of
//! its own (they need the VMM's monitor, which a stuck QEMU does not
//! answer).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::backend_thread::{BackendReq, Cadence};
use crate::backend::DomainDef;

pub(super) type IoCounters = Arc<Mutex<HashMap<String, crate::backend::libvirt::IoFigures>>>;

/// The I/O-counter thread: block and network counters need the VMM's
/// monitor, which a stuck QEMU does not answer; here that stalls only these
/// counters (which then show no progress), never the state and vCPU polls or
/// the actions. Every domain's in one bulk call at the quiet interval; the
/// hot ones' (`hot`, kept by the backend thread) at the poll interval, and
/// a domain's at once when it turns hot (`now`), told back on `me`.
pub(super) fn io_thread(
    uri: String,
    defs: Arc<Mutex<Vec<DomainDef>>>,
    hot: Arc<Mutex<std::collections::BTreeSet<String>>>,
    now_rx: Receiver<String>,
    me: std::sync::mpsc::Sender<BackendReq>,
    out: IoCounters,
    every: Cadence,
) {
    // Its own connection, opened after the main one is set up.
    let mut hv = loop {
        match crate::backend::libvirt::Libvirt::open(&uri) {
            Ok(lv) => break lv,
            Err(e) => {
                log::warn!("I/O counter connection: {e}; retrying");
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    };
    let mut next_all = Instant::now();
    let mut next_hot = Instant::now();
    loop {
        match now_rx.recv_timeout(next_hot.saturating_duration_since(Instant::now())) {
            Ok(vm) => {
                // Many at once (vigild starting: every VM discovering):
                // one bulk call instead of one call each.
                let mut vms: std::collections::BTreeSet<String> = [vm].into();
                vms.extend(now_rx.try_iter());
                let list = defs.lock().map(|d| d.clone()).unwrap_or_default();
                let counters = if vms.len() > BULK_FROM {
                    hv.io_all(&list)
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
        let list = defs.lock().map(|d| d.clone()).unwrap_or_default();
        let now = Instant::now();
        if now >= next_all {
            next_all = now + every.quiet;
            let counters = hv.io_all(&list);
            if let Ok(mut m) = out.lock() {
                *m = counters;
            }
        } else {
            let hot = hot.lock().map(|h| h.clone()).unwrap_or_default();
            let some: Vec<DomainDef> = list.into_iter().filter(|d| hot.contains(&d.name)).collect();
            if !some.is_empty() {
                let counters = hv.io_some(&some);
                if let Ok(mut m) = out.lock() {
                    m.extend(counters);
                }
            }
        }
    }
}

/// More domains than this turning hot at once get their I/O counters in
/// one bulk call.
const BULK_FROM: usize = 16;
