//! Message types, both directions, and their kind numbers on the wire.
//!
//! Kind numbers are part of the wire format: never reuse or renumber one. The
//! handshake messages (`Hello`, `Welcome`, `Refused`) keep their payload layout
//! in every protocol version, so any two versions can at least negotiate.

use serde::{Deserialize, Serialize};

use crate::Text;

use crate::snapshot::Snapshot;

/// The first protocol version whose snapshots carry the guest's network.
pub const NETWORK_VERSION: u8 = 3;

/// Protocol major versions, inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VersionRange {
    /// Lowest supported major version.
    pub min: u8,
    /// Highest supported major version.
    pub max: u8,
}

/// Optional agent features the host may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Capability {
    /// Answers `Probe` with a fresh snapshot.
    Probe,
    /// Runs allow-listed `Command`s.
    Commands,
    /// Follows `/dev/kmsg`.
    KernelLog,
    /// Reads pstore crash records.
    Pstore,
    /// Watches systemd units.
    SystemdUnits,
}

/// Guest → host, first message on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Hello {
    /// Protocol versions the agent speaks.
    pub versions: VersionRange,
    /// Agent version (semver text).
    pub agent_version: Text,
    /// `/proc/sys/kernel/random/boot_id`: changes on every guest boot.
    pub boot_id: Text,
    /// Guest hostname: a cross-check only, never an identity.
    pub hostname: Text,
    /// `uname -r`.
    pub kernel_release: Text,
    /// Optional features.
    pub capabilities: Vec<Capability>,
}

/// Thresholds the agent applies when it flags its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Thresholds {
    /// A filesystem at or above this use (percent) is full.
    pub disk_full_percent: u8,
    /// A filesystem at or above this inode use (percent) is full.
    pub inodes_full_percent: u8,
    /// Memory PSI `some` avg10 (× 100) at or above which memory is under pressure.
    pub memory_pressure_avg10: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            disk_full_percent: 95,
            inodes_full_percent: 95,
            memory_pressure_avg10: 4000,
        }
    }
}

/// Intervals and thresholds the host asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Settings {
    /// Heartbeat interval.
    pub heartbeat_interval_ms: u32,
    /// Periodic report interval.
    pub report_interval_ms: u32,
    /// Health thresholds.
    pub thresholds: Thresholds,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 500,
            report_interval_ms: 5000,
            thresholds: Thresholds::default(),
        }
    }
}

/// Host → guest answer to `Hello` when a version was agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Welcome {
    /// The chosen major version; all later frames use it.
    pub version: u8,
    /// Intervals and thresholds.
    pub settings: Settings,
}

/// Host → guest answer to `Hello` when no version overlaps (or the hello is
/// unacceptable); the host closes the connection after sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Refused {
    /// Versions the host speaks.
    pub supported: VersionRange,
    /// Why, in one sentence.
    pub reason: Text,
}

/// Guest → host liveness tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Heartbeat {
    /// Increments by one per heartbeat on a connection.
    pub seq: u64,
    /// Guest monotonic time (ms since boot) when sent.
    pub uptime_ms: u64,
}

/// Why a report was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ReportTrigger {
    /// The report interval elapsed.
    Periodic,
    /// A kernel error appeared.
    KernelEvent,
    /// A watched service changed state.
    ServiceChange,
    /// A filesystem went read-only.
    ReadOnlyRemount,
    /// First report after connecting.
    Connected,
    /// A cheap check found something new (a watched service, a
    /// filesystem's use or writability). Version 2 and later.
    Changed {
        /// Guest clock (ms since boot) of the last check that found
        /// nothing new: what this report shows began after it.
        last_good_uptime_ms: u64,
    },
}

/// Guest → host health snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Report {
    /// Increments by one per report on a connection.
    pub seq: u64,
    /// Why now.
    pub trigger: ReportTrigger,
    /// The snapshot.
    pub snapshot: Snapshot,
}

/// Host → guest: send a fresh snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Probe {
    /// Echoed in the reply.
    pub id: u32,
}

/// Guest → host answer to `Probe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ProbeReply {
    /// The probe's id.
    pub id: u32,
    /// A snapshot taken for this probe.
    pub snapshot: Snapshot,
}

/// What a command asks the agent to do. Names are looked up in the agent's
/// own allow-list; nothing here can widen it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CommandAction {
    /// Restart an allow-listed service.
    RestartService(Text),
    /// Run an allow-listed repair.
    Repair(Text),
    /// Reboot the guest cleanly (allowed only if the agent's config says so).
    Reboot,
}

/// Host → guest request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Command {
    /// Echoed in the result.
    pub id: u32,
    /// What to do.
    pub action: CommandAction,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CommandOutcome {
    /// Ran; exit status 0.
    Succeeded,
    /// Ran and failed.
    Failed {
        /// Exit status, when it exited.
        exit_code: Option<i32>,
        /// Tail of its output, truncated.
        detail: Text,
    },
    /// Not in the allow-list.
    Denied,
    /// Another command is still running.
    Busy,
}

/// Guest → host answer to `Command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CommandResult {
    /// The command's id.
    pub id: u32,
    /// Outcome.
    pub outcome: CommandOutcome,
}

/// Guest → host announcements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Notice {
    /// The guest finished booting its services.
    Ready,
    /// The guest declares a maintenance window: expect silence, do not act.
    MaintenanceStart {
        /// Window length in seconds (bounded by the host's maximum).
        duration_s: u32,
        /// Why, truncated.
        reason: Text,
    },
    /// The guest's maintenance window ended early.
    MaintenanceEnd,
}

/// Why the agent is leaving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ByeReason {
    /// The guest is shutting down.
    Shutdown,
    /// The guest is rebooting.
    Reboot,
    /// The agent was told to stop (SIGTERM: package upgrade, operator).
    Stopped,
    /// Something else, truncated.
    Other(Text),
}

/// Guest → host, last message of a clean stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Bye {
    /// Why.
    pub reason: ByeReason,
}

/// Host → guest: the session is alive. Sent at `interval_ms` to a running
/// guest (never to a paused one); an agent that hears nothing from the host
/// for a few intervals takes the session for dead and reconnects.
/// Version 2 and later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Keepalive {
    /// How often the host sends one.
    pub interval_ms: u32,
}

/// Host → guest settings change after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Config {
    /// New intervals and thresholds.
    pub settings: Settings,
}

/// Every message, either direction.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Message {
    /// Guest → host handshake.
    Hello(Hello),
    /// Host → guest handshake accept.
    Welcome(Welcome),
    /// Host → guest handshake refusal.
    Refused(Refused),
    /// Guest → host liveness.
    Heartbeat(Heartbeat),
    /// Guest → host snapshot.
    Report(Report),
    /// Host → guest snapshot request.
    Probe(Probe),
    /// Guest → host snapshot answer.
    ProbeReply(ProbeReply),
    /// Host → guest command.
    Command(Command),
    /// Guest → host command answer.
    CommandResult(CommandResult),
    /// Guest → host announcement.
    Notice(Notice),
    /// Guest → host clean stop.
    Bye(Bye),
    /// Host → guest settings change.
    Config(Config),
    /// Host → guest liveness of the session (version 2).
    Keepalive(Keepalive),
}

/// Message kind numbers on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// [`Hello`].
    Hello = 1,
    /// [`Welcome`].
    Welcome = 2,
    /// [`Refused`].
    Refused = 3,
    /// [`Heartbeat`].
    Heartbeat = 4,
    /// [`Report`].
    Report = 5,
    /// [`Probe`].
    Probe = 6,
    /// [`ProbeReply`].
    ProbeReply = 7,
    /// [`Command`].
    Command = 8,
    /// [`CommandResult`].
    CommandResult = 9,
    /// [`Notice`].
    Notice = 10,
    /// [`Bye`].
    Bye = 11,
    /// [`Config`].
    Config = 12,
    /// [`Keepalive`].
    Keepalive = 13,
}

impl Kind {
    /// Every kind, in number order.
    pub const ALL: [Kind; 13] = [
        Kind::Hello,
        Kind::Welcome,
        Kind::Refused,
        Kind::Heartbeat,
        Kind::Report,
        Kind::Probe,
        Kind::ProbeReply,
        Kind::Command,
        Kind::CommandResult,
        Kind::Notice,
        Kind::Bye,
        Kind::Config,
        Kind::Keepalive,
    ];

    /// The kind with this wire number, if this version knows it.
    pub fn from_u8(n: u8) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u8 == n)
    }

    /// Short lowercase name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Welcome => "welcome",
            Kind::Refused => "refused",
            Kind::Heartbeat => "heartbeat",
            Kind::Report => "report",
            Kind::Probe => "probe",
            Kind::ProbeReply => "probe_reply",
            Kind::Command => "command",
            Kind::CommandResult => "command_result",
            Kind::Notice => "notice",
            Kind::Bye => "bye",
            Kind::Config => "config",
            Kind::Keepalive => "keepalive",
        }
    }
}

impl Message {
    /// This message's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Welcome(_) => Kind::Welcome,
            Message::Refused(_) => Kind::Refused,
            Message::Heartbeat(_) => Kind::Heartbeat,
            Message::Report(_) => Kind::Report,
            Message::Probe(_) => Kind::Probe,
            Message::ProbeReply(_) => Kind::ProbeReply,
            Message::Command(_) => Kind::Command,
            Message::CommandResult(_) => Kind::CommandResult,
            Message::Notice(_) => Kind::Notice,
            Message::Bye(_) => Kind::Bye,
            Message::Config(_) => Kind::Config,
            Message::Keepalive(_) => Kind::Keepalive,
        }
    }

    /// Serialize the payload (without header) into `out`.
    pub(crate) fn encode_payload(
        &self,
        version: u8,
        out: Vec<u8>,
    ) -> Result<Vec<u8>, postcard::Error> {
        // Version 3 on: a snapshot's network follows its message.
        let network = |out: Vec<u8>, s: &Snapshot| {
            if version >= NETWORK_VERSION {
                postcard::to_extend(&s.network, out)
            } else {
                Ok(out)
            }
        };
        match self {
            Message::Hello(m) => postcard::to_extend(m, out),
            Message::Welcome(m) => postcard::to_extend(m, out),
            Message::Refused(m) => postcard::to_extend(m, out),
            Message::Heartbeat(m) => postcard::to_extend(m, out),
            Message::Report(m) => network(postcard::to_extend(m, out)?, &m.snapshot),
            Message::Probe(m) => postcard::to_extend(m, out),
            Message::ProbeReply(m) => network(postcard::to_extend(m, out)?, &m.snapshot),
            Message::Command(m) => postcard::to_extend(m, out),
            Message::CommandResult(m) => postcard::to_extend(m, out),
            Message::Notice(m) => postcard::to_extend(m, out),
            Message::Bye(m) => postcard::to_extend(m, out),
            Message::Config(m) => postcard::to_extend(m, out),
            Message::Keepalive(m) => postcard::to_extend(m, out),
        }
    }

    /// Deserialize a payload of a known kind. Trailing bytes are an error:
    /// a frame holds exactly one message.
    pub(crate) fn decode_payload(
        kind: Kind,
        version: u8,
        payload: &[u8],
    ) -> Result<Message, postcard::Error> {
        fn exact<'a, T: Deserialize<'a>>(p: &'a [u8]) -> Result<T, postcard::Error> {
            let (v, rest) = postcard::take_from_bytes(p)?;
            if rest.is_empty() {
                Ok(v)
            } else {
                Err(postcard::Error::DeserializeBadEncoding)
            }
        }
        // A message with a snapshot, and from version 3 on its network.
        fn with_network<'a, T: Deserialize<'a>>(
            p: &'a [u8],
            version: u8,
            snapshot: impl FnOnce(&mut T) -> &mut Snapshot,
        ) -> Result<T, postcard::Error> {
            if version < NETWORK_VERSION {
                return exact(p);
            }
            let (mut v, rest) = postcard::take_from_bytes::<T>(p)?;
            snapshot(&mut v).network = exact(rest)?;
            Ok(v)
        }
        Ok(match kind {
            Kind::Hello => Message::Hello(exact(payload)?),
            Kind::Welcome => Message::Welcome(exact(payload)?),
            Kind::Refused => Message::Refused(exact(payload)?),
            Kind::Heartbeat => Message::Heartbeat(exact(payload)?),
            Kind::Report => Message::Report(with_network(payload, version, |r: &mut Report| {
                &mut r.snapshot
            })?),
            Kind::Probe => Message::Probe(exact(payload)?),
            Kind::ProbeReply => {
                Message::ProbeReply(with_network(payload, version, |r: &mut ProbeReply| {
                    &mut r.snapshot
                })?)
            }
            Kind::Command => Message::Command(exact(payload)?),
            Kind::CommandResult => Message::CommandResult(exact(payload)?),
            Kind::Notice => Message::Notice(exact(payload)?),
            Kind::Bye => Message::Bye(exact(payload)?),
            Kind::Config => Message::Config(exact(payload)?),
            Kind::Keepalive => Message::Keepalive(exact(payload)?),
        })
    }
}
