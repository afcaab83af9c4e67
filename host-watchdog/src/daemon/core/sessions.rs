//! The core's sessions across vigild's own life: handed over to the next
//! vigild (or closed, running guests' first) on exit, taken back on start,
//! and kept alive while running.

use super::*;

impl Core {
    /// Keep sessions a previous vigild handed over, to serve them once
    /// the VMs are known.
    pub fn adopt(
        &mut self,
        sessions: Vec<(
            String,
            crate::daemon::session::Adopted,
            std::os::fd::OwnedFd,
        )>,
    ) {
        self.to_adopt = sessions;
    }

    /// Keep connections a killed vigild left until their guests run.
    pub fn hold_orphans(&mut self, orphans: Vec<(String, std::os::fd::OwnedFd)>) {
        self.orphans = orphans;
    }

    /// Close the connections a killed vigild left whose guests run again
    /// (or are gone): never one of a paused guest, or one whose domain's
    /// state is not known yet.
    pub(super) fn release_orphans(&mut self) {
        if self.orphans.is_empty() || !self.listed {
            return; // (before the first full poll, no state is known)
        }
        let (close, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.orphans)
            .into_iter()
            .partition(|(vm, _)| {
                orphan_may_close(self.vms.contains_key(vm), self.engine.domain(vm))
            });
        self.orphans = keep;
        for (vm, fd) in close {
            // A shutdown: the agent hears the end at once and reconnects.
            let _ = nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                nix::sys::socket::Shutdown::Both,
            );
            log::info!("vm={vm}: the agent connection a killed vigild left is closed; the agent reconnects");
        }
    }

    /// Connections still waiting for their guests go back to the store
    /// for the next vigild (without one they close as vigild exits).
    pub(super) fn keep_orphans_for_exit(&mut self) {
        for (i, (vm, fd)) in std::mem::take(&mut self.orphans).into_iter().enumerate() {
            let id = u64::MAX - i as u64; // no session of this vigild's
            if crate::daemon::handover::keep(&vm, id, std::os::fd::AsFd::as_fd(&fd)).is_none() {
                log::warn!("vm={vm}: a connection a killed vigild left closes as vigild exits");
            }
        }
    }

    /// Serve the handed-over sessions where the previous vigild stopped.
    pub(super) fn adopt_handed_over(&mut self) {
        use crate::daemon::session;
        let limits = session::Limits::from_config(&self.cfg);
        for (vm, was, fd) in std::mem::take(&mut self.to_adopt) {
            let raw = Some(std::os::fd::AsRawFd::as_raw_fd(&fd));
            let tx = self.tx.clone();
            log::info!("vm={vm}: agent session taken over from the previous vigild");
            match session::stream_of(fd) {
                Ok(session::Stream::Unix(s)) => {
                    tokio::spawn(session::adopt(s, vm, tx, limits, raw, was));
                }
                Ok(session::Stream::Vsock(s)) => {
                    tokio::spawn(session::adopt(s, vm, tx, limits, raw, was));
                }
                Err(e) => log::warn!("vm={vm}: a handed-over session is unusable: {e}"),
            }
        }
    }

    /// Hand every live session to the service manager's store, to be
    /// served on by the next vigild; false when there is no store (or it
    /// refused), and sessions are to be closed instead.
    pub(super) async fn hand_over(&mut self) -> bool {
        use crate::daemon::session::Adopted;
        if crate::daemon::handover::capacity() == 0 {
            return false;
        }
        let mut asked = Vec::new();
        for (name, v) in self.vms.iter_mut() {
            let Some(s) = v.session.as_mut().filter(|s| !s.past_boot) else {
                continue;
            };
            let Some(h) = s.handle.take() else { continue };
            let (tx, rx) = oneshot::channel();
            if h.ask.send(tx).is_ok() {
                let was = Adopted {
                    version: s.version,
                    hostname: s.hostname.clone(),
                    agent_version: s.agent_version.clone(),
                    boot_id: s.boot_id.clone(),
                    unread: Vec::new(),
                };
                asked.push((name.clone(), was, rx));
            }
        }
        let mut sessions = Vec::new();
        for (vm, was, rx) in asked {
            // A session stops at its next frame boundary; a writer blocked
            // on a guest gives up within its 2 s bound.
            match tokio::time::timeout(Duration::from_secs(3), rx).await {
                Ok(Ok((unread, Some(fd)))) => sessions.push((vm, Adopted { unread, ..was }, fd)),
                Ok(Ok((_, None))) => {
                    log::warn!("vm={vm}: its connection could not be duplicated; not handed over")
                }
                _ => log::warn!("vm={vm}: its session did not stop in time; not handed over"),
            }
        }
        let n = sessions.len();
        match crate::daemon::handover::store(sessions) {
            Ok(n) => {
                log::info!("{n} agent sessions handed to the service manager for the next vigild");
                true
            }
            Err(e) => {
                log::warn!("cannot hand {n} agent sessions over ({e}); closing them");
                false
            }
        }
    }

    /// Close agent sessions before exiting: those of running guests first;
    /// those of guests that are not running last, and said. Closing is a
    /// write to the guest's vsock, and a write that reaches a paused VM
    /// breaks vhost-device-vsock until the domain is destroyed and started
    /// again (the restarted vigild then sees transport-down, never a guest
    /// fault, and resets nothing).
    pub(super) async fn close_sessions_for_exit(&mut self) {
        let mut held = Vec::new();
        for (name, v) in self.vms.iter_mut() {
            if v.session.is_none() {
                continue;
            }
            if self.engine.may_talk_to(name) {
                v.session = None; // the writer ends; the reader closes the stream
            } else {
                held.push(name.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for name in held {
            log::warn!(
                "vm={name} is not running (paused?): its agent connection closes last, as vigild exits; \
                 its vsock may not survive that until the domain is restarted"
            );
            if let Some(v) = self.vms.get_mut(&name) {
                v.session = None;
            }
        }
    }

    /// Tell every running guest that speaks protocol 2 its session is
    /// alive (never a paused one: a write to a paused VM's vsock breaks it).
    pub(super) fn keepalives(&mut self, now: Millis) {
        let every = self.cfg.keepalive_interval_ms;
        let interval_ms = every.min(u64::from(u32::MAX)) as u32;
        for (name, v) in self.vms.iter_mut() {
            let Some(s) = v.session.as_mut().filter(|s| !s.past_boot) else {
                continue;
            };
            if s.version < 2
                || now.saturating_sub(s.keepalive_at) < every
                || !self.engine.may_talk_to(name)
            {
                continue;
            }
            s.keepalive_at = now;
            let _ =
                s.tx.try_send(Box::new(Message::Keepalive(Keepalive { interval_ms })));
        }
    }
}

/// Whether a connection a killed vigild left may be closed now: its VM
/// is not known here any more, or its domain's state is known and not
/// paused (a close written to a paused VM's vsock breaks it).
fn orphan_may_close(known: bool, domain: Option<engine::DomainState>) -> bool {
    use engine::DomainState as D;
    match domain {
        _ if !known => true,
        None | Some(D::Unknown | D::Paused(_)) => false,
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::orphan_may_close;
    use crate::engine::{DomainState as D, PauseReason, StopReason};

    #[test]
    fn a_left_connection_waits_for_its_guest_to_run() {
        assert!(!orphan_may_close(true, Some(D::Paused(PauseReason::User))));
        assert!(!orphan_may_close(true, Some(D::Unknown)));
        assert!(!orphan_may_close(true, None));
        assert!(orphan_may_close(true, Some(D::Running)));
        assert!(orphan_may_close(
            true,
            Some(D::ShutOff(StopReason::Destroyed))
        ));
        assert!(orphan_may_close(false, None));
    }
}
