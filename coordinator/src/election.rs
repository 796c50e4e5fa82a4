//! Leader election among the coordinators of a region that share one state store: one leader
//! writes state and answers workers; the others are standbys that redirect to it (as Druid's
//! Coordinator and Overlord do).
//!
//! The lease is a document beside the state, `leader.json` ([`Lease`]): holder, epoch,
//! advertised addresses and a renewal counter, written only by compare-and-swap
//! ([`crate::cas`]). The rules:
//! - **Take**: a standby writes a new lease (epoch + 1) over the version it read when there is
//!   none, when it is released, when it has not changed for `lease_ttl` as measured on the
//!   standby's own monotonic clock from when it first saw that version (no wall clocks are
//!   compared), or (fs) when the holder kept the [`HolderLock`] and the lock is now free: the
//!   OS dropped it, the holder is gone.
//! - **Renew**: the leader rewrites its lease over its last version every `renew_interval`.
//!   It may act as leader until `sent + lease_ttl - renew_interval`, `sent` being when the
//!   last successful renewal was sent. A standby takes over no earlier than `lease_ttl` after
//!   that write landed, so the two never overlap; a leader that could not renew in time stops
//!   answering by itself, even when paused or cut off (the check runs before every answer).
//! - **Release**: on shutdown the leader marks its lease released, so a standby takes over at
//!   its next read instead of after the TTL.
//! - **Fence**: a deposed leader that wakes up finds the lease changed (its renewal is
//!   refused) and the state document changed (its writes are refused, [`crate::state`]).
//!
//! This module holds the protocol; [`crate::leadership`] runs it and switches the process
//! between leader and standby.

use crate::cas::{CasError, CasStore, Expect, HolderLock, Tag};
use lockstep_config::ElectionConfig;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime};

pub const LEASE_FILE: &str = "leader.json";
/// The fs holder lock, beside the lease.
pub const LOCK_FILE: &str = "leader.lock";

/// The lease document, `leader.json`. Every write differs from the one before (renewals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The leader's coordinator id.
    pub holder: String,
    /// Random per process: tells a restarted coordinator with the same id from its former
    /// self.
    pub instance: String,
    /// +1 at every change of leader; stamped on every state write.
    pub epoch: u64,
    /// Advertised gRPC address (standbys redirect workers and the CLI there).
    pub grpc: String,
    /// Advertised HTTP address (standbys redirect `/` and `/api/...` there).
    pub http: String,
    pub renewals: u64,
    /// The holder's lease TTL; standbys wait for the longer of theirs and this.
    pub ttl_ms: u64,
    /// Set by a leader that stepped down cleanly: take over at once.
    #[serde(default)]
    pub released: bool,
    /// The holder keeps the fs [`HolderLock`]: once the lock is free, the holder is gone.
    #[serde(default)]
    pub locked: bool,
    /// Wall-clock times for people reading the file; the protocol never uses them.
    pub acquired_at: String,
    pub renewed_at: String,
    /// lockstep version of the holder.
    #[serde(default)]
    pub version: String,
}

/// This coordinator as the election knows it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub instance: String,
    pub grpc: String,
    pub http: String,
}

impl Identity {
    /// A fresh identity: `instance` is random, so it differs between two runs of one id.
    pub fn new(id: String, grpc: String, http: String) -> Self {
        Identity {
            id,
            instance: format!("{:016x}", rand::random::<u64>()),
            grpc,
            http,
        }
    }
}

/// The active coordinator as a standby knows it (from the lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub id: String,
    pub epoch: u64,
    pub grpc: String,
    pub http: String,
}

impl From<&Lease> for LeaderInfo {
    fn from(l: &Lease) -> Self {
        LeaderInfo {
            id: l.holder.clone(),
            epoch: l.epoch,
            grpc: l.grpc.clone(),
            http: l.http.clone(),
        }
    }
}

/// What a standby's look at the lease found.
#[derive(Debug)]
pub enum Poll {
    /// This coordinator holds the lease now, at `epoch`; it may lead until `valid_until`.
    Acquired {
        epoch: u64,
        valid_until: Instant,
        reason: &'static str,
    },
    /// Another coordinator leads (`None`: nobody that we know of, for now).
    Standby { leader: Option<LeaderInfo> },
}

/// What a leader's renewal found.
#[derive(Debug)]
pub enum Renewal {
    /// Still the leader; `valid_until` is extended when this renewal's send time is known.
    Held { valid_until: Option<Instant> },
    /// Another coordinator took the lease: step down.
    Lost { leader: Option<LeaderInfo> },
}

/// Counts of lease writes, reported to the caller for metrics: (op, result).
pub type WriteOutcome = (&'static str, &'static str);

/// One coordinator's side of the election. Not shared: the leadership loop owns it.
pub struct Elector {
    cas: CasStore,
    lock: Option<HolderLock>,
    me: Identity,
    config: ElectionConfig,
    /// Standby: the lease version last seen and when it was first seen.
    seen: Option<(Tag, Instant)>,
    /// Leader: the lease as last written and its version.
    held: Option<(Lease, Tag)>,
    /// The epoch of the lease as last read or written (for metrics).
    epoch: u64,
    /// Lease writes since the caller last asked (op, result).
    outcomes: Vec<WriteOutcome>,
}

impl Elector {
    pub fn new(cas: CasStore, me: Identity, config: ElectionConfig) -> Result<Self, CasError> {
        let lock = cas.holder_lock(LOCK_FILE)?;
        Ok(Elector {
            cas,
            lock,
            me,
            config,
            seen: None,
            held: None,
            epoch: 0,
            outcomes: Vec::new(),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.me
    }

    pub fn config(&self) -> ElectionConfig {
        self.config
    }

    /// The lease epoch last read or written.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// True while this elector holds the lease (as far as it knows).
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// Lease writes since the last call, as (op, result) for metrics.
    pub fn take_outcomes(&mut self) -> Vec<WriteOutcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// How long a successful renewal sent at `sent` lets this coordinator lead.
    fn valid_until(&self, sent: Instant) -> Instant {
        sent + self
            .config
            .lease_ttl
            .saturating_sub(self.config.renew_interval)
    }

    /// Standby step: reads the lease and takes it when the rules allow (module doc).
    pub async fn poll(&mut self) -> Result<Poll, CasError> {
        if self.held.is_some() {
            // Already leading: a poll is a renewal.
            return Ok(match self.renew().await? {
                Renewal::Held { valid_until } => Poll::Acquired {
                    epoch: self.epoch,
                    valid_until: valid_until.unwrap_or_else(Instant::now),
                    reason: "held",
                },
                Renewal::Lost { leader } => Poll::Standby { leader },
            });
        }
        let now = Instant::now();
        let current = self.cas.read(LEASE_FILE).await?;
        let (tag, previous, reason) = match current {
            None => (None, None, "no lease yet"),
            Some((bytes, tag)) => {
                let lease = match serde_json::from_slice::<Lease>(&bytes) {
                    Ok(l) => l,
                    Err(e) => {
                        // Unreadable (edited by hand?): treat it as a holder that never renews.
                        tracing::error!(error = %e, file = LEASE_FILE, "the lease is not valid JSON; it is taken over once it stays unchanged for lease_ttl");
                        if self.expired(&tag, now, self.config.lease_ttl) {
                            return self.take(Some(tag), 0, "unreadable lease").await;
                        }
                        return Ok(Poll::Standby { leader: None });
                    }
                };
                self.epoch = self.epoch.max(lease.epoch);
                let ttl = self
                    .config
                    .lease_ttl
                    .max(Duration::from_millis(lease.ttl_ms));
                let reason = if lease.instance == self.me.instance {
                    Some("our own lease")
                } else if lease.released {
                    Some("released by its holder")
                } else if lease.locked && self.lock_free()? {
                    Some("its holder's lock is free: the holder is gone")
                } else if self.expired(&tag, now, ttl) {
                    Some("not renewed within lease_ttl")
                } else {
                    None
                };
                match reason {
                    Some(r) => (Some(tag), Some(lease), r),
                    None => {
                        return Ok(Poll::Standby {
                            leader: Some(LeaderInfo::from(&lease)),
                        })
                    }
                }
            }
        };
        let epoch = previous.as_ref().map(|l| l.epoch).unwrap_or(0);
        self.take(tag, epoch, reason).await
    }

    /// True once `tag` has been the lease version for `ttl` (first sighting starts the clock).
    fn expired(&mut self, tag: &Tag, now: Instant, ttl: Duration) -> bool {
        match &self.seen {
            Some((t, since)) if t == tag => now.duration_since(*since) >= ttl,
            _ => {
                self.seen = Some((tag.clone(), now));
                false
            }
        }
    }

    /// Takes the holder lock if it is free (fs only). The caller releases it when the
    /// takeover does not happen.
    fn lock_free(&mut self) -> Result<bool, CasError> {
        match &mut self.lock {
            None => Ok(false),
            Some(l) => l.try_acquire().map_err(|source| CasError::Io {
                what: self.cas.describe().to_string(),
                name: LOCK_FILE.to_string(),
                source,
            }),
        }
    }

    async fn take(
        &mut self,
        tag: Option<Tag>,
        previous_epoch: u64,
        reason: &'static str,
    ) -> Result<Poll, CasError> {
        let locked = match &mut self.lock {
            Some(l) => l.try_acquire().unwrap_or(false),
            None => false,
        };
        let now = wall_clock();
        let lease = Lease {
            holder: self.me.id.clone(),
            instance: self.me.instance.clone(),
            epoch: previous_epoch.max(self.epoch) + 1,
            grpc: self.me.grpc.clone(),
            http: self.me.http.clone(),
            renewals: 0,
            ttl_ms: self.config.lease_ttl.as_millis() as u64,
            released: false,
            locked,
            acquired_at: now.clone(),
            renewed_at: now,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let expect = match &tag {
            Some(t) => Expect::Tag(t),
            None => Expect::Absent,
        };
        let sent = Instant::now();
        let result = self.cas.write(LEASE_FILE, to_json(&lease), expect).await;
        self.seen = None;
        match result {
            Ok(new_tag) => {
                self.outcomes.push(("acquire", "ok"));
                self.epoch = lease.epoch;
                let epoch = lease.epoch;
                self.held = Some((lease, new_tag));
                Ok(Poll::Acquired {
                    epoch,
                    valid_until: self.valid_until(sent),
                    reason,
                })
            }
            Err(e) => {
                self.release_lock();
                if e.is_conflict() {
                    // Another standby was faster; the next read shows who.
                    self.outcomes.push(("acquire", "conflict"));
                    Ok(Poll::Standby { leader: None })
                } else {
                    self.outcomes.push(("acquire", "error"));
                    Err(e)
                }
            }
        }
    }

    /// Leader step: rewrites the lease over its last version.
    pub async fn renew(&mut self) -> Result<Renewal, CasError> {
        let Some((lease, tag)) = self.held.clone() else {
            return Ok(Renewal::Lost { leader: None });
        };
        let mut next = lease.clone();
        next.renewals += 1;
        next.renewed_at = wall_clock();
        if !next.locked {
            // Taken over without the lock (its former holder was alive but silent): take it
            // as soon as that holder lets go, so the next failover is immediate again.
            if let Some(l) = &mut self.lock {
                next.locked = l.try_acquire().unwrap_or(false);
            }
        }
        let sent = Instant::now();
        match self
            .cas
            .write(LEASE_FILE, to_json(&next), Expect::Tag(&tag))
            .await
        {
            Ok(new_tag) => {
                self.outcomes.push(("renew", "ok"));
                self.held = Some((next, new_tag));
                Ok(Renewal::Held {
                    valid_until: Some(self.valid_until(sent)),
                })
            }
            Err(e) if e.is_conflict() => {
                // One of our own earlier renewals may have landed late (a timeout that went
                // through): then the lease is still ours, in a version we did not see.
                let found = self.cas.read(LEASE_FILE).await?;
                match found.and_then(|(b, t)| Some((serde_json::from_slice::<Lease>(&b).ok()?, t)))
                {
                    Some((l, t)) if l.instance == self.me.instance && l.epoch == lease.epoch => {
                        self.outcomes.push(("renew", "ok"));
                        self.held = Some((l, t));
                        Ok(Renewal::Held { valid_until: None })
                    }
                    other => {
                        self.outcomes.push(("renew", "conflict"));
                        self.abandon();
                        let leader = other.map(|(l, _)| {
                            self.epoch = self.epoch.max(l.epoch);
                            LeaderInfo::from(&l)
                        });
                        Ok(Renewal::Lost { leader })
                    }
                }
            }
            Err(e) => {
                self.outcomes.push(("renew", "error"));
                Err(e)
            }
        }
    }

    /// Clean step-down: marks the lease released (a standby takes over at its next read),
    /// then lets go of the lock. Errors are logged: a standby then takes over after the TTL.
    pub async fn release(&mut self) {
        let Some((lease, tag)) = self.held.take() else {
            self.release_lock();
            return;
        };
        let mut next = lease;
        next.renewals += 1;
        next.released = true;
        next.renewed_at = wall_clock();
        match self
            .cas
            .write(LEASE_FILE, to_json(&next), Expect::Tag(&tag))
            .await
        {
            Ok(_) => {
                self.outcomes.push(("release", "ok"));
                tracing::info!(epoch = next.epoch, "leadership released");
            }
            Err(e) => {
                self.outcomes.push((
                    "release",
                    if e.is_conflict() { "conflict" } else { "error" },
                ));
                tracing::warn!(error = %e, "could not release the lease; a standby takes over once it expires");
            }
        }
        self.release_lock();
    }

    /// Stops holding the lease without writing (deposed, or could not renew in time).
    pub fn abandon(&mut self) {
        self.held = None;
        self.release_lock();
    }

    fn release_lock(&mut self) {
        if let Some(l) = &mut self.lock {
            l.release();
        }
    }
}

fn to_json(lease: &Lease) -> Vec<u8> {
    // A struct of strings and integers always serialises.
    serde_json::to_vec_pretty(lease).unwrap_or_default()
}

fn wall_clock() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// What this process is in the election, shared with every handler.
pub struct Leadership {
    me: Identity,
    state: std::sync::Mutex<RoleState>,
    /// Woken when a handler finds this coordinator deposed (its state write was fenced).
    pub lost: tokio::sync::Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Before the first look at the lease.
    Starting,
    Standby,
    Leader,
}

#[derive(Debug)]
struct RoleState {
    role: Role,
    /// Leader: may answer until then.
    valid_until: Option<Instant>,
    /// Standby: the active coordinator, when known.
    leader: Option<LeaderInfo>,
    epoch: u64,
}

impl Leadership {
    pub fn new(me: Identity) -> Self {
        Leadership {
            me,
            state: std::sync::Mutex::new(RoleState {
                role: Role::Starting,
                valid_until: None,
                leader: None,
                epoch: 0,
            }),
            lost: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RoleState> {
        // Every field stays valid whatever a panicking holder did: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn identity(&self) -> &Identity {
        &self.me
    }

    pub fn role(&self) -> Role {
        self.state().role
    }

    pub fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// True when this coordinator may act as leader at `now`: it leads and its lease, as last
    /// renewed, still covers `now`. Checked before every answer to a worker and every tick.
    pub fn is_leading(&self, now: Instant) -> bool {
        let s = self.state();
        s.role == Role::Leader && s.valid_until.is_some_and(|v| now < v)
    }

    /// `Ok` when this coordinator serves; otherwise where to send the caller (`None`: no
    /// active coordinator is known right now).
    pub fn serving(&self) -> Result<(), Option<LeaderInfo>> {
        if self.is_leading(Instant::now()) {
            return Ok(());
        }
        let s = self.state();
        match s.role {
            Role::Standby => Err(s.leader.clone()),
            Role::Starting | Role::Leader => Err(None),
        }
    }

    /// The standby's view: the active coordinator, if known.
    pub fn leader(&self) -> Option<LeaderInfo> {
        let s = self.state();
        match s.role {
            Role::Leader => Some(LeaderInfo {
                id: self.me.id.clone(),
                epoch: s.epoch,
                grpc: self.me.grpc.clone(),
                http: self.me.http.clone(),
            }),
            _ => s.leader.clone(),
        }
    }

    pub(crate) fn set_leader(&self, epoch: u64, valid_until: Instant) {
        let mut s = self.state();
        s.role = Role::Leader;
        s.epoch = epoch;
        s.valid_until = Some(valid_until);
        s.leader = None;
    }

    pub(crate) fn extend(&self, valid_until: Instant) {
        let mut s = self.state();
        if s.role == Role::Leader {
            s.valid_until = Some(valid_until);
        }
    }

    pub(crate) fn set_standby(&self, leader: Option<LeaderInfo>) {
        let mut s = self.state();
        s.role = Role::Standby;
        s.valid_until = None;
        if let Some(l) = &leader {
            s.epoch = s.epoch.max(l.epoch);
        }
        s.leader = leader;
    }

    /// Stops answering at once (a fenced state write showed another leader) and wakes the
    /// leadership loop to step down.
    pub fn revoke(&self) {
        self.state().valid_until = None;
        self.lost.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_config::ObjectStore;

    fn elector(dir: &std::path::Path, id: &str, ttl_ms: u64) -> Elector {
        let cas = CasStore::new(
            &ObjectStore::fs(dir.to_string_lossy()),
            Duration::from_secs(5),
        )
        .expect("fs store");
        Elector::new(
            cas,
            Identity::new(
                id.to_string(),
                format!("http://{id}:7400"),
                format!("http://{id}:7401"),
            ),
            ElectionConfig {
                lease_ttl: Duration::from_millis(ttl_ms),
                renew_interval: Duration::from_millis(ttl_ms / 5),
            },
        )
        .expect("elector")
    }

    fn acquired(p: &Poll) -> Option<u64> {
        match p {
            Poll::Acquired { epoch, .. } => Some(*epoch),
            Poll::Standby { .. } => None,
        }
    }

    #[tokio::test]
    async fn first_takes_second_follows_and_release_hands_over_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = elector(dir.path(), "a", 60_000);
        let mut b = elector(dir.path(), "b", 60_000);
        assert_eq!(acquired(&a.poll().await.expect("poll")), Some(1));
        match b.poll().await.expect("poll") {
            Poll::Standby { leader: Some(l) } => {
                assert_eq!((l.id.as_str(), l.grpc.as_str()), ("a", "http://a:7400"))
            }
            other => panic!("b must follow a: {other:?}"),
        }
        assert!(matches!(
            a.renew().await.expect("renew"),
            Renewal::Held {
                valid_until: Some(_)
            }
        ));
        a.release().await;
        assert_eq!(acquired(&b.poll().await.expect("poll")), Some(2));
        assert!(matches!(
            a.poll().await.expect("poll"),
            Poll::Standby { leader: Some(_) }
        ));
        assert_eq!(
            a.take_outcomes(),
            vec![("acquire", "ok"), ("renew", "ok"), ("release", "ok")]
        );
    }

    #[tokio::test]
    async fn a_dead_holders_free_lock_means_immediate_takeover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = elector(dir.path(), "a", 60_000);
        let mut b = elector(dir.path(), "b", 60_000);
        assert_eq!(acquired(&a.poll().await.expect("poll")), Some(1));
        assert!(acquired(&b.poll().await.expect("poll")).is_none());
        // The process dies: its open file, and with it the flock, goes away; the lease
        // document stays as it was, unreleased.
        drop(a);
        match b.poll().await.expect("poll") {
            Poll::Acquired { epoch, reason, .. } => {
                assert_eq!(epoch, 2);
                assert!(reason.contains("lock is free"), "{reason}");
            }
            other => panic!("expected a takeover, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_silent_holder_is_replaced_after_the_ttl_and_then_fenced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = elector(dir.path(), "a", 300);
        let mut b = elector(dir.path(), "b", 300);
        assert_eq!(acquired(&a.poll().await.expect("poll")), Some(1));
        // a keeps its lock (a paused process does) but stops renewing.
        assert!(acquired(&b.poll().await.expect("poll")).is_none());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            acquired(&b.poll().await.expect("poll")).is_none(),
            "not before the TTL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        match b.poll().await.expect("poll") {
            Poll::Acquired { epoch, reason, .. } => {
                assert_eq!(epoch, 2);
                assert!(reason.contains("lease_ttl"), "{reason}");
            }
            other => panic!("expected a takeover, got {other:?}"),
        }
        // a wakes up: its renewal is refused, it learns who leads now.
        match a.renew().await.expect("renew") {
            Renewal::Lost { leader: Some(l) } => assert_eq!((l.id.as_str(), l.epoch), ("b", 2)),
            other => panic!("a must be deposed: {other:?}"),
        }
        assert!(!a.holds());
        // b, which took over without the lock, gets it now that a let go.
        assert!(matches!(
            b.renew().await.expect("renew"),
            Renewal::Held { .. }
        ));
        let (bytes, _) = b.cas.read(LEASE_FILE).await.expect("read").expect("lease");
        let lease: Lease = serde_json::from_slice(&bytes).expect("lease json");
        assert!(lease.locked && lease.holder == "b", "{lease:?}");
    }

    #[test]
    fn leadership_answers_only_while_the_lease_covers_now() {
        let l = Leadership::new(Identity::new(
            "me".into(),
            "http://me:7400".into(),
            "http://me:7401".into(),
        ));
        assert_eq!(l.serving(), Err(None), "starting");
        let now = Instant::now();
        l.set_leader(3, now + Duration::from_secs(60));
        assert!(l.is_leading(now));
        assert_eq!(l.serving(), Ok(()));
        assert!(!l.is_leading(now + Duration::from_secs(61)));
        l.revoke();
        assert!(!l.is_leading(now), "revoked at once");
        let other = LeaderInfo {
            id: "other".into(),
            epoch: 4,
            grpc: "http://other:7400".into(),
            http: "http://other:7401".into(),
        };
        l.set_standby(Some(other.clone()));
        assert_eq!(l.serving(), Err(Some(other)));
        assert_eq!(l.epoch(), 4);
    }
}
