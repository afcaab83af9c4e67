//! Heartbeat deadlines: a fixed upper bound and an adaptive bound learned
//! from the VM's own inter-arrival times (exponentially weighted mean and
//! variance; deadline = mean + k·σ, clamped between the configured minimum
//! and the fixed timeout).

use super::config::EngineConfig;
use super::model::Millis;

/// Samples before the adaptive bound is trusted; until then the fixed
/// timeout applies.
const WARMUP: u32 = 8;
/// EWMA weight of a new sample.
const ALPHA: f64 = 1.0 / 16.0;

/// Inter-arrival statistics of one VM's heartbeats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arrivals {
    last: Option<Millis>,
    mean: f64,
    var: f64,
    samples: u32,
}

impl Arrivals {
    /// Record a heartbeat at `now`. Gaps shorter than half the interval are
    /// a burst of queued heartbeats (after a resume) and teach nothing.
    pub fn observe(&mut self, now: Millis, interval: Millis) {
        if let Some(last) = self.last {
            let gap = now.saturating_sub(last) as f64;
            if gap * 2.0 >= interval as f64 {
                if self.samples == 0 {
                    self.mean = gap;
                } else {
                    let d = gap - self.mean;
                    self.mean += ALPHA * d;
                    self.var = (1.0 - ALPHA) * (self.var + ALPHA * d * d);
                }
                self.samples = self.samples.saturating_add(1);
            }
        }
        self.last = Some(now);
    }

    /// Forget the last arrival (after a freeze), keep what was learned.
    pub fn forget_last(&mut self) {
        self.last = None;
    }

    /// Time of the last heartbeat.
    pub fn last(&self) -> Option<Millis> {
        self.last
    }

    /// Gaps learned from, and what they alone give (mean + k·sd, ms).
    pub fn learned(&self, cfg: &EngineConfig) -> (u32, Millis) {
        let b = self.mean + cfg.adaptive_k * self.var.sqrt();
        (self.samples, b.ceil() as Millis)
    }

    /// The silence that makes this VM suspect.
    pub fn bound(&self, cfg: &EngineConfig) -> Millis {
        if self.samples < WARMUP {
            return cfg.heartbeat_timeout_ms;
        }
        let adaptive = self.mean + cfg.adaptive_k * self.var.sqrt();
        (adaptive.ceil() as Millis).clamp(cfg.min_timeout_ms, cfg.heartbeat_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_vm_gets_the_minimum_bound() {
        let cfg = EngineConfig::default();
        let mut a = Arrivals::default();
        assert_eq!(a.bound(&cfg), cfg.heartbeat_timeout_ms);
        for i in 0..50 {
            a.observe(i * 500, 500);
        }
        assert_eq!(a.bound(&cfg), cfg.min_timeout_ms);
    }

    #[test]
    fn jittery_vm_gets_a_wider_bound_capped_by_the_timeout() {
        let cfg = EngineConfig::default();
        let mut a = Arrivals::default();
        let mut t = 0;
        for i in 0..100 {
            t += if i % 2 == 0 { 300 } else { 1100 };
            a.observe(t, 500);
        }
        let b = a.bound(&cfg);
        assert!(
            b > cfg.min_timeout_ms && b <= cfg.heartbeat_timeout_ms,
            "{b}"
        );
    }

    #[test]
    fn a_burst_after_resume_does_not_shrink_the_bound() {
        let cfg = EngineConfig::default();
        let mut a = Arrivals::default();
        for i in 0..50 {
            a.observe(i * 500, 500);
        }
        let before = a.clone();
        for i in 0..10 {
            a.observe(25_000 + i, 500);
        }
        assert_eq!(a.bound(&cfg), before.bound(&cfg));
    }
}
