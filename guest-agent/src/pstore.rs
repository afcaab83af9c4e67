//! The previous boot's crash record from pstore, reported once per boot.
//!
//! A marker file in the runtime state directory (a tmpfs cleared at boot)
//! remembers that the record was handed to the host, so an agent restart
//! within the same boot does not report it again.

use std::path::{Path, PathBuf};

use vigil_protocol::limits::MAX_CRASH_TEXT;
use vigil_protocol::snapshot::CrashRecord;
use vigil_protocol::Text;

const MARKER: &str = "pstore-reported";

/// Newest `dmesg-*` record under `pstore_dir`, its tail bounded: pure-ish (reads only).
pub fn newest_record(pstore_dir: &Path) -> Option<CrashRecord> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(pstore_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("dmesg-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let (_, path) = files.pop()?;
    let bytes = std::fs::read(&path).ok()?;
    let tail = &bytes[bytes.len().saturating_sub(MAX_CRASH_TEXT)..];
    let text = String::from_utf8_lossy(tail);
    let mut text: &str = &text;
    while text.len() > MAX_CRASH_TEXT {
        // Lossy decoding can grow the text; cut on a char boundary.
        text = vigil_protocol::limits::truncate_utf8(text, MAX_CRASH_TEXT);
    }
    Some(CrashRecord {
        source: Text::from(path.file_name()?.to_string_lossy().as_ref()),
        text: Text::from(text),
    })
}

/// The record, unless this boot already reported it.
pub fn unreported(pstore_dir: &Path, state_dir: &Path) -> Option<CrashRecord> {
    if state_dir.join(MARKER).exists() {
        return None;
    }
    newest_record(pstore_dir)
}

/// Remember that the record was delivered.
pub fn mark_reported(state_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    std::fs::write(state_dir.join(MARKER), b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_once_per_boot() {
        let dir = tempfile::tempdir().unwrap();
        let pstore = dir.path().join("pstore");
        let state = dir.path().join("run");
        std::fs::create_dir_all(&pstore).unwrap();
        assert_eq!(unreported(&pstore, &state), None);
        std::fs::write(pstore.join("console-ramoops-0"), "not a dmesg").unwrap();
        std::fs::write(
            pstore.join("dmesg-ramoops-0"),
            format!(
                "{}\nKernel panic - not syncing: sysrq triggered crash\n",
                "x".repeat(10_000)
            ),
        )
        .unwrap();
        let r = unreported(&pstore, &state).unwrap();
        assert_eq!(r.source, "dmesg-ramoops-0");
        assert!(r.text.len() <= MAX_CRASH_TEXT);
        assert!(r.text.contains("Kernel panic"));
        mark_reported(&state).unwrap();
        assert_eq!(unreported(&pstore, &state), None);
    }
}
