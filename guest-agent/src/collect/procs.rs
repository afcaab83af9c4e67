//! Process table summary and the watch list (process names and systemd units).

use std::collections::HashMap;
use std::path::Path;

use vigil_protocol::snapshot::{ProcessSummary, WatchTarget, WatchedService};
use vigil_protocol::Text;

/// One process as the collectors need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Pid.
    pub pid: u32,
    /// `comm`.
    pub comm: String,
    /// State letter (R, S, D, Z, ...).
    pub state: char,
}

/// Parse `pid (comm) state ...` from a `/proc/PID/stat` line: pure. The
/// name may itself contain `)` or spaces, so split at the last `)`.
pub fn parse_stat(line: &str) -> Option<Proc> {
    let open = line.find(" (")?;
    let close = line.rfind(") ")?;
    Some(Proc {
        pid: line[..open].parse().ok()?,
        comm: line.get(open + 2..close)?.to_string(),
        state: line[close + 2..].chars().next()?,
    })
}

/// Read every process's stat under `proc_root`. Processes that vanish while
/// being read are skipped; only an unreadable `proc_root` is an error.
/// (One open+read per process: this runs every report interval, so it
/// avoids procfs's per-process directory handles.)
pub fn read_processes(proc_root: &Path) -> Result<Vec<Proc>, String> {
    let dir = std::fs::read_dir(proc_root)
        .map_err(|e| format!("cannot list {}: {e}", proc_root.display()))?;
    let mut out = Vec::new();
    let mut buf = String::with_capacity(512);
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        buf.clear();
        let path = proc_root.join(name).join("stat");
        if std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut buf))
            .is_ok()
        {
            if let Some(p) = parse_stat(&buf) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Counts by state: pure.
pub fn summarize(procs: &[Proc]) -> ProcessSummary {
    let count = |c| procs.iter().filter(|p| p.state == c).count() as u32;
    ProcessSummary {
        total: procs.len() as u32,
        zombies: count('Z'),
        uninterruptible: count('D'),
    }
}

/// The first pid in a systemd unit's cgroup, if the unit has live processes.
/// Looks in the unified hierarchy (`system.slice/UNIT`), then the v1
/// systemd hierarchy.
pub fn unit_pid(sys_root: &Path, unit: &str) -> Option<u32> {
    let slices = ["system.slice", "user.slice", ""];
    let bases = ["fs/cgroup", "fs/cgroup/unified", "fs/cgroup/systemd"];
    for base in bases {
        for slice in slices {
            let path = sys_root
                .join(base)
                .join(slice)
                .join(unit)
                .join("cgroup.procs");
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text.lines().find_map(|l| l.trim().parse().ok());
            }
        }
    }
    None
}

/// Tracks watched services across snapshots: a changed pid is a restart.
#[derive(Debug, Default)]
pub struct WatchState {
    last: HashMap<WatchTarget, (Option<u32>, u32)>,
}

impl WatchState {
    /// Update from the current process list and unit pids; returns the
    /// watched list and whether any entry changed state (running/pid).
    pub fn update(
        &mut self,
        processes: &[String],
        units: &[(String, Option<u32>)],
        procs: &[Proc],
    ) -> (Vec<WatchedService>, bool) {
        let mut changed = false;
        let mut out = Vec::with_capacity(processes.len() + units.len());
        let by_name = |name: &str| {
            procs
                .iter()
                .filter(|p| p.comm == name && p.state != 'Z')
                .map(|p| p.pid)
                .min()
        };
        let entries = processes
            .iter()
            .map(|n| (WatchTarget::Process(Text::from(n.as_str())), by_name(n)))
            .chain(
                units
                    .iter()
                    .map(|(u, pid)| (WatchTarget::Unit(Text::from(u.as_str())), *pid)),
            );
        for (target, pid) in entries {
            let (restarts, was) = match self.last.get(&target) {
                Some((old, r)) => {
                    let restarted = old.is_some() && pid.is_some() && *old != pid
                        || old.is_none() && pid.is_some();
                    (r + u32::from(restarted), Some(*old))
                }
                None => (0, None),
            };
            if was.is_some_and(|old| old != pid) {
                changed = true;
            }
            self.last.insert(target.clone(), (pid, restarts));
            out.push(WatchedService {
                target,
                running: pid.is_some(),
                pid,
                restarts,
            });
        }
        (out, changed)
    }
}

impl WatchState {
    /// Cheap check between full scans: did a known pid die or a unit's
    /// first pid change? Reads one file per watched entry.
    pub fn quick_changed(&self, proc_root: &Path, sys_root: &Path) -> bool {
        // A watched process that is down may come back under any pid: while
        // one is down, a full scan (cheap enough for that while) notices.
        let down: Vec<&str> = self
            .last
            .iter()
            .filter_map(|(t, (pid, _))| match t {
                WatchTarget::Process(n) if pid.is_none() => Some(n.as_str()),
                _ => None,
            })
            .collect();
        if !down.is_empty() {
            if let Ok(procs) = read_processes(proc_root) {
                if procs
                    .iter()
                    .any(|p| p.state != 'Z' && down.contains(&p.comm.as_str()))
                {
                    return true;
                }
            }
        }
        self.last.iter().any(|(target, (pid, _))| match target {
            WatchTarget::Process(name) => pid.is_some_and(|pid| {
                let alive =
                    procfs::process::Process::new_with_root(proc_root.join(pid.to_string()))
                        .and_then(|p| p.stat())
                        .is_ok_and(|st| st.comm == name.as_str() && st.state != 'Z');
                !alive
            }),
            WatchTarget::Unit(unit) => unit_pid(sys_root, unit) != *pid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, comm: &str, state: char) -> Proc {
        Proc {
            pid,
            comm: comm.into(),
            state,
        }
    }

    #[test]
    fn stat_lines_with_odd_names() {
        assert_eq!(
            parse_stat("42 (a) b) c) S 1 2"),
            Some(p(42, "a) b) c", 'S'))
        );
        assert_eq!(
            parse_stat("7 (kworker/0:1-events) I 2 0"),
            Some(p(7, "kworker/0:1-events", 'I'))
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("x (a) S"), None);
    }

    #[test]
    fn summary_counts_states() {
        let procs = [
            p(1, "init", 'S'),
            p(2, "z", 'Z'),
            p(3, "d", 'D'),
            p(4, "d", 'D'),
        ];
        assert_eq!(
            summarize(&procs),
            ProcessSummary {
                total: 4,
                zombies: 1,
                uninterruptible: 2
            }
        );
    }

    #[test]
    fn watch_tracks_restarts_and_changes() {
        let mut w = WatchState::default();
        let names = vec!["svc".to_string()];
        let (l, changed) = w.update(&names, &[], &[p(10, "svc", 'S')]);
        assert!(!changed);
        assert_eq!((l[0].running, l[0].pid, l[0].restarts), (true, Some(10), 0));
        // Gone (a zombie does not count as running).
        let (l, changed) = w.update(&names, &[], &[p(10, "svc", 'Z')]);
        assert!(changed);
        assert!(!l[0].running);
        // Back with a new pid: one restart.
        let (l, changed) = w.update(&names, &[], &[p(11, "svc", 'S')]);
        assert!(changed);
        assert_eq!((l[0].pid, l[0].restarts), (Some(11), 1));
        // Steady.
        let (_, changed) = w.update(&names, &[], &[p(11, "svc", 'S')]);
        assert!(!changed);
    }

    #[test]
    fn processes_and_units_read_from_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, comm, state) in [(1, "init", 'S'), (42, "testsvc", 'R'), (43, "defunct", 'Z')] {
            let d = dir.path().join("proc").join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("stat"),
                format!("{pid} ({comm}) {state} 1 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 100 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"),
            )
            .unwrap();
        }
        let procs = read_processes(&dir.path().join("proc")).unwrap();
        assert_eq!(
            summarize(&procs),
            ProcessSummary {
                total: 3,
                zombies: 1,
                uninterruptible: 0
            }
        );
        let cg = dir.path().join("sys/fs/cgroup/system.slice/web.service");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cgroup.procs"), "77\n78\n").unwrap();
        assert_eq!(unit_pid(&dir.path().join("sys"), "web.service"), Some(77));
        assert_eq!(unit_pid(&dir.path().join("sys"), "gone.service"), None);
        assert!(read_processes(&dir.path().join("nope")).is_err());
    }
}
