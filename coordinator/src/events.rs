//! Recent errors and warnings, for the status page and `/api/v1/errors`: the last few things
//! that went wrong (a task failed, a partition hit a gap, a lease expired, a site could not be
//! read, a datasource diverged, a state write failed), newest first.
//!
//! It is a bounded ring, not a log: the same complaint repeated from the same place (a site
//! down for an hour, a task failing every retry) stays one entry whose count and `last_at`
//! grow, so one noisy source cannot push every other entry out. Everything recorded here is
//! also logged where it happens; this only keeps it where an operator looks first.

use lockstep_drift::{DriftReport, Verdict};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// Entries kept; older ones fall off.
pub const CAPACITY: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

/// One recent complaint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// First time this complaint was seen (RFC 3339, UTC).
    pub first_at: String,
    /// Last time it was seen.
    pub last_at: String,
    /// How many times in a row it was seen from `source`.
    pub count: u64,
    pub level: Level,
    /// Where: `task clicks/site-b/0`, `worker w1`, `drift clicks @ site-b`, `state`.
    pub source: String,
    pub message: String,
}

/// A cheap, cloneable handle on the ring.
#[derive(Debug, Clone, Default)]
pub struct RecentEvents {
    inner: Arc<Mutex<VecDeque<Event>>>,
}

impl RecentEvents {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a complaint. If the newest entry from the same source says the same, it is
    /// counted there instead of added again.
    pub fn record(&self, level: Level, source: impl Into<String>, message: impl Into<String>) {
        let (source, message) = (source.into(), message.into());
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        // A panic while holding the lock cannot leave the ring half-updated (every update is
        // one push or one field write), so a poisoned lock is still safe to use.
        let mut ring = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let repeat = ring
            .iter()
            .position(|e| e.source == source)
            .filter(|&i| ring[i].message == message && ring[i].level == level);
        if let Some(mut e) = repeat.and_then(|i| ring.remove(i)) {
            e.count += 1;
            e.last_at = now;
            ring.push_front(e);
            return;
        }
        ring.push_front(Event {
            first_at: now.clone(),
            last_at: now,
            count: 1,
            level,
            source,
            message,
        });
        ring.truncate(CAPACITY);
    }

    /// From a drift report: sites that could not be read and datasources that diverged (one
    /// entry per site or datasource, counted while the same complaint repeats). The drift
    /// poller hands it every report.
    pub fn record_drift(&self, report: &DriftReport) {
        for ds in &report.datasources {
            for site in &ds.sites {
                if let Some(error) = &site.error {
                    self.record(
                        Level::Error,
                        format!("drift {} @ {}", ds.datasource, site.site),
                        error.clone(),
                    );
                }
            }
            if ds.verdict == Verdict::Diverged {
                self.record(
                    Level::Warning,
                    format!("drift {}", ds.datasource),
                    format!("diverged: {}", ds.reason),
                );
            }
        }
    }

    /// The entries, newest first.
    pub fn snapshot(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_from_one_source_are_counted_not_added() {
        let r = RecentEvents::new();
        r.record(Level::Error, "task a", "broker down");
        r.record(Level::Warning, "worker w1", "lease expired");
        r.record(Level::Error, "task a", "broker down");
        let s = r.snapshot();
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!((s[0].source.as_str(), s[0].count), ("task a", 2));
        assert_eq!(s[1].source, "worker w1");
        // A different message from the same source is a new entry.
        r.record(Level::Error, "task a", "auth failed");
        let s = r.snapshot();
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].message.as_str(), s[0].count), ("auth failed", 1));
    }

    #[test]
    fn the_ring_is_bounded() {
        let r = RecentEvents::new();
        for i in 0..(CAPACITY + 20) {
            r.record(Level::Error, format!("task {i}"), "failed");
        }
        let s = r.snapshot();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(s[0].source, format!("task {}", CAPACITY + 19));
    }
}
