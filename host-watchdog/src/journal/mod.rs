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
mod tests {
    use super::*;
    use crate::engine::{Action, Closure, FaultKind, Layer, State};

    #[test]
    fn records_round_trip_and_unsettled_work_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let mut j = Journal::open(&path).unwrap();
        let fault = Record::Fault {
            vm: "web".into(),
            id: 7,
            kind: FaultKind::GuestHang,
            layer: Layer::GuestKernel,
            evidence: vec!["silent".into()],
            subject: None,
            onset: 1,
            onset_window_ms: 0,
            detected: 2,
            located: 3,
        };
        let action = Action {
            id: 9,
            vm: "web".into(),
            kind: ActionKind::Reset,
            fault: 7,
            memory_kib: None,
        };
        let t1 = Record::Transition {
            vm: "web".into(),
            from: State::Healthy,
            to: State::Faulted,
            why: "x".into(),
        };
        j.append(1000, &[t1.clone(), fault.clone()]).unwrap();
        j.append(
            1001,
            &[Record::Intent {
                vm: "web".into(),
                action,
                rung: Some(0),
                attempt: 1,
            }],
        )
        .unwrap();
        drop(j);
        // Reopen (as after a crash): everything is there.
        let j = Journal::open(&path).unwrap();
        let all = j.since(0).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].record, t1);
        assert_eq!(j.max_ids().unwrap(), (7, 9));
        let u = j.unsettled().unwrap();
        // The open fault's reset has no outcome: it is resumed within the
        // fault, not settled as an interrupted intent.
        assert_eq!(u.intents, vec![]);
        assert_eq!(u.faults.len(), 1);
        assert_eq!(
            u.faults[0].1.last_step,
            Some((0, 1, ActionKind::Reset, 1001))
        );
        assert_eq!(u.faults[0].1.interrupted, Some((9, ActionKind::Reset)));
        assert_eq!(u.destructive, vec![("web".to_string(), 1001)]);
        assert_eq!(j.after(all[1].seq).unwrap().len(), 1);
        let mut j = j;
        j.append(
            1002,
            &[
                Record::Outcome {
                    vm: "web".into(),
                    id: 9,
                    ok: true,
                    detail: "done".into(),
                },
                Record::Closed {
                    vm: "web".into(),
                    id: 7,
                    kind: FaultKind::GuestHang,
                    how: Closure::Recovered,
                    at: 1002,
                    detect_ms: 1,
                    locate_ms: 1,
                    repair_ms: 999,
                    flaps: 0,
                },
            ],
        )
        .unwrap();
        let u = j.unsettled().unwrap();
        assert!(u.intents.is_empty() && u.faults.is_empty());
        // The recovered fault is kept, with its last step, for recurrence.
        assert_eq!(u.recovered.len(), 1);
        let (vm, f, at) = &u.recovered[0];
        assert_eq!((vm.as_str(), f.id, *at), ("web", 7, 1002));
        assert_eq!(f.last_step, Some((0, 1, ActionKind::Reset, 1001)));
    }

    /// Old records go, but never those of a fault still open (a restart
    /// must resume it), and numbering goes on past what was deleted.
    #[test]
    fn pruning_keeps_what_is_open_and_the_numbering() {
        let mut j = Journal::open(Path::new(":memory:")).unwrap();
        let fault = |id: u64| Record::Fault {
            vm: "web".into(),
            id,
            kind: FaultKind::ServiceDown,
            layer: Layer::GuestService,
            evidence: vec![],
            subject: Some("nginx".into()),
            onset: 1,
            onset_window_ms: 0,
            detected: 1,
            located: 1,
        };
        let closed = |id: u64| Record::Closed {
            vm: "web".into(),
            id,
            kind: FaultKind::ServiceDown,
            how: Closure::Cleared,
            at: 2,
            detect_ms: 0,
            locate_ms: 0,
            repair_ms: 0,
            flaps: 0,
        };
        j.append(1_000, &[fault(1)]).unwrap();
        j.append(2_000, &[closed(1)]).unwrap();
        j.append(3_000, &[fault(2)]).unwrap(); // still open
        j.append(4_000, &[closed(3)]).unwrap(); // a stray close, old
        j.append(9_000, &[fault(4), closed(4)]).unwrap();
        assert_eq!(j.prune(5_000).unwrap(), 2); // fault 1 and its close
        let left: Vec<u64> = j
            .since(0)
            .unwrap()
            .iter()
            .map(|e| match e.record {
                Record::Fault { id, .. } | Record::Closed { id, .. } => id,
                _ => 0,
            })
            .collect();
        assert_eq!(left, [2, 3, 4, 4]);
        assert_eq!(j.unsettled().unwrap().faults.len(), 1);
        // Everything old goes once nothing is open; ids go on.
        j.append(10_000, &[closed(2)]).unwrap();
        assert_eq!(j.prune(9_500).unwrap(), 4);
        assert_eq!(j.prune(20_000).unwrap(), 1);
        assert_eq!(j.since(0).unwrap().len(), 0);
        assert_eq!(j.max_ids().unwrap(), (4, 0));

        // A fault closed and reopened (it flapped) is open: a restart
        // resumes it, and pruning keeps it from its first record.
        let reopened = Record::Reopened {
            vm: "web".into(),
            id: 5,
            kind: FaultKind::ServiceDown,
            flaps: 1,
            evidence: vec!["nginx down again".into()],
        };
        j.append(10_000, &[fault(5), closed(5)]).unwrap();
        j.append(11_000, &[reopened]).unwrap();
        let u = j.unsettled().unwrap();
        let open: Vec<u64> = u.faults.iter().map(|(_, f)| f.id).collect();
        assert_eq!(open, [5]);
        j.prune(10_500).unwrap();
        assert!(j
            .since(0)
            .unwrap()
            .iter()
            .any(|e| matches!(e.record, Record::Fault { id: 5, .. })));
    }

    #[test]
    fn pages_cover_everything_once_in_order() {
        let mut j = Journal::open(Path::new(":memory:")).unwrap();
        for i in 0..25u64 {
            let r = Record::Transition {
                vm: "a".into(),
                from: State::Healthy,
                to: State::Suspect,
                why: format!("#{i}"),
            };
            j.append(i * 10, &[r]).unwrap();
        }
        let mut seen = j.since_page(50, 10).unwrap();
        assert_eq!(seen.len(), 10);
        assert_eq!(seen[0].t, 50);
        loop {
            let last = seen.last().unwrap().seq;
            let page = j.after_page(last, 10).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 10);
            seen.extend(page);
        }
        let ts: Vec<Millis> = seen.iter().map(|e| e.t).collect();
        assert_eq!(ts, (5..25).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(j.since(0).unwrap().len(), 25);
    }

    #[test]
    fn warnings_not_cleared_are_found_for_the_restart() {
        use crate::engine::warn::WarningKind;
        let mut j = Journal::open(Path::new(":memory:")).unwrap();
        let w = |vm: &str| Record::Warning {
            vm: vm.into(),
            kind: WarningKind::PredictedFull,
            subject: Some("/data".into()),
            evidence: "fills".into(),
            eta: Some(9),
        };
        let cleared = Record::WarningCleared {
            vm: "db".into(),
            kind: WarningKind::PredictedFull,
            subject: Some("/data".into()),
            why: "deleted".into(),
        };
        j.append(1, &[w("web"), w("db"), cleared]).unwrap();
        assert_eq!(
            j.unsettled().unwrap().warnings,
            vec![(
                "web".to_string(),
                WarningKind::PredictedFull,
                Some("/data".to_string())
            )]
        );
    }

    #[test]
    fn a_quarantine_not_released_is_found_for_the_restart() {
        use crate::engine::State;
        let mut j = Journal::open(Path::new(":memory:")).unwrap();
        let t = |vm: &str, from, to, why: &str| Record::Transition {
            vm: vm.into(),
            from,
            to,
            why: why.into(),
        };
        j.append(
            1,
            &[
                t(
                    "web",
                    State::Recovering,
                    State::Quarantined,
                    "ladder exhausted",
                ),
                t("db", State::Recovering, State::Quarantined, "budget"),
                t("db", State::Quarantined, State::Discovering, "released"),
                // A restart's restoring transition keeps the first reason.
                t("web", State::Discovering, State::Quarantined, "restored"),
            ],
        )
        .unwrap();
        assert_eq!(
            j.unsettled().unwrap().quarantined,
            vec![("web".to_string(), "ladder exhausted".to_string())]
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        drop(Journal::open(&path).unwrap());
        let db = Connection::open(&path).unwrap();
        db.execute("UPDATE meta SET value = 99 WHERE key = 'schema'", [])
            .unwrap();
        drop(db);
        assert!(matches!(
            Journal::open(&path),
            Err(JournalError::TooNew { found: 99 })
        ));
    }
}
