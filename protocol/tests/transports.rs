//! Transports over real Unix sockets: plain, hybrid-vsock handshake (both
//! sides), and the blocking and tokio adapters carrying frames.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::thread;
use std::time::Duration;

use vigil_protocol::io::{write_message, write_message_async, AsyncMessageReader, MessageReader};
use vigil_protocol::transport::{connect, listen, Address, Peer, TransportError};
use vigil_protocol::*;

fn hb(seq: u64) -> Message {
    Message::Heartbeat(Heartbeat {
        seq,
        uptime_ms: seq,
    })
}

/// A minimal stand-in for vhost-device-vsock's host side: accepts on the
/// VMM socket, reads `CONNECT <port>\n`, answers `OK <n>\n` when `accept` is
/// true (then echoes frames), or closes (nobody listens on that port).
fn fake_vmm(listener: UnixListener, accept: bool) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if accept {
            (&s).write_all(b"OK 1073741824\n").unwrap();
            let mut reader = MessageReader::new(r, DEFAULT_MAX_PAYLOAD);
            let mut w = s;
            while let Ok(Some(m)) = reader.read_message() {
                write_message(&mut w, &m, 1, DEFAULT_MAX_PAYLOAD).unwrap();
            }
        }
        line
    })
}

#[test]
fn hybrid_connect_does_the_handshake_then_carries_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.vsock");
    let vmm = fake_vmm(UnixListener::bind(&path).unwrap(), true);
    let addr = Address::Hybrid { path, port: 1217 };
    let mut s = connect(&addr, Duration::from_secs(5)).unwrap();
    write_message(&mut s, &hb(1), 1, DEFAULT_MAX_PAYLOAD).unwrap();
    let mut reader = MessageReader::new(s.try_clone().unwrap(), DEFAULT_MAX_PAYLOAD);
    assert_eq!(reader.read_message().unwrap(), Some(hb(1)));
    s.shutdown().unwrap();
    assert_eq!(vmm.join().unwrap(), "CONNECT 1217\n");
}

#[test]
fn hybrid_connect_to_an_unused_port_is_refused_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.vsock");
    let vmm = fake_vmm(UnixListener::bind(&path).unwrap(), false);
    let addr = Address::Hybrid { path, port: 9 };
    let err = connect(&addr, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, TransportError::HandshakeClosed), "{err:?}");
    vmm.join().unwrap();
}

#[test]
fn hybrid_listen_accepts_on_base_underscore_port() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("vm.vsock");
    let l = listen(&Address::Hybrid {
        path: base.clone(),
        port: 1217,
    })
    .unwrap();
    let expected = dir.path().join("vm.vsock_1217");
    assert!(expected.exists());
    let t = thread::spawn(move || {
        // The guest side as vhost-device-vsock delivers it: a plain connection.
        let mut s = std::os::unix::net::UnixStream::connect(&expected).unwrap();
        write_message(&mut s, &hb(5), 1, DEFAULT_MAX_PAYLOAD).unwrap();
    });
    let (s, peer) = l.accept().unwrap();
    assert_eq!(peer, Peer::Socket(dir.path().join("vm.vsock_1217")));
    let mut reader = MessageReader::new(s, DEFAULT_MAX_PAYLOAD);
    assert_eq!(reader.read_message().unwrap(), Some(hb(5)));
    assert_eq!(reader.read_message().unwrap(), None);
    t.join().unwrap();
}

#[test]
fn listen_replaces_a_stale_socket_but_not_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let addr = Address::Unix(path.clone());
    let live = listen(&addr).unwrap();
    assert!(matches!(listen(&addr), Err(TransportError::InUse(_))));
    drop(live); // the file stays behind, as after a crash
    assert!(path.exists());
    listen(&addr).unwrap();
}

#[test]
fn truncated_stream_is_an_error_not_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sock");
    let l = listen(&Address::Unix(path.clone())).unwrap();
    let t = thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let wire = encode(&hb(9), 1).unwrap();
        s.write_all(&wire[..wire.len() - 2]).unwrap();
    });
    let (s, _) = l.accept().unwrap();
    t.join().unwrap();
    let mut reader = MessageReader::new(s, DEFAULT_MAX_PAYLOAD);
    let err = reader.read_message().unwrap_err();
    assert!(matches!(
        err,
        vigil_protocol::io::ReadError::Frame(FrameError::Truncated { .. })
    ));
}

#[tokio::test]
async fn tokio_adapter_reads_what_the_blocking_writer_wrote() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let a = a.into_std().unwrap();
    a.set_nonblocking(false).unwrap();
    let writer = thread::spawn(move || {
        let mut a = a;
        for i in 0..100 {
            write_message(&mut a, &hb(i), 1, DEFAULT_MAX_PAYLOAD).unwrap();
        }
    });
    let (rd, mut wr) = b.into_split();
    let mut reader = AsyncMessageReader::new(rd, DEFAULT_MAX_PAYLOAD);
    for i in 0..100 {
        assert_eq!(reader.read_message().await.unwrap(), Some(hb(i)));
    }
    assert_eq!(reader.read_message().await.unwrap(), None);
    writer.join().unwrap();
    write_message_async(&mut wr, &hb(1), 1, DEFAULT_MAX_PAYLOAD)
        .await
        .ok();
}

/// A reader stopped at any point hands over what it took off the stream,
/// and a new reader on the same stream goes on from there: every message
/// arrives once, in order (vigild's sessions across a restart).
#[tokio::test]
async fn a_reader_hands_over_mid_frame_and_the_next_goes_on() {
    use tokio::io::AsyncWriteExt;
    let mut bytes = Vec::new();
    for seq in 1..=5 {
        bytes.extend(encode(&hb(seq), PROTOCOL_VERSION).unwrap());
    }
    let frame = bytes.len() / 5;
    // Cut inside the third frame's payload, inside the fourth's header,
    // and exactly between frames.
    for cut in [2 * frame + frame / 2 + 2, 3 * frame + 3, 2 * frame] {
        let (mut w, r) = tokio::io::duplex(1 << 16);
        w.write_all(&bytes[..cut]).await.unwrap();
        let mut first = AsyncMessageReader::new(r, 1024);
        let mut got = Vec::new();
        // Read until the reader waits for more (its future dropped then).
        loop {
            tokio::select! {
                biased;
                m = first.read_message() => got.push(m.unwrap().unwrap()),
                _ = tokio::task::yield_now() => break,
            }
        }
        let unread = first.unread();
        let r = first.into_inner();
        w.write_all(&bytes[cut..]).await.unwrap();
        drop(w);
        let mut next = AsyncMessageReader::resume(r, 1024, unread);
        while let Some(m) = next.read_message().await.unwrap() {
            got.push(m);
        }
        let want: Vec<Message> = (1..=5).map(hb).collect();
        assert_eq!(got, want, "cut at {cut}");
    }
}
