//! The guest health snapshot carried by `Report` and `ProbeReply`.
//!
//! Every collector's part is optional or a list: a guest that cannot provide
//! something (no PSI, no systemd, a failing collector) leaves it out and names
//! the failure in [`Snapshot::failures`] instead of failing the whole report.

use serde::{Deserialize, Serialize};

use crate::Text;

/// One point-in-time view of a guest's health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Snapshot {
    /// Guest monotonic time (ms since boot) when the snapshot was taken.
    pub uptime_ms: u64,
    /// Guest wall clock (ms since the Unix epoch), for display only.
    pub wall_ms: u64,
    /// Process table summary.
    pub processes: Option<ProcessSummary>,
    /// The agent's watch list, in configured order.
    pub watched: Vec<WatchedService>,
    /// Real (non-pseudo) mounted filesystems.
    pub filesystems: Vec<Filesystem>,
    /// Memory and swap.
    pub memory: Option<Memory>,
    /// Pressure stall information, where `/proc/pressure` exists.
    pub pressure: Option<Pressure>,
    /// Load and CPU utilisation.
    pub cpu: Option<Cpu>,
    /// Kernel log events not yet reported, oldest first (bounded).
    pub kernel_events: Vec<KernelEvent>,
    /// Running totals of kernel events since the agent started.
    pub kernel_counters: KernelCounters,
    /// The previous boot's crash record from pstore, sent once.
    pub crash_record: Option<CrashRecord>,
    /// Collectors that failed for this snapshot.
    pub failures: Vec<CollectorFailure>,
    /// The guest's network (protocol version 3 on: carried after the
    /// message in the frame, see [`crate::message`]; never in older ones).
    #[serde(skip)]
    pub network: Option<Network>,
}

/// Process table counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ProcessSummary {
    /// All processes.
    pub total: u32,
    /// Zombie (Z) processes.
    pub zombies: u32,
    /// Processes in uninterruptible sleep (D).
    pub uninterruptible: u32,
}

/// How a watched service is identified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum WatchTarget {
    /// A process name (`comm`).
    Process(Text),
    /// A systemd unit name.
    Unit(Text),
}

/// State of one watched process or unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct WatchedService {
    /// What is watched.
    pub target: WatchTarget,
    /// Whether it is running now.
    pub running: bool,
    /// Main pid, when running.
    pub pid: Option<u32>,
    /// Times the pid changed since the agent started.
    pub restarts: u32,
}

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Filesystem {
    /// Mount point.
    pub mount_point: Text,
    /// Source device.
    pub device: Text,
    /// Filesystem type (ext4, xfs, ...).
    pub fs_type: Text,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Bytes available to unprivileged users.
    pub avail_bytes: u64,
    /// Total inodes (0 when the filesystem has no fixed inode table).
    pub inodes_total: u64,
    /// Free inodes.
    pub inodes_free: u64,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Memory and swap, in bytes; OOM kills since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Memory {
    /// MemTotal.
    pub total_bytes: u64,
    /// MemAvailable.
    pub available_bytes: u64,
    /// SwapTotal.
    pub swap_total_bytes: u64,
    /// SwapFree.
    pub swap_free_bytes: u64,
    /// `oom_kill` from /proc/vmstat, when the kernel has it.
    pub oom_kills: Option<u64>,
}

/// One PSI line: share of time stalled, averaged over 10 s and 60 s, in
/// hundredths of a percent (so 12.34 % is 1234; integers keep the wire exact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PsiLine {
    /// avg10 × 100.
    pub avg10: u32,
    /// avg60 × 100.
    pub avg60: u32,
    /// Total stall time in microseconds.
    pub total_us: u64,
}

/// PSI `some`/`full` for one resource (`full` is absent for cpu on old kernels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PsiResource {
    /// Some tasks stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled.
    pub full: Option<PsiLine>,
}

/// Pressure stall information per resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Pressure {
    /// CPU pressure.
    pub cpu: Option<PsiResource>,
    /// Memory pressure.
    pub memory: Option<PsiResource>,
    /// I/O pressure.
    pub io: Option<PsiResource>,
}

/// Load averages (× 100) and CPU utilisation since the previous snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Cpu {
    /// 1-minute load × 100.
    pub load1: u32,
    /// 5-minute load × 100.
    pub load5: u32,
    /// 15-minute load × 100.
    pub load15: u32,
    /// Online CPUs.
    pub cpus: u16,
    /// Busy share of all CPUs since the previous sample, in hundredths of a percent.
    pub busy: u16,
    /// iowait share, in hundredths of a percent.
    pub iowait: u16,
    /// Steal share (host contention), in hundredths of a percent.
    pub steal: u16,
}

/// What a kernel log record means for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum KernelEventKind {
    /// `Oops`, `BUG:`, kernel warning with a stack.
    Oops,
    /// `Kernel panic - not syncing`.
    Panic,
    /// `task ... blocked for more than N seconds`.
    HungTask,
    /// `watchdog: BUG: soft lockup`.
    SoftLockup,
    /// `rcu: INFO: rcu_sched detected stalls`.
    RcuStall,
    /// `Out of memory: Killed process` (victim in `subject`).
    OomKill,
    /// Block layer I/O error (device in `subject`).
    IoError,
    /// ext4/xfs/btrfs error (device in `subject`).
    FsError,
    /// A filesystem remounted read-only (device in `subject`).
    RemountReadOnly,
    /// Machine check exception.
    MachineCheck,
    /// A user process segfault (counted, reported sparsely).
    Segfault,
}

/// One classified kernel log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KernelEvent {
    /// Classification.
    pub kind: KernelEventKind,
    /// kmsg sequence number.
    pub seq: u64,
    /// kmsg timestamp, microseconds since boot.
    pub timestamp_us: u64,
    /// Device, filesystem or process the event names, when it names one.
    pub subject: Option<Text>,
    /// The record's text, truncated to [`crate::limits::MAX_TEXT`] bytes.
    pub text: Text,
}

/// Running kernel event totals since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KernelCounters {
    /// Classified events seen (all kinds).
    pub events: u64,
    /// Segfaults seen.
    pub segfaults: u64,
    /// Events dropped by the rate limit.
    pub dropped: u64,
    /// Records lost because kmsg's ring buffer overwrote them (EPIPE).
    pub overwritten: u64,
}

/// The previous boot's crash record, from pstore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CrashRecord {
    /// pstore file name (e.g. `dmesg-efi-...`).
    pub source: Text,
    /// The tail of the record, truncated to [`crate::limits::MAX_CRASH_TEXT`] bytes.
    pub text: Text,
}

/// A collector that failed, and why (a short message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CollectorFailure {
    /// Collector name (`processes`, `filesystems`, ...).
    pub collector: Text,
    /// What went wrong.
    pub error: Text,
}

/// The guest's network as the agent sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Network {
    /// Interfaces (loopback and excluded ones left out), by name.
    pub interfaces: Vec<Interface>,
    /// The IPv4 default route, if there is one.
    pub default_v4: Option<Route>,
    /// The IPv6 default route, if there is one.
    pub default_v6: Option<Route>,
    /// The IPv4 default gateway's neighbour entry, if the kernel has one.
    pub gateway: Option<Neighbour>,
    /// The configured TCP checks' last results, in configured order.
    pub tcp: Vec<TcpCheck>,
}

impl Network {
    /// Cut to the limits a sender keeps to (a receiver applies them to
    /// whatever a peer sent): interfaces, addresses, TCP checks, and every
    /// text.
    pub fn bound(&mut self) {
        use crate::limits::{
            truncate_utf8, MAX_ADDRESSES, MAX_INTERFACES, MAX_TCP_CHECKS, MAX_TEXT,
        };
        let cut = |t: &mut Text| {
            if t.len() > MAX_TEXT {
                *t = Text::from(truncate_utf8(t, MAX_TEXT));
            }
        };
        self.interfaces.truncate(MAX_INTERFACES);
        for i in &mut self.interfaces {
            i.addresses.truncate(MAX_ADDRESSES);
            i.addresses.iter_mut().for_each(cut);
            cut(&mut i.name);
            cut(&mut i.mac);
            cut(&mut i.operstate);
        }
        for r in [&mut self.default_v4, &mut self.default_v6]
            .into_iter()
            .flatten()
        {
            cut(&mut r.interface);
            r.gateway.as_mut().map(cut);
        }
        if let Some(g) = &mut self.gateway {
            cut(&mut g.address);
            cut(&mut g.interface);
        }
        self.tcp.truncate(MAX_TCP_CHECKS);
        for t in &mut self.tcp {
            cut(&mut t.target);
            t.error.as_mut().map(cut);
        }
    }

    /// Its shape: what, changed, is news (an interface's link, its having
    /// addresses, a default route, the gateway's resolution, a TCP check's
    /// outcome), never the counters. Equal shapes: nothing to tell.
    pub fn shape(&self) -> String {
        let mut s = String::new();
        for i in &self.interfaces {
            s.push_str(&format!(
                "{}:{}{}{};",
                i.name,
                u8::from(i.up),
                u8::from(i.carrier),
                u8::from(!i.addresses.is_empty())
            ));
        }
        s.push_str(&format!(
            "r{}{}g{:?}t",
            u8::from(self.default_v4.is_some()),
            u8::from(self.default_v6.is_some()),
            self.gateway.as_ref().map(|g| g.state)
        ));
        for t in &self.tcp {
            s.push(if t.ok { '1' } else { '0' });
        }
        s
    }
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Interface {
    /// Name (`eth0`).
    pub name: Text,
    /// Hardware address (`52:54:00:..`), lowercase; the host matches its
    /// vNICs by it.
    pub mac: Text,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The link has a carrier (always false while administratively down).
    pub carrier: bool,
    /// The kernel's operstate (`up`, `down`, `lowerlayerdown`, ...).
    pub operstate: Text,
    /// MTU.
    pub mtu: u32,
    /// Addresses with prefix length (`10.0.2.15/24`), link-local IPv6 ones
    /// left out.
    pub addresses: Vec<Text>,
    /// Counters since the interface appeared.
    pub counters: NetCounters,
}

/// An interface's packet counters (running totals; the host takes deltas).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NetCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Sent packets dropped.
    pub tx_dropped: u64,
}

/// A default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Route {
    /// Outgoing interface.
    pub interface: Text,
    /// Gateway address, when the route has one.
    pub gateway: Option<Text>,
}

/// Whether the kernel could resolve a neighbour's hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum NeighbourState {
    /// Resolved (reachable, stale, delayed: a hardware address is known).
    Resolved,
    /// Not resolved: incomplete or failed (no answer to ARP).
    Unresolved,
}

/// A neighbour table entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Neighbour {
    /// Its address.
    pub address: Text,
    /// The interface it is on.
    pub interface: Text,
    /// Its state.
    pub state: NeighbourState,
}

/// One TCP check's last result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TcpCheck {
    /// `host:port` as configured.
    pub target: Text,
    /// The last connect succeeded within its timeout.
    pub ok: bool,
    /// How long the last connect took (or the timeout), ms.
    pub latency_ms: u32,
    /// Failed connects in a row.
    pub failures: u32,
    /// Why the last one failed.
    pub error: Option<Text>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_is_cut_to_the_limits() {
        let long = "x".repeat(10_000);
        let mut n = Network {
            interfaces: (0..100)
                .map(|_| Interface {
                    name: long.as_str().into(),
                    addresses: (0..100).map(|_| long.as_str().into()).collect(),
                    ..Interface::default()
                })
                .collect(),
            tcp: (0..100)
                .map(|_| TcpCheck {
                    target: long.as_str().into(),
                    ok: false,
                    latency_ms: 0,
                    failures: 0,
                    error: Some(long.as_str().into()),
                })
                .collect(),
            ..Network::default()
        };
        n.bound();
        use crate::limits::*;
        assert_eq!(n.interfaces.len(), MAX_INTERFACES);
        assert_eq!(n.interfaces[0].addresses.len(), MAX_ADDRESSES);
        assert_eq!(n.interfaces[0].name.len(), MAX_TEXT);
        assert_eq!(n.tcp.len(), MAX_TCP_CHECKS);
        assert_eq!(n.tcp[0].error.as_ref().unwrap().len(), MAX_TEXT);
    }
}
