//! Where VM disks live on the host: the filesystem under each disk image
//! (from `/proc/self/mountinfo`, sampled with `statvfs`) and the block
//! devices beneath it (from `/sys/dev/block`: a partition's disk, a
//! device-mapper or md device's members), so that an I/O error the host's
//! kernel logs for `sdb` is put on the VMs whose images sit on `sdb`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::engine::storage::FsSample;

/// One mount from `mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Its device (major, minor).
    pub dev: (u32, u32),
    /// Its mount point.
    pub point: String,
}

/// Parse `/proc/self/mountinfo` (pure). Each line: `id parent MAJ:MIN root
/// point options ... - fstype source superoptions`; the point has spaces
/// and the like escaped as octal (`\040`).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let dev = f.nth(2)?;
            let point = f.nth(1)?;
            let (maj, min) = dev.split_once(':')?;
            Some(Mount {
                dev: (maj.parse().ok()?, min.parse().ok()?),
                point: unescape(point),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount `path` is on: of the mounts of its device, the deepest whose
/// point contains it (the last mounted wins a tie: it hides the others).
pub fn mount_of<'a>(path: &Path, dev: (u32, u32), mounts: &'a [Mount]) -> Option<&'a Mount> {
    let under = |m: &&Mount| path.starts_with(&m.point);
    let best = |it: Vec<&'a Mount>| {
        it.into_iter()
            .rev()
            .max_by_key(|m| Path::new(&m.point).components().count())
    };
    best(
        mounts
            .iter()
            .filter(|m| m.dev == dev)
            .filter(under)
            .collect(),
    )
    .or_else(|| best(mounts.iter().filter(under).collect()))
}

/// The block devices under device `dev` by their kernel names: itself,
/// the disk a partition is on, and the members of a device-mapper or md
/// device, all the way down (`sys` is `/sys`). None for a device with no
/// block device (tmpfs, NFS).
pub fn devices_of(sys: &Path, dev: (u32, u32)) -> Vec<String> {
    let mut names = BTreeSet::new();
    let node = sys.join(format!("dev/block/{}:{}", dev.0, dev.1));
    if let Ok(dir) = node.canonicalize() {
        walk(&dir, &mut names, 0);
    }
    names.into_iter().collect()
}

fn walk(dir: &Path, names: &mut BTreeSet<String>, depth: u32) {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    if depth > 8 || !names.insert(name.to_string()) {
        return;
    }
    // A partition: its disk is the directory above.
    if dir.join("partition").exists() {
        if let Some(parent) = dir.parent() {
            walk(parent, names, depth + 1);
        }
    }
    if let Ok(slaves) = std::fs::read_dir(dir.join("slaves")) {
        for s in slaves.flatten() {
            if let Ok(p) = s.path().canonicalize() {
                walk(&p, names, depth + 1);
            }
        }
    }
}

fn split_dev(d: u64) -> (u32, u32) {
    (
        nix::sys::stat::major(d) as u32,
        nix::sys::stat::minor(d) as u32,
    )
}

/// What one round of looking found.
#[derive(Debug, Default)]
pub struct Looked {
    /// Each filesystem under VM disks (and the journal), sampled.
    pub filesystems: Vec<FsSample>,
    /// Block device name → the VMs with disks on it.
    pub devices: BTreeMap<String, Vec<String>>,
}

/// Look where each VM's disks live and sample those filesystems; the
/// journal's filesystem is sampled too. `disks`: VM → its disks' source
/// paths. A source that cannot be looked at (gone, a network disk) is
/// left out.
pub fn look(disks: &BTreeMap<String, Vec<String>>, journal: &Path, root: &Path) -> Looked {
    let mounts = std::fs::read_to_string(root.join("proc/self/mountinfo"))
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    let sys = root.join("sys");
    let mut by_mount: BTreeMap<String, FsSample> = BTreeMap::new();
    let mut devices: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dev_names: BTreeMap<(u32, u32), Vec<String>> = BTreeMap::new();
    let journal_dir = journal.parent().map(PathBuf::from);
    let mut paths: Vec<(Option<&str>, PathBuf)> = disks
        .iter()
        .flat_map(|(vm, srcs)| {
            srcs.iter()
                .map(move |s| (Some(vm.as_str()), PathBuf::from(s)))
        })
        .collect();
    paths.extend(journal_dir.map(|d| (None, d)));
    for (vm, path) in paths {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        // A disk that is a block device has no filesystem of ours to fill;
        // its device is the one errors would name.
        let (dev, on_fs) = if meta.file_type().is_block_device() {
            (split_dev(meta.rdev()), false)
        } else {
            (split_dev(meta.dev()), true)
        };
        if let Some(vm) = vm {
            let names = dev_names
                .entry(dev)
                .or_insert_with(|| devices_of(&sys, dev));
            for n in names.iter() {
                devices.entry(n.clone()).or_default().insert(vm.to_string());
            }
        }
        if !on_fs {
            continue;
        }
        let Some(m) = mount_of(&path, dev, &mounts) else {
            continue;
        };
        if !by_mount.contains_key(&m.point) {
            let Ok(st) = nix::sys::statvfs::statvfs(Path::new(&m.point)) else {
                continue;
            };
            let unit = st.fragment_size();
            by_mount.insert(
                m.point.clone(),
                FsSample {
                    mount: m.point.clone(),
                    // As df counts: what is used plus what unprivileged
                    // writers may still take (root's reserve left out).
                    size: (st.blocks().saturating_sub(st.blocks_free()) + st.blocks_available())
                        * unit,
                    avail: st.blocks_available() * unit,
                    inodes: st.files(),
                    inodes_avail: st.files_available(),
                    vms: Vec::new(),
                    journal: false,
                },
            );
        }
        if let Some(s) = by_mount.get_mut(&m.point) {
            match vm {
                Some(vm) if !s.vms.iter().any(|v| v == vm) => s.vms.push(vm.to_string()),
                Some(_) => {}
                None => s.journal = true,
            }
        }
    }
    Looked {
        filesystems: by_mount.into_values().collect(),
        devices: devices
            .into_iter()
            .map(|(d, vms)| (d, vms.into_iter().collect()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines in the shape the kernel writes (fs/proc_namespace.c,
    /// `show_mountinfo`), one with an escaped space.
    const MOUNTINFO: &str = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
30 22 0:27 / /tmp rw,nosuid,nodev shared:5 - tmpfs tmpfs rw
41 22 253:0 / /var/lib/libvirt/images rw,relatime shared:30 - xfs /dev/mapper/vg-images rw
42 30 0:45 / /tmp/vm\\040disks rw,relatime shared:31 - tmpfs tmpfs rw,size=49152k
";

    #[test]
    fn mountinfo_parses_and_the_deepest_mount_of_the_device_wins() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].point, "/tmp/vm disks");
        assert_eq!(m[2].dev, (253, 0));
        let at = |p: &str, dev| mount_of(Path::new(p), dev, &m).map(|m| m.point.clone());
        assert_eq!(
            at("/var/lib/libvirt/images/web.qcow2", (253, 0)).as_deref(),
            Some("/var/lib/libvirt/images")
        );
        assert_eq!(
            at("/tmp/vm disks/a.qcow2", (0, 45)).as_deref(),
            Some("/tmp/vm disks")
        );
        assert_eq!(at("/tmp/x.qcow2", (0, 27)).as_deref(), Some("/tmp"));
        // A device mountinfo does not name (a btrfs subvolume): the
        // deepest mount containing the path.
        assert_eq!(at("/srv/x.img", (0, 99)).as_deref(), Some("/"));
        assert!(parse_mountinfo("garbage\n1 2 x / /a\n").is_empty());
    }

    /// A fake `/sys` in the kernel's layout: `dev/block/M:m` links to the
    /// device's directory; a partition is a subdirectory of its disk with
    /// a `partition` file; dm members are links under `slaves/`.
    #[test]
    fn devices_resolve_through_partitions_and_device_mapper() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        let blk = sys.join("devices/pci0000:00/block");
        std::fs::create_dir_all(blk.join("sda/sda2")).unwrap();
        std::fs::write(blk.join("sda/sda2/partition"), "2\n").unwrap();
        std::fs::create_dir_all(blk.join("sdb/sdb1")).unwrap();
        std::fs::write(blk.join("sdb/sdb1/partition"), "1\n").unwrap();
        let dm = sys.join("devices/virtual/block/dm-0");
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        std::os::unix::fs::symlink(blk.join("sda/sda2"), dm.join("slaves/sda2")).unwrap();
        std::os::unix::fs::symlink(blk.join("sdb/sdb1"), dm.join("slaves/sdb1")).unwrap();
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&dm, sys.join("dev/block/253:0")).unwrap();
        std::os::unix::fs::symlink(blk.join("sda/sda2"), sys.join("dev/block/8:2")).unwrap();
        assert_eq!(
            devices_of(sys, (253, 0)),
            ["dm-0", "sda", "sda2", "sdb", "sdb1"]
        );
        assert_eq!(devices_of(sys, (8, 2)), ["sda", "sda2"]);
        assert!(devices_of(sys, (0, 45)).is_empty(), "tmpfs: no device");
    }

    #[test]
    fn a_round_finds_each_vms_filesystem_and_the_journals() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("web.qcow2");
        std::fs::write(&img, b"x").unwrap();
        let disks = BTreeMap::from([
            ("web".to_string(), vec![img.display().to_string()]),
            ("gone".to_string(), vec!["/nonexistent/x.qcow2".to_string()]),
        ]);
        let journal = d.path().join("journal.db");
        let l = look(&disks, &journal, Path::new("/"));
        assert_eq!(l.filesystems.len(), 1, "{l:?}");
        let fs = &l.filesystems[0];
        assert_eq!(fs.vms, ["web"]);
        assert!(fs.journal && fs.size > 0 && fs.avail <= fs.size, "{fs:?}");
        assert!(d.path().starts_with(&fs.mount), "{fs:?}");
    }
}
