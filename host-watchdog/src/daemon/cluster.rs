//! The cluster hand-off on a thread of its own (the cluster's tools may be
//! slow or hang): the host's health published as a node attribute, retried
//! with back-off until the cluster takes it (only the latest value is
//! kept), and "this resource failed here" told for a cluster-managed VM.

use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::CoreMsg;
use crate::cluster::ClusterConfig;
use crate::engine::host::HostHealth;

/// What the core asks of the cluster.
#[derive(Debug)]
pub enum ClusterReq {
    /// Publish the host's health.
    Health(HostHealth),
    /// Tell the cluster resource `resource` (VM `vm`) failed here; the
    /// result goes back as action `id`'s.
    Fail {
        /// Action id.
        id: u64,
        /// VM.
        vm: String,
        /// Its cluster resource.
        resource: String,
    },
}

/// A cluster tool that has not finished within this failed.
const TOOL_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait between tries to publish.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Run until the core goes away.
pub fn run(cfg: ClusterConfig, rx: Receiver<ClusterReq>, core: Sender<CoreMsg>) {
    // The health not yet published, and when to try again.
    let mut pending: Option<(HostHealth, Instant)> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = pending.map_or(Duration::from_secs(3600), |(_, at)| {
            at.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(ClusterReq::Health(h)) => {
                pending = Some((h, Instant::now()));
                backoff = Duration::from_secs(1);
            }
            Ok(ClusterReq::Fail { id, vm, resource }) => {
                let (cmd, args) = cfg.fail(&resource);
                let (ok, detail) = match run_tool(&cmd, &args) {
                    Ok(()) => (
                        true,
                        format!("the cluster was told {resource} failed here; it recovers it by its policy"),
                    ),
                    Err(e) => (false, format!("{cmd} --fail {resource}: {e}")),
                };
                let msg = CoreMsg::ActionDone { id, vm, ok, detail };
                if core.blocking_send(msg).is_err() {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some((h, at)) = pending else { continue };
        if Instant::now() < at {
            continue;
        }
        let (cmd, args) = cfg.publish(h);
        match run_tool(&cmd, &args) {
            Ok(()) => {
                log::info!(
                    "cluster: host health {h} published as {}={}",
                    cfg.health_attribute,
                    crate::cluster::colour(h)
                );
                pending = None;
            }
            Err(e) => {
                log::warn!(
                    "cluster: cannot publish host health {h} ({e}); again in {} s",
                    backoff.as_secs()
                );
                pending = Some((h, Instant::now() + backoff));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Run a cluster tool, bounded by [`TOOL_TIMEOUT`] (killed past it).
fn run_tool(cmd: &str, args: &[String]) -> Result<(), String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    let until = Instant::now() + TOOL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.by_ref().take(4096).read_to_string(&mut err);
                }
                return Err(format!("{st}: {}", err.trim()));
            }
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", TOOL_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
