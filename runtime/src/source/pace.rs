//! [`Pacer`]: frames at a fixed rate, as a camera delivers them. The demo
//! camera paces its scenes with it, and `dla-tools bench --fps` its timed
//! frames, so both idle between frames the same way.

use std::time::{Duration, Instant};

/// Waits out the rest of each frame period.
#[derive(Debug, Clone)]
pub struct Pacer {
    period: Duration,
    next_due: Option<Instant>,
}

impl Pacer {
    /// A pace of `fps` frames per second (positive and finite: the caller
    /// checks what the user gave).
    pub fn new(fps: f64) -> Pacer {
        Pacer {
            period: Duration::from_secs_f64(1.0 / fps),
            next_due: None,
        }
    }

    /// Time between two frames.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Sleeps until the next frame is due; the first call returns at once.
    /// A frame that ran late is not caught up on in a burst: the next one
    /// may start right away, and the pace goes on from there.
    pub fn wait(&mut self) {
        let now = Instant::now();
        let due = self.next_due.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        self.next_due = Some(due.max(Instant::now() - self.period) + self.period);
    }
}
