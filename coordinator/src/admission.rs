//! Admission of worker calls (join, heartbeat, release, leave) before they reach the one
//! control-state lock, so that a worker flooding calls cannot starve the others.
//!
//! Two bounds, both answered with RESOURCE_EXHAUSTED at once rather than queued:
//! - per worker id, a token bucket (governor, keyed): a burst of [`BURST`] calls, refilled at
//!   [`CALLS_PER_HEARTBEAT`] per heartbeat interval, far above what a well-behaved worker
//!   sends (one heartbeat per interval plus the odd release);
//! - overall, at most `limits.heartbeat_queue` calls admitted at once (a semaphore), so the
//!   lock's wait queue, and the memory behind it, stay bounded whatever the number of callers.
//!
//! Joins are limited per peer address besides ([`JOIN_BURST`], then [`JOINS_PER_SECOND`]): the
//! per-id bucket does nothing against a client that makes up a new id for every Join, and each
//! Join of a new id adds a worker to the persisted state.

use crate::metrics::Metrics;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Calls one worker may make in a burst.
pub const BURST: u32 = 16;
/// Sustained calls per heartbeat interval one worker may make.
pub const CALLS_PER_HEARTBEAT: u32 = 8;
/// Joins one peer address may make in a burst (a host starting all its workers at once).
pub const JOIN_BURST: u32 = 32;
/// Sustained joins per second from one peer address.
pub const JOINS_PER_SECOND: u32 = 4;

pub struct Admission {
    queue: Arc<Semaphore>,
    per_worker: DefaultKeyedRateLimiter<String>,
    joins_per_peer: DefaultKeyedRateLimiter<IpAddr>,
    metrics: Metrics,
}

impl Admission {
    pub fn new(heartbeat_queue: u32, heartbeat_interval: Duration, metrics: Metrics) -> Self {
        let period = (heartbeat_interval / CALLS_PER_HEARTBEAT).max(Duration::from_millis(1));
        // `with_period` is None only for a zero period, excluded just above.
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN));
        let joins = Quota::per_second(NonZeroU32::new(JOINS_PER_SECOND).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(JOIN_BURST).unwrap_or(NonZeroU32::MIN));
        Admission {
            queue: Arc::new(Semaphore::new(heartbeat_queue.max(1) as usize)),
            per_worker: RateLimiter::keyed(quota),
            joins_per_peer: RateLimiter::keyed(joins),
            metrics,
        }
    }

    /// Admits one Join from `peer` (unknown peers, which only in-process tests have, pass).
    pub fn admit_join(&self, peer: Option<IpAddr>) -> Result<(), tonic::Status> {
        let Some(peer) = peer else { return Ok(()) };
        if self.joins_per_peer.check_key(&peer).is_err() {
            self.metrics
                .worker_calls_rejected
                .with_label_values(&["peer_rate"])
                .inc();
            return Err(tonic::Status::resource_exhausted(format!(
                "too many joins from {peer} (more than {JOIN_BURST} at once or {JOINS_PER_SECOND} per second)"
            )));
        }
        Ok(())
    }

    /// Admits one call of `worker_id`, or refuses it. Hold the permit until the call is done.
    pub fn admit(&self, worker_id: &str) -> Result<OwnedSemaphorePermit, tonic::Status> {
        if self.per_worker.check_key(&worker_id.to_string()).is_err() {
            self.metrics
                .worker_calls_rejected
                .with_label_values(&["rate"])
                .inc();
            return Err(tonic::Status::resource_exhausted(format!(
                "worker {worker_id} calls too often (more than {CALLS_PER_HEARTBEAT} per heartbeat interval)"
            )));
        }
        self.queue.clone().try_acquire_owned().map_err(|_| {
            self.metrics
                .worker_calls_rejected
                .with_label_values(&["queue"])
                .inc();
            tonic::Status::resource_exhausted(
                "coordinator busy: too many worker calls at once (coordinator.limits.heartbeat_queue)",
            )
        })
    }

    /// Forgets workers whose bucket is full again (quiet ones), so that the map stays small
    /// even if callers make up many ids.
    pub fn housekeeping(&self) {
        self.per_worker.retain_recent();
        self.per_worker.shrink_to_fit();
        self.joins_per_peer.retain_recent();
        self.joins_per_peer.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flooding_worker_is_limited_and_others_are_not() {
        let a = Admission::new(100, Duration::from_secs(60), Metrics::new_unregistered());
        let mut admitted = 0;
        for _ in 0..100 {
            if a.admit("flood").is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, BURST, "a burst, then refused");
        assert!(a.admit("calm").is_ok(), "another worker is unaffected");
    }

    #[test]
    fn joins_are_limited_per_peer_address() {
        let a = Admission::new(100, Duration::from_secs(60), Metrics::new_unregistered());
        let flood: IpAddr = [127, 0, 0, 9].into();
        let admitted = (0..200)
            .filter(|_| a.admit_join(Some(flood)).is_ok())
            .count();
        assert_eq!(admitted, JOIN_BURST as usize, "a burst, then refused");
        assert!(a.admit_join(Some([127, 0, 0, 10].into())).is_ok());
        assert!(a.admit_join(None).is_ok());
    }

    #[test]
    fn the_queue_bounds_calls_in_flight() {
        let a = Admission::new(2, Duration::from_millis(1), Metrics::new_unregistered());
        let p1 = a.admit("w1").unwrap();
        let _p2 = a.admit("w2").unwrap();
        let refused = a.admit("w3").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        drop(p1);
        assert!(a.admit("w3").is_ok());
    }
}
