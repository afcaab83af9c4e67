//! Filesystems: real mounts from mountinfo, with usage from statvfs.

use std::path::Path;

use vigil_protocol::limits::MAX_FILESYSTEMS;
use vigil_protocol::snapshot::Filesystem;
use vigil_protocol::Text;

/// Filesystem types that hold no user data or cannot fill up meaningfully.
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "ramfs",
    "cgroup",
    "cgroup2",
    "pstore",
    "securityfs",
    "debugfs",
    "tracefs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "bpf",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "efivarfs",
    "selinuxfs",
    "squashfs",
    "iso9660",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "overlay",
    "nfsd",
    "rootfs",
];

/// A mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount point (octal escapes decoded).
    pub mount_point: String,
    /// Source device.
    pub device: String,
    /// Type.
    pub fs_type: String,
    /// Read-only: the mount's own options or its superblock's say `ro`
    /// (ext4's errors=remount-ro sets the superblock read-only while the
    /// mount's options still read `rw`).
    pub read_only: bool,
    /// The mount as the kernel describes it (id, options, superblock
    /// options): it changes when the filesystem is remounted or replaced.
    pub key: String,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse `/proc/self/mountinfo`, keeping real filesystems once per mount
/// point (the last mount on a point wins, as the kernel shows it): pure.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mount_point options [optional...] - type source super_options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 2 {
            continue;
        }
        let fs_type = r[0];
        if PSEUDO.contains(&fs_type) {
            continue;
        }
        let super_ro = r.get(2).is_some_and(|o| o.split(',').any(|o| o == "ro"));
        let read_only = super_ro || l[5].split(',').any(|o| o == "ro");
        let m = Mount {
            mount_point: unescape(l[4]),
            device: unescape(r[1]),
            fs_type: fs_type.to_string(),
            read_only,
            key: format!("{} {} {}", l[0], l[5], r.get(2).unwrap_or(&"")),
        };
        out.retain(|o| o.mount_point != m.mount_point);
        out.push(m);
    }
    out.truncate(MAX_FILESYSTEMS);
    out
}

/// Usage of one mounted filesystem (statvfs under `fs_root`).
pub fn stat(fs_root: &Path, m: &Mount) -> Result<Filesystem, String> {
    let path = fs_root.join(m.mount_point.trim_start_matches('/'));
    let st = nix::sys::statvfs::statvfs(&path).map_err(|e| format!("{}: {e}", m.mount_point))?;
    let frag = st.fragment_size() as u64;
    let flags_ro = st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    Ok(Filesystem {
        mount_point: Text::from(m.mount_point.as_str()),
        device: Text::from(m.device.as_str()),
        fs_type: Text::from(m.fs_type.as_str()),
        size_bytes: st.blocks() as u64 * frag,
        avail_bytes: st.blocks_available() as u64 * frag,
        inodes_total: st.files() as u64,
        inodes_free: st.files_available() as u64,
        read_only: m.read_only || flags_ro,
    })
}

/// Filesystem types the ext4 driver serves (and so report errors in
/// `/sys/fs/ext4/<dev>/errors_count`).
fn ext4_family(fs_type: &str) -> bool {
    matches!(fs_type, "ext2" | "ext3" | "ext4")
}

/// Errors the ext4 driver has recorded in this filesystem's superblock
/// (0 when it has none or is not served by ext4).
pub fn recorded_errors(sys_root: &Path, fs_root: &Path, m: &Mount) -> u64 {
    if !ext4_family(&m.fs_type) {
        return 0;
    }
    // /dev/mapper/x is a link to ../dm-N; sysfs knows the kernel's name.
    let dev = fs_root.join(m.device.trim_start_matches('/'));
    let dev = std::fs::canonicalize(&dev).unwrap_or(dev);
    let Some(name) = dev.file_name() else {
        return 0;
    };
    std::fs::read_to_string(sys_root.join("fs/ext4").join(name).join("errors_count"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether the filesystem refuses a write: an unnamed temporary file
/// (O_TMPFILE, never visible, gone on close) fails with EROFS. The truth
/// when the flags lie (ext4 after an error on newer kernels keeps `rw` in
/// every table); only asked of a filesystem with recorded errors, since
/// even an unnamed file costs a journal write.
pub fn refuses_writes(fs_root: &Path, m: &Mount) -> bool {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let path = fs_root.join(m.mount_point.trim_start_matches('/'));
    match open(&path, OFlag::O_TMPFILE | OFlag::O_WRONLY, Mode::S_IRUSR) {
        Ok(fd) => {
            drop(fd);
            false
        }
        // EROFS, or EIO from a filesystem its driver shut down.
        Err(e) => matches!(e, nix::errno::Errno::EROFS | nix::errno::Errno::EIO),
    }
}

/// Percent of space used (0..=100), as `df` shows it.
pub fn used_percent(f: &Filesystem) -> u8 {
    if f.size_bytes == 0 {
        return 0;
    }
    let used = f.size_bytes.saturating_sub(f.avail_bytes);
    (used.saturating_mul(100) / f.size_bytes).min(100) as u8
}

/// Percent of inodes used (0 when the filesystem has no inode table).
pub fn inodes_used_percent(f: &Filesystem) -> u8 {
    if f.inodes_total == 0 {
        return 0;
    }
    let used = f.inodes_total.saturating_sub(f.inodes_free);
    (used.saturating_mul(100) / f.inodes_total).min(100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
25 22 0:5 / /dev rw,nosuid shared:8 - devtmpfs udev rw,size=1000k
26 22 253:16 / /srv/my\\040data ro,relatime shared:30 - xfs /dev/vdb ro,attr2
27 22 0:40 / /run rw,nosuid,nodev shared:13 - tmpfs tmpfs rw,size=200k
28 22 253:1 / / rw,relatime shared:1 - ext4 /dev/vda2 rw
29 22 253:32 / /data rw,relatime shared:31 - ext4 /dev/vdc ro,errors=remount-ro
broken line
";

    #[test]
    fn real_mounts_only_with_flags_and_escapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(
            m,
            vec![
                Mount {
                    mount_point: "/srv/my data".into(),
                    device: "/dev/vdb".into(),
                    fs_type: "xfs".into(),
                    read_only: true,
                    key: "26 ro,relatime ro,attr2".into(),
                },
                Mount {
                    mount_point: "/".into(),
                    device: "/dev/vda2".into(),
                    fs_type: "ext4".into(),
                    read_only: false,
                    key: "28 rw,relatime rw".into(),
                },
                // Mounted rw, superblock read-only (after an ext4 error).
                Mount {
                    mount_point: "/data".into(),
                    device: "/dev/vdc".into(),
                    fs_type: "ext4".into(),
                    read_only: true,
                    key: "29 rw,relatime ro,errors=remount-ro".into(),
                },
            ]
        );
    }

    #[test]
    fn recorded_errors_come_from_the_ext4_driver() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("fs/ext4/vdc")).unwrap();
        std::fs::write(sys.join("fs/ext4/vdc/errors_count"), "3\n").unwrap();
        let m = Mount {
            mount_point: "/data".into(),
            device: "/dev/vdc".into(),
            fs_type: "ext4".into(),
            read_only: false,
            key: String::new(),
        };
        assert_eq!(recorded_errors(&sys, dir.path(), &m), 3);
        let xfs = Mount {
            fs_type: "xfs".into(),
            ..m.clone()
        };
        assert_eq!(recorded_errors(&sys, dir.path(), &xfs), 0);
        // A writable directory accepts an unnamed temporary file.
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        assert!(!refuses_writes(dir.path(), &m));
    }

    #[test]
    fn statvfs_under_a_root_and_percentages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("srv")).unwrap();
        let m = Mount {
            mount_point: "/srv".into(),
            device: "/dev/x".into(),
            fs_type: "ext4".into(),
            read_only: false,
            key: String::new(),
        };
        let f = stat(dir.path(), &m).unwrap();
        assert!(f.size_bytes > 0 && f.avail_bytes <= f.size_bytes);
        let missing = Mount {
            mount_point: "/nope".into(),
            ..m
        };
        assert!(stat(dir.path(), &missing).unwrap_err().contains("/nope"));
        let full = Filesystem {
            size_bytes: 100,
            avail_bytes: 3,
            inodes_total: 10,
            inodes_free: 0,
            ..f
        };
        assert_eq!((used_percent(&full), inodes_used_percent(&full)), (97, 100));
    }
}
