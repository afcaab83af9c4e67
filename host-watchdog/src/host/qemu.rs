//! Which VM a QEMU process runs: its command line says (`-name
//! guest=NAME,...`, as libvirt starts it). Kept for every live QEMU, since
//! a process the OOM killer chose is gone before its kill is read.

use std::collections::HashMap;
use std::path::Path;

/// The guest name in a QEMU command line (NUL-separated arguments): the
/// `guest=` option of `-name`, or its plain value; QEMU doubles a comma
/// inside a value (pure).
pub fn guest_name(cmdline: &[u8]) -> Option<String> {
    let mut args = cmdline.split(|b| *b == 0);
    args.find(|a| *a == b"-name")?;
    let value = String::from_utf8_lossy(args.next()?).into_owned();
    // Options separated by single commas; ",," is a comma.
    let mut options = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                options.last_mut()?.push(',');
            }
            ',' => options.push(String::new()),
            c => options.last_mut()?.push(c),
        }
    }
    let guest = options
        .iter()
        .find_map(|o| o.strip_prefix("guest="))
        .map(str::to_string)
        .or_else(|| options.first().filter(|o| !o.contains('=')).cloned())?;
    (!guest.is_empty()).then_some(guest)
}

/// Live QEMU processes by PID, with the VM each runs.
#[derive(Debug, Default)]
pub struct QemuPids {
    /// Every PID seen, with its VM (`None`: not a QEMU).
    known: HashMap<u32, Option<String>>,
}

impl QemuPids {
    /// Look at the processes under `proc_root` (`/proc`): new ones are
    /// read once, gone ones forgotten.
    pub fn refresh(&mut self, proc_root: &Path) {
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return;
        };
        let mut live = std::collections::HashSet::new();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            live.insert(pid);
            self.known.entry(pid).or_insert_with(|| {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if !comm.starts_with("qemu") {
                    return None;
                }
                std::fs::read(e.path().join("cmdline"))
                    .ok()
                    .and_then(|c| guest_name(&c))
            });
        }
        self.known.retain(|pid, _| live.contains(pid));
    }

    /// The VM `pid` ran, when it was a QEMU seen alive.
    pub fn vm(&self, pid: u32) -> Option<&str> {
        self.known.get(&pid)?.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<u8> {
        args.join("\0").into_bytes()
    }

    #[test]
    fn the_guest_name_comes_from_its_name_option() {
        let libvirt = cmd(&[
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "guest=vigil-e2e,debug-threads=on",
            "-S",
        ]);
        assert_eq!(guest_name(&libvirt).as_deref(), Some("vigil-e2e"));
        let comma = cmd(&["qemu", "-name", "guest=web,,1,debug-threads=on"]);
        assert_eq!(guest_name(&comma).as_deref(), Some("web,1"));
        let plain = cmd(&["qemu", "-name", "db"]);
        assert_eq!(guest_name(&plain).as_deref(), Some("db"));
        assert_eq!(guest_name(&cmd(&["qemu", "-m", "512"])), None);
        assert_eq!(guest_name(&cmd(&["qemu", "-name"])), None);
    }

    #[test]
    fn live_qemus_are_found_under_a_proc_tree_and_gone_ones_forgotten() {
        let root = tempfile::tempdir().unwrap();
        let proc_ = |pid: u32, comm: &str, args: &[&str]| {
            let d = root.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(d.join("cmdline"), cmd(args)).unwrap();
        };
        proc_(
            10,
            "qemu-system-x86",
            &["qemu", "-name", "guest=a,debug-threads=on"],
        );
        proc_(11, "bash", &["bash", "-name", "guest=b"]);
        std::fs::create_dir_all(root.path().join("self")).unwrap();
        let mut pids = QemuPids::default();
        pids.refresh(root.path());
        assert_eq!(
            (pids.vm(10), pids.vm(11), pids.vm(12)),
            (Some("a"), None, None)
        );
        std::fs::remove_dir_all(root.path().join("10")).unwrap();
        pids.refresh(root.path());
        assert_eq!(pids.vm(10), None);
    }
}
