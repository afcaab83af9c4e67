//! The guest-kernel liveness probe: a host-initiated vsock connection to a
//! port nobody listens on in the guest. A prompt refusal proves the guest
//! kernel is alive even when the agent is silent.
//!
//! Over hybrid vsock the probe writes `CONNECT <port>\n` to the VMM's Unix
//! socket: the guest kernel's reset makes the VMM close the connection
//! (refused); `OK` means something listens (accepted); no answer within the
//! timeout means the guest kernel is not servicing vsock. A socket that
//! refuses the connection (or is gone) means the VMM or its vsock backend
//! is not there: that says nothing of the guest, and a closed connection
//! from a VMM that just died reads like a refusal, which is why the engine
//! waits for the hypervisor's word before it believes one.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vigil_protocol::transport::{hybrid_request, Address};

use crate::engine::ProbeResult;

/// Probe `target` once.
pub async fn probe(target: &Address, timeout: Duration) -> ProbeResult {
    let Address::Hybrid { path, port } = target else {
        return ProbeResult::Unsupported;
    };
    let mut s = match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return ProbeResult::NoVmm,
        Err(_) => return ProbeResult::TimedOut,
    };
    if s.write_all(hybrid_request(*port).as_bytes()).await.is_err() {
        return ProbeResult::Refused;
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(timeout, s.read(&mut buf)).await {
        Err(_) => ProbeResult::TimedOut,
        Ok(Ok(0)) | Ok(Err(_)) => ProbeResult::Refused,
        Ok(Ok(n)) if buf[..n].starts_with(b"OK") => ProbeResult::Accepted,
        Ok(Ok(_)) => ProbeResult::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn vmm(behaviour: &'static str) -> (tempfile::TempDir, Address) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.sock");
        let l = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 32];
            let _ = s.read(&mut buf).await;
            match behaviour {
                "refuse" => drop(s),
                "accept" => {
                    s.write_all(b"OK 1024\n").await.unwrap();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                _ => tokio::time::sleep(Duration::from_secs(5)).await, // hung guest
            }
        });
        (dir, Address::Hybrid { path, port: 9 })
    }

    #[tokio::test]
    async fn probe_outcomes() {
        let t = Duration::from_millis(300);
        let (_d1, a) = vmm("refuse").await;
        assert_eq!(probe(&a, t).await, ProbeResult::Refused);
        let (_d2, a) = vmm("accept").await;
        assert_eq!(probe(&a, t).await, ProbeResult::Accepted);
        let (_d3, a) = vmm("hang").await;
        assert_eq!(probe(&a, t).await, ProbeResult::TimedOut);
        let gone = Address::Hybrid {
            path: "/nonexistent/vmm.sock".into(),
            port: 9,
        };
        assert_eq!(probe(&gone, t).await, ProbeResult::NoVmm);
        assert_eq!(
            probe(&Address::Unix("/x".into()), t).await,
            ProbeResult::Unsupported
        );
    }
}
