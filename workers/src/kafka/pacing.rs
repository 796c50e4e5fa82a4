//! How much a task may have queued or in flight to the target: no more than can land well
//! inside the lease's landing window (its safety margin plus the hand-over margin), so that a
//! worker that is paused
//! (SIGSTOP, a VM freeze) holds little that could land after a successor started.
//!
//! The allowance is half the window's worth of records at the measured delivery rate, and never
//! below [`FLOOR`]: a fast broker gets a large allowance within a few deliveries (it grows with
//! the rate, like a congestion window), a slow one a small allowance. What a paused worker still
//! sends when it wakes is at most this much, and the audit of the target reports it.
//!
//! Pure arithmetic on the delivery counter and the clock; no I/O, no waiting: the mirror waits
//! on it by the same rule as on its bandwidth limit (`mirror/limits.rs`).

use std::time::{Duration, Instant};

/// The least allowance: a batch of records, whatever the rate.
pub const FLOOR: u64 = 500;
/// Rate samples are taken at most this often.
const SAMPLE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Pacer {
    window: Option<Duration>,
    /// Deliveries per second (smoothed).
    rate: f64,
    last_acked: u64,
    last_at: Instant,
}

impl Pacer {
    /// `window`: the landing window (None: no lease bounds the task; no limit).
    pub fn new(window: Option<Duration>, now: Instant) -> Self {
        Pacer {
            window,
            rate: 0.0,
            last_acked: 0,
            last_at: now,
        }
    }

    /// Records that may be outstanding (sent, not yet delivered or failed) now; None: any.
    /// `acked`: deliveries so far (successful or failed); `outstanding`: sent minus acked.
    pub fn allowance(&mut self, acked: u64, outstanding: u64, now: Instant) -> Option<u64> {
        let window = self.window?;
        let dt = now.saturating_duration_since(self.last_at);
        if dt >= SAMPLE {
            let delivered = acked.saturating_sub(self.last_acked);
            // Only while there is something to deliver does the count measure the broker.
            if outstanding > 0 || delivered > 0 {
                let sample = delivered as f64 / dt.as_secs_f64();
                self.rate = if self.rate == 0.0 {
                    sample
                } else {
                    0.7 * self.rate + 0.3 * sample
                };
            }
            self.last_acked = acked;
            self.last_at = now;
        }
        Some(((self.rate * window.as_secs_f64() / 2.0) as u64).max(FLOOR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_window_no_limit() {
        let now = Instant::now();
        assert_eq!(Pacer::new(None, now).allowance(0, 1_000_000, now), None);
    }

    #[test]
    fn the_allowance_follows_the_delivery_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(Duration::from_secs(2)), t0);
        assert_eq!(p.allowance(0, 10, t0), Some(FLOOR));
        // 100,000 deliveries per second: half of a 2 s window is 100,000 records.
        let a = p.allowance(10_000, 5_000, t0 + Duration::from_millis(100));
        assert_eq!(a, Some(100_000));
        // A slow broker (1,000/s) brings it down to 1,000 records over a few samples.
        let mut acked = 10_000;
        let mut t = t0 + Duration::from_millis(100);
        let mut last = a;
        for _ in 0..30 {
            t += Duration::from_millis(100);
            acked += 100;
            last = p.allowance(acked, 5_000, t);
        }
        let last = last.unwrap_or(0);
        assert!((1_000..1_010).contains(&last), "{last}");
    }

    #[test]
    fn idle_time_does_not_count_as_a_slow_broker() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(Duration::from_secs(2)), t0);
        p.allowance(10_000, 1, t0 + Duration::from_millis(100));
        let busy = p.allowance(10_000, 0, t0 + Duration::from_secs(60));
        assert_eq!(busy, Some(100_000));
    }
}
