//! Trends (pure): a least-squares rate over a window of samples, and how
//! long until it reaches a level. Shared by the host's filesystems and the
//! guests' warnings.

use std::collections::VecDeque;

use super::Millis;

/// A series of (time, value) samples over a bounded window.
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: VecDeque<(Millis, f64)>,
}

/// How much is kept and trusted.
#[derive(Debug, Clone, Copy)]
pub struct Fit {
    /// Samples kept, at most.
    pub max_samples: usize,
    /// How far back the samples go.
    pub window_ms: Millis,
    /// The least span of samples a rate is trusted over.
    pub min_span_ms: Millis,
    /// The least samples a rate is fitted over.
    pub min_samples: usize,
}

impl Series {
    /// Add a sample; samples past the window or the count are dropped.
    pub fn push(&mut self, now: Millis, v: f64, fit: Fit) {
        self.points.push_back((now, v));
        while self.points.len() > fit.max_samples
            || self
                .points
                .front()
                .is_some_and(|(at, _)| now.saturating_sub(*at) > fit.window_ms)
        {
            self.points.pop_front();
        }
    }

    /// Start over (after a delete, a reboot: the past says nothing).
    pub fn clear(&mut self) {
        self.points.clear();
    }

    /// When the last sample was taken.
    pub fn newest(&self) -> Option<Millis> {
        self.points.back().map(|(t, _)| *t)
    }

    /// The last value.
    pub fn last(&self) -> Option<f64> {
        self.points.back().map(|(_, v)| *v)
    }

    /// The samples' span, ms.
    pub fn span(&self) -> Millis {
        match (self.points.front(), self.points.back()) {
            (Some(a), Some(b)) => b.0.saturating_sub(a.0),
            _ => 0,
        }
    }

    /// The least-squares rate, per ms (none from too little).
    pub fn rate(&self, fit: Fit) -> Option<f64> {
        let first = self.points.front()?.0;
        if self.points.len() < fit.min_samples || self.span() < fit.min_span_ms {
            return None;
        }
        let n = self.points.len() as f64;
        let mx = self
            .points
            .iter()
            .map(|(t, _)| (t - first) as f64)
            .sum::<f64>()
            / n;
        let my = self.points.iter().map(|(_, v)| *v).sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (t, v) in &self.points {
            let dx = (t - first) as f64 - mx;
            sxy += dx * (v - my);
            sxx += dx * dx;
        }
        let rate = sxy / sxx;
        rate.is_finite().then_some(rate)
    }

    /// Milliseconds until the value rises to `level` at the fitted rate
    /// (none when it does not rise, or too little is known; 0 when there).
    pub fn until(&self, level: f64, fit: Fit) -> Option<Millis> {
        let rate = self.rate(fit).filter(|r| *r > 0.0)?;
        let left = (level - self.last()?).max(0.0);
        Some((left / rate) as Millis)
    }
}

/// A duration in words ("3d", "3h 12m", "45m", "20s").
pub fn words(ms: Millis) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ if s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIT: Fit = Fit {
        max_samples: 8,
        window_ms: 60_000,
        min_span_ms: 10_000,
        min_samples: 3,
    };

    #[test]
    fn a_steady_rise_is_fitted_and_projected() {
        let mut s = Series::default();
        for i in 0..5 {
            s.push(i * 5_000, 100.0 + i as f64 * 50.0, FIT); // 10 per s
        }
        assert!((s.rate(FIT).unwrap() - 0.01).abs() < 1e-9);
        // 300 now, 1000 is 700 away: 70 s.
        assert_eq!(s.until(1000.0, FIT), Some(70_000));
    }

    #[test]
    fn too_little_or_falling_says_nothing() {
        let mut s = Series::default();
        s.push(0, 1.0, FIT);
        s.push(5_000, 2.0, FIT);
        assert_eq!(s.rate(FIT), None, "two samples");
        s.push(6_000, 3.0, FIT);
        assert_eq!(s.rate(FIT), None, "6 s span");
        let mut f = Series::default();
        for i in 0..5 {
            f.push(i * 5_000, 100.0 - i as f64, FIT);
        }
        assert_eq!(f.until(1000.0, FIT), None, "falling");
    }

    #[test]
    fn the_window_and_the_count_bound_it() {
        let mut s = Series::default();
        for i in 0..100 {
            s.push(i * 1_000, i as f64, FIT);
        }
        assert_eq!(s.points.len(), 8);
        s.push(500_000, 0.0, FIT);
        assert_eq!(s.points.len(), 1, "all older than the window");
    }
}
