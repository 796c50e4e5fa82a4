//! The mirror loop of one Kafka task (flow, site, slot).
//!
//! Start: discover the source topics, create or grow their target topics, and for each owned
//! partition resume right after the highest source offset found in the target tail (the
//! `lockstep.src.offset` header), or after the offset kept in `__lockstep_progress` for
//! records that were skipped, whichever is later; with neither, the flow's `start` policy.
//! A resume point below the source's low watermark is a gap: counted, logged, shown in status.
//!
//! Loop: poll the source, check lease, loop prevention and size policy, throttle to the
//! bandwidth limit, and produce to the same partition of the target with key, value, headers
//! and timestamp preserved. The producer is idempotent; delivery reports advance the
//! per-partition progress that heartbeats carry.
//!
//! Stop: on cancellation the producer is flushed (every in-flight record lands or fails) and
//! progress is written; on lease loss queued records are purged and the task fails at once.
//!
//! The loop runs on a blocking thread: librdkafka's poll and metadata calls block, and one
//! thread per task keeps the hot path free of async overhead.

use super::headers;
use super::topics::{self, TopicError};
use super::{client_config, MirrorSpec};
use crate::metrics::WorkerMetrics;
use crate::task::{Task, TaskContext, TaskError};
use lockstep_config::{Fencing, OversizePolicy, StartPolicy};
use lockstep_proto as pb;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Compacted topic on the target that remembers how far a task got past records it skipped.
pub const PROGRESS_TOPIC: &str = "__lockstep_progress";
const TIMEOUT: Duration = Duration::from_secs(10);
/// Records scanned per step when reading the target tail backwards.
const TAIL_WINDOW: i64 = 256;
/// Most tail records scanned for our header before giving up on the tail.
const TAIL_BUDGET: i64 = 65_536;

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
#[derive(Default)]
struct Delivered {
    last_source: AtomicI64,
    last_target: AtomicI64,
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
        match result {
            Ok(msg) => {
                if let Some(d) = &opaque.delivered {
                    d.last_source
                        .fetch_max(opaque.source_offset, Ordering::Relaxed);
                    d.last_target.fetch_max(msg.offset(), Ordering::Relaxed);
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
    progress_seen: HashMap<String, i64>,
    limiter: Option<governor::DefaultDirectRateLimiter>,
    limiter_burst: u32,
    transactional: bool,
    uncommitted: usize,
    last_commit: Instant,
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
            metrics: metrics.clone(),
            labels: labels.clone(),
        });
        let mut p = client_config(&spec.target);
        // Operator properties on the site come first; these are what exactly-once needs.
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
        let transactional = spec.flow.fencing == Fencing::Transactions;
        if transactional {
            p.set(
                "transactional.id",
                format!(
                    "lockstep.{}.{}.{}",
                    spec.flow_name, spec.site_name, spec.index
                ),
            );
        }
        let producer: ThreadedProducer<DeliveryCtx> = p
            .create_with_context(DeliveryCtx(shared.clone()))
            .map_err(kerr("producer", &tgt_name))?;
        if transactional {
            producer.init_transactions(TIMEOUT).map_err(kerr(
                "init_transactions (fencing = \"transactions\")",
                &tgt_name,
            ))?;
            producer
                .begin_transaction()
                .map_err(kerr("begin_transaction", &tgt_name))?;
        }

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
        };
        m.read_progress_topic();
        m.discover(ctx)?;
        Ok(m)
    }

    fn progress_key(&self, topic: &str, partition: i32) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.spec.flow_name, self.spec.site_name, self.spec.source_name, topic, partition
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
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            match self.tail.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    if let (Some(k), Some(v)) = (msg.key(), msg.payload()) {
                        if let (Ok(k), Some(v)) = (
                            std::str::from_utf8(k),
                            std::str::from_utf8(v)
                                .ok()
                                .and_then(|v| v.parse::<i64>().ok()),
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

    /// Highest source offset + 1 found in the tail of a target partition.
    fn resume_from_tail(
        &self,
        topic: &str,
        target_topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, TaskError> {
        let (low, high) = self
            .tail
            .fetch_watermarks(target_topic, partition, TIMEOUT)
            .map_err(kerr(
                &format!("watermarks of {target_topic}/{partition}"),
                &format!("site {}", self.spec.site_name),
            ))?;
        let mut end = high;
        let mut scanned = 0;
        while end > low && scanned < TAIL_BUDGET {
            let start = (end - TAIL_WINDOW).max(low);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(target_topic, partition, Offset::Offset(start))
                .map_err(|e| TaskError::Failed(e.to_string()))?;
            self.tail
                .assign(&tpl)
                .map_err(|e| TaskError::Failed(e.to_string()))?;
            let mut best: Option<i64> = None;
            let deadline = Instant::now() + TIMEOUT;
            loop {
                if Instant::now() > deadline {
                    return Err(TaskError::Failed(format!(
                        "site {}: reading the tail of {target_topic}/{partition} timed out",
                        self.spec.site_name
                    )));
                }
                match self.tail.poll(Duration::from_millis(200)) {
                    Some(Ok(msg)) => {
                        if msg.offset() >= end {
                            break;
                        }
                        if let Some(o) =
                            headers::source_offset(msg.headers(), &self.spec.source_name)
                        {
                            best = Some(best.map_or(o, |b| b.max(o)));
                        }
                        if msg.offset() + 1 >= end {
                            break;
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => {
                        return Err(TaskError::Failed(format!(
                            "site {}: reading the tail of {target_topic}/{partition}: {e}",
                            self.spec.site_name
                        )))
                    }
                    None => {}
                }
            }
            if let Some(b) = best {
                let _ = self.tail.unassign();
                return Ok(Some(b + 1));
            }
            scanned += end - start;
            end = start;
        }
        let _ = self.tail.unassign();
        if end > low {
            tracing::warn!(topic, partition, target_topic, scanned, "no mirrored record in the scanned tail; using the progress record or the start policy");
        }
        Ok(None)
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
                let (next, gaps) = self.resume_point(topic, &target_topic, p, ctx)?;
                fresh.push(Part {
                    topic: topic.clone(),
                    target_topic: target_topic.clone(),
                    partition: p,
                    next,
                    delivered: Arc::new(Delivered {
                        last_source: AtomicI64::new(next - 1),
                        last_target: AtomicI64::new(-1),
                    }),
                    source_high: next,
                    gaps,
                    skipped_since_write: false,
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

    /// Where to resume a partition, and how many records a gap lost (0 without a gap).
    fn resume_point(
        &mut self,
        topic: &str,
        target_topic: &str,
        p: i32,
        ctx: &TaskContext,
    ) -> Result<(i64, u64), TaskError> {
        let from_tail = self.resume_from_tail(topic, target_topic, p)?;
        let from_progress = self
            .progress_seen
            .get(&self.progress_key(topic, p))
            .copied();
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .map_err(kerr(
                &format!("watermarks of {topic}/{p}"),
                &format!("source {}", self.spec.source_name),
            ))?;
        let resume = match from_tail.max(from_progress) {
            Some(r) => r,
            None => match self.spec.flow.start {
                StartPolicy::Earliest => low,
                StartPolicy::Latest => high,
            },
        };
        if resume < low {
            let missing = self.record_gap(ctx, topic, p, resume, low);
            return Ok((low, missing));
        }
        tracing::info!(topic, partition = p, resume, tail = ?from_tail, progress = ?from_progress, "resume point");
        Ok((resume, 0))
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
            if last_progress_write.elapsed() >= Duration::from_secs(2) {
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
            Err(TaskError::LeaseLost) => {
                // Not one more write: drop what is queued; in-flight requests land within the
                // lease's safety margin.
                self.producer.purge(PurgeConfig::default().queue());
                if self.transactional {
                    let _ = self.producer.abort_transaction(TIMEOUT);
                }
                tracing::error!("lease lost: stopped producing");
            }
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
    fn send<'a>(
        &self,
        mut record: BaseRecord<'a, [u8], [u8], Box<Opaque>>,
        ctx: &TaskContext,
    ) -> Result<(), TaskError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if !ctx.lease.valid() {
                        return Err(TaskError::LeaseLost);
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => {
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
        })
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

    /// Records, after everything before them has landed, how far each partition got past
    /// skipped records, so a restart does not process them again.
    fn write_progress(&mut self) -> Result<(), TaskError> {
        if !self.parts.iter().any(|p| p.skipped_since_write) {
            return Ok(());
        }
        let site = format!("site {}", self.spec.site_name);
        let values: Vec<(String, i64)> = self
            .parts
            .iter()
            .filter(|p| p.skipped_since_write)
            .map(|p| (self.progress_key(&p.topic, p.partition), p.next))
            .collect();
        self.land(true)?;
        self.ensure_single_partition_topic(PROGRESS_TOPIC, ("cleanup.policy", "compact"))?;
        for (key, next) in values {
            let value = next.to_string();
            let opaque = Box::new(Opaque {
                delivered: None,
                source_offset: next,
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
        }
        for p in &mut self.parts {
            p.skipped_since_write = false;
        }
        Ok(())
    }

    /// Clean stop: everything produced lands, then progress is written and lands too.
    fn finish(&mut self) -> Result<(), TaskError> {
        self.write_progress()?;
        self.land(false)
    }

    /// Makes everything produced so far land (transaction committed, or queue flushed), then
    /// reports the first delivery error, if any. `reopen` begins the next transaction.
    fn land(&mut self, reopen: bool) -> Result<(), TaskError> {
        let site = format!("site {}", self.spec.site_name);
        if self.transactional && reopen {
            self.commit_transaction()?;
        } else if self.transactional {
            self.producer
                .commit_transaction(TIMEOUT)
                .map_err(kerr("commit_transaction", &site))?;
        } else {
            self.producer.flush(TIMEOUT).map_err(kerr("flush", &site))?;
        }
        match self.shared.take_error() {
            Some(e) => Err(TaskError::Failed(e)),
            None => Ok(()),
        }
    }

    /// Progress for the heartbeat and lag gauges, from cached watermarks (no network call).
    fn report(&mut self, ctx: &TaskContext) {
        let mut partitions = Vec::with_capacity(self.parts.len());
        for part in &mut self.parts {
            if let Some(high) = cached_high_watermark(&self.consumer, &part.topic, part.partition) {
                part.source_high = part.source_high.max(high);
            }
            let last_source = part.delivered.last_source.load(Ordering::Relaxed);
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
