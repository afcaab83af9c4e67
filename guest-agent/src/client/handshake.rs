//! Connecting: the `Hello` this agent sends and the handshake that answers
//! it with `Welcome` or `Refused`.

use super::*;

/// Read this guest's identity for `Hello`.
pub(super) fn hello(config: &Config) -> Hello {
    let read = |p: &str| {
        std::fs::read_to_string(config.proc_root.join(p))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut caps = vec![Capability::Probe, Capability::Commands, Capability::Pstore];
    if config.kmsg.exists() {
        caps.push(Capability::KernelLog);
    }
    if !config.watch.units.is_empty() {
        caps.push(Capability::SystemdUnits);
    }
    let bounded = |s: String| Text::from(limits::truncate_utf8(&s, 128));
    Hello {
        versions: SUPPORTED,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        boot_id: bounded(read("sys/kernel/random/boot_id")),
        hostname: bounded(
            sysinfo::System::host_name().unwrap_or_else(|_| read("sys/kernel/hostname")),
        ),
        kernel_release: bounded(
            sysinfo::System::kernel_version().unwrap_or_else(|_| read("sys/kernel/osrelease")),
        ),
        capabilities: caps,
    }
}

/// Handshake errors that deserve a long back-off.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    #[error("host refused: {0}")]
    Refused(String),
    #[error("handshake failed: {0}")]
    Failed(String),
}

pub(super) fn handshake(
    stream: &mut Stream,
    config: &Config,
) -> Result<(Welcome, MessageReader<Stream>), HandshakeError> {
    let fail = |e: &dyn std::fmt::Display| HandshakeError::Failed(e.to_string());
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(|e| fail(&e))?;
    write_message(
        stream,
        &Message::Hello(hello(config)),
        PROTOCOL_VERSION,
        DEFAULT_MAX_PAYLOAD,
    )
    .map_err(|e| fail(&e))?;
    let rs = stream.try_clone().map_err(|e| fail(&e))?;
    rs.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| fail(&e))?;
    let mut reader = MessageReader::new(rs, DEFAULT_MAX_PAYLOAD);
    match reader.read_message() {
        Ok(Some(Message::Welcome(w))) => {
            if negotiate(
                SUPPORTED,
                VersionRange {
                    min: w.version,
                    max: w.version,
                },
            )
            .is_err()
            {
                return Err(HandshakeError::Refused(format!(
                    "host chose unsupported version {}",
                    w.version
                )));
            }
            reader.decoder().set_version(w.version);
            reader
                .get_ref()
                .set_read_timeout(None)
                .map_err(|e| fail(&e))?;
            Ok((w, reader))
        }
        Ok(Some(Message::Refused(r))) => Err(HandshakeError::Refused(format!(
            "{} (host speaks {}..={}, we speak {}..={})",
            r.reason, r.supported.min, r.supported.max, SUPPORTED.min, SUPPORTED.max
        ))),
        Ok(Some(other)) => Err(fail(&format!(
            "expected welcome, got {}",
            other.kind().name()
        ))),
        Ok(None) => Err(fail(&"host closed the connection")),
        Err(e) => Err(fail(&format!("{e}: {}", source_text(&e)))),
    }
}
