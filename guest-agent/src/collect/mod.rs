//! Collectors: each reads under a root path given to it (so tests run on
//! fake trees) and a failing collector leaves its part empty and names the
//! failure in the snapshot, never failing the whole snapshot.

pub mod fs;
pub mod mem;
pub mod net;
pub mod procs;
pub mod tcp;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use vigil_protocol::limits::{truncate_utf8, MAX_FAILURES, MAX_KERNEL_EVENTS, MAX_TEXT};
use vigil_protocol::snapshot::{CollectorFailure, KernelCounters, KernelEvent, Snapshot};
use vigil_protocol::Text;

use crate::config::Config;

/// Where the collectors read.
#[derive(Debug, Clone)]
pub struct Roots {
    /// procfs.
    pub proc_root: PathBuf,
    /// sysfs.
    pub sys_root: PathBuf,
    /// Root for statvfs of mount points.
    pub fs_root: PathBuf,
}

impl Roots {
    /// From the agent config.
    pub fn from_config(c: &Config) -> Roots {
        Roots {
            proc_root: c.proc_root.clone(),
            sys_root: c.sys_root.clone(),
            fs_root: c.fs_root.clone(),
        }
    }
}

/// What changed since the previous snapshot that warrants an immediate report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// A watched service changed state.
    pub service: bool,
    /// A filesystem went read-only.
    pub read_only: bool,
}

/// The answer a filesystem with recorded errors gave to a write.
#[derive(Debug)]
struct WriteProbe {
    /// The mount it was asked on.
    key: String,
    /// Errors recorded when it was asked.
    errors: u64,
    refuses: bool,
}

impl WriteProbe {
    /// Whether the answer no longer holds: the mount changed, or a
    /// filesystem that took the write has recorded errors since.
    fn stale(&self, key: &str, errors: u64) -> bool {
        self.key != key || (!self.refuses && errors != self.errors)
    }
}

/// Stateful snapshot taker (CPU deltas, watch pids, read-only flags).
#[derive(Debug)]
pub struct Collector {
    roots: Roots,
    watch_processes: Vec<String>,
    watch_units: Vec<String>,
    watch: procs::WatchState,
    prev_ticks: Option<mem::Ticks>,
    /// (mount point, read-only, full) as the last snapshot saw them.
    fs_seen: std::collections::BTreeSet<(String, bool, bool)>,
    /// Write probes of filesystems with recorded errors, by mount point:
    /// a probe of an aborted ext4 is itself a kernel error line, so a
    /// refusal stands until the mount changes, and a filesystem that took
    /// the write is asked again only when it records a new error.
    write_probes: std::collections::BTreeMap<String, WriteProbe>,
    /// The mount table, open: it reports a mount or unmount since the last
    /// look (a filesystem mounted again may get the very same line).
    mount_table: Option<std::fs::File>,
    /// Use (percent) at which a filesystem counts as full (the host's
    /// threshold, from the handshake).
    full_percent: u8,
    /// Inode use (percent) at which it counts as full.
    inodes_full_percent: u8,
    /// Which interfaces are reported.
    network: crate::config::NetworkConfig,
    /// The TCP checks' results, kept by their own thread once started.
    tcp: tcp::Results,
    /// The network's shape (see `Network::shape`) as the last snapshot saw it.
    net_seen: Option<String>,
}

impl Collector {
    /// A collector for `config`'s roots and watch list.
    pub fn new(config: &Config) -> Collector {
        Collector {
            roots: Roots::from_config(config),
            watch_processes: config.watch.processes.clone(),
            watch_units: config.watch.units.clone(),
            watch: procs::WatchState::default(),
            prev_ticks: None,
            fs_seen: Default::default(),
            write_probes: Default::default(),
            mount_table: std::fs::File::open(config.proc_root.join("1/mountinfo"))
                .or_else(|_| std::fs::File::open(config.proc_root.join("self/mountinfo")))
                .ok(),
            full_percent: 95,
            inodes_full_percent: 95,
            network: config.network.clone(),
            tcp: tcp::Results::default(),
            net_seen: None,
        }
    }

    /// Run the config's TCP checks on a thread of their own from now on
    /// (a snapshot never waits for a connect).
    pub fn start_tcp_checks(&mut self, config: &Config) {
        self.tcp = tcp::start(&config.check.tcp);
    }

    fn network(&self) -> Result<vigil_protocol::snapshot::Network, String> {
        let r = &self.roots;
        // Addresses from the kernel only when reading the real tree.
        let addrs = if r.sys_root == std::path::Path::new("/sys") {
            net::kernel_addresses()
        } else {
            Default::default()
        };
        net::collect(
            &r.sys_root,
            &r.proc_root,
            &self.network,
            &addrs,
            self.tcp.get(),
        )
    }

    /// Whether the network changed shape since the last snapshot: a link,
    /// an address, a route, the gateway, a TCP check (cheap: a few sysfs
    /// and procfs files, for the 1 s tick).
    pub fn net_changed(&self) -> bool {
        self.network().ok().map(|n| n.shape()) != self.net_seen
    }

    /// The host's thresholds for a full filesystem: blocks and inodes
    /// used, in percent.
    pub fn set_full_percent(&mut self, blocks: u8, inodes: u8) {
        self.full_percent = blocks.clamp(1, 100);
        self.inodes_full_percent = inodes.clamp(1, 100);
    }

    /// Real filesystems with usage, and what failed. A filesystem the ext4
    /// driver recorded errors for is asked whether it still takes a write
    /// (its flags can say `rw` while every write fails with EROFS).
    fn filesystems(&mut self) -> (Vec<vigil_protocol::snapshot::Filesystem>, Vec<String>) {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        if self.mounts_changed() {
            self.write_probes.clear(); // what a write said may not hold
        }
        let table =
            |who: &str| std::fs::read_to_string(self.roots.proc_root.join(who).join("mountinfo"));
        // The guest's mounts as its init sees them, and the agent's own
        // views of them (the same table when it has no namespace of its own).
        let own = match table("self") {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("self/mountinfo: {e}"));
                return (out, errors);
            }
        };
        let guest = match table("1") {
            Ok(t) => t,
            Err(e) => {
                // A tree without an init (tests) is the agent's own; a
                // refusal is named.
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("1/mountinfo: {e}"));
                }
                own.clone()
            }
        };
        let mounts = fs::parse_mountinfo(&guest);
        let own = if own == guest {
            mounts.clone()
        } else {
            fs::parse_mountinfo(&own)
        };
        self.write_probes
            .retain(|p, _| mounts.iter().any(|m| &m.mount_point == p));
        for m in mounts {
            let Some(at) = fs::view(&own, &m, false) else {
                errors.push(format!("{}: not visible to the agent", m.mount_point));
                continue;
            };
            match fs::stat(&self.roots.fs_root, &m, at) {
                Ok(mut f) => {
                    if !f.read_only && self.refuses_writes(&m, &own) {
                        f.read_only = true;
                    }
                    out.push(f);
                }
                Err(e) => errors.push(e),
            }
        }
        (out, errors)
    }

    /// Whether anything was mounted or unmounted since the last look (the
    /// kernel flags the open mount table with a priority event).
    fn mounts_changed(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let Some(f) = &self.mount_table else {
            return true; // cannot tell: ask again
        };
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLPRI)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
            Ok(_) => false,
            Err(_) => true,
        }
    }

    /// Whether a filesystem whose flags say writable refuses writes: asked
    /// only of one with recorded errors, and only again when the mount
    /// changed or (if it took the write) it recorded new errors.
    fn refuses_writes(&mut self, m: &fs::Mount, own: &[fs::Mount]) -> bool {
        let r = &self.roots;
        let errors = fs::recorded_errors(&r.sys_root, &r.fs_root, m);
        if errors == 0 {
            self.write_probes.remove(&m.mount_point);
            return false;
        }
        if let Some(p) = self.write_probes.get(&m.mount_point) {
            if !p.stale(&m.key, errors) {
                return p.refuses;
            }
        }
        // Asked through a writable view of the agent's namespace; with
        // none (a sandbox's read-only bind), it cannot be asked.
        let Some(at) = fs::view(own, m, true) else {
            return false;
        };
        let refuses = fs::refuses_writes(&r.fs_root, at);
        self.write_probes.insert(
            m.mount_point.clone(),
            WriteProbe {
                key: m.key.clone(),
                errors,
                refuses,
            },
        );
        refuses
    }

    fn fs_state(
        &self,
        fss: &[vigil_protocol::snapshot::Filesystem],
    ) -> std::collections::BTreeSet<(String, bool, bool)> {
        fss.iter()
            .map(|f| {
                let full = fs::used_percent(f) >= self.full_percent
                    || fs::inodes_used_percent(f) >= self.inodes_full_percent;
                (f.mount_point.to_string(), f.read_only, full)
            })
            .collect()
    }

    /// Whether a filesystem went read-only, filled up, or came back, since
    /// the last snapshot (cheap: mountinfo and statvfs, for the 1 s tick).
    pub fn fs_changed(&mut self) -> bool {
        let (fss, _) = self.filesystems();
        self.fs_state(&fss) != self.fs_seen
    }

    /// Whether a watched service changed since the last snapshot (cheap).
    pub fn watch_changed(&self) -> bool {
        self.watch
            .quick_changed(&self.roots.proc_root, &self.roots.sys_root)
    }

    /// Take a snapshot; kernel events and counters are filled by the caller.
    pub fn snapshot(&mut self) -> (Snapshot, Changes) {
        let mut s = Snapshot::default();
        let mut changes = Changes::default();
        let mut fail = |collector: &str, error: String| {
            if s.failures.len() < MAX_FAILURES {
                s.failures.push(CollectorFailure {
                    collector: collector.into(),
                    error: Text::from(truncate_utf8(&error, MAX_TEXT)),
                });
            }
        };
        let r = &self.roots;
        s.uptime_ms = uptime_ms(&r.proc_root).unwrap_or(0);
        s.wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);

        let procs = match procs::read_processes(&r.proc_root) {
            Ok(p) => p,
            Err(e) => {
                fail("processes", e);
                Vec::new()
            }
        };
        if !procs.is_empty() {
            s.processes = Some(procs::summarize(&procs));
        }
        let units: Vec<(String, Option<u32>)> = self
            .watch_units
            .iter()
            .map(|u| (u.clone(), procs::unit_pid(&r.sys_root, u)))
            .collect();
        let (watched, changed) = self.watch.update(&self.watch_processes, &units, &procs);
        s.watched = watched;
        changes.service = changed;

        let (filesystems, errors) = self.filesystems();
        for e in errors {
            fail("filesystems", e);
        }
        let seen = self.fs_state(&filesystems);
        changes.read_only = seen
            .iter()
            .any(|(m, ro, _)| *ro && !self.fs_seen.iter().any(|(n, r, _)| n == m && *r));
        self.fs_seen = seen;
        s.filesystems = filesystems;
        let r = &self.roots;
        match mem::memory(&r.proc_root) {
            Ok(m) => s.memory = Some(m),
            Err(e) => fail("memory", e),
        }
        s.pressure = mem::pressure(&r.proc_root);
        match mem::cpu(&r.proc_root, &mut self.prev_ticks) {
            Ok(c) => s.cpu = Some(c),
            Err(e) => fail("cpu", e),
        }
        match self.network() {
            Ok(n) => {
                self.net_seen = Some(n.shape());
                s.network = Some(n);
            }
            Err(e) => {
                self.net_seen = None;
                fail("network", e);
            }
        }
        (s, changes)
    }
}

/// Guest uptime in ms from `/proc/uptime`.
pub fn uptime_ms(proc_root: &std::path::Path) -> Option<u64> {
    let t = std::fs::read_to_string(proc_root.join("uptime")).ok()?;
    let secs = t.split_whitespace().next()?;
    let (s, frac) = secs.split_once('.').unwrap_or((secs, "0"));
    let ms: String = frac.chars().chain("000".chars()).take(3).collect();
    Some(s.parse::<u64>().ok()? * 1000 + ms.parse::<u64>().ok()?)
}

/// Bounded store of kernel events waiting to be reported, with counters.
/// Oldest events are dropped first when full (and counted).
#[derive(Debug, Default)]
pub struct KernelLog {
    pending: std::collections::VecDeque<KernelEvent>,
    /// Running totals.
    pub counters: KernelCounters,
    /// Kinds seen this boot (for `check`).
    pub seen: Vec<KernelEvent>,
}

impl KernelLog {
    /// Queue an event that passed the rate limit.
    pub fn push(&mut self, ev: KernelEvent) {
        if self.seen.len() < MAX_KERNEL_EVENTS {
            self.seen.push(ev.clone());
        }
        if self.pending.len() == MAX_KERNEL_EVENTS {
            self.pending.pop_front();
            self.counters.dropped += 1;
        }
        self.pending.push_back(ev);
    }

    /// Take everything pending.
    pub fn drain(&mut self) -> Vec<KernelEvent> {
        self.pending.drain(..).collect()
    }

    /// Put events back at the front (a report that could not be sent).
    pub fn requeue(&mut self, events: Vec<KernelEvent>) {
        for ev in events.into_iter().rev() {
            if self.pending.len() == MAX_KERNEL_EVENTS {
                self.counters.dropped += 1;
                continue;
            }
            self.pending.push_front(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_protocol::snapshot::KernelEventKind;

    /// A refusal stands while the mount is the same (asking again is an
    /// error line of its own on an aborted ext4); a filesystem that took
    /// the write is asked again after a new error; a changed mount is
    /// always asked again.
    #[test]
    fn a_write_probe_is_repeated_only_when_its_answer_may_have_changed() {
        let refused = WriteProbe {
            key: "26 rw rw,errors=remount-ro".into(),
            errors: 1,
            refuses: true,
        };
        assert!(!refused.stale("26 rw rw,errors=remount-ro", 1));
        assert!(!refused.stale("26 rw rw,errors=remount-ro", 41));
        assert!(refused.stale("31 rw rw,errors=remount-ro", 41));
        let took = WriteProbe {
            refuses: false,
            ..refused
        };
        assert!(!took.stale("26 rw rw,errors=remount-ro", 1));
        assert!(took.stale("26 rw rw,errors=remount-ro", 2));
        assert!(took.stale("26 ro ro,errors=remount-ro", 1));
    }

    #[test]
    fn a_snapshot_of_an_empty_tree_is_partial_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            proc_root: dir.path().join("proc"),
            sys_root: dir.path().join("sys"),
            fs_root: dir.path().to_path_buf(),
            ..Config::default()
        };
        let (s, _) = Collector::new(&config).snapshot();
        let failed: Vec<&str> = s.failures.iter().map(|f| f.collector.as_str()).collect();
        assert_eq!(
            failed,
            ["processes", "filesystems", "memory", "cpu", "network"]
        );
        assert_eq!(s.processes, None);
    }

    #[test]
    fn a_snapshot_of_this_machine_has_the_basics() {
        let (s, _) = Collector::new(&Config::default()).snapshot();
        assert!(s.processes.unwrap().total > 0);
        assert!(s.memory.unwrap().total_bytes > 0);
        assert!(s.cpu.is_some());
        assert!(s.uptime_ms > 0);
        assert!(s.network.is_some(), "{:?}", s.failures);
    }

    #[test]
    fn kernel_log_is_bounded_and_counts_drops() {
        let mut k = KernelLog::default();
        for i in 0..(MAX_KERNEL_EVENTS as u64 + 5) {
            k.push(KernelEvent {
                kind: KernelEventKind::IoError,
                seq: i,
                timestamp_us: i,
                subject: None,
                text: "x".into(),
            });
        }
        assert_eq!(k.counters.dropped, 5);
        let d = k.drain();
        assert_eq!(d.len(), MAX_KERNEL_EVENTS);
        assert_eq!(d[0].seq, 5);
    }
}
