//! The mirror loop of one Kafka task (flow, site, slot).
//!
//! Start: settle the fencing (`fencing = "auto"`: commit one probe transaction; a target that
//! refuses it runs on leases alone, said in the log, status and a metric), then discover the
//! source topics, create or grow their target topics, and for each owned partition find the
//! resume point: read the target from the partition's checkpoint (`checkpoint`) to its end and
//! resume after the highest source offset there; without a checkpoint, scan the tail backwards
//! far enough to see a paused former owner's last writes too. With neither, the flow's `start`
//! policy only where the whole partition was read; otherwise the task stops and says so
//! (`on_no_resume_point`). A resume point below the source's low watermark is a gap: counted,
//! logged, shown in status.
//!
//! Loop: poll the source, check lease, loop prevention and size policy, throttle to the
//! bandwidth limit, keep what is outstanding within what can land inside the lease's safety
//! margin (`pacing`), and produce to the same partition of the target with key, value, headers
//! and timestamp preserved. The producer is idempotent; delivery reports advance the
//! per-partition progress that heartbeats carry, and feed the partition's audit (`audit`),
//! which reads what others wrote between our records and reports duplicates exactly.
//!
//! Stop: on cancellation the producer is flushed while the lease holds (every in-flight record
//! lands or fails) and checkpoints are written; when the lease is gone, queued and in-flight
//! records are purged, never flushed, and the task fails at once.
//!
//! The loop runs on a blocking thread: librdkafka's poll and metadata calls block, and one
//! thread per task keeps the hot path free of async overhead.

use super::audit::Audit;
use super::checkpoint::{Checkpoint, PROGRESS_TOPIC};
use super::headers;
use super::pacing::Pacer;
use super::topics::{self, TopicError};
use super::{client_config, MirrorSpec};
use crate::metrics::WorkerMetrics;
use crate::task::{LeaseGuard, Task, TaskContext, TaskError};
use lockstep_config::{Fencing, NoResumePoint, OversizePolicy, StartPolicy};
use lockstep_proto as pb;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Records scanned per step when reading the target tail backwards.
const TAIL_WINDOW: i64 = 1_024;
/// Most tail records scanned backwards (no checkpoint) before giving up on the tail.
const TAIL_BUDGET: i64 = 262_144;
/// Without a checkpoint, how far the backward scan goes on past the first window holding one of
/// our records: a paused former owner's late batch can sit after a successor's records, so the
/// highest source offset is not always in the newest window. This bounds what one owner can have
/// outstanding (the pacing allowance of a fast broker) with room to spare.
const TAIL_DEPTH: i64 = 131_072;
/// How often checkpoints are written (when they changed) and the audit reads what others wrote.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
const AUDIT_EVERY: Duration = Duration::from_millis(500);

pub struct MirrorTask {
    spec: MirrorSpec,
    metrics: WorkerMetrics,
}

impl MirrorTask {
    pub fn new(spec: MirrorSpec, metrics: WorkerMetrics) -> Self {
        MirrorTask { spec, metrics }
    }
}

#[async_trait::async_trait]
impl Task for MirrorTask {
    async fn run(self: Box<Self>, ctx: TaskContext) -> Result<(), TaskError> {
        self.metrics
            .init_mirror(&self.spec.flow_name, &self.spec.site_name);
        let handle = tokio::runtime::Handle::current();
        // Set once the loop may produce. Before that, a stop need not wait for start-up's
        // blocking broker calls (up to their timeouts): the loop checks cancellation before
        // its first send, so an abandoned start-up can never write.
        let producing = Arc::new(AtomicBool::new(false));
        let flag = producing.clone();
        let c = ctx.clone();
        // The blocking thread does not inherit the caller's span: carry the task span
        // (flow, site, task) over, so every event of the loop names its task.
        let span = tracing::Span::current();
        let mut join = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mirror = Mirror::start(self.spec, self.metrics, &c, handle)?;
            flag.store(true, Ordering::SeqCst);
            mirror.run(&c)
        });
        let joined = tokio::select! {
            r = &mut join => r,
            _ = ctx.shutdown.cancelled() => {
                if producing.load(Ordering::SeqCst) {
                    // Producing: wait for the flush, so a successor's tail read sees the end.
                    (&mut join).await
                } else {
                    match tokio::time::timeout(Duration::from_millis(500), &mut join).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!("stopped during start-up; a broker call is still pending and will be dropped");
                            return Ok(());
                        }
                    }
                }
            }
        };
        joined.map_err(|e| TaskError::Failed(format!("mirror thread ended abnormally: {e}")))?
    }
}

/// What delivery reports advance for one partition.
struct Delivered {
    last_source: AtomicI64,
    last_target: AtomicI64,
    /// Records sent to the partition and not yet delivered or failed.
    outstanding: AtomicI64,
    audit: Mutex<Audit>,
}

impl Delivered {
    fn audit(&self) -> std::sync::MutexGuard<'_, Audit> {
        // A poisoned lock only means a panic while updating: the audit is still usable.
        self.audit.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Opaque {
    delivered: Option<Arc<Delivered>>,
    source_offset: i64,
    timestamp_ms: i64,
}

/// State that delivery reports update and the mirror loop reads.
struct DeliveryShared {
    first_error: Mutex<Option<String>>,
    records: AtomicU64,
    bytes: AtomicU64,
    /// Every delivery report so far, successful or not (the pacing counts them).
    acked: AtomicU64,
    metrics: WorkerMetrics,
    labels: [String; 2],
}

impl DeliveryShared {
    /// The first delivery error since the last call, if any.
    fn take_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Delivery reports, called on the producer's thread.
struct DeliveryCtx(Arc<DeliveryShared>);

impl ClientContext for DeliveryCtx {}

impl ProducerContext for DeliveryCtx {
    type DeliveryOpaque = Box<Opaque>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Box<Opaque>) {
        let this = &self.0;
        this.acked.fetch_add(1, Ordering::Relaxed);
        if let Some(d) = &opaque.delivered {
            d.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
        match result {
            Ok(msg) => {
                if let Some(d) = &opaque.delivered {
                    d.last_source
                        .fetch_max(opaque.source_offset, Ordering::Relaxed);
                    d.last_target.fetch_max(msg.offset(), Ordering::Relaxed);
                    d.audit().delivered(msg.offset(), opaque.source_offset);
                    let size = msg.payload_len() + msg.key().map(<[u8]>::len).unwrap_or(0);
                    this.records.fetch_add(1, Ordering::Relaxed);
                    this.bytes.fetch_add(size as u64, Ordering::Relaxed);
                    let labels = [this.labels[0].as_str(), this.labels[1].as_str()];
                    this.metrics.mirror_records.with_label_values(&labels).inc();
                    this.metrics
                        .mirror_bytes
                        .with_label_values(&labels)
                        .inc_by(size as u64);
                    let now_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    if opaque.timestamp_ms > 0 && now_ms >= opaque.timestamp_ms {
                        this.metrics
                            .mirror_latency
                            .with_label_values(&labels)
                            .observe((now_ms - opaque.timestamp_ms) as f64 / 1000.0);
                    }
                }
            }
            Err((e, msg)) => {
                let mut first = this.first_error.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    *first = Some(format!(
                        "delivery to {}/{} failed for source offset {}: {e}",
                        msg.topic(),
                        msg.partition(),
                        opaque.source_offset
                    ));
                }
            }
        }
    }
}

struct Part {
    topic: String,
    target_topic: String,
    partition: i32,
    /// Next source offset to read.
    next: i64,
    delivered: Arc<Delivered>,
    source_high: i64,
    gaps: u64,
    /// Records passed over (loop prevention, skip, dead letter) since the last progress write.
    skipped_since_write: bool,
    /// The checkpoint last written, to write only changes.
    written: Option<Checkpoint>,
}

struct Mirror {
    spec: MirrorSpec,
    metrics: WorkerMetrics,
    labels: [String; 2],
    rt: tokio::runtime::Handle,
    consumer: Arc<BaseConsumer>,
    tail: BaseConsumer,
    source_admin: AdminClient<DefaultClientContext>,
    target_admin: AdminClient<DefaultClientContext>,
    producer: ThreadedProducer<DeliveryCtx>,
    shared: Arc<DeliveryShared>,
    parts: Vec<Part>,
    index: HashMap<String, HashMap<i32, usize>>,
    max_bytes: HashMap<String, Option<usize>>,
    progress_seen: HashMap<String, Checkpoint>,
    limiter: Option<governor::DefaultDirectRateLimiter>,
    limiter_burst: u32,
    transactional: bool,
    uncommitted: usize,
    last_commit: Instant,
    lease: LeaseGuard,
    pacer: Pacer,
    /// Records sent so far (every topic), against `DeliveryShared::acked`.
    sent: u64,
}

fn kerr<'a>(what: &str, cluster: &'a str) -> impl Fn(KafkaError) -> TaskError + 'a {
    let what = what.to_string();
    move |e| TaskError::Failed(format!("{cluster}: {what}: {e}"))
}

fn topic_err(e: TopicError) -> TaskError {
    TaskError::Failed(e.to_string())
}

impl Mirror {
    fn start(
        spec: MirrorSpec,
        metrics: WorkerMetrics,
        ctx: &TaskContext,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, TaskError> {
        let src_name = format!("source {}", spec.source_name);
        let tgt_name = format!("site {}", spec.site_name);
        let group = format!("lockstep.{}.{}", spec.flow_name, spec.site_name);

        let mut c = client_config(&spec.source);
        c.set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .set("queued.min.messages", "20000");
        let consumer: Arc<BaseConsumer> =
            Arc::new(c.create().map_err(kerr("consumer", &src_name))?);
        let source_admin: AdminClient<DefaultClientContext> = client_config(&spec.source)
            .create()
            .map_err(kerr("admin client", &src_name))?;

        let mut t = client_config(&spec.target);
        t.set("group.id", format!("{group}.tail"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed");
        let tail: BaseConsumer = t.create().map_err(kerr("tail consumer", &tgt_name))?;
        let target_admin: AdminClient<DefaultClientContext> = client_config(&spec.target)
            .create()
            .map_err(kerr("admin client", &tgt_name))?;

        let labels = [spec.flow_name.clone(), spec.site_name.clone()];
        let shared = Arc::new(DeliveryShared {
            first_error: Mutex::new(None),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            metrics: metrics.clone(),
            labels: labels.clone(),
        });
        let window = ctx.lease.landing_window();
        let transactional = spec.flow.fencing != Fencing::Leases;
        let producer = make_producer(&spec, &shared, transactional)?;

        let (limiter, limiter_burst) = match spec.flow.bandwidth_limit {
            // Quota in KiB/s so that large limits fit in u32; burst of one second.
            Some(bytes) => {
                let kib = NonZeroU32::new(((bytes / 1024).max(1)).min(u64::from(u32::MAX)) as u32)
                    .unwrap_or(NonZeroU32::MIN);
                (
                    Some(governor::RateLimiter::direct(governor::Quota::per_second(
                        kib,
                    ))),
                    kib.get(),
                )
            }
            None => (None, 0),
        };

        let mut m = Mirror {
            spec,
            metrics,
            labels,
            rt,
            consumer,
            tail,
            source_admin,
            target_admin,
            producer,
            shared,
            parts: Vec::new(),
            index: HashMap::new(),
            max_bytes: HashMap::new(),
            progress_seen: HashMap::new(),
            limiter,
            limiter_burst,
            transactional,
            uncommitted: 0,
            last_commit: Instant::now(),
            lease: ctx.lease.clone(),
            pacer: Pacer::new(window, Instant::now()),
            sent: 0,
        };
        // Fence first, read after: a new owner's InitProducerId aborts a former owner's open
        // transaction and fences its epoch, so the tail read below sees the final state.
        m.settle_fencing()?;
        m.read_progress_topic();
        m.discover(ctx)?;
        Ok(m)
    }

    /// "transactions" or "leases": how this task fences a former owner.
    fn fencing(&self) -> &'static str {
        if self.transactional {
            "transactions"
        } else {
            "leases"
        }
    }

    /// Opens the first transaction; with `fencing = "auto"`, first finds out whether the target
    /// fences by producer epoch (`probe_fencing`), and runs on leases alone when it does not.
    fn settle_fencing(&mut self) -> Result<(), TaskError> {
        let site = format!("site {}", self.spec.site_name);
        if self.transactional && self.spec.flow.fencing == Fencing::Auto {
            if let Err(why) = self.probe_fencing() {
                tracing::warn!(
                    error = %why,
                    "the target does not fence with Kafka transactions: running with lease fencing only (a paused former owner's late writes are detected and reported, not prevented)"
                );
                self.transactional = false;
                self.producer = make_producer(&self.spec, &self.shared, false)?;
            }
        }
        if self.transactional {
            self.producer
                .init_transactions(TIMEOUT)
                .map_err(kerr("init_transactions (fencing by transactions)", &site))?;
            self.producer
                .begin_transaction()
                .map_err(kerr("begin_transaction", &site))?;
        }
        let mode = self.fencing();
        self.metrics
            .set_fencing(&self.spec.flow_name, &self.spec.site_name, mode);
        tracing::info!(fencing = mode, "fencing settled");
        Ok(())
    }

    /// Proves that the target fences an older producer with transactions, as a new owner
    /// fences a paused one: producer A opens a transaction with a probe record; producer B
    /// initialises the same `transactional.id` and commits one; A's commit must then be
    /// refused. A broker without transactions fails B's commit (tansu 0.6: no EndTxn); one that
    /// commits without fencing accepts A's (librdkafka's mock cluster). The error says which.
    fn probe_fencing(&mut self) -> Result<(), String> {
        self.ensure_single_partition_topic(PROGRESS_TOPIC, ("cleanup.policy", "compact"))
            .map_err(|e| e.to_string())?;
        let id = format!(
            "lockstep.{}.{}.{}.probe",
            self.spec.flow_name, self.spec.site_name, self.spec.index
        );
        let make = || -> Result<ThreadedProducer<DefaultProducerContext>, String> {
            let mut p = client_config(&self.spec.target);
            p.set("enable.idempotence", "true")
                .set("transactional.id", &id);
            p.create().map_err(|e| format!("probe producer: {e}"))
        };
        let key = format!(
            "probe|{}|{}|{}",
            self.spec.flow_name, self.spec.site_name, self.spec.index
        );
        let open = |p: &ThreadedProducer<DefaultProducerContext>, who: &str| {
            p.init_transactions(TIMEOUT)
                .map_err(|e| format!("{who}: init_transactions: {e}"))?;
            p.begin_transaction()
                .map_err(|e| format!("{who}: begin_transaction: {e}"))?;
            p.send(
                BaseRecord::<[u8], [u8]>::to(PROGRESS_TOPIC)
                    .partition(0)
                    .key(key.as_bytes())
                    .payload(b"probe".as_slice()),
            )
            .map_err(|(e, _)| format!("{who}: probe record: {e}"))
        };
        // First one transaction alone: a broker without transactions refuses its commit, and is
        // asked nothing more (tansu 0.6's storage fails on a second producer epoch's produce).
        let older = make()?;
        open(&older, "probe producer")?;
        older
            .commit_transaction(TIMEOUT)
            .map_err(|e| format!("probe producer: commit_transaction: {e}"))?;
        older
            .begin_transaction()
            .map_err(|e| format!("probe producer: begin_transaction: {e}"))?;
        older
            .send(
                BaseRecord::<[u8], [u8]>::to(PROGRESS_TOPIC)
                    .partition(0)
                    .key(key.as_bytes())
                    .payload(b"probe".as_slice()),
            )
            .map_err(|(e, _)| format!("probe producer: probe record: {e}"))?;
        older
            .flush(TIMEOUT)
            .map_err(|e| format!("probe producer: flush: {e}"))?;
        // Then a newer producer of the same id, as a successor: the older one must be fenced.
        let newer = make()?;
        open(&newer, "newer producer")?;
        newer
            .commit_transaction(TIMEOUT)
            .map_err(|e| format!("newer producer: commit_transaction: {e}"))?;
        match older.commit_transaction(TIMEOUT) {
            Ok(()) => Err("the broker committed a transaction of a fenced producer epoch (it accepts transactions but does not fence)".into()),
            Err(_) => Ok(()),
        }
    }

    fn progress_key(&self, topic: &str, partition: i32) -> String {
        Checkpoint::key(
            &self.spec.flow_name,
            &self.spec.site_name,
            &self.spec.source_name,
            topic,
            partition,
        )
    }

    /// Loads `__lockstep_progress` (small, compacted) into `progress_seen`.
    fn read_progress_topic(&mut self) {
        let Ok((low, high)) = self.tail.fetch_watermarks(PROGRESS_TOPIC, 0, TIMEOUT) else {
            return; // no such topic yet
        };
        if high <= low {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(PROGRESS_TOPIC, 0, Offset::Offset(low))
            .is_err()
            || self.tail.assign(&tpl).is_err()
        {
            return;
        }
        // The topic is compacted on Kafka, but a broker that never compacts (tansu) keeps every
        // checkpoint: read it all, giving up only when the broker stops answering, so that the
        // latest checkpoints (the ones that keep the resume read short) are the ones kept.
        let mut deadline = Instant::now() + TIMEOUT;
        let mut read = 0u64;
        loop {
            if Instant::now() >= deadline {
                tracing::warn!(read, end = high, "reading {PROGRESS_TOPIC} got no answer for {TIMEOUT:?}; resuming from the checkpoints read so far and the target itself");
                break;
            }
            match self.tail.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    deadline = Instant::now() + TIMEOUT;
                    read += 1;
                    if let (Some(k), Some(v)) = (msg.key(), msg.payload()) {
                        if let (Ok(k), Some(v)) = (
                            std::str::from_utf8(k),
                            std::str::from_utf8(v).ok().and_then(Checkpoint::decode),
                        ) {
                            self.progress_seen.insert(k.to_string(), v);
                        }
                    }
                    if msg.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading {PROGRESS_TOPIC} failed; resuming from the target tail only");
                    break;
                }
                None => {}
            }
        }
        let _ = self.tail.unassign();
    }

    /// Reads the records at target offsets `from..to` of `target_topic/partition` in order and
    /// calls `each` with each record's offset and, when it came from this flow's source, its
    /// source offset. Stops early at the partition's end (for a transactional target, its last
    /// stable offset). Fails when the broker sends nothing for [`TIMEOUT`].
    fn read_target(
        &self,
        target_topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        mut each: impl FnMut(i64, Option<i64>),
    ) -> Result<(), TaskError> {
        if from >= to {
            return Ok(());
        }
        let site = format!("site {}", self.spec.site_name);
        let what = format!("reading {target_topic}/{partition} at offsets {from}..{to}");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(target_topic, partition, Offset::Offset(from))
            .map_err(kerr(&what, &site))?;
        self.tail.assign(&tpl).map_err(kerr(&what, &site))?;
        let mut deadline = Instant::now() + TIMEOUT;
        let result = loop {
            if Instant::now() > deadline {
                break Err(TaskError::Failed(format!(
                    "{site}: {what}: no answer for {TIMEOUT:?}"
                )));
            }
            match self.tail.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    deadline = Instant::now() + TIMEOUT;
                    if msg.offset() >= to {
                        break Ok(());
                    }
                    each(
                        msg.offset(),
                        headers::source_offset(msg.headers(), &self.spec.source_name),
                    );
                    if msg.offset() + 1 >= to {
                        break Ok(());
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
                Some(Err(e)) => break Err(kerr(&what, &site)(e)),
                None => {}
            }
        };
        let _ = self.tail.unassign();
        result
    }

    /// Reads the target partition for its resume point. From a checkpoint: everything from the
    /// checkpoint's target offset to the end, in order, through the audit (which also finds
    /// duplicates written there). Without one: the tail backwards, window by window, until
    /// [`TAIL_DEPTH`] records past the first window that holds one of our records (a former
    /// owner's late batch may follow a successor's records), or [`TAIL_BUDGET`], or the start.
    fn resume_scan(
        &self,
        topic: &str,
        target_topic: &str,
        partition: i32,
    ) -> Result<ResumeScan, TaskError> {
        let site = format!("site {}", self.spec.site_name);
        let (low, high) = self
            .tail
            .fetch_watermarks(target_topic, partition, TIMEOUT)
            .map_err(kerr(
                &format!("watermarks of {target_topic}/{partition}"),
                &site,
            ))?;
        let inspect = !self.transactional;
        let checkpoint = self
            .progress_seen
            .get(&self.progress_key(topic, partition))
            .copied();
        if let Some(Checkpoint {
            source_next,
            target_next: Some(t),
        }) = checkpoint
        {
            if t <= high {
                let from = t.max(low);
                let mut audit = Audit::new(from, source_next - 1, inspect);
                self.read_target(target_topic, partition, from, high, |o, s| audit.read(o, s))?;
                audit.read_to(high);
                tracing::info!(
                    topic,
                    partition,
                    target_topic,
                    checkpoint = %format!("{source_next} {t}"),
                    read = high - from,
                    "read the target from the checkpoint"
                );
                return Ok(ResumeScan {
                    next: Some(audit.next_source()),
                    audit,
                    whole: true,
                    scanned: high - from,
                    target_end: high,
                });
            }
            tracing::warn!(
                topic,
                partition,
                target_topic,
                checkpoint_target_offset = t,
                target_end = high,
                "the checkpoint lies past the target partition's end (the topic was truncated or recreated): it is ignored"
            );
        }
        let legacy = checkpoint
            .filter(|c| c.target_next.is_none())
            .map(|c| c.source_next);
        let mut end = high;
        let mut scanned = 0;
        let mut best: Option<i64> = None;
        let mut depth_left: Option<i64> = None;
        while end > low && scanned < TAIL_BUDGET && depth_left.is_none_or(|d| d > 0) {
            let start = (end - TAIL_WINDOW).max(low);
            self.read_target(target_topic, partition, start, end, |_, s| {
                if let Some(s) = s {
                    best = Some(best.map_or(s, |b| b.max(s)));
                }
            })?;
            scanned += end - start;
            match depth_left.as_mut() {
                Some(d) => *d -= end - start,
                None if best.is_some() => depth_left = Some(TAIL_DEPTH),
                None => {}
            }
            end = start;
        }
        let next = best.map(|b| b + 1).max(legacy);
        Ok(ResumeScan {
            next,
            audit: Audit::new(high, next.unwrap_or(0) - 1, inspect),
            whole: end <= low,
            scanned,
            target_end: high,
        })
    }

    /// Finds new topics and partitions, prepares their targets and starts consuming them.
    fn discover(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        let fresh = self.new_partitions(ctx)?;
        self.add_partitions(fresh)
    }

    /// Source partitions this slot owns and does not mirror yet, with their target topics
    /// created or grown and their resume points read. Changes nothing the loop depends on, so
    /// a failure here (a broker too slow to answer in time) can simply be tried again.
    fn new_partitions(&mut self, ctx: &TaskContext) -> Result<Vec<Part>, TaskError> {
        let src = format!("source {}", self.spec.source_name);
        let tgt = format!("site {}", self.spec.site_name);
        let topics = topics::discover(self.consumer.client(), &src, &self.spec.flow.topics)
            .map_err(topic_err)?;
        if topics.is_empty() {
            tracing::warn!(selector = ?self.spec.flow.topics, "no source topic matches the flow yet");
        }
        let mut fresh = Vec::new();
        for (topic, count) in &topics {
            let target_topic = topics::target_name(&self.spec.flow.target_topic, topic);
            let existing = topics::partition_count(self.tail.client(), &tgt, &target_topic)
                .map_err(topic_err)?;
            if existing.is_none_or(|n| n < *count) {
                let configs = self
                    .rt
                    .block_on(topics::topic_configs(&self.source_admin, topic));
                self.rt
                    .block_on(topics::ensure_target(
                        &self.target_admin,
                        &tgt,
                        &target_topic,
                        *count,
                        existing,
                        &configs,
                    ))
                    .map_err(topic_err)?;
                self.wait_for_partitions(&target_topic, *count)?;
            }
            if !self.max_bytes.contains_key(&target_topic) {
                let limit = self
                    .rt
                    .block_on(topics::max_message_bytes(&self.target_admin, &target_topic));
                self.max_bytes.insert(target_topic.clone(), limit);
            }
            for p in topics::owned_partitions(topic, *count, self.spec.index, self.spec.count) {
                if self.index.get(topic).is_some_and(|m| m.contains_key(&p)) {
                    continue;
                }
                let (next, gaps, audit) = self.resume_point(topic, &target_topic, p, ctx)?;
                self.metrics
                    .init_partition(&self.spec.flow_name, &self.spec.site_name, topic, p);
                fresh.push(Part {
                    topic: topic.clone(),
                    target_topic: target_topic.clone(),
                    partition: p,
                    next,
                    delivered: Arc::new(Delivered {
                        last_source: AtomicI64::new(next - 1),
                        last_target: AtomicI64::new(-1),
                        outstanding: AtomicI64::new(0),
                        audit: Mutex::new(audit),
                    }),
                    source_high: next,
                    gaps,
                    skipped_since_write: false,
                    written: None,
                });
            }
        }
        Ok(fresh)
    }

    /// Starts consuming the given partitions (with all the others).
    fn add_partitions(&mut self, fresh: Vec<Part>) -> Result<(), TaskError> {
        if fresh.is_empty() {
            return Ok(());
        }
        for part in fresh {
            let i = self.parts.len();
            self.index
                .entry(part.topic.clone())
                .or_default()
                .insert(part.partition, i);
            self.parts.push(part);
        }
        self.assign()?;
        tracing::info!(partitions = self.parts.len(), "mirroring");
        Ok(())
    }

    /// Metadata can lag a topic creation: wait (bounded) until the target shows the partitions.
    fn wait_for_partitions(&self, topic: &str, count: i32) -> Result<(), TaskError> {
        let tgt = format!("site {}", self.spec.site_name);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if topics::partition_count(self.tail.client(), &tgt, topic).map_err(topic_err)?
                >= Some(count)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TaskError::Failed(format!(
                    "{tgt}: topic {topic} did not show {count} partitions in time"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where to resume a partition, how many records a gap lost (0 without a gap), and the
    /// partition's audit, positioned at the target's end.
    fn resume_point(
        &mut self,
        topic: &str,
        target_topic: &str,
        p: i32,
        ctx: &TaskContext,
    ) -> Result<(i64, u64, Audit), TaskError> {
        let scan = self.resume_scan(topic, target_topic, p)?;
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .map_err(kerr(
                &format!("watermarks of {topic}/{p}"),
                &format!("source {}", self.spec.source_name),
            ))?;
        let start = match self.spec.flow.start {
            StartPolicy::Earliest => low,
            StartPolicy::Latest => high,
        };
        let resume = match scan.next {
            Some(r) => r,
            // The whole partition was read and holds nothing of ours: a first start.
            None if scan.whole => start,
            None => match self.spec.flow.on_no_resume_point {
                NoResumePoint::Start => {
                    tracing::warn!(topic, partition = p, target_topic, scanned = scan.scanned, policy = ?self.spec.flow.start, "no resume point (no checkpoint, none of our records in the scanned tail): applying the start policy, as on_no_resume_point = \"start\" says");
                    start
                }
                NoResumePoint::Fail => {
                    return Err(TaskError::NoResumePoint {
                        target: format!(
                            "site {}: {target_topic}/{p}",
                            self.spec.site_name
                        ),
                        detail: format!(
                            "no checkpoint in {PROGRESS_TOPIC}, and none of the last {} records comes from source {}; applying start = {:?} could repeat or lose records. If this flow never wrote to this partition, set on_no_resume_point = \"start\" on flow {}",
                            scan.scanned, self.spec.source_name, self.spec.flow.start, self.spec.flow_name
                        ),
                    });
                }
            },
        };
        let mut audit = scan.audit;
        audit.raise(resume.max(low) - 1);
        if resume < low {
            let missing = self.record_gap(ctx, topic, p, resume, low);
            return Ok((low, missing, audit));
        }
        tracing::info!(
            topic,
            partition = p,
            resume,
            scanned = scan.scanned,
            target_end = scan.target_end,
            "resume point"
        );
        Ok((resume, 0, audit))
    }

    fn assign(&mut self) -> Result<(), TaskError> {
        let mut tpl = TopicPartitionList::new();
        for p in &self.parts {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
                .map_err(|e| TaskError::Failed(e.to_string()))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(kerr("assign", &format!("source {}", self.spec.source_name)))
    }

    fn run(mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        let consumer = self.consumer.clone();
        let mut last_discovery = Instant::now();
        let mut last_report = Instant::now();
        let mut last_progress_write = Instant::now();
        let mut last_audit = Instant::now();
        let mut discovery_failed: Option<String> = None;
        self.report(ctx);
        let result = loop {
            if ctx.shutdown.is_cancelled() {
                break Ok(());
            }
            if !ctx.lease.valid() {
                break Err(TaskError::LeaseLost);
            }
            if let Some(e) = self.shared.take_error() {
                self.count_error("delivery");
                break Err(TaskError::Failed(e));
            }
            if last_discovery.elapsed() >= self.spec.flow.discovery_interval {
                last_discovery = Instant::now();
                // A failed re-scan leaves the running partitions alone: it is counted, logged,
                // shown in status, and tried again at the next interval.
                match self.new_partitions(ctx) {
                    Ok(fresh) => {
                        if let Some(message) = discovery_failed.take() {
                            tracing::info!("topic discovery works again");
                            ctx.progress.update(|t| {
                                if t.message == message {
                                    t.message.clear();
                                }
                            });
                        }
                        if let Err(e) = self.add_partitions(fresh) {
                            break Err(e);
                        }
                    }
                    Err(e) => {
                        self.count_error("discovery");
                        tracing::warn!(error = %e, "topic discovery failed; mirroring the known partitions, trying again in {:?}", self.spec.flow.discovery_interval);
                        let message =
                            format!("topic discovery failed (mirroring the known partitions): {e}");
                        ctx.progress.update(|t| t.message = message.clone());
                        discovery_failed = Some(message);
                    }
                }
            }
            if last_report.elapsed() >= Duration::from_millis(500) {
                last_report = Instant::now();
                self.report(ctx);
            }
            if self.transactional
                && self.uncommitted > 0
                && (self.uncommitted >= 10_000
                    || self.last_commit.elapsed() >= Duration::from_millis(200))
            {
                if let Err(e) = self.commit_transaction() {
                    break Err(e);
                }
            }
            let checkpoint_due = last_progress_write.elapsed() >= CHECKPOINT_EVERY;
            if checkpoint_due || last_audit.elapsed() >= AUDIT_EVERY {
                last_audit = Instant::now();
                if let Err(e) = self.audit_step(ctx, checkpoint_due) {
                    break Err(e);
                }
            }
            if checkpoint_due {
                last_progress_write = Instant::now();
                if let Err(e) = self.write_progress() {
                    break Err(e);
                }
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(msg)) => {
                    if let Err(e) = self.mirror_one(&msg, ctx) {
                        break Err(e);
                    }
                }
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset,
                ))) => {
                    if let Err(e) = self.check_gaps(ctx) {
                        break Err(e);
                    }
                }
                Some(Err(e)) => {
                    // librdkafka retries broker errors itself; count them and show the last.
                    self.count_error("consume");
                    tracing::warn!(error = %e, "source consumer error");
                    ctx.progress
                        .update(|t| t.message = format!("source {}: {e}", self.spec.source_name));
                }
            }
        };
        match &result {
            Err(TaskError::LeaseLost) => self.drop_unlanded(),
            _ => {
                // Clean stop or failure: let every produced record land (or fail) before
                // returning, so a successor's tail read sees the true end.
                let finished = self.finish();
                self.report(ctx);
                if let (Ok(()), Err(e)) = (&result, finished) {
                    self.forget_lag();
                    return Err(e);
                }
            }
        }
        self.forget_lag();
        result
    }

    /// The lease is gone: not one more write. Drops what is queued and what is in flight (a
    /// request already on the wire may still land; the audit of the next owner reports it),
    /// and aborts the open transaction.
    fn drop_unlanded(&self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        if self.transactional {
            let _ = self.producer.abort_transaction(Duration::from_millis(500));
        }
        tracing::error!("lease lost: stopped producing, queued and in-flight records dropped");
    }

    /// Reads what others wrote between and after our records, for every partition whose audit
    /// waits on it, and reports the duplicates found (metric, log, status).
    /// `idle_check`: also ask the target where each idle partition ends (a request each).
    fn audit_step(&mut self, ctx: &TaskContext, idle_check: bool) -> Result<(), TaskError> {
        if !self.transactional {
            for i in 0..self.parts.len() {
                self.audit_partition(i, idle_check)?;
            }
        }
        for i in 0..self.parts.len() {
            let delivered = self.parts[i].delivered.clone();
            let (new, ranges) = {
                let mut audit = delivered.audit();
                let new = audit.take_unreported();
                (new, audit.ranges().copied().collect::<Vec<_>>())
            };
            if new > 0 {
                self.report_duplicates(ctx, i, new, &ranges);
            }
        }
        Ok(())
    }

    /// Reads the gaps partition `i`'s audit waits on (and, with `idle_check`, what was written
    /// after its end while nothing of ours is in flight), and feeds them in. Bounded: at most 16
    /// reads per call; deliveries may open new gaps meanwhile.
    fn audit_partition(&mut self, i: usize, idle_check: bool) -> Result<(), TaskError> {
        let delivered = self.parts[i].delivered.clone();
        let mut may_ask_end = idle_check;
        for _ in 0..16 {
            let (gap, idle) = {
                let audit = delivered.audit();
                let idle = delivered.outstanding.load(Ordering::Relaxed) == 0 && audit.held() == 0;
                (audit.next_gap(), idle)
            };
            let gap = match gap {
                Some(g) => g,
                None if may_ask_end && idle => {
                    may_ask_end = false;
                    match self.idle_gap(i)? {
                        Some(g) => g,
                        None => break,
                    }
                }
                None => break,
            };
            let (from, to) = gap;
            let target_topic = self.parts[i].target_topic.clone();
            let partition = self.parts[i].partition;
            let mut read = Vec::new();
            self.read_target(&target_topic, partition, from, to, |o, s| read.push((o, s)))?;
            let mut audit = delivered.audit();
            for (o, s) in read {
                audit.read(o, s);
            }
            audit.read_to(to);
        }
        Ok(())
    }

    /// With nothing in flight for partition `i`: the stretch after the audit's end up to the
    /// target's high watermark, when someone else wrote there.
    fn idle_gap(&self, i: usize) -> Result<Option<(i64, i64)>, TaskError> {
        let part = &self.parts[i];
        let (_, high) = self
            .tail
            .fetch_watermarks(&part.target_topic, part.partition, TIMEOUT)
            .map_err(kerr(
                &format!("watermarks of {}/{}", part.target_topic, part.partition),
                &format!("site {}", self.spec.site_name),
            ))?;
        Ok(part.delivered.audit().idle_gap(high))
    }

    /// Logs, counts and shows duplicates found at the target (a paused former owner's writes).
    fn report_duplicates(
        &self,
        ctx: &TaskContext,
        i: usize,
        new: u64,
        ranges: &[super::audit::DupRange],
    ) {
        let part = &self.parts[i];
        self.metrics
            .mirror_duplicates
            .with_label_values(&[
                &self.labels[0],
                &self.labels[1],
                &part.topic,
                &part.partition.to_string(),
            ])
            .inc_by(new);
        let shown: Vec<String> = ranges
            .iter()
            .rev()
            .take(4)
            .map(|r| {
                format!(
                    "target {}..={} = source {}..={} ({} records)",
                    r.target_from, r.target_to, r.source_from, r.source_to, r.records
                )
            })
            .collect();
        tracing::error!(
            topic = %part.topic,
            partition = part.partition,
            target_topic = %part.target_topic,
            duplicates = new,
            ranges = %shown.join("; "),
            fencing = self.fencing(),
            "DUPLICATES at the target: records repeat source offsets already mirrored (a paused former owner wrote after its lease)"
        );
        let message = format!(
            "duplicates: {}/{} at site {}: {new} record(s) repeat source offsets already mirrored (latest: {}); a former owner wrote after its lease",
            part.target_topic,
            part.partition,
            self.spec.site_name,
            shown.first().map(String::as_str).unwrap_or("")
        );
        ctx.progress.update(|t| t.message = message);
    }

    /// The task stops here: its partitions' lag is no longer this worker's to report.
    fn forget_lag(&self) {
        for part in &self.parts {
            self.metrics.forget_partition(
                &self.labels[0],
                &self.labels[1],
                &part.topic,
                part.partition,
            );
        }
    }

    fn count_error(&self, kind: &str) {
        self.metrics
            .mirror_errors
            .with_label_values(&[&self.labels[0], &self.labels[1], kind])
            .inc();
    }

    fn count_skip(&self, reason: &str) {
        self.metrics
            .mirror_skipped
            .with_label_values(&[&self.labels[0], &self.labels[1], reason])
            .inc();
    }

    fn mirror_one(
        &mut self,
        msg: &BorrowedMessage<'_>,
        ctx: &TaskContext,
    ) -> Result<(), TaskError> {
        let Some(&i) = self
            .index
            .get(msg.topic())
            .and_then(|m| m.get(&msg.partition()))
        else {
            return Ok(());
        };
        let offset = msg.offset();
        if offset < self.parts[i].next {
            return Ok(()); // fetched before a re-assign; already handled
        }
        if headers::origin(msg.headers()) == Some(self.spec.site_name.as_bytes()) {
            // Came from the target site in the first place: mirroring it back would loop.
            self.count_skip("loop");
            let part = &mut self.parts[i];
            part.next = offset + 1;
            part.skipped_since_write = true;
            return Ok(());
        }
        let (hdrs, header_bytes) = headers::mirrored(msg.headers(), &self.spec.source_name, offset);
        let size = msg.key().map(<[u8]>::len).unwrap_or(0) + msg.payload_len() + header_bytes;
        let target_topic = self.parts[i].target_topic.clone();
        let topic_limit = self.max_bytes.get(&target_topic).copied().flatten();
        let flow_limit = self.spec.flow.max_record_bytes.map(|b| b as usize);
        let limit = match (topic_limit, flow_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(limit) = limit.filter(|l| size > *l) {
            let what = format!(
                "record {}/{}@{offset} is {size} bytes, over the limit of {limit} bytes for target topic {target_topic} at site {} (max_record_bytes or the topic's max.message.bytes)",
                msg.topic(),
                msg.partition(),
                self.spec.site_name
            );
            match self.spec.flow.on_oversize {
                OversizePolicy::Fail => {
                    self.count_error("oversize");
                    tracing::error!(
                        topic = msg.topic(),
                        partition = msg.partition(),
                        offset,
                        "{what}: the task stops (on_oversize = \"fail\")"
                    );
                    return Err(TaskError::Failed(format!(
                        "{what}; on_oversize = \"fail\" stops the flow here (set \"skip\" or \"dead_letter\" to pass it)"
                    )));
                }
                OversizePolicy::Skip => {
                    tracing::warn!(
                        topic = msg.topic(),
                        partition = msg.partition(),
                        offset,
                        "{what}: skipped (on_oversize = \"skip\")"
                    );
                    self.count_skip("oversize");
                }
                OversizePolicy::DeadLetter => {
                    self.dead_letter(msg, hdrs, &what)?;
                    tracing::warn!(
                        topic = msg.topic(),
                        partition = msg.partition(),
                        offset,
                        "{what}: sent to the dead-letter topic"
                    );
                    self.metrics
                        .mirror_dead_letters
                        .with_label_values(&[&self.labels[0], &self.labels[1]])
                        .inc();
                }
            }
            ctx.progress.update(|t| t.message = what.clone());
            let part = &mut self.parts[i];
            part.next = offset + 1;
            part.skipped_since_write = true;
            return Ok(());
        }
        self.throttle(size, ctx);
        let timestamp_ms = msg.timestamp().to_millis().unwrap_or(0);
        let part = &self.parts[i];
        let opaque = Box::new(Opaque {
            delivered: Some(part.delivered.clone()),
            source_offset: offset,
            timestamp_ms,
        });
        let mut record: BaseRecord<'_, [u8], [u8], Box<Opaque>> =
            BaseRecord::with_opaque_to(&target_topic, opaque)
                .partition(part.partition)
                .headers(hdrs);
        if timestamp_ms > 0 {
            record = record.timestamp(timestamp_ms);
        }
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(v) = msg.payload() {
            record = record.payload(v);
        }
        self.send(record, ctx)?;
        self.parts[i].next = offset + 1;
        self.uncommitted += 1;
        Ok(())
    }

    /// Produces, waiting while the local queue is full (bounded by lease and cancellation).
    /// Outstanding records are kept within the pacing allowance first (see `pacing`).
    fn send<'a>(
        &mut self,
        mut record: BaseRecord<'a, [u8], [u8], Box<Opaque>>,
        ctx: &TaskContext,
    ) -> Result<(), TaskError> {
        loop {
            let acked = self.shared.acked.load(Ordering::Relaxed);
            let outstanding = self.sent.saturating_sub(acked);
            match self.pacer.allowance(acked, outstanding, Instant::now()) {
                Some(allowed) if outstanding >= allowed => {
                    if !ctx.lease.valid() {
                        return Err(TaskError::LeaseLost);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => break,
            }
        }
        let delivered = record.delivery_opaque.delivered.clone();
        if let Some(d) = &delivered {
            d.outstanding.fetch_add(1, Ordering::Relaxed);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if !ctx.lease.valid() {
                        if let Some(d) = &delivered {
                            d.outstanding.fetch_sub(1, Ordering::Relaxed);
                        }
                        return Err(TaskError::LeaseLost);
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => {
                    if let Some(d) = &delivered {
                        d.outstanding.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.count_error("produce");
                    return Err(TaskError::Failed(format!(
                        "site {}: produce failed: {e}",
                        self.spec.site_name
                    )));
                }
            }
        }
    }

    fn throttle(&self, bytes: usize, ctx: &TaskContext) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let kib = ((bytes / 1024).max(1) as u32).min(self.limiter_burst);
        let Some(n) = NonZeroU32::new(kib) else {
            return;
        };
        while !ctx.shutdown.is_cancelled() {
            match limiter.check_n(n) {
                Ok(Ok(())) | Err(_) => return,
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ));
                    std::thread::sleep(wait.min(Duration::from_millis(100)));
                }
            }
        }
    }

    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        hdrs: OwnedHeaders,
        why: &str,
    ) -> Result<(), TaskError> {
        let Some(dlq) = self.spec.flow.dead_letter_topic.clone() else {
            return Err(TaskError::Config(
                "on_oversize = \"dead_letter\" without dead_letter_topic".into(),
            ));
        };
        self.ensure_single_partition_topic(&dlq, ("max.message.bytes", "104857600"))?;
        let partition = msg.partition().to_string();
        let hdrs = hdrs
            .insert(Header {
                key: "lockstep.dlq.reason",
                value: Some(why.as_bytes()),
            })
            .insert(Header {
                key: "lockstep.dlq.topic",
                value: Some(msg.topic().as_bytes()),
            })
            .insert(Header {
                key: "lockstep.dlq.partition",
                value: Some(partition.as_bytes()),
            });
        let opaque = Box::new(Opaque {
            delivered: None,
            source_offset: msg.offset(),
            timestamp_ms: 0,
        });
        let mut record: BaseRecord<'_, [u8], [u8], Box<Opaque>> =
            BaseRecord::with_opaque_to(&dlq, opaque).headers(hdrs);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(v) = msg.payload() {
            record = record.payload(v);
        }
        self.producer.send(record).map_err(|(e, _)| {
            TaskError::Failed(format!(
                "site {}: dead-letter produce to {dlq} failed: {e}",
                self.spec.site_name
            ))
        })?;
        self.sent += 1;
        Ok(())
    }

    /// Source offsets `from..low` of `topic/p` were deleted before they were mirrored: logs,
    /// counts and shows the gap; the number of records lost.
    fn record_gap(&self, ctx: &TaskContext, topic: &str, p: i32, from: i64, low: i64) -> u64 {
        let missing = low - from;
        tracing::error!(
            topic,
            partition = p,
            from,
            low,
            missing,
            "GAP: source retention removed records before they were mirrored"
        );
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        self.metrics.mirror_gaps.with_label_values(&labels).inc();
        self.metrics
            .mirror_gap_records
            .with_label_values(&labels)
            .inc_by(missing as u64);
        ctx.progress.update(|t| {
            t.message = format!("gap: {topic}/{p} source offsets {from}..{low} ({missing} records) were deleted by retention before they were mirrored");
        });
        missing as u64
    }

    /// After an out-of-range error: any partition whose next offset fell below the source's
    /// low watermark lost records to retention. Count, report, and go on from the low mark.
    fn check_gaps(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        let mut changed = false;
        for i in 0..self.parts.len() {
            let (topic, p, next) = (
                self.parts[i].topic.clone(),
                self.parts[i].partition,
                self.parts[i].next,
            );
            let (low, _) = self
                .consumer
                .fetch_watermarks(&topic, p, TIMEOUT)
                .map_err(kerr(
                    &format!("watermarks of {topic}/{p}"),
                    &format!("source {}", self.spec.source_name),
                ))?;
            if next < low {
                let missing = self.record_gap(ctx, &topic, p, next, low);
                let part = &mut self.parts[i];
                part.gaps += missing;
                part.next = low;
                part.skipped_since_write = true;
                changed = true;
            }
        }
        if changed {
            self.assign()?;
        }
        Ok(())
    }

    /// Creates (once per task run) a one-partition topic of lockstep's own on the target: the
    /// dead-letter topic or `__lockstep_progress`.
    fn ensure_single_partition_topic(
        &mut self,
        topic: &str,
        config: (&str, &str),
    ) -> Result<(), TaskError> {
        if self.max_bytes.contains_key(topic) {
            return Ok(());
        }
        let site = format!("site {}", self.spec.site_name);
        let existing =
            topics::partition_count(self.tail.client(), &site, topic).map_err(topic_err)?;
        let configs: BTreeMap<String, String> =
            [(config.0.to_string(), config.1.to_string())].into();
        self.rt
            .block_on(topics::ensure_target(
                &self.target_admin,
                &site,
                topic,
                1,
                existing,
                &configs,
            ))
            .map_err(topic_err)?;
        self.wait_for_partitions(topic, 1)?;
        self.max_bytes.insert(topic.to_string(), None);
        Ok(())
    }

    fn commit_transaction(&mut self) -> Result<(), TaskError> {
        let site = format!("site {}", self.spec.site_name);
        self.producer
            .commit_transaction(TIMEOUT)
            .map_err(kerr("commit_transaction", &site))?;
        self.producer
            .begin_transaction()
            .map_err(kerr("begin_transaction", &site))?;
        self.uncommitted = 0;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Writes each partition's checkpoint when it changed: where its audit stands (everything
    /// below the audited target offset read, the highest source offset there). After skipped
    /// records, everything produced lands first and the checkpoint moves past them, so a
    /// restart does not process them again.
    fn write_progress(&mut self) -> Result<(), TaskError> {
        let skipped = self.parts.iter().any(|p| p.skipped_since_write);
        if skipped {
            self.land(true)?;
        }
        let mut values = Vec::new();
        for p in &self.parts {
            let (source_next, target_next) = p.delivered.audit().position();
            let source_next = if p.skipped_since_write {
                source_next.max(p.next)
            } else {
                source_next
            };
            let c = Checkpoint {
                source_next,
                target_next: Some(target_next),
            };
            if p.written != Some(c) {
                values.push((self.progress_key(&p.topic, p.partition), c));
            }
        }
        if values.is_empty() {
            return Ok(());
        }
        if !self.lease.valid() {
            return Err(TaskError::LeaseLost);
        }
        let site = format!("site {}", self.spec.site_name);
        self.ensure_single_partition_topic(PROGRESS_TOPIC, ("cleanup.policy", "compact"))?;
        for (key, c) in &values {
            let value = c.encode();
            let opaque = Box::new(Opaque {
                delivered: None,
                source_offset: c.source_next,
                timestamp_ms: 0,
            });
            let record: BaseRecord<'_, [u8], [u8], Box<Opaque>> =
                BaseRecord::with_opaque_to(PROGRESS_TOPIC, opaque)
                    .partition(0)
                    .key(key.as_bytes())
                    .payload(value.as_bytes());
            self.producer.send(record).map_err(|(e, _)| {
                TaskError::Failed(format!("{site}: writing {PROGRESS_TOPIC} failed: {e}"))
            })?;
            self.sent += 1;
            self.uncommitted += 1; // commit soon: an idle open transaction hides it
        }
        for p in &mut self.parts {
            p.skipped_since_write = false;
            let key = Checkpoint::key(
                &self.spec.flow_name,
                &self.spec.site_name,
                &self.spec.source_name,
                &p.topic,
                p.partition,
            );
            if let Some((_, c)) = values.iter().find(|(k, _)| *k == key) {
                p.written = Some(*c);
            }
        }
        Ok(())
    }

    /// Clean stop: everything produced lands, then progress is written and lands too, all
    /// while the lease holds.
    fn finish(&mut self) -> Result<(), TaskError> {
        self.write_progress()?;
        self.land(false)
    }

    /// Makes everything produced so far land (transaction committed, or queue flushed), then
    /// reports the first delivery error, if any. `reopen` begins the next transaction. Never
    /// past the lease: when it runs out first, what is queued and in flight is dropped.
    fn land(&mut self, reopen: bool) -> Result<(), TaskError> {
        let site = format!("site {}", self.spec.site_name);
        if !self.lease.valid() {
            self.drop_unlanded();
            return Err(TaskError::LeaseLost);
        }
        if self.transactional && reopen {
            self.commit_transaction()?;
        } else if self.transactional {
            self.producer
                .commit_transaction(TIMEOUT)
                .map_err(kerr("commit_transaction", &site))?;
        } else {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                match self.producer.flush(Duration::from_millis(100)) {
                    Ok(()) => break,
                    Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                        if Instant::now() < deadline =>
                    {
                        if !self.lease.valid() {
                            self.drop_unlanded();
                            return Err(TaskError::LeaseLost);
                        }
                    }
                    Err(e) => return Err(kerr("flush", &site)(e)),
                }
            }
        }
        match self.shared.take_error() {
            Some(e) => Err(TaskError::Failed(e)),
            None => Ok(()),
        }
    }

    /// Progress for the heartbeat and lag gauges, from cached watermarks (no network call).
    fn report(&mut self, ctx: &TaskContext) {
        let fencing = self.fencing();
        let mut partitions = Vec::with_capacity(self.parts.len());
        for part in &mut self.parts {
            if let Some(high) = cached_high_watermark(&self.consumer, &part.topic, part.partition) {
                part.source_high = part.source_high.max(high);
            }
            let last_source = part.delivered.last_source.load(Ordering::Relaxed);
            let (duplicates, duplicate_ranges) = {
                let audit = part.delivered.audit();
                let ranges = audit
                    .ranges()
                    .map(|r| pb::DuplicateRange {
                        target_from: r.target_from,
                        target_to: r.target_to,
                        source_from: r.source_from,
                        source_to: r.source_to,
                        records: r.records,
                    })
                    .collect();
                (audit.duplicates(), ranges)
            };
            let lag = (part.source_high - (last_source + 1)).max(0);
            self.metrics
                .mirror_lag
                .with_label_values(&[
                    &self.labels[0],
                    &self.labels[1],
                    &part.topic,
                    &part.partition.to_string(),
                ])
                .set(lag);
            partitions.push(pb::PartitionProgress {
                topic: part.topic.clone(),
                partition: part.partition,
                source_high_watermark: part.source_high,
                last_mirrored_source_offset: last_source,
                target_offset: part.delivered.last_target.load(Ordering::Relaxed),
                gaps: part.gaps,
                duplicates,
                duplicate_ranges,
                fencing: fencing.to_string(),
            });
        }
        let records = self.shared.records.load(Ordering::Relaxed);
        let bytes = self.shared.bytes.load(Ordering::Relaxed);
        ctx.progress.update(|t| {
            t.partitions = partitions;
            t.records = records;
            t.bytes = bytes;
        });
    }
}

/// What reading a target partition for its resume point found.
struct ResumeScan {
    /// One past the highest source offset of ours (or the checkpoint's), if any was found.
    next: Option<i64>,
    /// The partition's audit, positioned at the target's end.
    audit: Audit,
    /// The read covered the whole partition (or started from a checkpoint).
    whole: bool,
    scanned: i64,
    /// The target partition's end when it was read: the resume point is one past the highest
    /// source offset below it.
    target_end: i64,
}

/// The target producer. Operator properties on the site come first; then what exactly-once
/// needs. `message.timeout.ms` is left alone: a record timed out in flight makes librdkafka's
/// idempotent producer go on under a bumped epoch, which tansu 0.6's storage fails on (it
/// panics, and the broker stops answering); the pacing bounds what a paused worker can hold.
fn make_producer(
    spec: &MirrorSpec,
    shared: &Arc<DeliveryShared>,
    transactional: bool,
) -> Result<ThreadedProducer<DeliveryCtx>, TaskError> {
    let mut p = client_config(&spec.target);
    p.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.max.bytes", "104857600");
    for (k, v) in [
        ("linger.ms", "20"),
        ("batch.num.messages", "10000"),
        ("batch.size", "1048576"),
    ] {
        if !spec.target.properties.contains_key(k) {
            p.set(k, v);
        }
    }
    if transactional {
        p.set(
            "transactional.id",
            format!(
                "lockstep.{}.{}.{}",
                spec.flow_name, spec.site_name, spec.index
            ),
        );
    }
    p.create_with_context(DeliveryCtx(shared.clone()))
        .map_err(kerr("producer", &format!("site {}", spec.site_name)))
}

/// The source high watermark as of the consumer's last fetch response, without a request.
///
/// Written by hand because rdkafka 0.39 does not wrap librdkafka's
/// `rd_kafka_get_watermark_offsets` (the cached variant of `fetch_watermarks`); asking the
/// broker for every partition every half second would cost a request per partition.
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime; the topic is a valid
    // NUL-terminated string; low/high are valid out-pointers for the duration of the call.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
