//! One sync cycle of one (flow, site, shard), and the task that runs cycles forever.
//!
//! A cycle: load the manifest; list the target when the manifest is missing (or when
//! `delete` or `verify = "checksum"` needs it); stream the recursive source listing, deciding
//! each object as it arrives ([`super::plan::decide`]) and executing copies concurrently while
//! the listing goes on; then plan deletes for what left the source; flush the manifest as
//! objects finish; compact it at the end.
//!
//! Memory: the manifest records of the shard (a `BTreeMap`, about 200 bytes plus the key per
//! object), plus at most [`QUEUE_LIMIT`] queued jobs (the listing pauses beyond that), plus
//! `concurrency` × one chunk in flight. The listing itself is streamed page by page.
//!
//! Everything runs on one task with `select!`: the listing, job completions, a 500 ms tick
//! (manifest flush, progress), and shutdown. Only job futures (copy, verify, delete) run
//! concurrently, so the records have a single owner and need no lock.

use super::copy::{self, CopyOptions, Limiter};
use super::manifest::{self, Line, Manifest};
use super::plan::{self, Action, ObjMeta, PlanSummary, Reason, Record, TargetView};
use super::store::{self, LOCKSTEP_DIR};
use super::{SyncError, SyncSpec};
use crate::metrics::WorkerMetrics;
use crate::task::{LeaseGuard, Progress, Task, TaskContext, TaskError};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lockstep_config::VerifyMode;
use lockstep_proto as pb;
use opendal::{EntryMode, Operator};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Queued jobs beyond which the listing pauses.
pub const QUEUE_LIMIT: usize = 100_000;
/// Temp files of fs writes older than this are leftovers of a killed process.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Counters of one task run (cumulative over its cycles), reported in heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    pub deleted: u64,
    pub adopted: u64,
    pub failures: u64,
    pub verify_mismatches: u64,
    pub cycles: u64,
}

/// What one cycle did (or, for a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    pub plan: PlanSummary,
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    pub deleted: u64,
    pub adopted: u64,
    pub failures: u64,
    pub verify_mismatches: u64,
    pub listed: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Default)]
struct Slot {
    rec: Option<Record>,
    /// The target object, when the target was listed and has it.
    target: Option<ObjMeta>,
    /// Seen in this cycle's source listing (or copied in it).
    seen: bool,
}

enum Job {
    Copy {
        key: String,
        src: ObjMeta,
        reason: Reason,
    },
    Verify {
        key: String,
        src: ObjMeta,
        crc32: u32,
    },
    Delete {
        key: String,
    },
}

impl Job {
    fn key(&self) -> &str {
        match self {
            Job::Copy { key, .. } | Job::Verify { key, .. } | Job::Delete { key } => key,
        }
    }
}

enum Done {
    Copied {
        key: String,
        src: ObjMeta,
        copied: copy::Copied,
        reason: Reason,
    },
    Verified {
        key: String,
        target: ObjMeta,
    },
    Deleted {
        key: String,
    },
    Failed {
        key: String,
        op: &'static str,
        error: String,
    },
    Cancelled,
}

/// A shard as a cycle sees it: the manifest's records, plus what the listings say. This is
/// the memory a cycle needs in proportion to the shard's object count.
pub struct ShardState {
    slots: BTreeMap<String, Slot>,
}

impl ShardState {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Loads a shard's manifest from `dir` of the site store into the cycle's shape.
pub async fn load_state(target: &Operator, dir: &str) -> Result<(Manifest, ShardState), SyncError> {
    let (manifest, records) = Manifest::load(target, dir).await?;
    let slots = records
        .into_iter()
        .map(|(k, rec)| {
            (
                k,
                Slot {
                    rec: Some(rec),
                    ..Slot::default()
                },
            )
        })
        .collect();
    Ok((manifest, ShardState { slots }))
}

/// Pending work: (source mtime, job id) -> bytes, for the oldest-pending figure.
#[derive(Default)]
struct Pending {
    by_age: BTreeSet<(i64, u64)>,
    bytes: u64,
}

/// Runs cycles for one (flow, site, shard).
pub struct Syncer {
    pub spec: SyncSpec,
    source: Operator,
    target: Operator,
    src_prefix: String,
    dst_prefix: String,
    copy_opts: CopyOptions,
    metrics: WorkerMetrics,
    progress: Progress,
    pub totals: Totals,
    fs_target: bool,
}

impl Syncer {
    pub fn new(
        spec: SyncSpec,
        metrics: WorkerMetrics,
        progress: Progress,
    ) -> Result<Self, SyncError> {
        let source = store::operator(&spec.source)?;
        let target = store::operator(&spec.target)?;
        let user_metadata = target.info().capability().write_with_user_metadata;
        metrics.init_objects(&spec.flow_name, &spec.site_name);
        Ok(Syncer {
            src_prefix: store::dir_prefix(&spec.flow.prefix),
            dst_prefix: store::dir_prefix(&spec.flow.target_prefix),
            copy_opts: CopyOptions {
                chunk: copy::CHUNK,
                // The flow's limit is per site: each of the site's shards gets its share.
                limiter: Limiter::new(
                    spec.flow
                        .bandwidth_limit
                        .map(|b| (b / u64::from(spec.shards.max(1))).max(1)),
                ),
                user_metadata,
            },
            fs_target: spec.target.service == lockstep_config::StoreService::Fs,
            spec,
            source,
            target,
            metrics,
            progress,
            totals: Totals::default(),
        })
    }

    fn labels(&self) -> [&str; 2] {
        [&self.spec.flow_name, &self.spec.site_name]
    }

    /// The key relative to `prefix`, or None for lockstep's own files and keys outside it.
    fn relative<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
        let rel = path.strip_prefix(prefix)?;
        if rel.is_empty() || path.starts_with(LOCKSTEP_DIR) {
            return None;
        }
        Some(rel)
    }

    /// One cycle. `dry_run` plans and reports without writing anything.
    pub async fn cycle(
        &mut self,
        dry_run: bool,
        shutdown: &CancellationToken,
        lease: &LeaseGuard,
    ) -> Result<CycleReport, SyncError> {
        let started = Instant::now();
        let flow = self.spec.flow.clone();
        let (shard, shards) = (self.spec.shard, self.spec.shards);
        let mdir = manifest::dir(&self.spec.flow_name, shard, shards);
        self.set_message("loading manifest");
        let (mut manifest, state) = load_state(&self.target, &mdir).await?;
        let mut slots = state.slots;
        let list_target = !manifest.existed || flow.delete || flow.verify == VerifyMode::Checksum;
        if list_target {
            self.set_message("listing target");
            self.list_target(&mut slots, shutdown).await?;
        }
        if self.fs_target && !dry_run {
            self.clean_stale_temp().await;
        }
        self.set_message("syncing");

        let mut report = CycleReport::default();
        let mut lister = self
            .source
            .lister_with(&self.src_prefix)
            .recursive(true)
            .await
            .map_err(|source| SyncError::List {
                what: format!("source {}", self.spec.source.describe()),
                source,
            })?;
        let mut listing = true;
        let mut deletes_planned = false;
        let mut queue: VecDeque<(u64, i64, u64, Job)> = VecDeque::new();
        let mut inflight = FuturesUnordered::new();
        let mut pending = Pending::default();
        let mut next_id = 0u64;
        let cycle_start_ms = manifest::now_ms();
        let jobs_cancel = CancellationToken::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let concurrency = flow.concurrency.max(1) as usize;
        let mut outcome: Result<(), SyncError> = Ok(());

        loop {
            // Start queued jobs up to the concurrency limit.
            while outcome.is_ok() && inflight.len() < concurrency {
                let Some((id, age, bytes, job)) = queue.pop_front() else {
                    break;
                };
                if !lease.valid() {
                    // Another worker may own this shard now: stop writing at once.
                    queue.push_front((id, age, bytes, job));
                    outcome = Err(SyncError::LeaseLost);
                    jobs_cancel.cancel();
                    break;
                }
                let (source, target) = (self.source.clone(), self.target.clone());
                let (sp, dp) = (self.src_prefix.clone(), self.dst_prefix.clone());
                let opts = self.copy_opts.clone();
                let cancel = jobs_cancel.clone();
                inflight.push(async move {
                    let done = run_job(job, &source, &target, &sp, &dp, &opts, &cancel).await;
                    (id, age, bytes, done)
                });
            }
            if outcome.is_ok() && !listing && !deletes_planned {
                deletes_planned = true;
                let gone = || {
                    slots
                        .iter()
                        .filter(|(_, s)| !s.seen && (s.rec.is_some() || s.target.is_some()))
                };
                // An empty source listing with copies on record is far more likely a wrong
                // prefix or a source outage than a wish to empty every site.
                let refuse = flow.delete && report.listed == 0 && gone().next().is_some();
                if refuse {
                    tracing::warn!(flow = %self.spec.flow_name, site = %self.spec.site_name, shard, objects = gone().count(), "the source listed no object: not deleting anything at the site");
                }
                for (key, _) in gone() {
                    if !flow.delete || refuse {
                        break;
                    }
                    report.plan.delete_objects += 1;
                    report.plan.note(key, "delete");
                    if !dry_run {
                        let job = Job::Delete { key: key.clone() };
                        pending.by_age.insert((cycle_start_ms, next_id));
                        queue.push_back((next_id, cycle_start_ms, 0, job));
                        next_id += 1;
                    }
                }
                continue;
            }
            let finished = if outcome.is_err() {
                inflight.is_empty()
            } else {
                !listing && deletes_planned && queue.is_empty() && inflight.is_empty()
            };
            if finished {
                break;
            }
            tokio::select! {
                Some((id, age, bytes, done)) = inflight.next(), if !inflight.is_empty() => {
                    pending.by_age.remove(&(age, id));
                    pending.bytes = pending.bytes.saturating_sub(bytes);
                    self.apply(done, &mut slots, &mut manifest, &mut report);
                    if let Err(e) = manifest.flush(false).await {
                        self.fail("manifest", &mdir, &e.to_string(), &mut report);
                        outcome = outcome.and(Err(e));
                        jobs_cancel.cancel();
                    }
                }
                entry = lister.next(), if listing && outcome.is_ok() && queue.len() < QUEUE_LIMIT => {
                    match entry {
                        None => listing = false,
                        Some(Err(source)) => {
                            self.fail("list", &self.src_prefix.clone(), &source.to_string(), &mut report);
                            outcome = Err(SyncError::List {
                                what: format!("source {}", self.spec.source.describe()),
                                source,
                            });
                            jobs_cancel.cancel();
                        }
                        Some(Ok(e)) => {
                            if e.metadata().mode() != EntryMode::FILE {
                                continue;
                            }
                            let Some(rel) = Self::relative(&self.src_prefix, e.path()) else {
                                continue;
                            };
                            if !plan::in_shard(rel, shard, shards) {
                                continue;
                            }
                            report.listed += 1;
                            let src = copy::meta_of(e.metadata());
                            let slot = slots.entry(rel.to_string()).or_default();
                            slot.seen = true;
                            let view = match (&slot.target, list_target) {
                                (Some(t), _) => TargetView::Present(t),
                                (None, true) => TargetView::Absent,
                                (None, false) => TargetView::NotListed,
                            };
                            let action = plan::decide(&src, slot.rec.as_ref(), view, flow.verify);
                            let job = match action {
                                Action::Skip => {
                                    report.plan.skip_objects += 1;
                                    report.plan.skip_bytes += src.size;
                                    report.skipped += 1;
                                    self.totals.skipped += 1;
                                    self.metrics.objects_skipped.with_label_values(&self.labels()).inc();
                                    None
                                }
                                Action::Adopt => {
                                    report.plan.adopt_objects += 1;
                                    report.plan.note(rel, "adopt");
                                    if !dry_run {
                                        let t = slot.target.clone().unwrap_or_default();
                                        let rec = Record {
                                            key: rel.to_string(),
                                            size: src.size,
                                            etag: src.etag.clone(),
                                            md5: src.md5.clone(),
                                            mtime_ms: src.mtime_ms,
                                            crc32: None,
                                            target_etag: t.etag,
                                            target_mtime_ms: t.mtime_ms,
                                        };
                                        manifest.append(Line::Put(rec.clone()));
                                        slot.rec = Some(rec);
                                        report.adopted += 1;
                                        self.totals.adopted += 1;
                                    }
                                    None
                                }
                                Action::Copy(reason) => {
                                    report.plan.copy_objects += 1;
                                    report.plan.copy_bytes += src.size;
                                    report.plan.note(rel, reason.as_str());
                                    Some(Job::Copy { key: rel.to_string(), src: src.clone(), reason })
                                }
                                Action::VerifyTarget => {
                                    report.plan.verify_objects += 1;
                                    report.plan.note(rel, "verify");
                                    let crc32 = slot.rec.as_ref().and_then(|r| r.crc32).unwrap_or(0);
                                    Some(Job::Verify { key: rel.to_string(), src: src.clone(), crc32 })
                                }
                            };
                            if let (Some(job), false) = (job, dry_run) {
                                let age = src.mtime_ms.unwrap_or(cycle_start_ms);
                                pending.by_age.insert((age, next_id));
                                pending.bytes += src.size;
                                queue.push_back((next_id, age, src.size, job));
                                next_id += 1;
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = manifest.flush(false).await {
                        self.fail("manifest", &mdir, &e.to_string(), &mut report);
                        outcome = outcome.and(Err(e));
                        jobs_cancel.cancel();
                    }
                    self.report(&pending, queue.len() + inflight.len());
                    if outcome.is_ok() && !dry_run && !lease.valid() {
                        outcome = Err(SyncError::LeaseLost);
                        jobs_cancel.cancel();
                    }
                }
                _ = shutdown.cancelled(), if outcome.is_ok() => {
                    // In-flight writes abort (nothing partial stays visible); finished ones
                    // are recorded below.
                    outcome = Err(SyncError::Cancelled);
                    jobs_cancel.cancel();
                }
            }
        }
        // Record what finished, whatever happens next.
        if !dry_run {
            manifest.flush(true).await?;
        }
        pending = Pending::default();
        self.report(&pending, 0);
        outcome?;
        if !dry_run {
            self.set_message("compacting manifest");
            manifest
                .compact(slots.values().filter_map(|s| s.rec.as_ref()))
                .await?;
            self.totals.cycles += 1;
            self.metrics
                .objects_cycles
                .with_label_values(&self.labels())
                .inc();
        }
        report.elapsed = started.elapsed();
        self.report(&pending, 0);
        Ok(report)
    }

    /// Lists the target prefix into `slots` (this shard's keys only).
    async fn list_target(
        &self,
        slots: &mut BTreeMap<String, Slot>,
        shutdown: &CancellationToken,
    ) -> Result<(), SyncError> {
        let what = || format!("target {}", self.spec.target.describe());
        let mut lister = self
            .target
            .lister_with(&self.dst_prefix)
            .recursive(true)
            .await
            .map_err(|source| SyncError::List {
                what: what(),
                source,
            })?;
        loop {
            let next = tokio::select! {
                n = lister.next() => n,
                _ = shutdown.cancelled() => return Err(SyncError::Cancelled),
            };
            let Some(e) = next else { break };
            let e = e.map_err(|source| SyncError::List {
                what: what(),
                source,
            })?;
            if e.metadata().mode() != EntryMode::FILE {
                continue;
            }
            let Some(rel) = Self::relative(&self.dst_prefix, e.path()) else {
                continue;
            };
            if plan::in_shard(rel, self.spec.shard, self.spec.shards) {
                slots.entry(rel.to_string()).or_default().target =
                    Some(copy::meta_of(e.metadata()));
            }
        }
        Ok(())
    }

    /// Removes temp files that a killed process left in the fs atomic-write folder.
    async fn clean_stale_temp(&self) {
        let dir = format!("{LOCKSTEP_DIR}tmp/");
        let Ok(entries) = self.target.list(&dir).await else {
            return;
        };
        let now = manifest::now_ms();
        for e in entries {
            let m = copy::meta_of(e.metadata());
            if e.metadata().mode() == EntryMode::FILE
                && m.mtime_ms
                    .is_some_and(|t| now - t > STALE_TEMP.as_millis() as i64)
            {
                let _ = self.target.delete(e.path()).await;
            }
        }
    }

    fn apply(
        &mut self,
        done: Done,
        slots: &mut BTreeMap<String, Slot>,
        manifest: &mut Manifest,
        report: &mut CycleReport,
    ) {
        let labels = self.labels().map(str::to_string);
        match done {
            Done::Copied {
                key,
                src,
                copied,
                reason,
            } => {
                let rec = Record {
                    key: key.clone(),
                    size: src.size,
                    etag: src.etag,
                    md5: src.md5,
                    mtime_ms: src.mtime_ms,
                    crc32: Some(copied.crc32),
                    target_etag: copied.target.etag.clone(),
                    target_mtime_ms: copied.target.mtime_ms,
                };
                manifest.append(Line::Put(rec.clone()));
                let slot = slots.entry(key).or_default();
                slot.rec = Some(rec);
                slot.target = Some(copied.target);
                slot.seen = true;
                report.copied += 1;
                report.copied_bytes += copied.bytes;
                self.totals.copied += 1;
                self.totals.copied_bytes += copied.bytes;
                self.metrics
                    .objects_copied
                    .with_label_values(&[&labels[0], &labels[1], reason.as_str()])
                    .inc();
                self.metrics
                    .objects_copied_bytes
                    .with_label_values(&labels)
                    .inc_by(copied.bytes);
                if reason == Reason::TargetChanged {
                    report.verify_mismatches += 1;
                    self.totals.verify_mismatches += 1;
                    self.metrics
                        .objects_verify_mismatches
                        .with_label_values(&labels)
                        .inc();
                }
            }
            Done::Verified { key, target } => {
                if let Some(slot) = slots.get_mut(&key) {
                    if let Some(rec) = &mut slot.rec {
                        rec.target_etag = target.etag.clone();
                        rec.target_mtime_ms = target.mtime_ms;
                        manifest.append(Line::Put(rec.clone()));
                    }
                    slot.target = Some(target);
                }
            }
            Done::Deleted { key } => {
                if slots.remove(&key).is_some_and(|s| s.rec.is_some()) {
                    manifest.append(Line::Del { key });
                }
                report.deleted += 1;
                self.totals.deleted += 1;
                self.metrics
                    .objects_deleted
                    .with_label_values(&labels)
                    .inc();
            }
            Done::Failed { key, op, error } => self.fail(op, &key, &error, report),
            Done::Cancelled => {}
        }
    }

    fn fail(&mut self, op: &'static str, key: &str, error: &str, report: &mut CycleReport) {
        tracing::warn!(flow = %self.spec.flow_name, site = %self.spec.site_name, shard = self.spec.shard, op, key, error, "object operation failed; retried next cycle");
        report.failures += 1;
        self.totals.failures += 1;
        self.metrics
            .objects_failures
            .with_label_values(&[&self.spec.flow_name, &self.spec.site_name, op])
            .inc();
    }

    fn set_message(&self, msg: &str) {
        let m = format!("cycle {}: {msg}", self.totals.cycles + 1);
        self.progress.update(|t| t.message = m);
    }

    /// Publishes totals and pending figures to the heartbeat progress and the gauges.
    fn report(&self, pending: &Pending, pending_objects: usize) {
        let oldest_ms = pending
            .by_age
            .first()
            .map(|(t, _)| (manifest::now_ms() - t).max(0) as u64)
            .unwrap_or(0);
        let t = &self.totals;
        let objects = pb::ObjectProgress {
            objects_copied: t.copied,
            bytes_copied: t.copied_bytes,
            objects_pending: pending_objects as u64,
            bytes_pending: pending.bytes,
            oldest_pending_age_ms: oldest_ms,
            failures: t.failures,
            verify_mismatches: t.verify_mismatches,
            objects_skipped: t.skipped,
            objects_deleted: t.deleted,
            objects_adopted: t.adopted,
            cycles: t.cycles,
        };
        self.progress.update(|p| {
            p.records = objects.objects_copied;
            p.bytes = objects.bytes_copied;
            p.objects = Some(objects);
        });
        let shard = self.spec.shard.to_string();
        let l = [
            self.spec.flow_name.as_str(),
            self.spec.site_name.as_str(),
            shard.as_str(),
        ];
        self.metrics
            .objects_pending
            .with_label_values(&l)
            .set(pending_objects as i64);
        self.metrics
            .objects_pending_bytes
            .with_label_values(&l)
            .set(pending.bytes as i64);
        self.metrics
            .objects_oldest_pending_age
            .with_label_values(&l)
            .set((oldest_ms / 1000) as i64);
    }
}

async fn run_job(
    job: Job,
    source: &Operator,
    target: &Operator,
    src_prefix: &str,
    dst_prefix: &str,
    opts: &CopyOptions,
    cancel: &CancellationToken,
) -> Done {
    let key = job.key().to_string();
    let from = format!("{src_prefix}{key}");
    let to = format!("{dst_prefix}{key}");
    let failed = |op, e: &dyn std::fmt::Display| Done::Failed {
        key: key.clone(),
        op,
        error: e.to_string(),
    };
    match job {
        Job::Copy { src, reason, .. } => {
            match copy::copy_object(source, target, &from, &to, &src, opts, cancel).await {
                Ok(copied) => Done::Copied {
                    key: key.clone(),
                    src,
                    copied,
                    reason,
                },
                Err(copy::CopyError::Cancelled) => Done::Cancelled,
                Err(e) => failed("copy", &e),
            }
        }
        Job::Verify { src, crc32, .. } => match copy::checksum(target, &to, cancel).await {
            Ok((crc, n)) if crc == crc32 && n == src.size => match target.stat(&to).await {
                Ok(m) => Done::Verified {
                    key: key.clone(),
                    target: copy::meta_of(&m),
                },
                Err(e) => failed("verify", &e),
            },
            Ok(_) => {
                tracing::warn!(key = %key, "target object differs from what was copied; copying again");
                match copy::copy_object(source, target, &from, &to, &src, opts, cancel).await {
                    Ok(copied) => Done::Copied {
                        key: key.clone(),
                        src,
                        copied,
                        reason: Reason::TargetChanged,
                    },
                    Err(copy::CopyError::Cancelled) => Done::Cancelled,
                    Err(e) => failed("copy", &e),
                }
            }
            Err(copy::CopyError::Cancelled) => Done::Cancelled,
            Err(e) => failed("verify", &e),
        },
        Job::Delete { .. } => match target.delete(&to).await {
            Ok(()) => Done::Deleted { key: key.clone() },
            Err(e) => failed("delete", &e),
        },
    }
}

/// The task: cycles every `interval` until stopped.
pub struct SyncTask {
    pub spec: SyncSpec,
    pub metrics: WorkerMetrics,
}

#[async_trait::async_trait]
impl Task for SyncTask {
    async fn run(self: Box<Self>, ctx: TaskContext) -> Result<(), TaskError> {
        use tracing::Instrument;
        let span = tracing::info_span!("objects", flow = %self.spec.flow_name, site = %self.spec.site_name, shard = self.spec.shard, task = %self.spec.task_id);
        let (metrics, flow, site, shard) = (
            self.metrics.clone(),
            self.spec.flow_name.clone(),
            self.spec.site_name.clone(),
            self.spec.shard,
        );
        let result = self.run_cycles(ctx).instrument(span).await;
        // The shard's backlog is no longer this worker's to report.
        metrics.forget_objects_shard(&flow, &site, shard);
        result
    }
}

impl SyncTask {
    async fn run_cycles(self: Box<Self>, ctx: TaskContext) -> Result<(), TaskError> {
        let interval = self.spec.flow.interval;
        let mut syncer = Syncer::new(self.spec, self.metrics, ctx.progress.clone())
            .map_err(|e| TaskError::Config(e.to_string()))?;
        ctx.progress.set_state(pb::TaskState::Running, "starting");
        loop {
            match syncer.cycle(false, &ctx.shutdown, &ctx.lease).await {
                Ok(r) => {
                    tracing::info!(
                        flow = %syncer.spec.flow_name, site = %syncer.spec.site_name, shard = syncer.spec.shard,
                        listed = r.listed, copied = r.copied, bytes = r.copied_bytes, skipped = r.skipped,
                        adopted = r.adopted, deleted = r.deleted, failures = r.failures,
                        mismatches = r.verify_mismatches, elapsed_ms = r.elapsed.as_millis() as u64,
                        "sync cycle done"
                    );
                    let msg = format!(
                        "cycle {} done: {} copied, {} skipped, {} deleted, {} failed; next in {}",
                        syncer.totals.cycles,
                        r.copied,
                        r.skipped,
                        r.deleted,
                        r.failures,
                        humantime::format_duration(interval)
                    );
                    ctx.progress.update(|t| t.message = msg);
                }
                Err(SyncError::Cancelled) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = ctx.shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_config::{ObjectStore, ObjectsFlow};

    fn spec(src: &std::path::Path, dst: &std::path::Path, shard: u32, shards: u32) -> SyncSpec {
        SyncSpec {
            task_id: format!("t{shard}"),
            flow_name: "f".into(),
            site_name: "s".into(),
            flow: ObjectsFlow {
                prefix: "in".into(),
                target_prefix: "out/".into(),
                delete: true,
                verify: VerifyMode::Etag,
                shards,
                concurrency: 4,
                bandwidth_limit: None,
                interval: Duration::from_secs(60),
            },
            source: ObjectStore::fs(src.display().to_string()),
            target: ObjectStore::fs(dst.display().to_string()),
            shard,
            shards,
        }
    }

    async fn cycle(s: &mut Syncer, dry_run: bool) -> CycleReport {
        s.cycle(dry_run, &CancellationToken::new(), &LeaseGuard::unbounded())
            .await
            .unwrap()
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[tokio::test]
    async fn dry_run_writes_nothing_and_shards_split_the_work() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(a.path().join("in")).unwrap();
        for i in 0..40 {
            std::fs::write(a.path().join(format!("in/{i}.json")), format!("{i}")).unwrap();
        }
        let m = WorkerMetrics::new();
        let mut s0 = Syncer::new(
            spec(a.path(), b.path(), 0, 2),
            m.clone(),
            Progress::new("0"),
        )
        .unwrap();
        let mut s1 = Syncer::new(spec(a.path(), b.path(), 1, 2), m, Progress::new("1")).unwrap();
        let plan = cycle(&mut s0, true).await;
        assert!(plan.plan.copy_objects > 0);
        assert!(!b.path().join("out").exists(), "a dry run wrote");
        let (r0, r1) = (cycle(&mut s0, false).await, cycle(&mut s1, false).await);
        assert_eq!(r0.copied, plan.plan.copy_objects);
        assert_eq!(r0.copied + r1.copied, 40);
        assert!(
            r0.copied > 5 && r1.copied > 5,
            "{} / {}",
            r0.copied,
            r1.copied
        );
        assert_eq!(files(&b.path().join("out")).len(), 40);
        // Each shard keeps its own manifest and is quiet on the next cycle.
        assert_eq!(cycle(&mut s0, false).await.copied, 0);
        assert_eq!(cycle(&mut s1, false).await.skipped, r1.copied);
    }

    #[tokio::test]
    async fn an_empty_source_listing_deletes_nothing() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(a.path().join("in")).unwrap();
        for n in ["x", "y", "z"] {
            std::fs::write(a.path().join("in").join(n), n).unwrap();
        }
        let mut s = Syncer::new(
            spec(a.path(), b.path(), 0, 1),
            WorkerMetrics::new(),
            Progress::new("t"),
        )
        .unwrap();
        assert_eq!(cycle(&mut s, false).await.copied, 3);
        for n in ["x", "y", "z"] {
            std::fs::remove_file(a.path().join("in").join(n)).unwrap();
        }
        let r = cycle(&mut s, false).await;
        assert_eq!(r.deleted, 0);
        assert_eq!(files(&b.path().join("out")), ["x", "y", "z"]);
        // With something listed, what left the source goes.
        std::fs::write(a.path().join("in/x"), "x").unwrap();
        let r = cycle(&mut s, false).await;
        assert_eq!(r.deleted, 2);
        assert_eq!(files(&b.path().join("out")), ["x"]);
        // No temp file is left in the target's atomic-write folder.
        assert!(files(&b.path().join(".lockstep/tmp")).is_empty());
    }
}
