//! Whether the hypervisor answers: the backend thread marks when a libvirt
//! call of its own (a listing, a poll, a keepalive ping: all cheap) began
//! and ends it; the core's tick sees one that has not returned for longer
//! than `hypervisor_timeout_ms` and names it. No destructive action is
//! taken anywhere while the hypervisor does not answer (vigild would be
//! acting blind, and its calls would only queue behind the stuck one).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Millis;

/// When the backend thread's current libvirt call began (0: none).
#[derive(Debug, Default)]
pub struct CallWatch {
    started: AtomicU64,
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
}
