//! Transports, chosen by an address string:
//!
//! | address                 | meaning                                                   |
//! |-------------------------|-----------------------------------------------------------|
//! | `vsock://CID:PORT`      | kernel AF_VSOCK (guest → host: CID 2; listen: any CID)    |
//! | `unix:///path`          | a plain Unix stream socket                                |
//! | `hybrid:///path:PORT`   | hybrid vsock over Unix sockets (vhost-device-vsock,       |
//! |                         | Firecracker, Cloud Hypervisor): connecting writes         |
//! |                         | `CONNECT PORT\n` to `/path` and waits for `OK …\n`;       |
//! |                         | listening accepts guest connections on `/path_PORT`       |

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// Host CID as seen from a guest.
pub const VMADDR_CID_HOST: u32 = 2;
/// Default port the watchdog listens on.
pub const DEFAULT_PORT: u32 = 1217;
/// Longest hybrid handshake reply line accepted.
const MAX_HYBRID_LINE: usize = 64;

/// Where to connect or listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// Kernel vsock.
    Vsock {
        /// Context id (for listening, the CID to bind; `u32::MAX` is any).
        cid: u32,
        /// Port.
        port: u32,
    },
    /// A Unix stream socket.
    Unix(PathBuf),
    /// Hybrid vsock over a Unix socket.
    Hybrid {
        /// The VMM's Unix socket (connect) or base path (listen: `path_PORT`).
        path: PathBuf,
        /// vsock port.
        port: u32,
    },
}

/// An address string that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    /// No known scheme.
    #[error("unknown address scheme in {0:?} (expected vsock://CID:PORT, unix:///path or hybrid:///path:PORT)")]
    Scheme(String),
    /// `vsock://` without `CID:PORT`.
    #[error("bad vsock address {0:?} (expected vsock://CID:PORT)")]
    Vsock(String),
    /// A path that is empty or relative.
    #[error("socket path in {0:?} must be absolute")]
    Path(String),
    /// `hybrid://` without a port.
    #[error("bad hybrid address {0:?} (expected hybrid:///path:PORT)")]
    Hybrid(String),
}

fn abs_path(s: &str, whole: &str) -> Result<PathBuf, AddressError> {
    if s.starts_with('/') && s.len() > 1 {
        Ok(PathBuf::from(s))
    } else {
        Err(AddressError::Path(whole.to_string()))
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = rest.split_once(':').ok_or(AddressError::Vsock(s.into()))?;
            let cid = match cid {
                "any" | "-1" => u32::MAX,
                c => c.parse().map_err(|_| AddressError::Vsock(s.into()))?,
            };
            let port = port.parse().map_err(|_| AddressError::Vsock(s.into()))?;
            Ok(Address::Vsock { cid, port })
        } else if let Some(rest) = s.strip_prefix("unix://") {
            Ok(Address::Unix(abs_path(rest, s)?))
        } else if let Some(rest) = s.strip_prefix("hybrid://") {
            let (path, port) = rest
                .rsplit_once(':')
                .ok_or(AddressError::Hybrid(s.into()))?;
            let port = port.parse().map_err(|_| AddressError::Hybrid(s.into()))?;
            Ok(Address::Hybrid {
                path: abs_path(path, s)?,
                port,
            })
        } else {
            Err(AddressError::Scheme(s.to_string()))
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Vsock {
                cid: u32::MAX,
                port,
            } => write!(f, "vsock://any:{port}"),
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Hybrid { path, port } => write!(f, "hybrid://{}:{port}", path.display()),
        }
    }
}

/// Path a hybrid listener binds for guest connections to `port`.
pub fn hybrid_listen_path(base: &Path, port: u32) -> PathBuf {
    let mut s = base.as_os_str().to_os_string();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// The hybrid handshake request line.
pub fn hybrid_request(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// Parse a hybrid handshake reply line (`OK <host port>`).
pub fn parse_hybrid_reply(line: &str) -> Result<u32, TransportError> {
    line.trim_end()
        .strip_prefix("OK ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| TransportError::Handshake(line.trim_end().chars().take(64).collect()))
}

/// Why a transport operation failed.
#[derive(Debug, Error)]
pub enum TransportError {
    /// Connecting failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// Target.
        addr: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Binding or listening failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Another live process already listens there.
    #[error("{0} is in use by a live listener")]
    InUse(String),
    /// The hybrid peer answered something other than `OK <port>`.
    #[error("hybrid vsock handshake refused: {0:?}")]
    Handshake(String),
    /// The hybrid peer closed before answering (nobody listens on the port).
    #[error("hybrid vsock peer closed the connection during the handshake")]
    HandshakeClosed,
    /// I/O during the hybrid handshake.
    #[error("hybrid vsock handshake failed")]
    HandshakeIo(#[source] io::Error),
}

/// A connected byte stream over any transport.
#[derive(Debug)]
pub enum Stream {
    /// Unix or hybrid.
    Unix(UnixStream),
    /// Kernel vsock.
    Vsock(vsock::VsockStream),
}

impl Stream {
    /// Set the read timeout (`None` blocks).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Vsock(s) => s.set_read_timeout(t),
        }
    }

    /// Set the write timeout (`None` blocks).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Vsock(s) => s.set_write_timeout(t),
        }
    }

    /// A second handle to the same connection (reader/writer split).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Vsock(s) => Stream::Vsock(s.try_clone()?),
        })
    }

    /// Shut down both directions.
    pub fn shutdown(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Vsock(s) => s.shutdown(std::net::Shutdown::Both),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Vsock(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Vsock(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Vsock(s) => s.flush(),
        }
    }
}

/// Connect to `addr`; `timeout` bounds the hybrid handshake.
pub fn connect(addr: &Address, timeout: Duration) -> Result<Stream, TransportError> {
    let err = |source| TransportError::Connect {
        addr: addr.to_string(),
        source,
    };
    match addr {
        Address::Vsock { cid, port } => {
            let s =
                vsock::VsockStream::connect(&vsock::VsockAddr::new(*cid, *port)).map_err(err)?;
            Ok(Stream::Vsock(s))
        }
        Address::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).map_err(err)?)),
        Address::Hybrid { path, port } => {
            let s = UnixStream::connect(path).map_err(err)?;
            hybrid_handshake(&s, *port, timeout)?;
            Ok(Stream::Unix(s))
        }
    }
}

/// Client side of the hybrid handshake on a connected Unix stream. Reads the
/// reply one byte at a time so no data after `OK …\n` is consumed.
pub fn hybrid_handshake(
    s: &UnixStream,
    port: u32,
    timeout: Duration,
) -> Result<u32, TransportError> {
    s.set_read_timeout(Some(timeout))
        .map_err(TransportError::HandshakeIo)?;
    (&mut &*s)
        .write_all(hybrid_request(port).as_bytes())
        .map_err(TransportError::HandshakeIo)?;
    let mut line = Vec::with_capacity(MAX_HYBRID_LINE);
    let mut byte = [0u8; 1];
    while line.len() < MAX_HYBRID_LINE {
        match (&mut &*s).read(&mut byte) {
            Ok(0) => return Err(TransportError::HandshakeClosed),
            Ok(_) if byte[0] == b'\n' => {
                s.set_read_timeout(None)
                    .map_err(TransportError::HandshakeIo)?;
                return parse_hybrid_reply(&String::from_utf8_lossy(&line));
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransportError::HandshakeIo(e)),
        }
    }
    Err(TransportError::Handshake(
        String::from_utf8_lossy(&line).into_owned(),
    ))
}

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Kernel-attested vsock CID.
    Cid(u32),
    /// The Unix socket path it arrived on (identifies the VM).
    Socket(PathBuf),
}

/// A listening socket on any transport.
#[derive(Debug)]
pub enum Listener {
    /// Unix or hybrid (`path_PORT`).
    Unix(UnixListener, PathBuf),
    /// Kernel vsock.
    Vsock(vsock::VsockListener),
}

/// Bind a Unix socket at `path`, replacing a stale socket file left by a
/// crashed process but never one a live process still accepts on.
pub fn bind_unix(path: &Path) -> Result<UnixListener, TransportError> {
    let name = || path.display().to_string();
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(TransportError::InUse(name()));
            }
            std::fs::remove_file(path).map_err(|source| TransportError::Listen {
                addr: name(),
                source,
            })?;
            UnixListener::bind(path).map_err(|source| TransportError::Listen {
                addr: name(),
                source,
            })
        }
        Err(source) => Err(TransportError::Listen {
            addr: name(),
            source,
        }),
    }
}

/// Listen on `addr`.
pub fn listen(addr: &Address) -> Result<Listener, TransportError> {
    match addr {
        Address::Vsock { cid, port } => {
            let l = vsock::VsockListener::bind(&vsock::VsockAddr::new(*cid, *port)).map_err(
                |source| TransportError::Listen {
                    addr: addr.to_string(),
                    source,
                },
            )?;
            Ok(Listener::Vsock(l))
        }
        Address::Unix(path) => Ok(Listener::Unix(bind_unix(path)?, path.clone())),
        Address::Hybrid { path, port } => {
            let p = hybrid_listen_path(path, *port);
            Ok(Listener::Unix(bind_unix(&p)?, p))
        }
    }
}

impl Listener {
    /// Accept one connection and say who it is from.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Unix(l, path) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), Peer::Socket(path.clone())))
            }
            Listener::Vsock(l) => {
                let (s, a) = l.accept()?;
                Ok((Stream::Vsock(s), Peer::Cid(a.cid())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        let cases = [
            ("vsock://2:1217", Address::Vsock { cid: 2, port: 1217 }),
            (
                "vsock://any:1217",
                Address::Vsock {
                    cid: u32::MAX,
                    port: 1217,
                },
            ),
            (
                "unix:///run/vigil/vm1.sock",
                Address::Unix("/run/vigil/vm1.sock".into()),
            ),
            (
                "hybrid:///run/vm1/vsock.sock:1217",
                Address::Hybrid {
                    path: "/run/vm1/vsock.sock".into(),
                    port: 1217,
                },
            ),
        ];
        for (text, want) in cases {
            let got: Address = text.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string(), text);
        }
    }

    #[test]
    fn bad_addresses_are_rejected_with_the_reason() {
        let cases = [
            (
                "tcp://1.2.3.4:5",
                AddressError::Scheme("tcp://1.2.3.4:5".into()),
            ),
            ("vsock://2", AddressError::Vsock("vsock://2".into())),
            ("vsock://x:1", AddressError::Vsock("vsock://x:1".into())),
            (
                "vsock://2:99999999999",
                AddressError::Vsock("vsock://2:99999999999".into()),
            ),
            (
                "unix://relative/path",
                AddressError::Path("unix://relative/path".into()),
            ),
            ("unix://", AddressError::Path("unix://".into())),
            (
                "hybrid:///run/x.sock",
                AddressError::Hybrid("hybrid:///run/x.sock".into()),
            ),
            (
                "hybrid://x.sock:5",
                AddressError::Path("hybrid://x.sock:5".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Address>(), Err(want), "{text}");
        }
    }

    #[test]
    fn hybrid_reply_parsing() {
        assert_eq!(parse_hybrid_reply("OK 1073741824\n").unwrap(), 1073741824);
        assert!(parse_hybrid_reply("ERR\n").is_err());
        assert!(parse_hybrid_reply("OK\n").is_err());
        assert_eq!(hybrid_request(1217), "CONNECT 1217\n");
        assert_eq!(
            hybrid_listen_path(Path::new("/run/vm/v.sock"), 1217),
            PathBuf::from("/run/vm/v.sock_1217")
        );
    }
}
