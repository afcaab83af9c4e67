//! Whether the hypervisor answers: the backend thread marks when a libvirt
//! call of its own (a listing, a poll, a keepalive ping: all cheap) began
//! and ends it; the core's tick sees one that has not returned for longer
//! than `hypervisor_timeout_ms` and names it. No destructive action is
//! taken anywhere while the hypervisor does not answer (vigild would be
//! acting blind, and its calls would only queue behind the stuck one).
//!
//! A connection that is lost (libvirtd stopped or restarted: calls fail at
//! once instead of hanging) is marked too, from the moment the backend
//! thread sees it until it has connected again, and judged the same way.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Millis;

/// When the backend thread's current libvirt call began (0: none).
#[derive(Debug, Default)]
pub struct CallWatch {
    started: AtomicU64,
    lost: AtomicU64,
}

impl CallWatch {
    /// A call begins at `now`.
    pub fn begin(&self, now: Millis) {
        self.started.store(now.max(1), Ordering::Relaxed);
    }

    /// The call returned.
    pub fn end(&self) {
        self.started.store(0, Ordering::Relaxed);
    }

    /// The connection was found lost at `now` (kept if already lost).
    pub fn lose(&self, now: Millis) {
        let _ = self
            .lost
            .compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Connected again.
    pub fn regain(&self) {
        self.lost.store(0, Ordering::Relaxed);
    }

    /// Since when the connection is lost, if it is.
    pub fn lost_since(&self) -> Option<Millis> {
        Some(self.lost.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }

    /// When the call under way began, if one is.
    pub fn since(&self) -> Option<Millis> {
        Some(self.started.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_under_way_is_seen_until_it_returns() {
        let w = CallWatch::default();
        assert_eq!(w.since(), None);
        w.begin(1_000);
        assert_eq!(w.since(), Some(1_000));
        w.end();
        assert_eq!(w.since(), None);
    }

    #[test]
    fn a_lost_connection_keeps_its_first_moment() {
        let w = CallWatch::default();
        w.lose(5_000);
        w.lose(6_000);
        assert_eq!(w.lost_since(), Some(5_000));
        w.regain();
        assert_eq!(w.lost_since(), None);
    }
}
