//! Kernel vsock listening (vhost-vsock hosts): accept guest connections on
//! AF_VSOCK, identify the VM by the kernel-attested peer CID (resolved to a
//! domain through `<vsock><cid address=.../>` in its XML by the core), and
//! hand the stream to the same session code as Unix sockets.
//!
//! Never opened on the development machines (their vsock device belongs to
//! the infrastructure); exercised only inside nested guests.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::vsock::{VsockAddr, VsockListener, VsockStream};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::session::{self, Limits};
use super::CoreMsg;

/// A non-blocking vsock stream for tokio.
pub struct AsyncVsock(AsyncFd<VsockStream>);

impl AsyncVsock {
    /// Wrap a connected stream.
    pub fn new(s: VsockStream) -> io::Result<AsyncVsock> {
        s.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns the stream, whose descriptor stays open
        // and unchanged until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(s) }.map_err(io::Error::from)?;
        Ok(AsyncVsock(fd))
    }
}

impl AsyncRead for AsyncVsock {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| {
                let mut s: &VsockStream = inner.get_ref();
                s.read(unfilled)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for AsyncVsock {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|inner| {
                let mut s: &VsockStream = inner.get_ref();
                s.write(buf)
            }) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

/// Accept guest connections on `cid:port` (any CID: `u32::MAX`) forever.
pub async fn serve(
    cid: u32,
    port: u32,
    core: mpsc::Sender<CoreMsg>,
    limits: Limits,
) -> io::Result<()> {
    let listener = VsockListener::bind(&VsockAddr::new(cid, port))?;
    listener.set_nonblocking(true)?;
    // SAFETY: as above: the AsyncFd owns the listener and its descriptor.
    let listener = unsafe { AsyncFd::register(listener) }.map_err(io::Error::from)?;
    loop {
        let mut guard = listener.readable().await?;
        let (stream, peer) = match guard.try_io(|l| l.get_ref().accept()) {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                log::warn!("vsock accept failed: {e}");
                continue;
            }
            Err(_would_block) => continue,
        };
        let peer_cid = peer.cid();
        let (tx, rx) = oneshot::channel();
        if core
            .send(CoreMsg::ResolveCid {
                cid: peer_cid,
                reply: tx,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
        let Ok(Some(vm)) = rx.await else {
            let _ = core
                .send(CoreMsg::Rejected {
                    vm: format!("cid:{peer_cid}"),
                    reason: "unknown-cid",
                })
                .await;
            continue; // dropping the stream closes it
        };
        let fd = Some(std::os::fd::AsRawFd::as_raw_fd(&stream));
        match AsyncVsock::new(stream) {
            Ok(s) => {
                tokio::spawn(session::connection(s, vm, core.clone(), limits, fd));
            }
            Err(e) => log::warn!("vsock stream setup failed: {e}"),
        }
    }
}
