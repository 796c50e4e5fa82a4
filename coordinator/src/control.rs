//! The control plane's state machine: membership with leases, desired vs. actual assignment,
//! the two-phase hand-over, generations, pauses and drains.
//!
//! Two maps drive everything:
//! - `desired`: task -> worker, the output of the sticky assignment (`assign`);
//! - `actual`: task -> worker that may be running it. A task has at most one actual worker,
//!   its single writer.
//!
//! A task moves in two phases: while `actual != desired` the old worker is told to stop it
//! (revoked); once it acknowledges (Release) or its lease has expired plus the hand-over
//! margin, `actual` is cleared and then set to the desired worker. Every change of `actual`
//! bumps the generation, and is persisted before any worker hears of it.
//!
//! **Re-join during a live lease.** A second Join with a worker id fences the earlier session
//! (its reports are refused as stale), but that session may belong to another process, or to
//! the same one paused (SIGSTOP, a frozen VM), and its lease is still valid on its own side
//! until `send time + lease_ttl - lease_safety_margin` of its last acknowledged heartbeat, where
//! send time <= the coordinator's `last_seen`. So when the previous session of the id was alive,
//! every task it held is *held*: kept in `actual` for the id (nobody else gets it) but left out
//! of the new session's assignment until `old last_seen + lease_ttl + handover_margin`, when
//! that lease cannot be valid any more; [`Control::tick`] lifts the hold (a new generation). A
//! Release or Leave of the new session does not free a held task either. A re-join after the
//! previous session expired, or of a new id, hands the tasks over at once as before. Holds are
//! persisted (task -> worker id), and a restarted coordinator holds them for a full
//! `lease_ttl + handover_margin` from its start, which is never shorter (the old session's
//! `last_seen` was before the restart).
//!
//! **Duplicates.** Workers report, per mirrored partition, records at the target that repeat a
//! source offset already mirrored (a paused former owner's late writes) with their offset
//! ranges, and the task's fencing mode. New ranges are recorded as warnings, and the ranges
//! and a total are kept per (task, topic, partition) across owners (bounded), for status.
//!
//! This module does no network I/O and takes the time as an argument, so it is tested
//! directly; `grpc` and the tick loop in `server` call into it under one async mutex.

use crate::assign::{self, TaskReq, WorkerSlot};
use crate::events::{Level, RecentEvents};
use crate::metrics::Metrics;
use crate::state::{PersistedState, PersistedWorker};
use crate::tasks::TaskDef;
use lockstep_proto as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// Most duplicate ranges kept per (task, topic, partition), oldest dropped first; the total
/// goes on counting.
pub const MAX_DUPLICATE_RANGES: usize = 64;

/// Generations reserved per state write (see `Control::reserved`).
pub const GENERATION_BLOCK: u64 = 1024;

/// Most warnings one heartbeat records for one partition's new duplicate ranges; the rest are
/// summed up in one more.
const MAX_DUPLICATE_EVENTS: usize = 8;

/// Lease timing, from `[coordinator]`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub handover_margin: Duration,
    pub lease_safety_margin: Duration,
}

/// Why a worker call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("unknown worker {0}: its lease expired or the coordinator forgot it; join again")]
    UnknownWorker(String),
    #[error("stale generation {got} from worker {worker}: its session began at generation {session}; a newer join of the same worker id fenced it")]
    StaleGeneration {
        worker: String,
        got: u64,
        session: u64,
    },
    #[error("generation {got} from worker {worker} is newer than the coordinator's {current}")]
    FutureGeneration {
        worker: String,
        got: u64,
        current: u64,
    },
    #[error("worker id must not be empty")]
    EmptyWorkerId,
    #[error("too many workers: {max} are joined (coordinator.max_workers)")]
    TooManyWorkers { max: u32 },
    #[error("unknown flow {0}")]
    UnknownFlow(String),
}

#[derive(Debug, Clone)]
struct Worker {
    capabilities: Vec<String>,
    capacity: u32,
    session_generation: u64,
    hostname: String,
    draining: bool,
    last_seen: Instant,
    /// Set once the lease expired: the worker no longer counts for assignment, and its tasks
    /// are released at `expired_at + handover_margin`.
    expired_at: Option<Instant>,
}

impl Worker {
    fn alive(&self) -> bool {
        self.expired_at.is_none()
    }
}

/// A task withheld from every session until a former session's lease has surely ended.
#[derive(Debug, Clone)]
struct Hold {
    /// The worker id the task stays with (`actual`) meanwhile.
    worker: String,
    until: Instant,
}

/// Who reported a duplicate count: worker id, its session and the task's restarts there. A
/// count only grows within one reporter (a new run audits afresh).
type Reporter = (String, u64, u32);

/// Duplicates of one (task, topic, partition) over every owner the task had.
#[derive(Debug, Clone, Default)]
struct DuplicateLog {
    /// Duplicate records, each counted once as far as the reports tell.
    total: u64,
    /// The latest ranges, oldest first, at most [`MAX_DUPLICATE_RANGES`].
    ranges: VecDeque<pb::DuplicateRange>,
    /// The last report's reporter and count.
    last: Option<(Reporter, u64)>,
}

impl DuplicateLog {
    /// Takes in one report; returns the ranges that are new or grew (a range is known by its
    /// first target and source offsets: the worker extends its latest range in place).
    ///
    /// The total grows by the count's increase while the reporter stays the same; a new
    /// reporter (another worker, session or run) counts the records of new or grown ranges,
    /// plus whatever of its count its ranges do not show (ranges it no longer lists), so a new
    /// owner finding its predecessor's duplicates again does not count them twice.
    fn absorb(
        &mut self,
        reporter: Reporter,
        count: u64,
        reported: &[pb::DuplicateRange],
    ) -> Vec<pb::DuplicateRange> {
        let mut changed = Vec::new();
        let mut by_ranges = 0u64;
        for r in reported {
            let known = self
                .ranges
                .iter_mut()
                .find(|k| k.target_from == r.target_from && k.source_from == r.source_from);
            match known {
                Some(k) if k == r => {}
                Some(k) => {
                    by_ranges += r.records.saturating_sub(k.records);
                    *k = *r;
                    changed.push(*r);
                }
                None => {
                    by_ranges += r.records;
                    if self.ranges.len() >= MAX_DUPLICATE_RANGES {
                        self.ranges.pop_front();
                    }
                    self.ranges.push_back(*r);
                    changed.push(*r);
                }
            }
        }
        let added = match &self.last {
            Some((who, before)) if *who == reporter && count >= *before => count - before,
            _ => {
                let listed: u64 = reported.iter().map(|r| r.records).sum();
                by_ranges + count.saturating_sub(listed)
            }
        };
        self.total += added;
        self.last = Some((reporter, count));
        changed
    }
}

/// The coordinator's in-memory state. See the module doc.
pub struct Control {
    timing: Timing,
    max_workers: u32,
    generation: u64,
    /// The generation the stored state names: always at or above every generation handed
    /// out, so a restarted coordinator never hands out one twice. Reserved in blocks of
    /// [`GENERATION_BLOCK`], so that a Join that changes no assignment (a worker with nothing
    /// to run yet, a flood of made-up ids) needs no state write of its own.
    reserved: u64,
    tasks: Vec<TaskDef>,
    task_index: HashMap<String, usize>,
    workers: BTreeMap<String, Worker>,
    desired: HashMap<String, String>,
    actual: HashMap<String, String>,
    paused: BTreeSet<String>,
    progress: HashMap<String, pb::TaskProgress>,
    /// task -> hold: tasks no session gets before a former session's lease has ended.
    holds: BTreeMap<String, Hold>,
    /// (task, topic, partition) -> duplicates reported there, across owners.
    duplicates: BTreeMap<(String, String, i32), DuplicateLog>,
    /// Set when something that must be persisted changed.
    dirty: bool,
    metrics: Metrics,
    /// Task failures, gaps, duplicates, held tasks and lease expiries, for the status page.
    events: RecentEvents,
}

/// What a heartbeat or join hands back to a worker.
#[derive(Debug, Clone, Default)]
pub struct WorkerView {
    pub generation: u64,
    pub assigned: Vec<pb::TaskSpec>,
    pub revoked: Vec<String>,
    pub draining: bool,
}

impl Control {
    /// A fresh or restored control plane. Restored workers count as seen `now`: each has one
    /// full lease to come back before its tasks move. Restored holds last a full
    /// `lease_ttl + handover_margin` from `now` (see the module doc).
    ///
    /// Without restored state (a first start, or a state loss an operator accepted) nobody
    /// can say which worker still runs what, so every task is held from every worker until
    /// `now + lease_ttl + handover_margin`, by when any lease granted before this start has
    /// ended. (A control plane restored from an empty document holds nothing: it knows that
    /// nothing runs.) Restored entries naming workers the document does not list are not
    /// trusted either (see [`Control::restore`]).
    pub fn new(
        tasks: Vec<TaskDef>,
        timing: Timing,
        max_workers: u32,
        restored: Option<PersistedState>,
        now: Instant,
        metrics: Metrics,
    ) -> Self {
        let task_index = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let mut control = Control {
            timing,
            max_workers,
            generation: 0,
            reserved: 0,
            tasks,
            task_index,
            workers: BTreeMap::new(),
            desired: HashMap::new(),
            actual: HashMap::new(),
            paused: BTreeSet::new(),
            progress: HashMap::new(),
            holds: BTreeMap::new(),
            duplicates: BTreeMap::new(),
            dirty: true,
            metrics,
            events: RecentEvents::new(),
        };
        match restored {
            Some(state) => control.restore(state, now),
            None => control.hold_for_fresh_start(now),
        }
        control.rebalance();
        control.update_gauges();
        control
    }

    /// Rebuilds the state from a restored document (see [`Control::new`]). Sanity rules:
    /// - the generation is at least every restored session's (so a worker never sees it go
    ///   back); the store refuses documents where counting on could wrap
    ///   (`crate::state::MAX_RESTORED_GENERATION`);
    /// - `desired` entries naming a worker not in `workers` are dropped (assignment redoes
    ///   them);
    /// - `actual` entries naming a worker not in `workers` leave `actual` (so the task never
    ///   sits in `revoking` waiting for a worker nobody will ever expire) but are held, under
    ///   that name, for a full lease plus margin: if such a worker did run the task, its lease
    ///   has ended before anyone else gets it;
    /// - `held` entries are kept whoever they name: a hold always ends, and it protects a
    ///   writer the document may not know (the fresh-start hold names nobody).
    fn restore(&mut self, state: PersistedState, now: Instant) {
        let until = now + self.timing.lease_ttl + self.timing.handover_margin;
        let sessions = state.workers.values().map(|w| w.session_generation).max();
        self.generation = state.generation.max(sessions.unwrap_or(0));
        if self.generation != state.generation {
            tracing::warn!(
                stored = state.generation,
                raised_to = self.generation,
                "restored generation is below a worker's session generation; raised so that no worker sees it go back"
            );
        }
        for (id, w) in state.workers {
            self.workers.insert(
                id,
                Worker {
                    capabilities: w.capabilities,
                    capacity: w.capacity,
                    session_generation: w.session_generation,
                    hostname: w.hostname,
                    draining: w.draining,
                    last_seen: now,
                    expired_at: None,
                },
            );
        }
        // Tasks that left the config are dropped: a worker running one stops it, since the
        // assignment it receives is complete.
        let (desired, unknown_desired): (HashMap<_, _>, HashMap<_, _>) = state
            .desired
            .into_iter()
            .filter(|(t, _)| self.task_index.contains_key(t))
            .partition(|(_, w)| self.workers.contains_key(w));
        self.desired = desired;
        let (actual, orphans): (HashMap<_, _>, HashMap<String, String>) = state
            .actual
            .into_iter()
            .filter(|(t, _)| self.task_index.contains_key(t))
            .partition(|(_, w)| self.workers.contains_key(w));
        self.actual = actual;
        self.paused = state.paused_flows;
        // The hold began before the state was written, and the session it waits for was
        // last seen before that: its lease has surely ended a full lease and margin after
        // this restart, whatever time the hold had left.
        self.holds = state
            .held
            .into_iter()
            .filter(|(t, _)| self.task_index.contains_key(t))
            .map(|(t, worker)| (t, Hold { worker, until }))
            .collect();
        if !unknown_desired.is_empty() {
            let mut names: Vec<&str> = unknown_desired.values().map(String::as_str).collect();
            names.sort_unstable();
            names.dedup();
            tracing::warn!(
                tasks = unknown_desired.len(),
                workers = %names.join(","),
                "restored state: desired assignments name workers it does not list; dropped (assigned afresh)"
            );
        }
        if !orphans.is_empty() {
            let mut names: Vec<&str> = orphans.values().map(String::as_str).collect();
            names.sort_unstable();
            names.dedup();
            let names = names.join(", ");
            let (at, wait) = self.wall_clock_of(until, now);
            tracing::warn!(
                tasks = orphans.len(),
                workers = %names,
                until = %at,
                "restored state: tasks name running workers it does not list; held from every worker for lease_ttl + handover_margin, then handed out"
            );
            self.events.record(
                Level::Warning,
                "state",
                format!(
                    "restored state names unknown worker(s) {names} as running {} task(s): they are held from every worker until {at} (in {wait}: a full lease plus the hand-over margin), then handed out",
                    orphans.len()
                ),
            );
            for (task, worker) in orphans {
                self.holds.entry(task).or_insert(Hold { worker, until });
            }
        }
    }

    /// No restored state: holds every task from every worker for a full lease plus the
    /// hand-over margin (see [`Control::new`]). The hold names no worker.
    fn hold_for_fresh_start(&mut self, now: Instant) {
        if self.tasks.is_empty() {
            return;
        }
        let until = now + self.timing.lease_ttl + self.timing.handover_margin;
        self.holds = self
            .tasks
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    Hold {
                        worker: String::new(),
                        until,
                    },
                )
            })
            .collect();
        let (at, _) = self.wall_clock_of(until, now);
        // Logged only: the status event is recorded by the caller, which knows whether this
        // is the store's very first leader (nothing unusual) or not (`crate::leadership`).
        tracing::warn!(
            tasks = self.tasks.len(),
            until = %at,
            "no stored state (first start, or an accepted state loss): every task is held from every worker for lease_ttl + handover_margin, since a worker may still run a task under an earlier lease"
        );
    }

    /// `until` as a wall-clock time and as a wait from `now`, for messages.
    fn wall_clock_of(&self, until: Instant, now: Instant) -> (String, String) {
        let wait = until.saturating_duration_since(now);
        let at = humantime::format_rfc3339_seconds(SystemTime::now() + wait).to_string();
        let wait =
            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)).to_string();
        (at, wait)
    }

    /// What this control plane recorded before it was given the shared ring (the sanity
    /// warnings and the fresh-start hold of [`Control::new`]), oldest first, to be recorded
    /// there.
    pub(crate) fn early_events(&self) -> Vec<crate::events::Event> {
        let mut events = self.events.snapshot();
        events.reverse();
        events
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A new generation; past the reserved block, the next block is reserved and the state
    /// marked for writing (see `reserved`).
    fn bump_generation(&mut self) {
        self.generation = self.generation.saturating_add(1);
        if self.generation > self.reserved {
            self.reserved = self.generation.saturating_add(GENERATION_BLOCK);
            self.dirty = true;
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Snapshot to persist, if anything changed since the last one.
    pub fn take_dirty_snapshot(&mut self) -> Option<PersistedState> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(self.snapshot())
    }

    /// Marks the state as needing a write again (after a failed write).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub fn snapshot(&self) -> PersistedState {
        PersistedState {
            generation: self.generation.max(self.reserved),
            workers: self
                .workers
                .iter()
                .map(|(id, w)| {
                    (
                        id.clone(),
                        PersistedWorker {
                            capabilities: w.capabilities.clone(),
                            capacity: w.capacity,
                            session_generation: w.session_generation,
                            draining: w.draining,
                            hostname: w.hostname.clone(),
                        },
                    )
                })
                .collect(),
            desired: self
                .desired
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            actual: self
                .actual
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            paused_flows: self.paused.clone(),
            held: self
                .holds
                .iter()
                .map(|(t, h)| (t.clone(), h.worker.clone()))
                .collect(),
            stamp: None,
        }
    }

    // ------------------------------------------------------------------------------------
    // Worker calls
    // ------------------------------------------------------------------------------------

    pub fn join(
        &mut self,
        worker_id: &str,
        capabilities: Vec<String>,
        capacity: u32,
        hostname: String,
        now: Instant,
    ) -> Result<WorkerView, ControlError> {
        if worker_id.is_empty() {
            return Err(ControlError::EmptyWorkerId);
        }
        let alive = self.workers.values().filter(|w| w.alive()).count();
        if !self.workers.contains_key(worker_id) && alive >= self.max_workers as usize {
            return Err(ControlError::TooManyWorkers {
                max: self.max_workers,
            });
        }
        self.bump_generation();
        let draining = self.workers.get(worker_id).is_some_and(|w| w.draining);
        // A re-join keeps the tasks the worker holds (`actual` is untouched): either it is the
        // same process coming back (it still runs them) or a restarted one (it runs nothing and
        // starts them again). Either way nobody else writes them. But while the previous
        // session's lease may still be valid on its side (a paused process, or another one
        // using the same id), the new session must not start them: they are held (module doc).
        let previous = self
            .workers
            .get(worker_id)
            .filter(|w| w.alive())
            .map(|w| (w.last_seen, w.session_generation));
        if let Some((last_seen, old_session)) = previous {
            self.hold_tasks_of(worker_id, last_seen, old_session, now);
        }
        self.workers.insert(
            worker_id.to_string(),
            Worker {
                capabilities,
                capacity,
                session_generation: self.generation,
                hostname,
                draining,
                last_seen: now,
                expired_at: None,
            },
        );
        self.metrics.joins.inc();
        // Not dirty by itself: a Join is written when it changes an assignment (rebalance,
        // promote, holds) or crosses the generation reserved ([`Control::bump_generation`]).
        // Otherwise a restarted coordinator that never heard of this session answers its
        // next call "unknown worker", and the worker joins again: nothing is lost.
        self.rebalance();
        self.update_gauges();
        Ok(self.view(worker_id))
    }

    /// Holds every task `worker_id` has until its previous session (last seen at `last_seen`)
    /// can no longer hold a valid lease.
    fn hold_tasks_of(
        &mut self,
        worker_id: &str,
        last_seen: Instant,
        old_session: u64,
        now: Instant,
    ) {
        let until = last_seen + self.timing.lease_ttl + self.timing.handover_margin;
        if until <= now {
            return;
        }
        let tasks: Vec<String> = self
            .actual
            .iter()
            .filter(|(_, w)| w.as_str() == worker_id)
            .map(|(t, _)| t.clone())
            .collect();
        if tasks.is_empty() {
            return;
        }
        self.dirty = true;
        for t in &tasks {
            let hold = self.holds.entry(t.clone()).or_insert_with(|| Hold {
                worker: worker_id.to_string(),
                until,
            });
            hold.worker = worker_id.to_string();
            hold.until = hold.until.max(until);
        }
        let wait = until.saturating_duration_since(now);
        let at = humantime::format_rfc3339_seconds(SystemTime::now() + wait);
        let wait = humantime::format_duration(Duration::from_millis(wait.as_millis() as u64));
        tracing::warn!(
            worker = %worker_id,
            held = tasks.len(),
            until = %at,
            previous_session = old_session,
            "re-joined while its previous session's lease may still be valid: its tasks are held until that lease has surely ended"
        );
        self.events.record(
            Level::Warning,
            format!("worker {worker_id}"),
            format!(
                "re-joined while its previous session (generation {old_session}) still held a lease: its {} task(s) are held from every worker until {at} (in {wait}: that lease plus the hand-over margin), in case the previous process is paused and writes late",
                tasks.len()
            ),
        );
    }

    /// Lifts the holds that are due: the held worker gets its tasks (or gives them up at once
    /// when they are meant for another worker: it never ran them since the hold began).
    fn release_holds(&mut self, now: Instant) -> bool {
        let due: Vec<(String, Hold)> = self
            .holds
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(t, h)| (t.clone(), h.clone()))
            .collect();
        if due.is_empty() {
            return false;
        }
        for (task, hold) in &due {
            self.holds.remove(task);
            if self.actual.get(task) == Some(&hold.worker)
                && self.desired.get(task) != Some(&hold.worker)
            {
                self.actual.remove(task);
                self.progress.remove(task);
            }
        }
        let mut workers: Vec<&str> = due.iter().map(|(_, h)| h.worker.as_str()).collect();
        workers.sort_unstable();
        workers.dedup();
        tracing::info!(
            tasks = due.len(),
            workers = %workers.join(","),
            "hold over: the previous session's lease has ended; held tasks are handed out"
        );
        // The held worker's assignment changes: a new generation.
        self.bump_generation();
        self.dirty = true;
        true
    }

    /// Checks the caller's session and generation, and renews its lease.
    fn authenticate(
        &mut self,
        worker_id: &str,
        generation: u64,
        now: Instant,
    ) -> Result<(), ControlError> {
        let current = self.generation;
        let w = self
            .workers
            .get_mut(worker_id)
            .filter(|w| w.alive())
            .ok_or_else(|| ControlError::UnknownWorker(worker_id.to_string()))?;
        if generation < w.session_generation {
            return Err(ControlError::StaleGeneration {
                worker: worker_id.to_string(),
                got: generation,
                session: w.session_generation,
            });
        }
        if generation > current {
            return Err(ControlError::FutureGeneration {
                worker: worker_id.to_string(),
                got: generation,
                current,
            });
        }
        w.last_seen = now;
        Ok(())
    }

    pub fn heartbeat(
        &mut self,
        worker_id: &str,
        generation: u64,
        progress: Vec<pb::TaskProgress>,
        now: Instant,
    ) -> Result<WorkerView, ControlError> {
        let result = self.authenticate(worker_id, generation, now);
        self.metrics
            .heartbeats
            .with_label_values(&[if result.is_ok() { "ok" } else { "refused" }])
            .inc();
        result?;
        for p in progress {
            // Progress counts only from the task's single writer.
            if self.actual.get(&p.task_id).map(String::as_str) == Some(worker_id) {
                self.note_changes(worker_id, &p);
                self.progress.insert(p.task_id.clone(), p);
            }
        }
        Ok(self.view(worker_id))
    }

    /// Shares the ring where failures, gaps and lease expiries are recorded.
    pub fn set_events(&mut self, events: RecentEvents) {
        self.events = events;
    }

    /// Records what a heartbeat newly reports as wrong: a task that turned failed (or fails
    /// differently), a partition whose gap count grew, duplicate ranges not seen before (kept
    /// in `duplicates`). Steady state records nothing.
    fn note_changes(&mut self, worker_id: &str, p: &pb::TaskProgress) {
        let before = self.progress.get(&p.task_id);
        let failed = pb::TaskState::Failed as i32;
        if p.state == failed && before.is_none_or(|b| b.state != failed || b.message != p.message) {
            self.events.record(
                Level::Error,
                format!("task {}", p.task_id),
                format!(
                    "failed on {worker_id} (restart {}): {}",
                    p.restarts, p.message
                ),
            );
        }
        for part in &p.partitions {
            let gaps_before = before
                .and_then(|b| {
                    b.partitions
                        .iter()
                        .find(|q| q.topic == part.topic && q.partition == part.partition)
                })
                .map_or(0, |q| q.gaps);
            if part.gaps > gaps_before {
                self.events.record(
                    Level::Error,
                    format!("task {}", p.task_id),
                    format!(
                        "gap on {}/{}: source retention overtook the resume point ({} gap(s) so far)",
                        part.topic, part.partition, part.gaps
                    ),
                );
            }
        }
        let session = self
            .workers
            .get(worker_id)
            .map_or(0, |w| w.session_generation);
        for part in &p.partitions {
            let key = (p.task_id.clone(), part.topic.clone(), part.partition);
            if part.duplicates == 0
                && part.duplicate_ranges.is_empty()
                && !self.duplicates.contains_key(&key)
            {
                continue;
            }
            let reporter = (worker_id.to_string(), session, p.restarts);
            let new = self.duplicates.entry(key).or_default().absorb(
                reporter,
                part.duplicates,
                &part.duplicate_ranges,
            );
            let fencing = if part.fencing.is_empty() {
                "unknown"
            } else {
                part.fencing.as_str()
            };
            for r in &new {
                tracing::warn!(
                    task = %p.task_id,
                    worker = %worker_id,
                    topic = %part.topic,
                    partition = part.partition,
                    target_from = r.target_from,
                    target_to = r.target_to,
                    source_from = r.source_from,
                    source_to = r.source_to,
                    records = r.records,
                    fencing,
                    "zombie writes: target records repeat source offsets already mirrored"
                );
            }
            for r in new.iter().take(MAX_DUPLICATE_EVENTS) {
                self.events.record(
                    Level::Warning,
                    format!("task {}", p.task_id),
                    format!(
                        "zombie writes: {}/{} target offsets {}..{} repeat source offsets {}..{} ({} records) — a paused former owner wrote after its lease (fencing = {fencing})",
                        part.topic, part.partition, r.target_from, r.target_to, r.source_from, r.source_to, r.records
                    ),
                );
            }
            if new.len() > MAX_DUPLICATE_EVENTS {
                self.events.record(
                    Level::Warning,
                    format!("task {}", p.task_id),
                    format!(
                        "zombie writes: {}/{}: {} more new duplicate range(s) (`lockstep status` lists them)",
                        part.topic,
                        part.partition,
                        new.len() - MAX_DUPLICATE_EVENTS
                    ),
                );
            }
        }
    }

    /// The worker stopped these tasks: hand them to their desired worker.
    pub fn release(
        &mut self,
        worker_id: &str,
        generation: u64,
        task_ids: &[String],
        now: Instant,
    ) -> Result<u64, ControlError> {
        self.authenticate(worker_id, generation, now)?;
        let mut changed = false;
        for t in task_ids {
            // A held task stays put: the session releasing it never ran it, but a former
            // session of the same id may still be writing it.
            if self.actual.get(t).map(String::as_str) == Some(worker_id)
                && self.desired.get(t).map(String::as_str) != Some(worker_id)
                && !self.holds.contains_key(t)
            {
                self.actual.remove(t);
                self.progress.remove(t);
                changed = true;
            }
        }
        if changed {
            self.dirty = true;
            self.promote();
            self.update_gauges();
        }
        Ok(self.generation)
    }

    /// Clean leave: the worker has stopped all its tasks; hand them over at once (held tasks
    /// when their hold is over: a former session of the id may still write them).
    pub fn leave(
        &mut self,
        worker_id: &str,
        generation: u64,
        now: Instant,
    ) -> Result<(), ControlError> {
        self.authenticate(worker_id, generation, now)?;
        self.workers.remove(worker_id);
        self.actual.retain(|_, w| w != worker_id);
        self.metrics.leaves.inc();
        self.dirty = true;
        self.rebalance();
        self.update_gauges();
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Time and admin
    // ------------------------------------------------------------------------------------

    /// Expires leases, completes hand-overs whose margin has passed and lifts holds that are
    /// due. Call often.
    pub fn tick(&mut self, now: Instant) {
        let ttl = self.timing.lease_ttl;
        let margin = self.timing.handover_margin;
        let mut membership_changed = false;
        for (id, w) in self.workers.iter_mut() {
            if w.expired_at.is_none() && now.duration_since(w.last_seen) > ttl {
                tracing::warn!(worker = %id, "lease expired; its tasks move after the hand-over margin");
                let tasks = self.actual.values().filter(|a| *a == id).count();
                self.events.record(
                    Level::Warning,
                    format!("worker {id}"),
                    format!("lease expired (no heartbeat for {}); its {tasks} task(s) move after the hand-over margin",
                        humantime::format_duration(ttl)),
                );
                w.expired_at = Some(now);
                self.metrics.lease_expirations.inc();
                membership_changed = true;
            }
        }
        let gone: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.expired_at
                    .is_some_and(|at| now.duration_since(at) >= margin)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.workers.remove(id);
            self.actual.retain(|_, w| w != id);
        }
        let holds_lifted = self.release_holds(now);
        if membership_changed || !gone.is_empty() || holds_lifted {
            self.dirty = true;
            self.rebalance();
            self.update_gauges();
        }
    }

    pub fn pause_flow(&mut self, flow: &str, pause: bool) -> Result<u64, ControlError> {
        if !self.tasks.iter().any(|t| t.flow == flow) {
            return Err(ControlError::UnknownFlow(flow.to_string()));
        }
        let changed = if pause {
            self.paused.insert(flow.to_string())
        } else {
            self.paused.remove(flow)
        };
        if changed {
            self.dirty = true;
            self.rebalance();
            self.update_gauges();
        }
        Ok(self.generation)
    }

    /// Moves every task off a worker, and keeps new ones away from it.
    pub fn drain(&mut self, worker_id: &str) -> Result<(u64, u32), ControlError> {
        let w = self
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| ControlError::UnknownWorker(worker_id.to_string()))?;
        w.draining = true;
        self.dirty = true;
        let moving = self
            .actual
            .values()
            .filter(|w| w.as_str() == worker_id)
            .count() as u32;
        self.rebalance();
        self.update_gauges();
        Ok((self.generation, moving))
    }

    // ------------------------------------------------------------------------------------
    // Assignment
    // ------------------------------------------------------------------------------------

    /// Recomputes `desired` (sticky) and promotes what can be promoted.
    fn rebalance(&mut self) {
        let started = std::time::Instant::now();
        let reqs: Vec<TaskReq> = self
            .tasks
            .iter()
            .filter(|t| !self.paused.contains(&t.flow))
            .map(|t| TaskReq {
                id: t.id.clone(),
                kind: t.kind.to_string(),
            })
            .collect();
        let slots: Vec<WorkerSlot> = self
            .workers
            .iter()
            .filter(|(_, w)| w.alive())
            .map(|(id, w)| WorkerSlot {
                id: id.clone(),
                capacity: w.capacity,
                capabilities: w.capabilities.clone(),
                accepts_tasks: !w.draining,
            })
            .collect();
        let plan = assign::assign(&reqs, &slots, &self.desired);
        self.metrics.rebalances.inc();
        self.metrics.tasks_moved.inc_by(plan.moved as u64);
        self.metrics
            .assignment_seconds
            .observe(started.elapsed().as_secs_f64());
        if plan.assignment != self.desired {
            self.desired = plan.assignment;
            self.dirty = true;
        }
        self.promote();
    }

    /// Gives every task without an actual worker (and not held) to its desired one. One
    /// generation bump per batch of changes.
    fn promote(&mut self) {
        let mut changed = false;
        for (task, worker) in &self.desired {
            if !self.actual.contains_key(task) && !self.holds.contains_key(task) {
                self.actual.insert(task.clone(), worker.clone());
                changed = true;
            }
        }
        if changed {
            self.bump_generation();
            self.dirty = true;
        }
    }

    fn spec(&self, task: &TaskDef) -> pb::TaskSpec {
        pb::TaskSpec {
            task_id: task.id.clone(),
            kind: task.kind.to_string(),
            flow: task.flow.clone(),
            site: task.site.clone(),
            index: task.index,
            count: task.count,
            config_json: task.config_json.clone(),
            assigned_generation: self.generation,
        }
    }

    /// What a worker must run now, and what it must stop. Held tasks are in neither list: the
    /// session does not run them (a task missing from `assigned` is stopped if it runs).
    fn view(&self, worker_id: &str) -> WorkerView {
        let mut assigned = Vec::new();
        let mut revoked = Vec::new();
        for (task, w) in &self.actual {
            if w != worker_id || self.holds.contains_key(task) {
                continue;
            }
            if self.desired.get(task) == Some(w) {
                if let Some(def) = self.task_index.get(task).map(|&i| &self.tasks[i]) {
                    assigned.push(self.spec(def));
                }
            } else {
                revoked.push(task.clone());
            }
        }
        assigned.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        revoked.sort();
        WorkerView {
            generation: self.generation,
            assigned,
            revoked,
            draining: self.workers.get(worker_id).is_some_and(|w| w.draining),
        }
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.generation.set(self.generation as i64);
        m.workers
            .set(self.workers.values().filter(|w| w.alive()).count() as i64);
        let mut by_phase: HashMap<&'static str, i64> = HashMap::new();
        let mut by_flow: BTreeMap<(&str, &str, &str, &'static str), i64> = BTreeMap::new();
        for t in &self.tasks {
            let phase = self.phase(&t.id, &t.flow);
            *by_phase.entry(phase).or_default() += 1;
            // Every phase of every (flow, site) is written, at 0 when empty.
            for p in crate::metrics::TASK_PHASES {
                *by_flow
                    .entry((t.flow.as_str(), t.site.as_str(), t.kind, *p))
                    .or_default() += i64::from(*p == phase);
            }
        }
        for phase in crate::metrics::TASK_PHASES {
            m.tasks
                .with_label_values(&[phase])
                .set(by_phase.get(phase).copied().unwrap_or(0));
        }
        for ((flow, site, kind, phase), n) in by_flow {
            m.flow_tasks
                .with_label_values(&[flow, site, kind, phase])
                .set(n);
        }
    }

    fn phase(&self, task: &str, flow: &str) -> &'static str {
        match (self.actual.get(task), self.desired.get(task)) {
            (Some(a), Some(d)) if a == d => "assigned",
            (Some(_), _) => "revoking",
            (None, _) if self.paused.contains(flow) => "paused",
            (None, _) => "unassigned",
        }
    }

    // ------------------------------------------------------------------------------------
    // Status
    // ------------------------------------------------------------------------------------

    /// The task's progress as its current owner reports it, with the duplicates of every
    /// owner since this coordinator started (count and ranges) in place of the owner's own;
    /// a partition only a former owner reported on appears with just its duplicates, and a
    /// task without a report then has one in state UNSPECIFIED.
    fn progress_with_duplicates(&self, task: &str) -> Option<pb::TaskProgress> {
        let mut progress = self.progress.get(task).cloned();
        let start = (task.to_string(), String::new(), i32::MIN);
        for ((_, topic, partition), log) in self
            .duplicates
            .range(start..)
            .take_while(|((t, _, _), _)| t == task)
        {
            let p = progress.get_or_insert_with(|| pb::TaskProgress {
                task_id: task.to_string(),
                ..Default::default()
            });
            let i = match p
                .partitions
                .iter()
                .position(|q| &q.topic == topic && q.partition == *partition)
            {
                Some(i) => i,
                None => {
                    p.partitions.push(pb::PartitionProgress {
                        topic: topic.clone(),
                        partition: *partition,
                        ..Default::default()
                    });
                    p.partitions.len() - 1
                }
            };
            let part = &mut p.partitions[i];
            part.duplicates = log.total.max(part.duplicates);
            part.duplicate_ranges = log.ranges.iter().cloned().collect();
        }
        progress
    }

    pub fn status(&self, now: Instant) -> pb::StatusResponse {
        let ttl = self.timing.lease_ttl;
        let workers = self
            .workers
            .iter()
            .filter(|(_, w)| w.alive())
            .map(|(id, w)| {
                let mut tasks: Vec<String> = self
                    .actual
                    .iter()
                    .filter(|(_, a)| *a == id)
                    .map(|(t, _)| t.clone())
                    .collect();
                tasks.sort();
                pb::WorkerStatus {
                    worker_id: id.clone(),
                    capabilities: w.capabilities.clone(),
                    capacity: w.capacity,
                    session_generation: w.session_generation,
                    lease_remaining_ms: ttl
                        .saturating_sub(now.saturating_duration_since(w.last_seen))
                        .as_millis() as u64,
                    draining: w.draining,
                    tasks,
                    hostname: w.hostname.clone(),
                }
            })
            .collect();
        let tasks = self
            .tasks
            .iter()
            .map(|t| pb::TaskStatus {
                task_id: t.id.clone(),
                kind: t.kind.to_string(),
                flow: t.flow.clone(),
                site: t.site.clone(),
                worker_id: self.actual.get(&t.id).cloned().unwrap_or_default(),
                phase: self.phase(&t.id, &t.flow).to_string(),
                progress: self.progress_with_duplicates(&t.id),
            })
            .collect();
        pb::StatusResponse {
            coordinator_id: String::new(),
            region: String::new(),
            generation: self.generation,
            workers,
            tasks,
            paused_flows: self.paused.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(n: usize) -> Vec<TaskDef> {
        (0..n)
            .map(|i| TaskDef {
                id: format!("f/s/{i}"),
                kind: "kafka",
                flow: "f".into(),
                site: "s".into(),
                index: i as u32,
                count: n as u32,
                config_json: "{}".into(),
            })
            .collect()
    }

    fn timing() -> Timing {
        Timing {
            lease_ttl: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(2),
            handover_margin: Duration::from_secs(1),
            lease_safety_margin: Duration::from_secs(2),
        }
    }

    /// A control plane restored from an empty document: nothing runs, nothing is held.
    fn control(n: usize, now: Instant) -> Control {
        Control::new(
            defs(n),
            timing(),
            100,
            Some(PersistedState::default()),
            now,
            Metrics::new_unregistered(),
        )
    }

    fn caps() -> Vec<String> {
        vec!["kafka".into()]
    }

    fn ids(v: &WorkerView) -> Vec<String> {
        v.assigned.iter().map(|t| t.task_id.clone()).collect()
    }

    #[test]
    fn joins_that_change_no_assignment_need_no_write_and_generations_are_never_reused() {
        let t0 = Instant::now();
        let mut c = control(1, t0);
        c.take_dirty_snapshot();
        let a = c.join("a", caps(), 0, "h".into(), t0).expect("join a");
        assert_eq!(ids(&a).len(), 1);
        let written = c
            .take_dirty_snapshot()
            .expect("a's tasks are an assignment: written");
        // Twenty more workers: nothing to give them (one task, sticky on a).
        let mut last = 0;
        for i in 0..20 {
            let v = c
                .join(&format!("idle{i}"), caps(), 0, "h".into(), t0)
                .expect("join");
            assert!(v.assigned.is_empty());
            last = v.generation;
        }
        assert!(
            c.take_dirty_snapshot().is_none(),
            "joins without an assignment change wrote the state"
        );
        // A coordinator restarted from what was written hands out only newer generations.
        assert!(
            written.generation >= last,
            "{} < {last}",
            written.generation
        );
        let mut restarted = Control::new(
            defs(1),
            timing(),
            100,
            Some(written),
            t0,
            Metrics::new_unregistered(),
        );
        let again = restarted
            .join("idle0", caps(), 0, "h".into(), t0)
            .expect("join");
        assert!(again.generation > last, "{} <= {last}", again.generation);
    }

    #[test]
    fn hand_over_waits_for_release() {
        let t0 = Instant::now();
        let mut c = control(4, t0);
        let a = c.join("a", caps(), 0, "h".into(), t0).expect("join a");
        assert_eq!(a.assigned.len(), 4);
        let b = c.join("b", caps(), 0, "h".into(), t0).expect("join b");
        assert!(b.assigned.is_empty(), "b must wait until a releases");
        let a = c.heartbeat("a", c.generation(), vec![], t0).expect("hb a");
        assert_eq!(a.revoked.len(), 2);
        assert_eq!(a.assigned.len(), 2);
        c.release("a", a.generation, &a.revoked, t0)
            .expect("release");
        let b = c.heartbeat("b", c.generation(), vec![], t0).expect("hb b");
        assert_eq!(ids(&b), a.revoked);
    }

    #[test]
    fn dead_worker_tasks_move_after_ttl_plus_margin() {
        let t0 = Instant::now();
        let mut c = control(4, t0);
        c.join("a", caps(), 0, "h".into(), t0).expect("join a");
        c.join("b", caps(), 0, "h".into(), t0).expect("join b");
        let a = c.heartbeat("a", c.generation(), vec![], t0).expect("hb");
        c.release("a", a.generation, &a.revoked, t0)
            .expect("release");
        let before_b = ids(&c.heartbeat("b", c.generation(), vec![], t0).expect("hb"));
        // b keeps heartbeating, a goes silent.
        let mut now = t0;
        for _ in 0..5 {
            now += Duration::from_secs(2);
            c.heartbeat("b", c.generation(), vec![], now).expect("hb b");
            c.tick(now);
        }
        // 10 s: a's lease is not yet over (strictly greater than ttl).
        assert_eq!(
            ids(&c.heartbeat("b", c.generation(), vec![], now).expect("hb")).len(),
            2
        );
        now += Duration::from_millis(500);
        c.tick(now); // expired
        assert_eq!(
            ids(&c.heartbeat("b", c.generation(), vec![], now).expect("hb")).len(),
            2
        );
        now += Duration::from_secs(1);
        c.tick(now); // margin passed
        let after = ids(&c.heartbeat("b", c.generation(), vec![], now).expect("hb"));
        assert_eq!(after.len(), 4);
        assert!(
            before_b.iter().all(|t| after.contains(t)),
            "b kept its own tasks"
        );
        assert!(matches!(
            c.heartbeat("a", c.generation(), vec![], now),
            Err(ControlError::UnknownWorker(_))
        ));
    }

    #[test]
    fn stale_and_future_generations_are_refused() {
        let t0 = Instant::now();
        let mut c = control(2, t0);
        let first = c.join("a", caps(), 0, "h".into(), t0).expect("join");
        let second = c.join("a", caps(), 0, "h".into(), t0).expect("rejoin");
        assert!(second.generation > first.generation);
        assert!(matches!(
            c.heartbeat("a", first.generation, vec![], t0),
            Err(ControlError::StaleGeneration { .. })
        ));
        assert!(matches!(
            c.heartbeat("a", c.generation() + 1, vec![], t0),
            Err(ControlError::FutureGeneration { .. })
        ));
        assert!(c.heartbeat("a", second.generation, vec![], t0).is_ok());
    }

    #[test]
    fn restore_keeps_assignment_and_accepts_old_sessions() {
        let t0 = Instant::now();
        let mut c = control(6, t0);
        c.join("a", caps(), 0, "h".into(), t0).expect("join");
        c.join("b", caps(), 0, "h".into(), t0).expect("join");
        let a = c.heartbeat("a", c.generation(), vec![], t0).expect("hb");
        c.release("a", a.generation, &a.revoked, t0)
            .expect("release");
        let snap = c.snapshot();
        let gen = c.generation();
        let mut r = Control::new(
            defs(6),
            timing(),
            100,
            Some(snap.clone()),
            t0,
            Metrics::new_unregistered(),
        );
        assert_eq!(r.snapshot().actual, snap.actual);
        assert!(
            r.heartbeat("a", gen, vec![], t0).is_ok(),
            "old session survives a restart"
        );
    }

    #[test]
    fn pause_and_drain_revoke() {
        let t0 = Instant::now();
        let mut c = control(4, t0);
        c.join("a", caps(), 0, "h".into(), t0).expect("join");
        c.join("b", caps(), 0, "h".into(), t0).expect("join");
        let a = c.heartbeat("a", c.generation(), vec![], t0).expect("hb");
        c.release("a", a.generation, &a.revoked, t0)
            .expect("release");
        c.drain("a").expect("drain");
        let a = c.heartbeat("a", c.generation(), vec![], t0).expect("hb");
        assert!(a.assigned.is_empty() && a.draining);
        c.release("a", a.generation, &a.revoked, t0)
            .expect("release");
        assert_eq!(
            c.heartbeat("b", c.generation(), vec![], t0)
                .expect("hb")
                .assigned
                .len(),
            4
        );
        c.pause_flow("f", true).expect("pause");
        let b = c.heartbeat("b", c.generation(), vec![], t0).expect("hb");
        assert!(b.assigned.is_empty());
        assert_eq!(b.revoked.len(), 4);
        assert!(matches!(
            c.pause_flow("nope", true),
            Err(ControlError::UnknownFlow(_))
        ));
    }

    fn hb(c: &mut Control, id: &str, gen: u64, now: Instant) -> WorkerView {
        c.heartbeat(id, gen, vec![], now).expect("heartbeat")
    }

    #[test]
    fn rejoin_during_a_live_lease_holds_the_tasks_until_that_lease_has_ended() {
        let t0 = Instant::now();
        let mut c = control(4, t0);
        let first = c.join("a", caps(), 0, "h".into(), t0).expect("join");
        assert_eq!(first.assigned.len(), 4);
        // The old session's last heartbeat: its lease is valid on its side until at most
        // t0 + 3 + ttl - safety margin; the hold lasts until t0 + 3 + ttl + margin = t0 + 14.
        hb(&mut c, "a", first.generation, t0 + Duration::from_secs(3));
        let t1 = t0 + Duration::from_secs(5);
        let second = c.join("a", caps(), 0, "h2".into(), t1).expect("rejoin");
        assert!(
            second.assigned.is_empty() && second.revoked.is_empty(),
            "{second:?}"
        );
        assert!(matches!(
            c.heartbeat("a", first.generation, vec![], t1),
            Err(ControlError::StaleGeneration { .. })
        ));
        let events = c.events.snapshot();
        assert!(
            events
                .iter()
                .any(|e| e.source == "worker a" && e.message.contains("its 4 task(s) are held")),
            "{events:?}"
        );
        // The new session releasing or leaving does not free them either.
        let all: Vec<String> = (0..4).map(|i| format!("f/s/{i}")).collect();
        c.release("a", second.generation, &all, t1)
            .expect("release");
        let mut now = t1;
        while now < t0 + Duration::from_secs(14) {
            c.tick(now);
            let v = hb(&mut c, "a", second.generation, now);
            assert!(v.assigned.is_empty(), "held at {:?}", now - t0);
            now += Duration::from_millis(500);
        }
        assert_eq!(c.snapshot().held.len(), 4);
        let gen = c.generation();
        c.tick(now);
        assert!(c.generation() > gen, "lifting the hold is a new generation");
        assert!(c.snapshot().held.is_empty());
        assert_eq!(hb(&mut c, "a", second.generation, now).assigned.len(), 4);
    }

    #[test]
    fn held_tasks_go_to_nobody_else_and_move_at_once_when_the_hold_ends() {
        let t0 = Instant::now();
        let mut c = control(4, t0);
        let first = c.join("a", caps(), 0, "h".into(), t0).expect("join");
        let second = c
            .join("a", caps(), 0, "h".into(), t0 + Duration::from_secs(1))
            .expect("rejoin");
        let b = c
            .join("b", caps(), 0, "h".into(), t0 + Duration::from_secs(1))
            .expect("join b");
        assert!(b.assigned.is_empty());
        let mut now = t0 + Duration::from_secs(1);
        while now < t0 + Duration::from_secs(11) {
            c.tick(now);
            assert!(hb(&mut c, "a", second.generation, now).assigned.is_empty());
            assert!(hb(&mut c, "b", b.generation, now).assigned.is_empty());
            now += Duration::from_secs(1);
        }
        c.tick(now);
        let a = hb(&mut c, "a", second.generation, now);
        let b = hb(&mut c, "b", b.generation, now);
        assert_eq!((a.assigned.len(), b.assigned.len()), (2, 2));
        assert!(a.revoked.is_empty(), "never ran them, nothing to revoke");
        assert!(c.heartbeat("a", first.generation, vec![], now).is_err());
    }

    #[test]
    fn rejoin_after_expiry_or_of_a_new_id_gets_the_tasks_at_once() {
        let t0 = Instant::now();
        let mut c = control(4, t0);
        c.join("a", caps(), 0, "h".into(), t0).expect("join");
        let later = t0 + Duration::from_millis(10_500);
        c.tick(later); // expired, hand-over margin not yet over
        let again = c.join("a", caps(), 0, "h".into(), later).expect("rejoin");
        assert_eq!(again.assigned.len(), 4);
        assert!(c.snapshot().held.is_empty());
        let fresh = c.join("n", caps(), 0, "h".into(), later).expect("join n");
        assert!(fresh.revoked.is_empty());
    }

    #[test]
    fn a_restarted_coordinator_keeps_a_hold_for_a_full_lease() {
        let t0 = Instant::now();
        let mut c = control(2, t0);
        c.join("a", caps(), 0, "h".into(), t0).expect("join");
        let second = c
            .join("a", caps(), 0, "h".into(), t0 + Duration::from_secs(1))
            .expect("rejoin");
        let snap = c.snapshot();
        assert_eq!(snap.held.len(), 2);
        let json = serde_json::to_string(&snap).expect("encode");
        let snap: PersistedState = serde_json::from_str(&json).expect("decode");
        let restart = t0 + Duration::from_secs(5);
        let mut r = Control::new(
            defs(2),
            timing(),
            100,
            Some(snap),
            restart,
            Metrics::new_unregistered(),
        );
        // The original hold ended at t0 + 11; the restored one ends at restart + 11.
        let mut now = restart;
        while now < restart + Duration::from_secs(11) {
            r.tick(now);
            assert!(hb(&mut r, "a", second.generation, now).assigned.is_empty());
            now += Duration::from_secs(1);
        }
        r.tick(now);
        assert_eq!(hb(&mut r, "a", second.generation, now).assigned.len(), 2);
    }

    #[test]
    fn a_fresh_start_holds_every_task_for_a_full_lease_and_margin() {
        let t0 = Instant::now();
        let mut c = Control::new(
            defs(4),
            timing(),
            100,
            None,
            t0,
            Metrics::new_unregistered(),
        );
        let a = c.join("a", caps(), 0, "h".into(), t0).expect("join a");
        let b = c.join("b", caps(), 0, "h".into(), t0).expect("join b");
        assert!(a.assigned.is_empty() && b.assigned.is_empty());
        // Persisted as held by nobody: a restart during the hold holds again.
        let snap = c.snapshot();
        assert_eq!(snap.held.len(), 4);
        assert!(snap.actual.is_empty() && snap.held.values().all(String::is_empty));
        let mut now = t0;
        // ttl 10 s + margin 1 s.
        while now < t0 + Duration::from_secs(11) {
            c.tick(now);
            assert!(hb(&mut c, "a", a.generation, now).assigned.is_empty());
            assert!(hb(&mut c, "b", b.generation, now).assigned.is_empty());
            assert!(c.status(now).tasks.iter().all(|t| t.worker_id.is_empty()));
            now += Duration::from_millis(500);
        }
        c.tick(now);
        let a = hb(&mut c, "a", a.generation, now);
        let b = hb(&mut c, "b", b.generation, now);
        assert_eq!((a.assigned.len(), b.assigned.len()), (2, 2));
        assert!(a.revoked.is_empty() && b.revoked.is_empty());
        assert!(c.snapshot().held.is_empty());
    }

    #[test]
    fn a_restart_during_the_fresh_start_hold_holds_again() {
        let t0 = Instant::now();
        let c = Control::new(
            defs(2),
            timing(),
            100,
            None,
            t0,
            Metrics::new_unregistered(),
        );
        let restart = t0 + Duration::from_secs(8);
        let mut r = Control::new(
            defs(2),
            timing(),
            100,
            Some(c.snapshot()),
            restart,
            Metrics::new_unregistered(),
        );
        let a = r.join("a", caps(), 0, "h".into(), restart).expect("join");
        r.tick(t0 + Duration::from_secs(12));
        assert!(hb(&mut r, "a", a.generation, t0 + Duration::from_secs(12))
            .assigned
            .is_empty());
        let end = restart + Duration::from_secs(11);
        r.tick(end);
        assert_eq!(hb(&mut r, "a", a.generation, end).assigned.len(), 2);
    }

    #[test]
    fn restored_entries_naming_unknown_workers_never_stick() {
        let t0 = Instant::now();
        let mut state = PersistedState {
            generation: 10,
            ..Default::default()
        };
        state.workers.insert(
            "a".into(),
            PersistedWorker {
                capabilities: caps(),
                capacity: 0,
                session_generation: 3,
                draining: false,
                hostname: "h".into(),
            },
        );
        for i in 0..4 {
            state.desired.insert(format!("f/s/{i}"), "ghost".into());
        }
        state.actual.insert("f/s/0".into(), "a".into());
        state.desired.insert("f/s/0".into(), "a".into());
        state.actual.insert("f/s/1".into(), "ghost".into());
        state.held.insert("f/s/2".into(), "gone".into());
        let mut c = Control::new(
            defs(4),
            timing(),
            100,
            Some(state),
            t0,
            Metrics::new_unregistered(),
        );
        let snap = c.snapshot();
        assert!(snap.desired.values().all(|w| w == "a"), "{snap:?}");
        assert_eq!(snap.actual.get("f/s/1"), None, "not left revoking");
        assert_eq!(
            snap.held.get("f/s/1").map(String::as_str),
            Some("ghost"),
            "held under its name"
        );
        assert_eq!(snap.held.get("f/s/2").map(String::as_str), Some("gone"));
        assert!(c.status(t0).tasks.iter().all(|t| t.phase != "revoking"));
        assert!(c
            .early_events()
            .iter()
            .any(|e| e.message.contains("unknown worker(s) ghost")));
        // a keeps its task; the others wait a full lease and margin, then go to a.
        assert_eq!(ids(&hb(&mut c, "a", 10, t0)), vec!["f/s/0", "f/s/3"]);
        let mut now = t0;
        while now < t0 + Duration::from_secs(11) {
            c.tick(now);
            assert_eq!(hb(&mut c, "a", 10, now).assigned.len(), 2);
            now += Duration::from_secs(1);
        }
        c.tick(now);
        assert_eq!(hb(&mut c, "a", 10, now).assigned.len(), 4);
    }

    #[test]
    fn a_restored_generation_is_never_below_a_session() {
        let t0 = Instant::now();
        let mut state = PersistedState {
            generation: 2,
            ..Default::default()
        };
        state.workers.insert(
            "a".into(),
            PersistedWorker {
                capabilities: caps(),
                capacity: 0,
                session_generation: 9,
                draining: false,
                hostname: "h".into(),
            },
        );
        let mut c = Control::new(
            defs(1),
            timing(),
            100,
            Some(state),
            t0,
            Metrics::new_unregistered(),
        );
        assert!(c.generation() >= 9);
        assert!(c.heartbeat("a", 9, vec![], t0).is_ok());
    }

    fn dup(target_from: i64, source_from: i64, records: u64) -> pb::DuplicateRange {
        pb::DuplicateRange {
            target_from,
            target_to: target_from + records as i64 - 1,
            source_from,
            source_to: source_from + records as i64 - 1,
            records,
        }
    }

    fn dup_progress(task: &str, count: u64, ranges: Vec<pb::DuplicateRange>) -> pb::TaskProgress {
        pb::TaskProgress {
            task_id: task.into(),
            state: pb::TaskState::Running as i32,
            partitions: vec![pb::PartitionProgress {
                topic: "clicks".into(),
                partition: 3,
                duplicates: count,
                duplicate_ranges: ranges,
                fencing: "leases".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn duplicates_are_warned_once_and_kept_across_owners() {
        let t0 = Instant::now();
        let mut c = control(1, t0);
        let a = c.join("a", caps(), 0, "h".into(), t0).expect("join");
        let task = "f/s/0";
        let r1 = dup(1000, 500, 120);
        c.heartbeat(
            "a",
            a.generation,
            vec![dup_progress(task, 120, vec![r1])],
            t0,
        )
        .expect("hb");
        c.heartbeat(
            "a",
            a.generation,
            vec![dup_progress(task, 120, vec![r1])],
            t0,
        )
        .expect("hb again");
        let warned = |c: &Control| {
            c.events
                .snapshot()
                .into_iter()
                .filter(|e| e.message.starts_with("zombie writes"))
                .map(|e| (e.message, e.count))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            warned(&c),
            vec![("zombie writes: clicks/3 target offsets 1000..1119 repeat source offsets 500..619 (120 records) — a paused former owner wrote after its lease (fencing = leases)".to_string(), 1)]
        );
        // The task moves to b, which finds the same range again and then a new one.
        c.leave("a", a.generation, t0).expect("leave");
        let b = c.join("b", caps(), 0, "h".into(), t0).expect("join b");
        assert_eq!(b.assigned.len(), 1);
        let plain = pb::TaskProgress {
            task_id: task.into(),
            state: pb::TaskState::Running as i32,
            ..Default::default()
        };
        c.heartbeat("b", b.generation, vec![plain], t0)
            .expect("hb b");
        let status = c.status(t0);
        let part = &status.tasks[0]
            .progress
            .as_ref()
            .expect("progress")
            .partitions[0];
        assert_eq!((part.duplicates, part.duplicate_ranges.len()), (120, 1));
        c.heartbeat(
            "b",
            b.generation,
            vec![dup_progress(task, 120, vec![r1])],
            t0,
        )
        .expect("hb b");
        let r2 = dup(5000, 4000, 7);
        c.heartbeat(
            "b",
            b.generation,
            vec![dup_progress(task, 127, vec![r1, r2])],
            t0,
        )
        .expect("hb b");
        assert_eq!(warned(&c).len(), 2, "{:?}", warned(&c));
        let status = c.status(t0);
        let p = status.tasks[0].progress.as_ref().expect("progress");
        assert_eq!(p.partitions[0].duplicates, 127);
        assert_eq!(p.partitions[0].duplicate_ranges, vec![r1, r2]);
        assert_eq!(p.partitions[0].fencing, "leases");
    }

    #[test]
    fn duplicate_log_counts_growth_once_and_is_bounded() {
        let mut log = DuplicateLog::default();
        let w = ("w".to_string(), 1, 0);
        let mut r = dup(10, 5, 2);
        assert_eq!(log.absorb(w.clone(), 2, &[r]).len(), 1);
        // The worker extends its latest range in place.
        r.target_to += 3;
        r.source_to += 3;
        r.records += 3;
        assert_eq!(log.absorb(w.clone(), 5, &[r]), vec![r]);
        assert_eq!((log.total, log.ranges.len()), (5, 1));
        // A restarted run (new reporter) reporting the same range adds nothing.
        assert!(log.absorb(("w".into(), 1, 1), 5, &[r]).is_empty());
        assert_eq!(log.total, 5);
        for i in 0..(MAX_DUPLICATE_RANGES as i64 + 10) {
            log.absorb(("x".into(), 1, 0), 0, &[dup(100 + i * 10, 50 + i * 10, 1)]);
        }
        assert_eq!(log.ranges.len(), MAX_DUPLICATE_RANGES);
    }
}
