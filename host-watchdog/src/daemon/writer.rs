//! The journal writer: records leave the core's thread. One thread owns
//! the journal's write connection; whatever the core queued while it was
//! writing goes in the next transaction (group commit: one fsync for many
//! steps). Every request gets its answer ([`Written`], on a channel of its
//! own that the core's loop also waits on), in order, so the core knows
//! which records are durable and releases the actions whose intents are
//! (intent before act).
//!
//! A write that fails keeps its records, in order, and is tried again when
//! the core asks ([`WriteReq::Retry`], every tick while the journal is
//! down): retries follow the core's clock, not the writer's. What waits is
//! bounded ([`MAX_UNWRITTEN`] records; past it the oldest are dropped and
//! the answer says how many).

use std::sync::mpsc;

use tokio::sync::mpsc as tmpsc;

use crate::engine::{Millis, Record};
use crate::journal::Journal;

/// Records kept while the journal refuses writes, at most.
pub const MAX_UNWRITTEN: usize = 100_000;

/// What the core asks of the writer.
#[derive(Debug)]
pub enum WriteReq {
    /// Append these records, written at `t`.
    Write {
        /// When.
        t: Millis,
        /// What.
        records: Vec<Record>,
    },
    /// Try again what failed.
    Retry,
    /// Delete records older than `cutoff` (retention), after the writes.
    Prune {
        /// Oldest time kept.
        cutoff: Millis,
    },
}

/// The writer's answer to the requests it took in one go.
#[derive(Debug)]
pub struct Written {
    /// How many requests this answers (the oldest unanswered ones).
    pub handled: usize,
    /// Every record asked for so far is durable; else why not.
    pub result: Result<(), String>,
    /// Records dropped because too many waited.
    pub dropped: usize,
    /// Records still waiting to be written.
    pub waiting: usize,
    /// Records pruned, if a prune ran.
    pub pruned: Option<Result<usize, String>>,
}

/// Start the writer thread on `journal` (its own connection).
pub fn spawn(
    mut journal: Journal,
    core: tmpsc::UnboundedSender<Written>,
) -> std::io::Result<(mpsc::Sender<WriteReq>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<WriteReq>();
    let handle = std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || {
            let mut kept: Vec<(Millis, Vec<Record>)> = Vec::new();
            while let Ok(first) = rx.recv() {
                let mut reqs = vec![first];
                reqs.extend(rx.try_iter());
                let handled = reqs.len();
                let mut prune = None;
                for r in reqs {
                    match r {
                        WriteReq::Write { t, records } => kept.push((t, records)),
                        WriteReq::Retry => {}
                        WriteReq::Prune { cutoff } => prune = Some(cutoff),
                    }
                }
                let result = if kept.is_empty() {
                    Ok(())
                } else {
                    journal.append_batches(&kept).map_err(|e| format!("{e:#}"))
                };
                let mut dropped = 0;
                let mut waiting = 0;
                if result.is_ok() {
                    kept.clear();
                } else {
                    let mut n: usize = kept.iter().map(|(_, r)| r.len()).sum();
                    while n > MAX_UNWRITTEN && !kept.is_empty() {
                        let (_, r) = kept.remove(0);
                        n -= r.len();
                        dropped += r.len();
                    }
                    waiting = n;
                }
                let pruned = prune
                    .filter(|_| result.is_ok())
                    .map(|c| journal.prune(c).map_err(|e| format!("{e:#}")));
                let w = Written {
                    handled,
                    result,
                    dropped,
                    waiting,
                    pruned,
                };
                // A core that is gone (stopping) still has what it asked
                // for written, to the last request.
                let _ = core.send(w);
            }
        })?;
    Ok((tx, handle))
}
