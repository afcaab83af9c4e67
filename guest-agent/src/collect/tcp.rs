//! TCP connect checks ("can I reach what I serve"), on a thread of their
//! own: a check waits for its connect timeout, a snapshot never does.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigil_protocol::limits::{truncate_utf8, MAX_TEXT};
use vigil_protocol::snapshot::TcpCheck;
use vigil_protocol::Text;

use crate::config::TcpTarget;

/// The checks' last results, in configured order (empty: none configured
/// or not started).
#[derive(Debug, Clone, Default)]
pub struct Results(Arc<Mutex<Vec<TcpCheck>>>);

impl Results {
    /// A copy of the last results.
    pub fn get(&self) -> Vec<TcpCheck> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// One connect to `addr` within `timeout`: its result after `before`
/// failures in a row.
pub fn check_once(target: &str, addr: SocketAddr, timeout: Duration, before: u32) -> TcpCheck {
    let start = Instant::now();
    let r = TcpStream::connect_timeout(&addr, timeout);
    let latency_ms = u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX);
    match r {
        Ok(_) => TcpCheck {
            target: target.into(),
            ok: true,
            latency_ms,
            failures: 0,
            error: None,
        },
        Err(e) => TcpCheck {
            target: target.into(),
            ok: false,
            latency_ms,
            failures: before.saturating_add(1),
            error: Some(Text::from(truncate_utf8(&e.to_string(), MAX_TEXT))),
        },
    }
}

/// Start checking `targets` (validated: each an `address:port`) at once
/// and then each at its interval; results show once the first round is done.
pub fn start(targets: &[TcpTarget]) -> Results {
    let results = Results::default();
    let checks: Vec<(String, SocketAddr, Duration, Duration)> = targets
        .iter()
        .filter_map(|t| {
            let addr = t.target.parse().ok()?;
            Some((
                t.target.clone(),
                addr,
                Duration::from_millis(t.timeout_ms),
                Duration::from_millis(t.every_ms),
            ))
        })
        .collect();
    if checks.is_empty() {
        return results;
    }
    let shared = results.clone();
    let spawned = std::thread::Builder::new()
        .name("tcp-checks".into())
        .spawn(move || {
            let first: Vec<TcpCheck> = checks
                .iter()
                .map(|(t, a, timeout, _)| check_once(t, *a, *timeout, 0))
                .collect();
            if let Ok(mut r) = shared.0.lock() {
                *r = first;
            }
            let mut next: Vec<Instant> = checks.iter().map(|c| Instant::now() + c.3).collect();
            loop {
                let now = Instant::now();
                let soonest = next.iter().min().copied().unwrap_or(now);
                std::thread::sleep(soonest.saturating_duration_since(now));
                for (i, (target, addr, timeout, every)) in checks.iter().enumerate() {
                    if Instant::now() < next[i] {
                        continue;
                    }
                    let before = shared.get().get(i).map_or(0, |c| c.failures);
                    let c = check_once(target, *addr, *timeout, before);
                    if let Ok(mut r) = shared.0.lock() {
                        if let Some(slot) = r.get_mut(i) {
                            *slot = c;
                        }
                    }
                    next[i] = Instant::now() + *every;
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the TCP checks: {e}");
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_passes_and_a_closed_one_fails() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let ok = check_once("t", addr, Duration::from_secs(2), 3);
        assert!(ok.ok && ok.failures == 0 && ok.error.is_none(), "{ok:?}");
        drop(l);
        let bad = check_once("t", addr, Duration::from_secs(2), 3);
        assert!(!bad.ok, "{bad:?}");
        assert_eq!(bad.failures, 4);
        assert!(bad.error.unwrap().contains("refused"));
    }
}
