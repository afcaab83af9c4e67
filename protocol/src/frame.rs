//! The frame codec, sans I/O.
//!
//! A frame is an 8-byte header followed by a postcard payload:
//!
//! ```text
//!  0      2         3      4                8
//!  +------+---------+------+----------------+-------------------+
//!  | "VG" | version | kind | length (u32 LE)| payload (length)  |
//!  +------+---------+------+----------------+-------------------+
//! ```
//!
//! [`Decoder`] is fed bytes and yields frames; it never holds more than one
//! header plus one payload, and checks the length against its limit before it
//! allocates the payload buffer. [`MessageDecoder`] turns frames into
//! [`Message`]s, skipping (and counting) kinds this version does not know.

use thiserror::Error;

use crate::message::{Kind, Message};

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"VG";
/// Header length in bytes.
pub const HEADER_LEN: usize = 8;
/// Default payload limit: 64 KiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 64 * 1024;

/// A decoded frame whose payload has not been interpreted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Protocol major version the payload is encoded in.
    pub version: u8,
    /// Message kind number.
    pub kind: u8,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// Why a byte stream is not a valid frame sequence. Every variant is fatal to
/// the connection: the stream cannot be resynchronised.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The first two bytes of a header were not the magic.
    #[error("bad frame magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// The header announced a payload longer than the limit.
    #[error("frame payload of {len} bytes exceeds the limit of {limit}")]
    TooLong {
        /// Announced length.
        len: u32,
        /// Configured limit.
        limit: u32,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes of the frame received.
        have: usize,
        /// Bytes the frame needs.
        need: usize,
    },
    /// A known kind whose payload did not decode.
    #[error("malformed {kind} payload")]
    Payload {
        /// The kind's name.
        kind: &'static str,
        /// Postcard's complaint.
        #[source]
        source: postcard::Error,
    },
    /// A non-handshake frame in a version other than the negotiated one.
    #[error("frame in protocol version {got}, negotiated {negotiated}")]
    VersionMismatch {
        /// Version in the frame header.
        got: u8,
        /// Version agreed in the handshake.
        negotiated: u8,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// Serialization failed.
    #[error("cannot serialize {kind}")]
    Serialize {
        /// The kind's name.
        kind: &'static str,
        /// Postcard's complaint.
        #[source]
        source: postcard::Error,
    },
    /// The payload would exceed the limit the peer enforces.
    #[error("{kind} payload of {len} bytes exceeds the limit of {limit}")]
    TooLong {
        /// The kind's name.
        kind: &'static str,
        /// Payload length.
        len: usize,
        /// Limit.
        limit: u32,
    },
}

/// Encode `msg` as one frame in protocol `version`, appending to `out`.
pub fn encode_into(
    msg: &Message,
    version: u8,
    max_payload: u32,
    out: Vec<u8>,
) -> Result<Vec<u8>, EncodeError> {
    let kind = msg.kind();
    let start = out.len();
    let mut out = out;
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.push(kind as u8);
    out.extend_from_slice(&[0; 4]);
    let mut out = msg
        .encode_payload(version, out)
        .map_err(|source| EncodeError::Serialize {
            kind: kind.name(),
            source,
        })?;
    let len = out.len() - start - HEADER_LEN;
    let len32 = u32::try_from(len)
        .ok()
        .filter(|l| *l <= max_payload)
        .ok_or(EncodeError::TooLong {
            kind: kind.name(),
            len,
            limit: max_payload,
        })?;
    out[start + 4..start + 8].copy_from_slice(&len32.to_le_bytes());
    Ok(out)
}

/// Encode `msg` as one frame with the default payload limit.
pub fn encode(msg: &Message, version: u8) -> Result<Vec<u8>, EncodeError> {
    encode_into(msg, version, DEFAULT_MAX_PAYLOAD, Vec::new())
}

#[derive(Debug)]
enum State {
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
    },
    Payload {
        version: u8,
        kind: u8,
        buf: Vec<u8>,
        need: usize,
    },
}

/// Incremental frame decoder: feed it bytes, take frames out.
#[derive(Debug)]
pub struct Decoder {
    max_payload: u32,
    state: State,
    failed: Option<FrameError>,
}

impl Decoder {
    /// A decoder that rejects payloads longer than `max_payload` bytes.
    pub fn new(max_payload: u32) -> Self {
        Self {
            max_payload,
            state: State::Header {
                buf: [0; HEADER_LEN],
                have: 0,
            },
            failed: None,
        }
    }

    /// Consume bytes from the front of `input` (advancing it) until one frame
    /// is complete or `input` is empty. Returns the frame, if one completed.
    /// After an error the decoder stays failed and returns it again.
    pub fn push(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.push_inner(input);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn push_inner(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        loop {
            match &mut self.state {
                State::Header { buf, have } => {
                    // Take the magic first and check it as soon as its two
                    // bytes are in, so garbage is rejected without waiting
                    // for (or consuming) a full header.
                    let want = if *have < MAGIC.len() {
                        MAGIC.len()
                    } else {
                        HEADER_LEN
                    };
                    let take = (want - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    *input = &input[take..];
                    if *have >= MAGIC.len() && buf[..2] != MAGIC {
                        return Err(FrameError::BadMagic([buf[0], buf[1]]));
                    }
                    if *have < want {
                        return Ok(None);
                    }
                    if *have < HEADER_LEN {
                        continue;
                    }
                    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
                    if len > self.max_payload {
                        return Err(FrameError::TooLong {
                            len,
                            limit: self.max_payload,
                        });
                    }
                    let (version, kind) = (buf[2], buf[3]);
                    // Allocation happens only here, after the limit check.
                    self.state = State::Payload {
                        version,
                        kind,
                        buf: Vec::with_capacity(len as usize),
                        need: len as usize,
                    };
                }
                State::Payload {
                    version,
                    kind,
                    buf,
                    need,
                } => {
                    let take = (*need - buf.len()).min(input.len());
                    buf.extend_from_slice(&input[..take]);
                    *input = &input[take..];
                    if buf.len() < *need {
                        return Ok(None);
                    }
                    let frame = Frame {
                        version: *version,
                        kind: *kind,
                        payload: std::mem::take(buf),
                    };
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                    };
                    return Ok(Some(frame));
                }
            }
        }
    }

    /// Bytes of an incomplete frame held now (0 between frames).
    pub fn pending(&self) -> usize {
        match &self.state {
            State::Header { have, .. } => *have,
            State::Payload { buf, .. } => HEADER_LEN + buf.len(),
        }
    }

    /// The bytes of the incomplete frame held now, as they arrived (empty
    /// between frames): what a reader hands over with its stream, so the
    /// next reader starts where this one stopped.
    pub fn held(&self) -> Vec<u8> {
        match &self.state {
            State::Header { buf, have } => buf[..*have].to_vec(),
            State::Payload {
                version,
                kind,
                buf,
                need,
            } => {
                let mut out = Vec::with_capacity(HEADER_LEN + buf.len());
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&[*version, *kind]);
                out.extend_from_slice(&(*need as u32).to_le_bytes());
                out.extend_from_slice(buf);
                out
            }
        }
    }

    /// The error to report when the stream ends now: `None` at a frame
    /// boundary, `Truncated` inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match &self.state {
            State::Header { have: 0, .. } => Ok(()),
            State::Header { have, .. } => Err(FrameError::Truncated {
                have: *have,
                need: HEADER_LEN,
            }),
            State::Payload { buf, need, .. } => Err(FrameError::Truncated {
                have: HEADER_LEN + buf.len(),
                need: HEADER_LEN + *need,
            }),
        }
    }
}

/// `(version, kind, payload length)` when `input` starts with a complete,
/// valid-looking frame within the limit; `None` means "use the slow path",
/// which also reports any error.
fn whole_frame(input: &[u8], max_payload: u32) -> Option<(u8, u8, usize)> {
    let h = input.get(..HEADER_LEN)?;
    if h[..2] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > max_payload || input.len() - HEADER_LEN < len as usize {
        return None;
    }
    Some((h[2], h[3], len as usize))
}

/// Counters a [`MessageDecoder`] keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Messages decoded.
    pub messages: u64,
    /// Frames of unknown kind skipped.
    pub unknown_skipped: u64,
    /// Payload bytes decoded.
    pub bytes: u64,
}

/// Frames → messages, with version checks and unknown-kind skipping.
#[derive(Debug)]
pub struct MessageDecoder {
    frames: Decoder,
    negotiated: Option<u8>,
    stats: DecodeStats,
}

impl MessageDecoder {
    /// A decoder with the given payload limit, before negotiation.
    pub fn new(max_payload: u32) -> Self {
        Self {
            frames: Decoder::new(max_payload),
            negotiated: None,
            stats: DecodeStats::default(),
        }
    }

    /// Require every non-handshake frame to carry `version` from now on.
    pub fn set_version(&mut self, version: u8) {
        self.negotiated = Some(version);
    }

    /// Counters so far.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// The underlying frame decoder (for `pending`/`finish`).
    pub fn frames(&self) -> &Decoder {
        &self.frames
    }

    /// Consume bytes from `input` until a message completes or input runs out.
    /// Unknown kinds are skipped (counted) and decoding continues.
    pub fn push(&mut self, input: &mut &[u8]) -> Result<Option<Message>, FrameError> {
        loop {
            // Fast path: a whole frame sits at the front of the input and the
            // decoder holds nothing, so decode in place without copying.
            if self.frames.pending() == 0 && self.frames.failed.is_none() {
                if let Some((version, kind, len)) = whole_frame(input, self.frames.max_payload) {
                    let payload = &input[HEADER_LEN..HEADER_LEN + len];
                    let r = self.interpret(version, kind, payload);
                    *input = &input[HEADER_LEN + len..];
                    match r? {
                        Some(m) => return Ok(Some(m)),
                        None => continue,
                    }
                }
            }
            let Some(frame) = self.frames.push(input)? else {
                return Ok(None);
            };
            if let Some(m) = self.interpret(frame.version, frame.kind, &frame.payload)? {
                return Ok(Some(m));
            }
        }
    }

    /// Interpret one frame; `None` when its kind is unknown and was skipped.
    pub fn interpret(
        &mut self,
        version: u8,
        kind: u8,
        payload: &[u8],
    ) -> Result<Option<Message>, FrameError> {
        let r = self.interpret_inner(version, kind, payload);
        if let Err(e) = &r {
            self.frames.failed = Some(e.clone());
        }
        r
    }

    fn interpret_inner(
        &mut self,
        version: u8,
        kind: u8,
        payload: &[u8],
    ) -> Result<Option<Message>, FrameError> {
        let Some(kind) = Kind::from_u8(kind) else {
            self.stats.unknown_skipped += 1;
            return Ok(None);
        };
        let handshake = matches!(kind, Kind::Hello | Kind::Welcome | Kind::Refused);
        if let (false, Some(negotiated)) = (handshake, self.negotiated) {
            if version != negotiated {
                return Err(FrameError::VersionMismatch {
                    got: version,
                    negotiated,
                });
            }
        }
        let msg = Message::decode_payload(kind, version, payload).map_err(|source| {
            FrameError::Payload {
                kind: kind.name(),
                source,
            }
        })?;
        self.stats.messages += 1;
        self.stats.bytes += payload.len() as u64;
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Bye, ByeReason, Heartbeat};

    fn hb(seq: u64) -> Message {
        Message::Heartbeat(Heartbeat {
            seq,
            uptime_ms: seq * 500,
        })
    }

    #[test]
    fn frames_split_at_every_byte_decode_the_same() {
        let mut wire = encode(&hb(1), 1).unwrap();
        wire.extend(
            encode(
                &Message::Bye(Bye {
                    reason: ByeReason::Stopped,
                }),
                1,
            )
            .unwrap(),
        );
        let mut dec = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
        let mut got = Vec::new();
        for b in &wire {
            let mut one: &[u8] = std::slice::from_ref(b);
            if let Some(m) = dec.push(&mut one).unwrap() {
                got.push(m);
            }
            assert!(one.is_empty());
        }
        assert_eq!(
            got,
            vec![
                hb(1),
                Message::Bye(Bye {
                    reason: ByeReason::Stopped
                })
            ]
        );
        assert_eq!(dec.frames().finish(), Ok(()));
    }

    #[test]
    fn bad_magic_is_rejected_after_two_bytes() {
        let mut d = Decoder::new(16);
        let mut input: &[u8] = b"GET / HTTP/1.1\r\n";
        assert_eq!(d.push(&mut input), Err(FrameError::BadMagic(*b"GE")));
        assert_eq!(input.len(), 14);
        // A failed decoder stays failed.
        let mut more: &[u8] = b"VG";
        assert!(d.push(&mut more).is_err());
    }

    #[test]
    fn oversized_length_is_rejected_before_the_payload_arrives() {
        let mut d = Decoder::new(1024);
        let mut header: &[u8] = &[b'V', b'G', 1, 4, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            d.push(&mut header),
            Err(FrameError::TooLong {
                len: u32::MAX,
                limit: 1024
            })
        );
    }

    #[test]
    fn truncated_stream_is_reported_by_finish() {
        let wire = encode(&hb(7), 1).unwrap();
        let mut d = Decoder::new(DEFAULT_MAX_PAYLOAD);
        let mut part: &[u8] = &wire[..wire.len() - 1];
        assert_eq!(d.push(&mut part), Ok(None));
        assert_eq!(
            d.finish(),
            Err(FrameError::Truncated {
                have: wire.len() - 1,
                need: wire.len()
            })
        );
    }

    #[test]
    fn unknown_kind_is_skipped_and_counted() {
        let mut wire = vec![b'V', b'G', 1, 200, 3, 0, 0, 0, 1, 2, 3];
        wire.extend(encode(&hb(2), 1).unwrap());
        let mut dec = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
        let mut input: &[u8] = &wire;
        assert_eq!(dec.push(&mut input), Ok(Some(hb(2))));
        assert_eq!(dec.stats().unknown_skipped, 1);
    }

    #[test]
    fn trailing_payload_bytes_are_malformed() {
        let mut wire = encode(&hb(3), 1).unwrap();
        wire.push(0);
        let len = (wire.len() - HEADER_LEN) as u32;
        wire[4..8].copy_from_slice(&len.to_le_bytes());
        let mut dec = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
        let mut input: &[u8] = &wire;
        assert!(matches!(
            dec.push(&mut input),
            Err(FrameError::Payload {
                kind: "heartbeat",
                ..
            })
        ));
    }

    #[test]
    fn version_mismatch_after_negotiation_is_fatal() {
        let wire = encode(&hb(4), 2).unwrap();
        let mut dec = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
        dec.set_version(1);
        let mut input: &[u8] = &wire;
        assert_eq!(
            dec.push(&mut input),
            Err(FrameError::VersionMismatch {
                got: 2,
                negotiated: 1
            })
        );
    }

    #[test]
    fn encoder_refuses_payloads_over_the_limit() {
        let msg = Message::Bye(Bye {
            reason: ByeReason::Other("x".repeat(100).into()),
        });
        assert!(matches!(
            encode_into(&msg, 1, 50, Vec::new()),
            Err(EncodeError::TooLong { kind: "bye", .. })
        ));
    }
}
