//! The journal: every engine record in SQLite (WAL), the audit trail and
//! the source of metrics. An action's intent is committed (fsynced) before
//! the action runs, so a restart knows what may have happened.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;

use crate::engine::{ActionKind, Closure, Millis, Record};

pub mod check;
mod unsettled;

pub use unsettled::Unsettled;

/// Current schema version.
pub const SCHEMA_VERSION: i64 = 1;

/// A journal failure.
#[derive(Debug, Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// A stored record does not parse.
    #[error("corrupt journal record {seq}")]
    Corrupt {
        /// Row.
        seq: i64,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer vigild.
    #[error("journal schema version {found} is newer than this vigild ({SCHEMA_VERSION})")]
    TooNew {
        /// Version found.
        found: i64,
    },
}

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Row number (increasing).
    pub seq: i64,
    /// When (engine clock: ms since the Unix epoch).
    pub t: Millis,
    /// The record.
    pub record: Record,
}

/// The SQLite journal.
pub struct Journal {
    db: Connection,
}

/// The VM a record is about (`(host)` for the host's).
pub fn vm_of(r: &Record) -> &str {
    kind_of(r).0
}

fn kind_of(r: &Record) -> (&str, &'static str) {
    match r {
        Record::Transition { vm, .. } => (vm, "transition"),
        Record::Fault { vm, .. } => (vm, "fault"),
        Record::Intent { vm, .. } => (vm, "intent"),
        Record::Suppressed { vm, .. } => (vm, "suppressed"),
        Record::Outcome { vm, .. } => (vm, "outcome"),
        Record::Closed { vm, .. } => (vm, "closed"),
        Record::Reopened { vm, .. } => (vm, "reopened"),
        Record::HostHealth { vm, .. } => (vm, "host-health"),
        Record::Warning { vm, .. } => (vm, "warning"),
        Record::WarningCleared { vm, .. } => (vm, "warning-cleared"),
    }
}

impl Journal {
    /// Open (or create) the journal at `path`; `:memory:` for tests.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Journal::open_waiting(path, std::time::Duration::from_secs(5))
    }

    /// Open, waiting at most `busy` for a lock another process holds (the
    /// core harness does not wait: a locked journal is a failed write).
    pub fn open_waiting(path: &Path, busy: std::time::Duration) -> Result<Journal, JournalError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(busy)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS records (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 t_ms INTEGER NOT NULL,
                 vm TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 body TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS records_t ON records(t_ms);
             CREATE INDEX IF NOT EXISTS records_vm ON records(vm, kind);",
        )?;
        let found: Option<i64> = db
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match found {
            None => {
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(v) if v > SCHEMA_VERSION => return Err(JournalError::TooNew { found: v }),
            Some(_) => {} // migrations from older versions go here
        }
        Ok(Journal { db })
    }

    /// Append records in one durable transaction; returns their rows.
    pub fn append(&mut self, t: Millis, records: &[Record]) -> Result<Vec<i64>, JournalError> {
        let tx = self.db.transaction()?;
        let mut seqs = Vec::with_capacity(records.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO records (t_ms, vm, kind, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in records {
                let (vm, kind) = kind_of(r);
                let body = serde_json::to_string(r)
                    .map_err(|source| JournalError::Corrupt { seq: -1, source })?;
                stmt.execute(params![t as i64, vm, kind, body])?;
                seqs.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(seqs)
    }

    /// Append several steps' records, each batch with its time, in one
    /// transaction (one sync to disk for all).
    pub fn append_batches(
        &mut self,
        batches: &[(Millis, Vec<Record>)],
    ) -> Result<(), JournalError> {
        let tx = self.db.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO records (t_ms, vm, kind, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (t, records) in batches {
                for r in records {
                    let (vm, kind) = kind_of(r);
                    let body = serde_json::to_string(r)
                        .map_err(|source| JournalError::Corrupt { seq: -1, source })?;
                    stmt.execute(params![*t as i64, vm, kind, body])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Rows of `sql` (which ends in `LIMIT ?2`), at most `limit` (-1: all).
    fn rows(&self, sql: &str, arg: i64, limit: i64) -> Result<Vec<Entry>, JournalError> {
        let mut stmt = self.db.prepare_cached(sql)?;
        let rows = stmt.query_map([arg, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for row in rows {
            let (seq, t, body) = row?;
            // One bad row (a damaged page SQLite did not catch, a newer
            // vigild's record) is left out and said, not the end of reading.
            let Ok(record) = serde_json::from_str(&body) else {
                unreadable.push(seq);
                continue;
            };
            out.push(Entry {
                seq,
                t: t.max(0) as Millis,
                record,
            });
        }
        if let Some(first) = unreadable.first() {
            log::warn!(
                "journal: {} records do not parse and are left out (first: row {first}); `vigild --check-journal` lists them",
                unreadable.len()
            );
        }
        Ok(out)
    }

    /// Records at or after time `t`, oldest first.
    pub fn since(&self, t: Millis) -> Result<Vec<Entry>, JournalError> {
        self.since_page(t, usize::MAX)
    }

    /// At most `limit` records at or after time `t`, oldest first.
    pub fn since_page(&self, t: Millis, limit: usize) -> Result<Vec<Entry>, JournalError> {
        self.rows(
            "SELECT seq, t_ms, body FROM records WHERE t_ms >= ?1 ORDER BY seq LIMIT ?2",
            t as i64,
            i64::try_from(limit).unwrap_or(-1),
        )
    }

    /// The newest record of `kind` (`host-health`, ...), if any.
    pub fn last_of_kind(&self, kind: &str) -> Result<Option<Entry>, JournalError> {
        let seq: Option<i64> = self
            .db
            .query_row(
                "SELECT seq FROM records WHERE kind = ?1 ORDER BY seq DESC LIMIT 1",
                [kind],
                |r| r.get(0),
            )
            .optional()?;
        let Some(seq) = seq else { return Ok(None) };
        Ok(self.after_page(seq - 1, 1)?.into_iter().next())
    }

    /// Records after row `seq`, oldest first (for `events --follow`).
    pub fn after(&self, seq: i64) -> Result<Vec<Entry>, JournalError> {
        self.after_page(seq, usize::MAX)
    }

    /// At most `limit` records after row `seq`, oldest first.
    pub fn after_page(&self, seq: i64, limit: usize) -> Result<Vec<Entry>, JournalError> {
        self.rows(
            "SELECT seq, t_ms, body FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            seq,
            i64::try_from(limit).unwrap_or(-1),
        )
    }

    /// Delete records older than `cutoff`, but nothing from the first
    /// record of anything still open on (a fault not closed, an intent
    /// without its outcome: a restart must find those). Fault and action
    /// numbers go on past what was deleted. How many records went.
    pub fn prune(&mut self, cutoff: Millis) -> Result<usize, JournalError> {
        let (fault, action) = self.max_ids()?;
        let keep_from = self.first_open_seq()?;
        let tx = self.db.transaction()?;
        for (key, v) in [("max_fault", fault), ("max_action", action)] {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                params![key, v as i64],
            )?;
        }
        let n = tx.execute(
            "DELETE FROM records WHERE t_ms < ?1 AND seq < ?2",
            params![cutoff as i64, keep_from],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// The row of the oldest record of a fault not closed or an intent
    /// without an outcome (`i64::MAX` when nothing is open).
    fn first_open_seq(&self) -> Result<i64, JournalError> {
        let mut faults = std::collections::BTreeMap::new();
        let mut closed = std::collections::BTreeMap::new();
        let mut intents = std::collections::BTreeMap::new();
        for e in self.rows(
            "SELECT seq, t_ms, body FROM records WHERE kind IN ('fault', 'closed', 'reopened', 'intent', 'outcome') AND seq > ?1 ORDER BY seq LIMIT ?2",
            0,
            -1,
        )? {
            match e.record {
                Record::Fault { id, .. } => {
                    faults.insert(id, e.seq);
                }
                Record::Closed { id, .. } => {
                    if let Some(seq) = faults.remove(&id) {
                        closed.insert(id, seq);
                    }
                }
                // A reopened fault is open from its first record on.
                Record::Reopened { id, .. } => {
                    if let Some(seq) = closed.remove(&id) {
                        faults.insert(id, seq);
                    }
                }
                Record::Intent { action, .. } => {
                    intents.insert(action.id, e.seq);
                }
                Record::Outcome { id, .. } => {
                    intents.remove(&id);
                }
                _ => {}
            }
        }
        Ok(faults
            .values()
            .chain(intents.values())
            .copied()
            .min()
            .unwrap_or(i64::MAX))
    }

    /// The highest fault and action ids recorded (to continue numbering),
    /// also of records pruned since.
    pub fn max_ids(&self) -> Result<(u64, u64), JournalError> {
        let meta = |key: &str| -> Result<u64, JournalError> {
            let v: Option<i64> = self
                .db
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?;
            Ok(v.unwrap_or(0).max(0) as u64)
        };
        let mut fault = meta("max_fault")?;
        let mut action = meta("max_action")?;
        for e in self.rows("SELECT seq, t_ms, body FROM records WHERE kind IN ('fault', 'intent') AND seq > ?1 ORDER BY seq LIMIT ?2", 0, -1)? {
            match e.record {
                Record::Fault { id, .. } => fault = fault.max(id),
                Record::Intent { action: a, .. } => action = action.max(a.id),
                _ => {}
            }
        }
        Ok((fault, action))
    }
}

#[cfg(test)]
mod tests;
