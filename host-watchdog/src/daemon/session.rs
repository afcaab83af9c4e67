//! Agent sessions: one task per connection. Every guest-driven path is
//! bounded: the frame size (checked before allocating), messages per second,
//! the outbound queue, a `Hello` deadline and a slow-sender timeout.
//! Violations close the session and are counted per reason.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use vigil_protocol::io::{write_message_async, AsyncMessageReader, ReadError};
use vigil_protocol::{FrameError, Hello, Message, Refused, Welcome};

use super::CoreMsg;

/// Bounds applied to every session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload.
    pub max_frame: u32,
    /// Messages per second (burst of the same size).
    pub per_second: u32,
    /// Mid-frame stall limit.
    pub slow_sender: Duration,
    /// `Hello` deadline.
    pub hello: Duration,
}

impl Limits {
    /// The bounds `config` sets.
    pub fn from_config(config: &crate::config::Config) -> Limits {
        Limits {
            max_frame: config.max_frame_bytes,
            per_second: config.max_messages_per_second,
            slow_sender: Duration::from_millis(config.slow_sender_timeout_ms),
            hello: Duration::from_millis(config.hello_timeout_ms),
        }
    }
}

/// A handed-over connection, by its kind.
pub enum Stream {
    /// Unix (plain or hybrid vsock).
    Unix(tokio::net::UnixStream),
    /// Kernel vsock.
    Vsock(super::vsock::AsyncVsock),
}

/// What kind of connection a handed-over descriptor is.
pub fn stream_of(fd: OwnedFd) -> std::io::Result<Stream> {
    let unix = std::os::unix::net::UnixStream::from(fd);
    if unix.local_addr().is_ok() {
        unix.set_nonblocking(true)?;
        return Ok(Stream::Unix(tokio::net::UnixStream::from_std(unix)?));
    }
    let fd = OwnedFd::from(unix);
    super::vsock::AsyncVsock::new(::vsock::VsockStream::from(fd)).map(Stream::Vsock)
}

/// Outbound messages queued per session (host → guest). Boxed: a
/// channel allocates its slots in blocks of 32, and a `Message` inline
/// would cost ~13 KiB per session.
pub const OUTBOUND_QUEUE: usize = 16;

/// Why a session was closed by the host (metrics label).
pub fn reason_of(e: &ReadError) -> &'static str {
    match e {
        ReadError::Frame(FrameError::TooLong { .. }) => "oversized",
        ReadError::Frame(FrameError::BadMagic(_)) => "garbage",
        ReadError::Frame(FrameError::Payload { .. }) => "malformed",
        ReadError::Frame(FrameError::VersionMismatch { .. }) => "version",
        ReadError::Frame(FrameError::Truncated { .. }) => "truncated",
        ReadError::Io(_) => "io",
    }
}

/// The core's answer to a `Hello`.
pub type HelloReply = Result<(u64, Welcome, mpsc::Receiver<Box<Message>>), Refused>;

/// A request to stop serving and give back the connection (a duplicate
/// of its descriptor, made then: none is held meanwhile, one descriptor
/// per session) and what was read and not used.
pub type HandOver = oneshot::Sender<(Vec<u8>, Option<OwnedFd>)>;

/// What the core keeps of a session to take it over to the next vigild:
/// a way to stop the session at a frame boundary.
#[derive(Debug)]
pub struct Handle {
    /// Ask the session to stop and hand over its connection.
    pub ask: oneshot::Sender<HandOver>,
}

/// A session another vigild served: what the handshake said, and the
/// bytes it had read and not used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Adopted {
    /// Negotiated protocol version.
    pub version: u8,
    /// From the agent's hello.
    pub hostname: String,
    /// From the agent's hello.
    pub agent_version: String,
    /// From the agent's hello.
    pub boot_id: String,
    /// Read off the connection and not yet made into messages.
    pub unread: Vec<u8>,
}

/// A duplicate of a connection's descriptor, for the hand-over.
pub fn dup(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    fd.try_clone_to_owned().ok()
}

/// Serve one agent connection for `vm` (Unix, hybrid or kernel vsock);
/// `fd` is the stream's descriptor when it can be handed over.
pub async fn connection<S>(
    stream: S,
    vm: String,
    core: mpsc::Sender<CoreMsg>,
    limits: Limits,
    fd: Option<RawFd>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = AsyncMessageReader::new(rd, limits.max_frame);
    let reject = |reason: &'static str| CoreMsg::Rejected {
        vm: vm.clone(),
        reason,
    };
    let hello: Hello = match tokio::time::timeout(limits.hello, reader.read_message()).await {
        Ok(Ok(Some(Message::Hello(h)))) => h,
        Ok(Ok(Some(_))) => return drop(core.send(reject("no-hello")).await),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return drop(core.send(reject(reason_of(&e))).await),
        Err(_) => return drop(core.send(reject("hello-timeout")).await),
    };
    let (ask, asked) = oneshot::channel();
    let handle = fd.map(|_| Handle { ask });
    let Some((session, welcome, outbound)) = register(&core, &vm, hello, handle).await else {
        return;
    };
    let (session, welcome, outbound) = match (session, welcome, outbound) {
        (s, Ok(w), o) => (s, w, o),
        (_, Err(refused), _) => {
            let _ =
                write_message_async(&mut wr, &Message::Refused(refused), 1, limits.max_frame).await;
            return;
        }
    };
    let version = welcome.version;
    if write_message_async(
        &mut wr,
        &Message::Welcome(welcome),
        version,
        limits.max_frame,
    )
    .await
    .is_err()
    {
        let _ = core
            .send(CoreMsg::Closed {
                vm,
                session,
                why: "welcome write failed".into(),
            })
            .await;
        return;
    }
    reader.decoder().set_version(version);
    serve(
        reader, wr, vm, session, version, outbound, core, limits, asked, fd,
    )
    .await;
}

/// Go on serving a connection another vigild handed over: no handshake
/// (the agent had it), the bytes it had read first.
pub async fn adopt<S>(
    stream: S,
    vm: String,
    core: mpsc::Sender<CoreMsg>,
    limits: Limits,
    fd: Option<RawFd>,
    was: Adopted,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = AsyncMessageReader::resume(rd, limits.max_frame, was.unread);
    let hello = Hello {
        versions: vigil_protocol::VersionRange {
            min: was.version,
            max: was.version,
        },
        agent_version: was.agent_version.as_str().into(),
        boot_id: was.boot_id.as_str().into(),
        hostname: was.hostname.as_str().into(),
        kernel_release: "".into(),
        capabilities: Vec::new(),
    };
    let (ask, asked) = oneshot::channel();
    let handle = fd.map(|_| Handle { ask });
    let Some((session, Ok(welcome), outbound)) = register(&core, &vm, hello, handle).await else {
        log::warn!("vm={vm}: a handed-over session was refused; closing it");
        return;
    };
    reader.decoder().set_version(welcome.version);
    serve(
        reader,
        wr,
        vm,
        session,
        welcome.version,
        outbound,
        core,
        limits,
        asked,
        fd,
    )
    .await;
}

/// Tell the core about a session; `None` when the core is gone.
#[allow(clippy::type_complexity)]
async fn register(
    core: &mpsc::Sender<CoreMsg>,
    vm: &str,
    hello: Hello,
    handle: Option<Handle>,
) -> Option<(u64, Result<Welcome, Refused>, mpsc::Receiver<Box<Message>>)> {
    let (tx, rx) = oneshot::channel();
    core.send(CoreMsg::Hello {
        vm: vm.to_string(),
        hello,
        handle,
        reply: tx,
    })
    .await
    .ok()?;
    match rx.await.ok()? {
        Ok((id, w, out)) => Some((id, Ok(w), out)),
        Err(refused) => Some((0, Err(refused), mpsc::channel(1).1)),
    }
}

/// A hand-over request; never, if the core cannot ask any more.
async fn asked_for(asked: &mut Option<oneshot::Receiver<HandOver>>) -> HandOver {
    let r = match asked.as_mut() {
        Some(rx) => rx.await,
        None => return std::future::pending().await,
    };
    match r {
        Ok(give) => give,
        Err(_) => {
            *asked = None;
            std::future::pending().await
        }
    }
}

/// The session after its handshake: guest messages to the core, the
/// core's messages to the guest; stopped at a frame boundary when the
/// core hands it over.
#[allow(clippy::too_many_arguments)]
async fn serve<R, W>(
    mut reader: AsyncMessageReader<R>,
    mut wr: W,
    vm: String,
    session: u64,
    version: u8,
    mut outbound: mpsc::Receiver<Box<Message>>,
    core: mpsc::Sender<CoreMsg>,
    limits: Limits,
    asked: oneshot::Receiver<HandOver>,
    fd: Option<RawFd>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Kept in the service manager's store while served: a vigild killed
    // now closes nothing (see `handover`).
    let kept = fd.and_then(|fd| {
        // SAFETY: `fd` is the descriptor of the stream `reader` owns; it
        // stays open for the whole of this function.
        super::handover::keep(&vm, session, unsafe { BorrowedFd::borrow_raw(fd) })
    });
    // Writer: host → guest, bounded queue, bounded write time. When the
    // core drops the queue (a newer session replaced this one), the writer
    // ends and tells the reader to stop. Asked to stop, it finishes the
    // frame it is writing first.
    let (gone_tx, mut gone) = oneshot::channel::<()>();
    let (stop_tx, mut stop) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = outbound.recv() => m,
                _ = &mut stop => None,
            };
            let Some(m) = m else { break };
            let w = write_message_async(&mut wr, &m, version, limits.max_frame);
            match tokio::time::timeout(Duration::from_secs(2), w).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let _ = gone_tx.send(());
    });
    let mut asked = Some(asked);
    let reject = |reason: &'static str| CoreMsg::Rejected {
        vm: vm.clone(),
        reason,
    };
    let name: std::sync::Arc<str> = vm.as_str().into();
    // Reader: guest → host, rate-limited.
    let mut tokens = f64::from(limits.per_second);
    let mut last = tokio::time::Instant::now();
    let why = loop {
        let read = tokio::time::timeout(limits.slow_sender, reader.read_message());
        let r = tokio::select! {
            r = read => r,
            _ = &mut gone => break "replaced by a newer session or write failed".to_string(),
            give = asked_for(&mut asked) => {
                // Handed over: the writer's frame finished, what was read
                // and not used goes along; no close, no goodbye.
                let _ = stop_tx.send(());
                let _ = writer.await;
                let copy = fd.and_then(|fd| {
                    // SAFETY: `fd` is the descriptor of the stream `reader`
                    // still owns (both halves share it); it stays open
                    // until this function returns, after the duplicate.
                    dup(unsafe { BorrowedFd::borrow_raw(fd) })
                });
                let _ = give.send((reader.unread(), copy));
                return;
            }
        };
        let msg = match r {
            Err(_) => {
                if reader.decoder().frames().pending() > 0 {
                    let _ = core.send(reject("slow")).await;
                    break "slow sender".to_string();
                }
                continue; // silence is the engine's business, not the session's
            }
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => break "agent closed the connection".to_string(),
            Ok(Err(e)) => {
                if !matches!(e, ReadError::Io(_)) {
                    let _ = core.send(reject(reason_of(&e))).await;
                }
                break format!("{e}");
            }
        };
        let now = tokio::time::Instant::now();
        let rate = f64::from(limits.per_second);
        tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
        last = now;
        if tokens < 1.0 {
            let _ = core.send(reject("flood")).await;
            break "message flood".to_string();
        }
        tokens -= 1.0;
        if matches!(
            msg,
            Message::Hello(_) | Message::Welcome(_) | Message::Refused(_)
        ) {
            let _ = core.send(reject("unexpected")).await;
            break "unexpected handshake message".to_string();
        }
        if core
            .send(CoreMsg::Session {
                vm: name.clone(),
                session,
                msg: Box::new(msg),
            })
            .await
            .is_err()
        {
            break "daemon stopping".to_string();
        }
    };
    writer.abort();
    if let (Some(name), Some(fd)) = (kept, fd) {
        // The store holds the connection too: end it for the agent here,
        // as dropping the stream alone would not.
        super::handover::forget(&name);
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }
    let _ = core.send(CoreMsg::Closed { vm, session, why }).await;
}
