//! The daemon's clock: wall-clock milliseconds at start plus monotonic
//! time since, so the engine sees time that never goes backwards and the
//! journal sees times an operator can read.
//!
//! Monotonic time is tokio's, so a runtime whose time is paused (the core
//! harness's virtual clock) moves this clock and the core's timers alike.

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use crate::engine::Millis;

/// Monotonic milliseconds anchored to the wall clock at start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_wall_ms: Millis,
}

impl Clock {
    /// Anchor now.
    pub fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis);
        Clock {
            start: Instant::now(),
            start_wall_ms: wall,
        }
    }

    /// Anchor now at `wall_ms` (the core harness starts its clock at 0).
    pub fn starting_at(wall_ms: Millis) -> Clock {
        Clock {
            start: Instant::now(),
            start_wall_ms: wall_ms,
        }
    }

    /// Now, in ms since the epoch (monotonic).
    pub fn now(&self) -> Millis {
        self.start_wall_ms + self.start.elapsed().as_millis() as Millis
    }

    /// When the daemon started.
    pub fn started(&self) -> Millis {
        self.start_wall_ms
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
