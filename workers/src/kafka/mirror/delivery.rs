//! The target producer and its delivery reports: what a report advances for its partition
//! (progress, the partition's audit, records outstanding), the task's counters and metrics,
//! and the first failed delivery, which the loop turns into the task's failure.
//!
//! Delivery reports run on the producer's thread: everything here is atomics and short locks,
//! never a request to a broker.

use super::{client_err, MirrorSpec};
use crate::kafka::audit::Audit;
use crate::kafka::client_config;
use crate::kafka::error::MirrorError;
use crate::metrics::WorkerMetrics;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// What delivery reports advance for one partition.
pub(super) struct Delivered {
    pub(super) last_source: AtomicI64,
    pub(super) last_target: AtomicI64,
    /// Records sent to the partition and not yet delivered or failed.
    pub(super) outstanding: AtomicI64,
    audit: Mutex<Audit>,
}

impl Delivered {
    /// A partition resuming at source offset `next`, its audit positioned at the target's end.
    pub(super) fn new(next: i64, audit: Audit) -> Self {
        Delivered {
            last_source: AtomicI64::new(next - 1),
            last_target: AtomicI64::new(-1),
            outstanding: AtomicI64::new(0),
            audit: Mutex::new(audit),
        }
    }

    pub(super) fn audit(&self) -> std::sync::MutexGuard<'_, Audit> {
        // A poisoned lock only means a panic while updating: the audit is still usable.
        self.audit.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a produced record carries to its delivery report.
pub(super) struct Opaque {
    /// The partition's progress; None for lockstep's own records (dead letters, checkpoints).
    pub(super) delivered: Option<Arc<Delivered>>,
    pub(super) source_offset: i64,
    pub(super) timestamp_ms: i64,
}

/// State that delivery reports update and the mirror loop reads.
pub(super) struct DeliveryShared {
    first_error: Mutex<Option<MirrorError>>,
    pub(super) records: AtomicU64,
    pub(super) bytes: AtomicU64,
    /// Every delivery report so far, successful or not (the pacing counts them).
    pub(super) acked: AtomicU64,
    metrics: WorkerMetrics,
    labels: [String; 2],
}

impl DeliveryShared {
    pub(super) fn new(metrics: WorkerMetrics, labels: [String; 2]) -> Self {
        DeliveryShared {
            first_error: Mutex::new(None),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            metrics,
            labels,
        }
    }

    /// The first delivery error since the last call, if any.
    pub(super) fn take_error(&self) -> Option<MirrorError> {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Counts a landed record of a partition (records, bytes, latency from its timestamp).
    fn landed(&self, size: usize, timestamp_ms: i64) {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        self.metrics.mirror_records.with_label_values(&labels).inc();
        self.metrics
            .mirror_bytes
            .with_label_values(&labels)
            .inc_by(size as u64);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if timestamp_ms > 0 && now_ms >= timestamp_ms {
            self.metrics
                .mirror_latency
                .with_label_values(&labels)
                .observe((now_ms - timestamp_ms) as f64 / 1000.0);
        }
    }
}

/// Delivery reports, called on the producer's thread.
pub(super) struct DeliveryCtx(Arc<DeliveryShared>);

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
                    this.landed(size, opaque.timestamp_ms);
                }
            }
            Err((e, msg)) => {
                let mut first = this.first_error.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    *first = Some(MirrorError::Delivery {
                        topic: msg.topic().to_string(),
                        partition: msg.partition(),
                        source_offset: opaque.source_offset,
                        source: Box::new(e.clone()),
                    });
                }
            }
        }
    }
}

/// The target producer. Operator properties on the site come first; then what exactly-once
/// needs. `message.timeout.ms` is left alone: a record timed out in flight makes librdkafka's
/// idempotent producer go on under a bumped epoch, which tansu 0.6's storage fails on (it
/// panics, and the broker stops answering); the pacing bounds what a paused worker can hold.
pub(super) fn make_producer(
    spec: &MirrorSpec,
    shared: &Arc<DeliveryShared>,
    transactional: bool,
) -> Result<ThreadedProducer<DeliveryCtx>, MirrorError> {
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
        .map_err(client_err(&format!("site {}", spec.site_name), "producer"))
}
