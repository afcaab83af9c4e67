//! Bounds on what a message may carry. Senders truncate to these; the host
//! also enforces the frame limit, so a hostile guest cannot exceed them by much.

/// Longest free text (kernel log line, command detail) in bytes.
pub const MAX_TEXT: usize = 256;
/// Longest crash record excerpt in bytes.
pub const MAX_CRASH_TEXT: usize = 4096;
/// Most kernel events in one snapshot.
pub const MAX_KERNEL_EVENTS: usize = 32;
/// Most filesystems in one snapshot.
pub const MAX_FILESYSTEMS: usize = 64;
/// Most watched services.
pub const MAX_WATCHED: usize = 128;
/// Most collector failures listed in one snapshot.
pub const MAX_FAILURES: usize = 16;
/// Most network interfaces in one snapshot.
pub const MAX_INTERFACES: usize = 32;
/// Most addresses listed per interface.
pub const MAX_ADDRESSES: usize = 16;
/// Most TCP checks.
pub const MAX_TCP_CHECKS: usize = 16;

/// Truncate `s` to at most `max` bytes on a UTF-8 boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Token bucket over a virtual clock, in milliseconds: `per_minute` events,
/// with a burst of the same size.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_minute: u32,
    tokens_milli: u64,
    last_ms: u64,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            tokens_milli: u64::from(per_minute) * 1000,
            last_ms: 0,
        }
    }

    /// Take one token at `now_ms`; false when the bucket is empty.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        let cap = u64::from(self.per_minute) * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        // per_minute tokens per 60_000 ms = per_minute/60 milli-tokens per ms.
        self.tokens_milli =
            (self.tokens_milli + elapsed * u64::from(self.per_minute) / 60).min(cap);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// At most `per_minute` log lines about one thing, with a count of the
/// ones left out (every line a guest can cause goes through one).
#[derive(Debug, Clone)]
pub struct LogLimit {
    rate: RateLimit,
    suppressed: u64,
}

impl LogLimit {
    /// A limiter allowing `per_minute` lines (a burst of as many).
    pub fn new(per_minute: u32) -> LogLimit {
        LogLimit {
            rate: RateLimit::new(per_minute),
            suppressed: 0,
        }
    }

    /// Whether to log now; if so, how many were left out before it.
    pub fn allow(&mut self, now_ms: u64) -> Option<u64> {
        if self.rate.allow(now_ms) {
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("", 0), "");
    }

    #[test]
    fn rate_limit_bounds_the_burst_then_refills() {
        let mut rl = RateLimit::new(60);
        let allowed = (0..100).filter(|_| rl.allow(0)).count();
        assert_eq!(allowed, 60);
        assert!(!rl.allow(500));
        assert!(rl.allow(1000)); // one per second refills
        assert!(!rl.allow(1000));
    }

    #[test]
    fn a_log_limit_counts_what_it_leaves_out() {
        let mut l = LogLimit::new(1);
        assert_eq!(l.allow(0), Some(0));
        assert_eq!(l.allow(10), None);
        assert_eq!(l.allow(20), None);
        assert_eq!(l.allow(60_100), Some(2));
    }
}
