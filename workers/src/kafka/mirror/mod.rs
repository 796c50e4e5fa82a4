//! The mirror of one Kafka task (flow, site, slot): the task, its state, its start and its loop.
//! Each concern of the mirror has a file of its own, all of them `impl Mirror` blocks:
//!
//! - `fencing`: settling how a former owner is fenced (`fencing = "auto"`: commit one probe
//!   transaction; a target that refuses it runs on leases alone, said in the log, status and a
//!   metric);
//! - `partitions`: topic and partition sync: discover the source topics, create or grow their
//!   target topics, take on the partitions this slot owns, and hand them to the consumer;
//! - `resume`: the resume point of each owned partition: read the target from the partition's
//!   checkpoint (`checkpoint`) to its end and resume after the highest source offset there;
//!   without a checkpoint, scan the tail backwards far enough to see a paused former owner's last
//!   writes too. With neither, the flow's `start` policy only where the whole partition was read;
//!   otherwise the task stops and says so (`on_no_resume_point`);
//! - `produce`: the produce/land loop: mirror one record (loop prevention, size policy, limits),
//!   produce it to the same partition of the target with key, value, headers and timestamp
//!   preserved, commit or flush what was produced, write the checkpoints;
//! - `limits`: the two rate limiters (bandwidth, pacing) and the one rule for waiting on them;
//! - `policy`: the gap and oversize policies: source records deleted before they were mirrored
//!   (counted, logged, shown in status), records over the target's size limit (fail, skip, or
//!   dead-letter topic);
//! - `delivery`: the target producer and its delivery reports, which advance the per-partition
//!   progress that heartbeats carry and feed the partition's audit (`audit`);
//! - `duplicates`: reading what others wrote between our records and reporting duplicates;
//! - `report`: progress for the heartbeat and the lag gauges.
//!
//! Stop: on cancellation the producer is flushed while the lease holds (every in-flight record
//! lands or fails) and checkpoints are written; when the lease is gone, queued and in-flight
//! records are purged, never flushed, and the task fails at once.
//!
//! The loop runs on a blocking thread: librdkafka's poll and metadata calls block, and one
//! thread per task keeps the hot path free of async overhead.

mod delivery;
mod duplicates;
mod fencing;
mod limits;
mod partitions;
mod policy;
mod produce;
mod report;
mod resume;

use super::checkpoint::Checkpoint;
use super::error::MirrorError;
use super::pacing::Pacer;
use super::{client_config, MirrorSpec};
use crate::metrics::WorkerMetrics;
use crate::task::{LeaseGuard, Task, TaskContext, TaskError};
use delivery::{make_producer, Delivered, DeliveryCtx, DeliveryShared};
use lockstep_config::Fencing;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::ThreadedProducer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);
/// How often checkpoints are written (when they changed) and the audit reads what others wrote.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
const AUDIT_EVERY: Duration = Duration::from_millis(500);
/// How often progress is reported (from cached watermarks).
const REPORT_EVERY: Duration = Duration::from_millis(500);

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
        match joined {
            Ok(result) => result.map_err(TaskError::from),
            Err(source) => Err(MirrorError::Aborted {
                what: "mirror thread",
                source,
            }
            .into()),
        }
    }
}

/// One source partition this task mirrors.
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
    bandwidth: Option<limits::Bandwidth>,
    transactional: bool,
    uncommitted: usize,
    last_commit: Instant,
    lease: LeaseGuard,
    pacer: Pacer,
    /// Records sent so far (every topic), against `DeliveryShared::acked`.
    sent: u64,
}

/// The error of creating a client of `cluster` (`source NAME` or `site NAME`).
fn client_err(cluster: &str, client: &'static str) -> impl FnOnce(KafkaError) -> MirrorError {
    let cluster = cluster.to_string();
    move |source| MirrorError::Client {
        cluster,
        client,
        source: Box::new(source),
    }
}

impl Mirror {
    fn start(
        spec: MirrorSpec,
        metrics: WorkerMetrics,
        ctx: &TaskContext,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, MirrorError> {
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
            Arc::new(c.create().map_err(client_err(&src_name, "consumer"))?);
        let source_admin: AdminClient<DefaultClientContext> = client_config(&spec.source)
            .create()
            .map_err(client_err(&src_name, "admin client"))?;

        let mut t = client_config(&spec.target);
        t.set("group.id", format!("{group}.tail"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed");
        let tail: BaseConsumer = t.create().map_err(client_err(&tgt_name, "tail consumer"))?;
        let target_admin: AdminClient<DefaultClientContext> = client_config(&spec.target)
            .create()
            .map_err(client_err(&tgt_name, "admin client"))?;

        let labels = [spec.flow_name.clone(), spec.site_name.clone()];
        let shared = Arc::new(DeliveryShared::new(metrics.clone(), labels.clone()));
        let window = ctx.lease.landing_window();
        let transactional = spec.flow.fencing != Fencing::Leases;
        let producer = make_producer(&spec, &shared, transactional)?;
        let bandwidth = spec.flow.bandwidth_limit.map(limits::Bandwidth::new);

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
            bandwidth,
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
        m.read_progress_topic()?;
        m.discover(ctx)?;
        Ok(m)
    }

    /// Mirrors until cancelled or failed, then stops: lets what was produced land (a clean
    /// stop or a failure) or drops it (the lease is gone).
    fn run(mut self, ctx: &TaskContext) -> Result<(), MirrorError> {
        self.report(ctx);
        let result = self.mirror(ctx);
        match &result {
            Err(MirrorError::LeaseLost) => self.drop_unlanded(),
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

    /// The loop: poll the source and mirror each record; between polls, on their own clocks,
    /// re-discover topics, report progress, commit, audit and write checkpoints. Returns
    /// `Ok` when cancelled, the first failure otherwise.
    fn mirror(&mut self, ctx: &TaskContext) -> Result<(), MirrorError> {
        let consumer = self.consumer.clone();
        let mut last_discovery = Instant::now();
        let mut last_report = Instant::now();
        let mut last_progress_write = Instant::now();
        let mut last_audit = Instant::now();
        let mut discovery_failed: Option<String> = None;
        loop {
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            if !ctx.lease.valid() {
                return Err(MirrorError::LeaseLost);
            }
            if let Some(e) = self.shared.take_error() {
                self.count_error("delivery");
                return Err(e);
            }
            if last_discovery.elapsed() >= self.spec.flow.discovery_interval {
                last_discovery = Instant::now();
                self.rediscover(ctx, &mut discovery_failed)?;
            }
            if last_report.elapsed() >= REPORT_EVERY {
                last_report = Instant::now();
                self.report(ctx);
            }
            if self.commit_due() {
                self.commit_transaction()?;
            }
            let checkpoint_due = last_progress_write.elapsed() >= CHECKPOINT_EVERY;
            if checkpoint_due || last_audit.elapsed() >= AUDIT_EVERY {
                last_audit = Instant::now();
                self.audit_step(ctx, checkpoint_due)?;
            }
            if checkpoint_due {
                last_progress_write = Instant::now();
                self.write_progress()?;
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(msg)) => self.mirror_one(&msg, ctx)?,
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset,
                ))) => self.check_gaps(ctx)?,
                Some(Err(e)) => {
                    // librdkafka retries broker errors itself; count them and show the last.
                    self.count_error("consume");
                    tracing::warn!(error = %e, "source consumer error");
                    ctx.progress
                        .update(|t| t.message = format!("source {}: {e}", self.spec.source_name));
                }
            }
        }
    }

    /// The low and high watermarks of a source partition (a request to the source).
    fn source_watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), MirrorError> {
        self.consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(|source| MirrorError::Watermarks {
                cluster: format!("source {}", self.spec.source_name),
                topic: topic.to_string(),
                partition,
                source: Box::new(source),
            })
    }

    /// The low and high watermarks of a target partition (a request to the target).
    fn target_watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), MirrorError> {
        self.tail
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(|source| MirrorError::Watermarks {
                cluster: format!("site {}", self.spec.site_name),
                topic: topic.to_string(),
                partition,
                source: Box::new(source),
            })
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
}
