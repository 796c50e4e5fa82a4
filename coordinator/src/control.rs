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
//! This module does no network I/O and takes the time as an argument, so it is tested
//! directly; `grpc` and the tick loop in `server` call into it under one async mutex.

use crate::assign::{self, TaskReq, WorkerSlot};
use crate::events::{Level, RecentEvents};
use crate::metrics::Metrics;
use crate::state::{PersistedState, PersistedWorker};
use crate::tasks::TaskDef;
use lockstep_proto as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

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

/// The coordinator's in-memory state. See the module doc.
pub struct Control {
    timing: Timing,
    max_workers: u32,
    generation: u64,
    tasks: Vec<TaskDef>,
    task_index: HashMap<String, usize>,
    workers: BTreeMap<String, Worker>,
    desired: HashMap<String, String>,
    actual: HashMap<String, String>,
    paused: BTreeSet<String>,
    progress: HashMap<String, pb::TaskProgress>,
    /// Set when something that must be persisted changed.
    dirty: bool,
    metrics: Metrics,
    /// Task failures, gaps and lease expiries, for the status page.
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
    /// full lease to come back before its tasks move.
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
            tasks,
            task_index,
            workers: BTreeMap::new(),
            desired: HashMap::new(),
            actual: HashMap::new(),
            paused: BTreeSet::new(),
            progress: HashMap::new(),
            dirty: true,
            metrics,
            events: RecentEvents::new(),
        };
        if let Some(state) = restored {
            control.generation = state.generation;
            for (id, w) in state.workers {
                control.workers.insert(
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
            let known = |t: &String| control.task_index.contains_key(t);
            control.desired = state
                .desired
                .into_iter()
                .filter(|(t, _)| known(t))
                .collect();
            control.actual = state.actual.into_iter().filter(|(t, _)| known(t)).collect();
            control.paused = state.paused_flows;
        }
        control.rebalance();
        control.update_gauges();
        control
    }

    pub fn generation(&self) -> u64 {
        self.generation
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
            generation: self.generation,
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
        self.generation += 1;
        let draining = self.workers.get(worker_id).is_some_and(|w| w.draining);
        // A re-join keeps the tasks the worker holds (`actual` is untouched): either it is the
        // same process coming back (it still runs them) or a restarted one (it runs nothing and
        // starts them again). Either way it is still their only writer.
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
        self.dirty = true;
        self.rebalance();
        self.update_gauges();
        Ok(self.view(worker_id))
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
    /// differently), a partition whose gap count grew. Steady state records nothing.
    fn note_changes(&self, worker_id: &str, p: &pb::TaskProgress) {
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
            if self.actual.get(t).map(String::as_str) == Some(worker_id)
                && self.desired.get(t).map(String::as_str) != Some(worker_id)
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

    /// Clean leave: the worker has stopped all its tasks; hand them over at once.
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

    /// Expires leases and completes hand-overs whose margin has passed. Call often.
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
        if membership_changed || !gone.is_empty() {
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

    /// Gives every task without an actual worker to its desired one. One generation bump per
    /// batch of changes.
    fn promote(&mut self) {
        let mut changed = false;
        for (task, worker) in &self.desired {
            if !self.actual.contains_key(task) {
                self.actual.insert(task.clone(), worker.clone());
                changed = true;
            }
        }
        if changed {
            self.generation += 1;
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

    /// What a worker must run now, and what it must stop.
    fn view(&self, worker_id: &str) -> WorkerView {
        let mut assigned = Vec::new();
        let mut revoked = Vec::new();
        for (task, w) in &self.actual {
            if w != worker_id {
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
                progress: self.progress.get(&t.id).cloned(),
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

    fn control(n: usize, now: Instant) -> Control {
        Control::new(
            defs(n),
            timing(),
            100,
            None,
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
}
