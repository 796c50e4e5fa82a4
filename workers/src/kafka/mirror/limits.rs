//! The mirror's two rate limiters, and the one rule both follow.
//!
//! - bandwidth ([`Bandwidth`], the flow's `bandwidth_limit`): bytes per second to the target, a
//!   token bucket holding one second's worth;
//! - pacing ([`crate::kafka::pacing::Pacer`]): records outstanding at the target, no more than
//!   can land inside the lease's landing window.
//!
//! The rule: a limiter only answers whether the next record may go now and, if not, how long
//! until it may ask again (`None`: go; `Some(wait)`: not yet); it never sleeps. [`hold`] alone
//! waits, in steps of at most [`STEP`], asking again after each; before each step it
//! - stops with [`MirrorError::LeaseLost`] when the lease is gone: no record is queued after
//!   the lease, however long a limiter held it back;
//! - lets the record go when the task is cancelled: the lease still holds, and the stop lands
//!   what was produced, so a limiter never holds a stop back.
//!
//! A budget a limiter can never grant (a record larger than the bandwidth burst) lets the record
//! go rather than hold the flow forever.

use crate::kafka::error::MirrorError;
use crate::kafka::pacing::Pacer;
use crate::task::TaskContext;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// The longest sleep between two asks.
pub(super) const STEP: Duration = Duration::from_millis(100);
/// How long the pacing waits before asking again: it cannot know when deliveries come.
const PACING_WAIT: Duration = Duration::from_millis(1);

/// Waits until `ask` lets the next record go (see the module doc for the rule).
pub(super) fn hold(
    ctx: &TaskContext,
    mut ask: impl FnMut() -> Option<Duration>,
) -> Result<(), MirrorError> {
    while let Some(wait) = ask() {
        if !ctx.lease.valid() {
            return Err(MirrorError::LeaseLost);
        }
        if ctx.shutdown.is_cancelled() {
            return Ok(());
        }
        std::thread::sleep(wait.min(STEP));
    }
    Ok(())
}

/// The pacing as a limiter: may one more record be outstanding now (`sent` records so far,
/// `acked` delivery reports); if not, ask again in [`PACING_WAIT`].
pub(super) fn pacing(pacer: &mut Pacer, sent: u64, acked: u64) -> Option<Duration> {
    let outstanding = sent.saturating_sub(acked);
    match pacer.allowance(acked, outstanding, Instant::now()) {
        Some(allowed) if outstanding >= allowed => Some(PACING_WAIT),
        _ => None,
    }
}

/// The bandwidth limit: a token bucket in KiB (so that large limits fit in u32), one second's
/// worth deep.
pub(super) struct Bandwidth {
    limiter: DefaultDirectRateLimiter,
    /// The bucket's depth in KiB: the most one record can take.
    burst_kib: u32,
}

impl Bandwidth {
    pub(super) fn new(bytes_per_second: u64) -> Self {
        let kib =
            NonZeroU32::new(((bytes_per_second / 1024).max(1)).min(u64::from(u32::MAX)) as u32)
                .unwrap_or(NonZeroU32::MIN);
        Bandwidth {
            limiter: RateLimiter::direct(Quota::per_second(kib)),
            burst_kib: kib.get(),
        }
    }

    /// May a record of `bytes` go now (and then its budget is spent); if not, how long until
    /// it may.
    pub(super) fn wait(&self, bytes: usize) -> Option<Duration> {
        let kib = ((bytes / 1024).max(1) as u32).min(self.burst_kib);
        let n = NonZeroU32::new(kib)?;
        match self.limiter.check_n(n) {
            Ok(Ok(())) | Err(_) => None,
            Ok(Err(not_until)) => Some(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bandwidth_spends_its_burst_then_says_how_long_to_wait() {
        let b = Bandwidth::new(64 * 1024);
        assert_eq!(b.wait(64 * 1024), None, "one second's worth at once");
        let wait = b.wait(32 * 1024).expect("the bucket is empty");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Larger than the bucket: it takes the whole bucket, never more.
        let b = Bandwidth::new(1024);
        assert_eq!(b.wait(1024 * 1024), None);
    }
}
