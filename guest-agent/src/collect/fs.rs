//! Filesystems: real mounts from mountinfo, with usage from statvfs.
//!
//! The guest's mounts are read from its init's mount table
//! (`/proc/1/mountinfo`), not the agent's own: a sandboxed agent (systemd's
//! `ProtectSystem=`, `ProtectHome=`, `PrivateTmp=`) lives in a mount
//! namespace of read-only bind mounts, and its own table would report
//! `/boot`, `/etc` or `/usr` read-only on a healthy guest. Usage and write
//! probes go through a view of the same filesystem in the agent's own
//! namespace (the same device, writable for a probe): a superblock's usage
//! and whether it takes a write do not depend on the mount they are asked
//! through.

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
    /// The filesystem's device number (`major:minor`), the same in every
    /// mount namespace.
    pub dev: String,
    /// This mount's own options allow writes (a read-only bind mount of a
    /// writable filesystem says no).
    pub mount_rw: bool,
}

/// Where, in the agent's own mount namespace (`own`, its parsed
/// mountinfo), filesystem `m` can be reached: at the same mount point when
/// that shows the same device, else at any mount of the device; with
/// `writable`, only through a mount whose own options allow writes. None
/// when the agent's namespace hides it.
pub fn view<'a>(own: &'a [Mount], m: &Mount, writable: bool) -> Option<&'a str> {
    let fits = |o: &&Mount| o.dev == m.dev && (!writable || o.mount_rw);
    own.iter()
        .filter(fits)
        .find(|o| o.mount_point == m.mount_point)
        .or_else(|| own.iter().find(fits))
        .map(|o| o.mount_point.as_str())
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

/// Parse a mountinfo table, keeping real filesystems once per mount
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
        let mount_ro = l[5].split(',').any(|o| o == "ro");
        let read_only = super_ro || mount_ro;
        let m = Mount {
            mount_point: unescape(l[4]),
            device: unescape(r[1]),
            fs_type: fs_type.to_string(),
            read_only,
            key: format!("{} {} {}", l[0], l[5], r.get(2).unwrap_or(&"")),
            dev: l[2].to_string(),
            mount_rw: !mount_ro,
        };
        out.retain(|o| o.mount_point != m.mount_point);
        out.push(m);
    }
    out.truncate(MAX_FILESYSTEMS);
    out
}

/// Usage of one mounted filesystem: statvfs of its view `at` (a mount
/// point of the agent's namespace) under `fs_root`. Read-only as the
/// guest's table says (statvfs's flag is the view's, which a sandbox's
/// bind mount may make read-only).
pub fn stat(fs_root: &Path, m: &Mount, at: &str) -> Result<Filesystem, String> {
    let path = fs_root.join(at.trim_start_matches('/'));
    let st = nix::sys::statvfs::statvfs(&path).map_err(|e| format!("{}: {e}", m.mount_point))?;
    let frag = st.fragment_size() as u64;
    Ok(Filesystem {
        mount_point: Text::from(m.mount_point.as_str()),
        device: Text::from(m.device.as_str()),
        fs_type: Text::from(m.fs_type.as_str()),
        size_bytes: st.blocks() as u64 * frag,
        avail_bytes: st.blocks_available() as u64 * frag,
        inodes_total: st.files() as u64,
        inodes_free: st.files_available() as u64,
        read_only: m.read_only,
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
/// `at` is a writable view of the filesystem in the agent's namespace.
pub fn refuses_writes(fs_root: &Path, at: &str) -> bool {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let path = fs_root.join(at.trim_start_matches('/'));
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
                    dev: "253:16".into(),
                    mount_rw: false,
                },
                Mount {
                    mount_point: "/".into(),
                    device: "/dev/vda2".into(),
                    fs_type: "ext4".into(),
                    read_only: false,
                    key: "28 rw,relatime rw".into(),
                    dev: "253:1".into(),
                    mount_rw: true,
                },
                // Mounted rw, superblock read-only (after an ext4 error).
                Mount {
                    mount_point: "/data".into(),
                    device: "/dev/vdc".into(),
                    fs_type: "ext4".into(),
                    read_only: true,
                    key: "29 rw,relatime ro,errors=remount-ro".into(),
                    dev: "253:32".into(),
                    mount_rw: true,
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
            dev: "253:32".into(),
            mount_rw: true,
        };
        assert_eq!(recorded_errors(&sys, dir.path(), &m), 3);
        let xfs = Mount {
            fs_type: "xfs".into(),
            ..m.clone()
        };
        assert_eq!(recorded_errors(&sys, dir.path(), &xfs), 0);
        // A writable directory accepts an unnamed temporary file.
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        assert!(!refuses_writes(dir.path(), "/data"));
    }

    /// The guest's table, and the same guest as a sandboxed agent sees it
    /// (systemd's ProtectSystem=full, ProtectHome=read-only, PrivateTmp=):
    /// read-only bind mounts of healthy writable filesystems.
    const GUEST: &str = "\
21 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro
30 21 254:2 / /boot rw,relatime shared:20 - ext4 /dev/vdb rw
31 21 254:3 / /home rw,relatime shared:21 - ext4 /dev/vdc rw
";
    const SANDBOX: &str = "\
400 390 254:1 / / rw,relatime master:1 - ext4 /dev/vda rw,errors=remount-ro
401 400 254:1 /usr /usr ro,relatime master:1 - ext4 /dev/vda rw,errors=remount-ro
402 400 254:1 /etc /etc ro,relatime master:1 - ext4 /dev/vda rw,errors=remount-ro
403 400 254:2 / /boot ro,relatime master:20 - ext4 /dev/vdb rw
404 400 254:3 / /home ro,relatime master:21 - ext4 /dev/vdc rw
405 400 254:1 /tmp/systemd-private-x/tmp /tmp rw,relatime master:1 - ext4 /dev/vda rw,errors=remount-ro
";

    #[test]
    fn a_sandboxed_agent_reports_the_guests_mounts_through_its_own_views() {
        let guest = parse_mountinfo(GUEST);
        let own = parse_mountinfo(SANDBOX);
        // The guest's table: nothing read-only.
        assert!(guest.iter().all(|m| !m.read_only), "{guest:?}");
        // The sandbox's own table would have said /boot and /home are.
        assert!(own.iter().any(|m| m.mount_point == "/boot" && m.read_only));
        let boot = &guest[1];
        let home = &guest[2];
        // Usage through the same mount point; a write probe only through a
        // writable view, which /boot and /home do not have in the sandbox.
        assert_eq!(view(&own, boot, false), Some("/boot"));
        assert_eq!(view(&own, boot, true), None);
        assert_eq!(view(&own, home, true), None);
        // The root filesystem is writable at / itself.
        assert_eq!(view(&own, &guest[0], true), Some("/"));
        // A filesystem the sandbox hides has no view at all.
        let hidden = Mount {
            dev: "254:9".into(),
            ..boot.clone()
        };
        assert_eq!(view(&own, &hidden, false), None);
        // Another mount of the same device serves when the point differs.
        let only_tmp =
            parse_mountinfo("405 400 254:1 /tmp/x /tmp rw,relatime master:1 - ext4 /dev/vda rw\n");
        assert_eq!(view(&only_tmp, &guest[0], true), Some("/tmp"));
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
            dev: "253:32".into(),
            mount_rw: true,
        };
        let f = stat(dir.path(), &m, "/srv").unwrap();
        assert!(f.size_bytes > 0 && f.avail_bytes <= f.size_bytes);
        let missing = Mount {
            mount_point: "/nope".into(),
            ..m
        };
        assert!(stat(dir.path(), &missing, "/nope")
            .unwrap_err()
            .contains("/nope"));
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
