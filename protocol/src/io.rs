//! Thin adapters from the sans-I/O codec to blocking `Read`/`Write` (the
//! agent) and, with the `tokio` feature, to tokio streams (the watchdog).

use std::io::{self, Read, Write};

use thiserror::Error;

use crate::frame::{encode_into, EncodeError, FrameError, MessageDecoder};
use crate::message::Message;

/// Read chunk size: bounds how much unparsed input an adapter holds.
pub const READ_CHUNK: usize = 4096;

/// Why reading a message failed.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The transport failed (including read timeouts).
    #[error("read failed")]
    Io(#[from] io::Error),
    /// The bytes were not a valid frame.
    #[error("invalid frame")]
    Frame(#[from] FrameError),
}

/// Why writing a message failed.
#[derive(Debug, Error)]
pub enum WriteError {
    /// The transport failed.
    #[error("write failed")]
    Io(#[from] io::Error),
    /// The message could not be encoded.
    #[error("cannot encode message")]
    Encode(#[from] EncodeError),
}

/// Buffered input shared by the blocking and async readers.
#[derive(Debug)]
struct Chunk {
    buf: Box<[u8; READ_CHUNK]>,
    start: usize,
    end: usize,
}

impl Chunk {
    fn new() -> Self {
        Self {
            buf: Box::new([0; READ_CHUNK]),
            start: 0,
            end: 0,
        }
    }

    /// Push buffered bytes into the decoder; keep what it did not take.
    fn drain(&mut self, dec: &mut MessageDecoder) -> Result<Option<Message>, FrameError> {
        let mut input = &self.buf[self.start..self.end];
        let before = input.len();
        let r = dec.push(&mut input);
        self.start += before - input.len();
        r
    }

    fn on_read(&mut self, n: usize, dec: &MessageDecoder) -> Result<bool, FrameError> {
        self.start = 0;
        self.end = n;
        if n == 0 {
            dec.frames().finish()?;
            return Ok(false);
        }
        Ok(true)
    }
}

/// Reads messages from a blocking reader.
#[derive(Debug)]
pub struct MessageReader<R> {
    inner: R,
    decoder: MessageDecoder,
    chunk: Chunk,
}

impl<R: Read> MessageReader<R> {
    /// A reader with the given payload limit.
    pub fn new(inner: R, max_payload: u32) -> Self {
        Self {
            inner,
            decoder: MessageDecoder::new(max_payload),
            chunk: Chunk::new(),
        }
    }

    /// The next message; `Ok(None)` at a clean end of stream. A timeout
    /// surfaces as `ReadError::Io` and keeps partial input for the next call.
    pub fn read_message(&mut self) -> Result<Option<Message>, ReadError> {
        loop {
            if let Some(m) = self.chunk.drain(&mut self.decoder)? {
                return Ok(Some(m));
            }
            let n = loop {
                match self.inner.read(&mut self.chunk.buf[..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            if !self.chunk.on_read(n, &self.decoder)? {
                return Ok(None);
            }
        }
    }

    /// The decoder (version, counters).
    pub fn decoder(&mut self) -> &mut MessageDecoder {
        &mut self.decoder
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

/// Encode and write one message as a single frame.
pub fn write_message<W: Write>(
    w: &mut W,
    msg: &Message,
    version: u8,
    max_payload: u32,
) -> Result<(), WriteError> {
    let frame = encode_into(msg, version, max_payload, Vec::new())?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

#[cfg(feature = "tokio")]
pub use self::async_io::{write_message_async, AsyncMessageReader};

#[cfg(feature = "tokio")]
mod async_io {
    use std::cell::RefCell;
    use std::future::poll_fn;
    use std::pin::Pin;
    use std::task::Poll;

    use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

    use super::{ReadError, WriteError, READ_CHUNK};
    use crate::frame::{encode_into, MessageDecoder};
    use crate::message::Message;

    /// Reads messages from a tokio stream. Holds no read buffer of its
    /// own while it waits (a watchdog waits on thousands of these): each
    /// read goes into a per-thread scratch buffer and straight into the
    /// decoder; only bytes past a complete message are kept.
    #[derive(Debug)]
    pub struct AsyncMessageReader<R> {
        inner: R,
        decoder: MessageDecoder,
        /// Read and not yet pushed into the decoder (bytes past a message,
        /// or what another reader took off this stream and did not use).
        carry: Vec<u8>,
    }

    thread_local! {
        static SCRATCH: RefCell<Box<[u8; READ_CHUNK]>> = RefCell::new(Box::new([0; READ_CHUNK]));
    }

    impl<R: AsyncRead + Unpin> AsyncMessageReader<R> {
        /// A reader with the given payload limit.
        pub fn new(inner: R, max_payload: u32) -> Self {
            Self::resume(inner, max_payload, Vec::new())
        }

        /// A reader that goes on where another stopped: `unread` is what
        /// that one's [`unread`](Self::unread) gave, read before the stream.
        pub fn resume(inner: R, max_payload: u32, unread: Vec<u8>) -> Self {
            Self {
                inner,
                decoder: MessageDecoder::new(max_payload),
                carry: unread,
            }
        }

        /// What this reader took off the stream and has not yet made into
        /// messages (a partial frame, frames not yet asked for), in order.
        pub fn unread(&self) -> Vec<u8> {
            let mut out = self.decoder.frames().held();
            out.extend_from_slice(&self.carry);
            out
        }

        /// The next message; `Ok(None)` at a clean end of stream.
        /// Cancel-safe: a read either completes inside one poll (its bytes
        /// go to the decoder or `carry`) or takes nothing.
        pub async fn read_message(&mut self) -> Result<Option<Message>, ReadError> {
            loop {
                if !self.carry.is_empty() {
                    let mut input = &self.carry[..];
                    let r = self.decoder.push(&mut input);
                    let used = self.carry.len() - input.len();
                    self.carry.drain(..used);
                    if self.carry.is_empty() {
                        self.carry = Vec::new(); // nothing held while idle
                    }
                    if let Some(m) = r? {
                        return Ok(Some(m));
                    }
                }
                let (inner, carry) = (&mut self.inner, &mut self.carry);
                let n = poll_fn(|cx| {
                    SCRATCH.with_borrow_mut(|buf| {
                        let mut rb = ReadBuf::new(&mut buf[..]);
                        std::task::ready!(Pin::new(&mut *inner).poll_read(cx, &mut rb))?;
                        carry.extend_from_slice(rb.filled());
                        Poll::Ready(Ok::<usize, std::io::Error>(rb.filled().len()))
                    })
                })
                .await?;
                if n == 0 {
                    self.decoder.frames().finish()?;
                    return Ok(None);
                }
            }
        }

        /// The decoder (version, counters).
        pub fn decoder(&mut self) -> &mut MessageDecoder {
            &mut self.decoder
        }

        /// The stream (what was read off it and not used: [`unread`](Self::unread)).
        pub fn into_inner(self) -> R {
            self.inner
        }
    }

    /// Encode and write one message as a single frame.
    pub async fn write_message_async<W: AsyncWrite + Unpin>(
        w: &mut W,
        msg: &Message,
        version: u8,
        max_payload: u32,
    ) -> Result<(), WriteError> {
        let frame = encode_into(msg, version, max_payload, Vec::new())?;
        w.write_all(&frame).await?;
        w.flush().await?;
        Ok(())
    }
}
