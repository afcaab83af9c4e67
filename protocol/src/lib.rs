//! Vigil's wire protocol between `vigil-agent` (guest) and `vigild` (host).
//!
//! # Primer
//!
//! The guest connects to the host over a stream transport ([`transport`]):
//! kernel vsock, hybrid vsock over Unix sockets, or a plain Unix socket in
//! tests. Both directions carry *frames* ([`frame`]): an 8-byte header
//! (`"VG"`, protocol major version, message kind, payload length u32 LE) and
//! a postcard payload holding one [`Message`]. The length is checked against
//! a limit (64 KiB by default) before anything is allocated.
//!
//! The first exchange is `Hello` (guest: supported version range, identity
//! hints, capabilities) → `Welcome` (host: chosen version, intervals,
//! thresholds) or `Refused` (no common version; the host closes). Then the
//! guest sends `Heartbeat`s and `Report`s ([`snapshot`]), answers `Probe`s and
//! `Command`s, announces with `Notice` and leaves with `Bye`.
//!
//! Modules: [`message`] (types and kind numbers), [`snapshot`] (health
//! snapshot), [`frame`] (sans-I/O codec), [`io`] (blocking and tokio
//! adapters), [`kmsg`] (kernel log records, classified), [`version`]
//! (negotiation), [`limits`] (sizes), [`transport`]
//! (addresses, connect, listen, hybrid handshake).

/// Text on the wire: strings up to 24 bytes are stored inline, so decoding a
/// report does not allocate per name.
pub type Text = compact_str::CompactString;

pub mod duration;
pub mod frame;
pub mod io;
pub mod kmsg;
pub mod limits;
pub mod message;
pub mod snapshot;
pub mod transport;
pub mod version;

pub use frame::{
    encode, encode_into, DecodeStats, Decoder, EncodeError, Frame, FrameError, MessageDecoder,
    DEFAULT_MAX_PAYLOAD, HEADER_LEN,
};
pub use message::*;
pub use version::{negotiate, NoCommonVersion, PROTOCOL_VERSION, SUPPORTED};
