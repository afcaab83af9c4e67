//! Agent sessions: one task per connection. Every guest-driven path is
//! bounded: the frame size (checked before allocating), messages per second,
//! the outbound queue, a `Hello` deadline and a slow-sender timeout.
//! Violations close the session and are counted per reason.

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

/// Outbound messages queued per session (host → guest).
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
pub type HelloReply = Result<(u64, Welcome, mpsc::Receiver<Message>), Refused>;

/// Serve one agent connection for `vm` (Unix, hybrid or kernel vsock).
pub async fn connection<S>(stream: S, vm: String, core: mpsc::Sender<CoreMsg>, limits: Limits)
where
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
    let (tx, rx) = oneshot::channel();
    if core
        .send(CoreMsg::Hello {
            vm: vm.clone(),
            hello,
            reply: tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let (session, welcome, mut outbound) = match rx.await {
        Ok(Ok(w)) => w,
        Ok(Err(refused)) => {
            let _ =
                write_message_async(&mut wr, &Message::Refused(refused), 1, limits.max_frame).await;
            return;
        }
        Err(_) => return,
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
    // Writer: host → guest, bounded queue, bounded write time. When the
    // core drops the queue (a newer session replaced this one), the writer
    // ends and tells the reader to stop.
    let (gone_tx, mut gone) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        while let Some(m) = outbound.recv().await {
            let w = write_message_async(&mut wr, &m, version, limits.max_frame);
            match tokio::time::timeout(Duration::from_secs(2), w).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let _ = gone_tx.send(());
    });
    // Reader: guest → host, rate-limited.
    let mut tokens = f64::from(limits.per_second);
    let mut last = tokio::time::Instant::now();
    let why = loop {
        let read = tokio::time::timeout(limits.slow_sender, reader.read_message());
        let r = tokio::select! {
            r = read => r,
            _ = &mut gone => break "replaced by a newer session or write failed".to_string(),
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
                vm: vm.clone(),
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
    let _ = core.send(CoreMsg::Closed { vm, session, why }).await;
}
