//! A journal's health: `vigild --check-journal` verifies one, and vigild
//! moves a corrupt one aside at start (never truncating it) and begins a
//! fresh one.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::{Journal, JournalError};
use crate::engine::Record;

/// What `--check-journal` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// SQLite's `integrity_check` problems (empty: none).
    pub problems: Vec<String>,
    /// Records stored.
    pub records: u64,
    /// Records whose body does not parse.
    pub unreadable: Vec<i64>,
    /// Oldest and newest record times.
    pub span: Option<(i64, i64)>,
}

impl Report {
    /// Nothing wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.unreadable.is_empty()
    }
}

impl JournalError {
    /// The file is damaged or not a journal at all (not locked, not
    /// unreadable for want of permission: those are not moved aside).
    pub fn is_corruption(&self) -> bool {
        match self {
            JournalError::Db(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
            }
            _ => false,
        }
    }
}

/// Verify the journal at `path` without changing it: SQLite's full
/// integrity check, and every record's body.
pub fn check(path: &Path) -> Result<Report, JournalError> {
    if !path.exists() {
        return Err(JournalError::Db(rusqlite::Error::InvalidPath(path.into())));
    }
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let problems = integrity(&db, "integrity_check")?;
    let mut report = Report {
        problems,
        records: 0,
        unreadable: Vec::new(),
        span: None,
    };
    if !report.problems.is_empty() {
        return Ok(report);
    }
    let mut stmt = db.prepare("SELECT seq, t_ms, body FROM records ORDER BY seq")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (seq, t, body) = row?;
        report.records += 1;
        if serde_json::from_str::<Record>(&body).is_err() {
            report.unreadable.push(seq);
        }
        let (lo, hi) = report.span.unwrap_or((t, t));
        report.span = Some((lo.min(t), hi.max(t)));
    }
    Ok(report)
}

fn integrity(db: &Connection, pragma: &str) -> Result<Vec<String>, JournalError> {
    let mut stmt = db.prepare(&format!("PRAGMA {pragma}"))?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    Ok(lines.into_iter().filter(|l| l != "ok").collect())
}

/// Whether the file at `path` is damaged: not a database, or SQLite's
/// quick check finds problems. A file that cannot be read for another
/// reason is not called damaged (the error is returned).
fn damaged(path: &Path) -> Result<Option<String>, JournalError> {
    let quick = || -> Result<Vec<String>, JournalError> {
        let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        integrity(&db, "quick_check")
    };
    match quick() {
        Ok(p) if p.is_empty() => Ok(None),
        Ok(p) => Ok(Some(p.join("; "))),
        Err(e) if e.is_corruption() => Ok(Some(format!("{e:#}: {}", cause(&e)))),
        Err(e) => Err(e),
    }
}

fn cause(e: &JournalError) -> String {
    match e {
        JournalError::Db(d) => d.to_string(),
        other => other.to_string(),
    }
}

/// Open the journal at `path`; a damaged one is first moved aside (with
/// its WAL and shared-memory files) to `PATH.corrupt-<ms>` and a fresh one
/// begun. Says where it went, and why.
pub fn open_or_move_aside(
    path: &Path,
) -> Result<(Journal, Option<(PathBuf, String)>), JournalError> {
    let mut moved = None;
    if path.exists() {
        if let Some(why) = damaged(path)? {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
            for suffix in ["", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", path.display()));
                if from.exists() {
                    let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                    std::fs::rename(&from, &to).map_err(|e| {
                        JournalError::Db(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
                    })?;
                }
            }
            moved = Some((aside, why));
        }
    }
    Ok((Journal::open(path)?, moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_with_records(path: &Path, n: usize) {
        let mut j = Journal::open(path).unwrap();
        for i in 0..n {
            let r = Record::WarningCleared {
                vm: format!("vm{i}"),
                kind: crate::engine::warn::WarningKind::CpuSteal,
                subject: None,
                why: "x".repeat(200),
            };
            j.append(i as u64, &[r]).unwrap();
        }
    }

    #[test]
    fn a_sound_journal_checks_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.db");
        journal_with_records(&p, 50);
        let r = check(&p).unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.records, r.span), (50, Some((0, 49))));
        let (_, moved) = open_or_move_aside(&p).unwrap();
        assert!(moved.is_none());
    }

    #[test]
    fn garbage_is_moved_aside_and_a_fresh_journal_begun() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.db");
        std::fs::write(&p, vec![0x5a; 8192]).unwrap();
        assert!(check(&p).is_err_and(|e| e.is_corruption()));
        let (mut j, moved) = open_or_move_aside(&p).unwrap();
        let (aside, why) = moved.unwrap();
        assert!(why.contains("not a database"), "{why}");
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            vec![0x5a; 8192],
            "kept as it was"
        );
        j.append(1, &[]).unwrap();
        assert!(check(&p).unwrap().ok());
    }

    #[test]
    fn damaged_pages_are_found_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.db");
        journal_with_records(&p, 400);
        {
            // Checkpointed into the main file, then a page in the middle
            // overwritten (a bad sector, a torn write).
            let db = Connection::open(&p).unwrap();
            db.pragma_update(None, "wal_checkpoint", "TRUNCATE")
                .unwrap();
        }
        let mut bytes = std::fs::read(&p).unwrap();
        assert!(bytes.len() > 5 * 4096, "{}", bytes.len());
        for b in &mut bytes[3 * 4096..3 * 4096 + 2048] {
            *b = 0xff;
        }
        std::fs::write(&p, &bytes).unwrap();
        let bad = match check(&p) {
            Ok(r) => !r.ok(),
            Err(e) => e.is_corruption(),
        };
        assert!(bad, "a damaged page goes unseen");
        let (_, moved) = open_or_move_aside(&p).unwrap();
        assert!(moved.is_some());
        assert!(check(&p).unwrap().ok());
    }
}
