//! When each domain is polled. Every domain at the quiet interval, in one
//! pass; the domains that need watching (anything but healthy: a VM
//! discovering, suspect, faulted, recovering, paused, off) at the hot
//! interval, each from the moment it turned hot; its first poll comes as
//! soon as its I/O counters were gathered afresh (`soon`), so a suspicion
//! gets a fresh sample to compare with. A healthy VM with a
//! heartbeating agent needs the hypervisor's word only as a fallback: its
//! lifecycle events come at once anyway, and its agent is the fast signal.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// What to poll now.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet.
    Nothing,
    /// Every domain (one pass).
    All,
    /// These domains only.
    Some(Vec<String>),
}

/// The polling schedule (pure: the caller's clock).
#[derive(Debug)]
pub struct Schedule {
    hot_every: Duration,
    quiet_every: Duration,
    next_all: Instant,
    /// Hot domains and when each is due next.
    hot: HashMap<String, Instant>,
    /// Domains to poll once, at once (an action on them just finished).
    once: BTreeSet<String>,
}

impl Schedule {
    /// A schedule whose first pass (every domain) is due at `now`.
    pub fn new(hot_every: Duration, quiet_every: Duration, now: Instant) -> Schedule {
        Schedule {
            hot_every,
            quiet_every: quiet_every.max(hot_every),
            next_all: now,
            hot: HashMap::new(),
            once: BTreeSet::new(),
        }
    }

    /// A domain turned hot (polled at the hot interval from now; `soon`
    /// polls it at once) or quiet (left to the quiet pass).
    pub fn watch(&mut self, vm: &str, hot: bool, now: Instant) {
        if hot {
            let next = now + self.hot_every;
            self.hot.entry(vm.to_string()).or_insert(next);
        } else {
            self.hot.remove(vm);
        }
    }

    /// Poll every domain at once (definitions changed: a new domain is
    /// polled without waiting for the quiet pass).
    pub fn all_soon(&mut self, now: Instant) {
        self.next_all = self.next_all.min(now);
    }

    /// Poll this domain once, at once (to show an action's effect).
    pub fn soon(&mut self, vm: &str) {
        self.once.insert(vm.to_string());
    }

    /// Forget domains no longer defined.
    pub fn retain(&mut self, defined: impl Fn(&str) -> bool) {
        self.hot.retain(|n, _| defined(n));
        self.once.retain(|n| defined(n));
    }

    /// When something is next due.
    pub fn next(&self, now: Instant) -> Instant {
        if !self.once.is_empty() {
            return now;
        }
        self.hot.values().copied().fold(self.next_all, Instant::min)
    }

    /// What is due at `now`; advances the schedule past it.
    pub fn due(&mut self, now: Instant) -> Due {
        if now >= self.next_all {
            // The hot domains keep their own cadence (a pass between two
            // of their polls is one sample more, not a reason to wait);
            // those due now were just polled by it.
            self.next_all = now + self.quiet_every;
            for t in self.hot.values_mut().filter(|t| **t <= now) {
                *t = now + self.hot_every;
            }
            self.once.clear();
            return Due::All;
        }
        let mut vms: BTreeSet<String> = std::mem::take(&mut self.once);
        for (n, t) in &mut self.hot {
            if now >= *t {
                *t = now + self.hot_every;
                vms.insert(n.clone());
            }
        }
        if vms.is_empty() {
            Due::Nothing
        } else {
            Due::Some(vms.into_iter().collect())
        }
    }

    /// The hot domains now (for the I/O counters' own pass).
    pub fn hot(&self) -> BTreeSet<String> {
        self.hot.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quiet_domains_wait_for_the_pass_hot_ones_do_not() {
        let t0 = Instant::now();
        let mut s = Schedule::new(ms(1000), ms(5000), t0);
        assert_eq!(s.due(t0), Due::All);
        assert_eq!(s.next(t0), t0 + ms(5000));
        assert_eq!(s.due(t0 + ms(1000)), Due::Nothing);
        // Turns suspect at 1.3 s: polled once its counters are fresh, and
        // every second from then.
        s.watch("web", true, t0 + ms(1300));
        assert_eq!(s.next(t0 + ms(1300)), t0 + ms(2300));
        s.soon("web");
        assert_eq!(s.due(t0 + ms(1310)), Due::Some(vec!["web".into()]));
        assert_eq!(s.next(t0 + ms(1310)), t0 + ms(2300));
        assert_eq!(s.due(t0 + ms(2000)), Due::Nothing);
        assert_eq!(s.due(t0 + ms(2300)), Due::Some(vec!["web".into()]));
        // Told again that it is hot: its cadence does not restart.
        s.watch("web", true, t0 + ms(2400));
        assert_eq!(s.due(t0 + ms(2400)), Due::Nothing);
        assert_eq!(s.due(t0 + ms(3300)), Due::Some(vec!["web".into()]));
        assert_eq!(s.due(t0 + ms(4300)), Due::Some(vec!["web".into()]));
        // The pass polls it too; its own cadence goes on.
        assert_eq!(s.due(t0 + ms(5000)), Due::All);
        assert_eq!(s.next(t0 + ms(5000)), t0 + ms(5300));
        assert_eq!(s.due(t0 + ms(5300)), Due::Some(vec!["web".into()]));
        // One due at the pass is polled by it, not twice.
        assert_eq!(s.due(t0 + ms(10_300)), Due::All);
        assert_eq!(s.next(t0 + ms(10_300)), t0 + ms(11_300));
        assert_eq!(s.due(t0 + ms(10_300)), Due::Nothing);
        // Healthy again: left to the pass.
        s.watch("web", false, t0 + ms(10_500));
        assert_eq!(s.next(t0 + ms(10_500)), t0 + ms(15_300));
        // An action's effect is shown at once, once.
        s.soon("db");
        assert_eq!(s.next(t0 + ms(11_000)), t0 + ms(11_000));
        assert_eq!(s.due(t0 + ms(11_000)), Due::Some(vec!["db".into()]));
        assert_eq!(s.due(t0 + ms(11_001)), Due::Nothing);
        // New definitions: every domain at once, then the pass's cadence.
        s.all_soon(t0 + ms(11_500));
        assert_eq!(s.due(t0 + ms(11_500)), Due::All);
        assert_eq!(s.next(t0 + ms(11_500)), t0 + ms(16_500));
        s.watch("gone", true, t0 + ms(12_000));
        s.retain(|n| n != "gone");
        assert!(s.hot().is_empty());
    }

    #[test]
    fn the_quiet_interval_is_never_shorter_than_the_hot_one() {
        let t0 = Instant::now();
        let mut s = Schedule::new(ms(1000), ms(10), t0);
        assert_eq!(s.due(t0), Due::All);
        assert_eq!(s.next(t0), t0 + ms(1000));
    }
}
