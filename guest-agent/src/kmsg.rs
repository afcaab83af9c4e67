//! Kernel log: the guest's records, parsed and classified by the shared
//! [`vigil_protocol::kmsg`], and how far into this boot's log the host has
//! been told.

use std::io;
use std::path::Path;

pub use vigil_protocol::kmsg::*;

/// The file in the agent's runtime directory that remembers how far into
/// this boot's kernel log the host has been told.
const REPORTED: &str = "kmsg-reported";

/// The sequence number up to which this boot's (`boot_id`) kernel events
/// were delivered to the host by an earlier agent of the same boot: an
/// agent restarted mid-boot (a crash, systemd's watchdog, an upgrade) must
/// not report an OOM kill of hours ago as news, which the host would
/// repair again. None when nothing was, or in another boot.
pub fn reported_up_to(state_dir: &Path, boot_id: &str) -> Option<u64> {
    let text = std::fs::read_to_string(state_dir.join(REPORTED)).ok()?;
    let (boot, seq) = text.trim().split_once(' ')?;
    (boot == boot_id).then(|| seq.parse().ok()).flatten()
}

/// This boot's id (empty when the kernel does not say).
pub fn boot_id(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Remember that this boot's kernel events up to `seq` reached the host.
pub fn mark_reported_up_to(state_dir: &Path, boot_id: &str, seq: u64) -> io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!("{REPORTED}.tmp"));
    std::fs::write(&tmp, format!("{boot_id} {seq}\n"))?;
    std::fs::rename(tmp, state_dir.join(REPORTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_point_is_per_boot() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(reported_up_to(dir.path(), "b1"), None);
        mark_reported_up_to(dir.path(), "b1", 812).unwrap();
        assert_eq!(reported_up_to(dir.path(), "b1"), Some(812));
        assert_eq!(reported_up_to(dir.path(), "b2"), None);
        std::fs::write(dir.path().join(REPORTED), "garbage").unwrap();
        assert_eq!(reported_up_to(dir.path(), "b1"), None);
    }
}
