//! A minimal host for manual runs and measurements: listens on a Unix
//! socket, welcomes the agent with the default settings, keeps its session
//! alive (a protocol-2 agent takes a silent host for dead), and counts
//! what arrives. Usage: `sink /path/to/socket [seconds]`.

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use vigil_protocol::io::{write_message, MessageReader};
use vigil_protocol::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: sink SOCKET [SECONDS]")?;
    let secs: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(u64::MAX / 2);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut reader = MessageReader::new(stream.try_clone()?, DEFAULT_MAX_PAYLOAD);
    let mut w = stream;
    let (mut beats, mut reports, mut bytes_hint) = (0u64, 0u64, 0u64);
    let keepalive = Duration::from_secs(2);
    let mut kept: Option<Instant> = None; // welcomed, keepalive last sent
    while Instant::now() < deadline {
        if kept.is_some_and(|t| t.elapsed() >= keepalive) {
            let k = Keepalive {
                interval_ms: keepalive.as_millis() as u32,
            };
            write_message(
                &mut w,
                &Message::Keepalive(k),
                PROTOCOL_VERSION,
                DEFAULT_MAX_PAYLOAD,
            )?;
            kept = Some(Instant::now());
        }
        match reader.read_message() {
            Ok(Some(Message::Hello(h))) => {
                eprintln!(
                    "sink: hello from {} (agent {})",
                    h.hostname, h.agent_version
                );
                let welcome = Welcome {
                    version: PROTOCOL_VERSION,
                    settings: Settings::default(),
                };
                write_message(
                    &mut w,
                    &Message::Welcome(welcome),
                    PROTOCOL_VERSION,
                    DEFAULT_MAX_PAYLOAD,
                )?;
                reader.decoder().set_version(PROTOCOL_VERSION);
                kept = Some(Instant::now());
            }
            Ok(Some(Message::Heartbeat(_))) => beats += 1,
            Ok(Some(Message::Report(r))) => {
                reports += 1;
                bytes_hint += encode(&Message::Report(r), PROTOCOL_VERSION)?.len() as u64;
            }
            Ok(Some(m)) => eprintln!("sink: {}", m.kind().name()),
            Ok(None) => break,
            Err(vigil_protocol::io::ReadError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    println!("sink: {beats} heartbeats, {reports} reports ({bytes_hint} report bytes)");
    Ok(())
}
