//! The host's storage under VM disks on a thread of its own: every few
//! seconds (and at once when asked: a VM paused for a disk error), where
//! each VM's disks live is looked up and those filesystems sampled
//! ([`crate::host::storage`]); the core gets the samples and which VMs sit
//! on which block device.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::CoreMsg;
use crate::host::storage::{look, Looked};

/// How often the filesystems are sampled.
const EVERY: Duration = Duration::from_secs(5);
/// Looks at most this often, however often asked.
const AT_MOST: Duration = Duration::from_millis(500);

/// What the core tells this thread.
#[derive(Debug)]
pub enum StorageReq {
    /// Each VM's disks' source paths (after a full poll that changed them).
    Disks(BTreeMap<String, Vec<String>>),
    /// Look now.
    Now,
}

/// Run until the core goes away; `journal` is the journal's path.
pub fn run(journal: PathBuf, rx: Receiver<StorageReq>, core: Sender<CoreMsg>) {
    let mut disks = BTreeMap::new();
    let mut last: Option<Instant> = None;
    loop {
        let wait = last.map_or(Duration::ZERO, |t| EVERY.saturating_sub(t.elapsed()));
        match rx.recv_timeout(wait) {
            Ok(StorageReq::Disks(d)) => {
                disks = d;
                continue; // the next look is soon enough
            }
            Ok(StorageReq::Now) if last.is_some_and(|t| t.elapsed() < AT_MOST) => continue,
            Ok(StorageReq::Now) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        last = Some(Instant::now());
        let Looked {
            filesystems,
            devices,
        } = look(&disks, &journal, std::path::Path::new("/"));
        let msg = CoreMsg::HostStorage {
            filesystems,
            devices,
        };
        if core.blocking_send(msg).is_err() {
            return;
        }
    }
}
