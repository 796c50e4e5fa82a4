//! Progress for the heartbeat (per-partition offsets, gaps, duplicates, fencing; records and
//! bytes) and the lag gauges, from cached watermarks: reporting never asks a broker.

use super::Mirror;
use crate::task::TaskContext;
use lockstep_proto as pb;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::sync::atomic::Ordering;

impl Mirror {
    /// Progress for the heartbeat and lag gauges, from cached watermarks (no network call).
    pub(super) fn report(&mut self, ctx: &TaskContext) {
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

    /// The task stops here: its partitions' lag is no longer this worker's to report.
    pub(super) fn forget_lag(&self) {
        for part in &self.parts {
            self.metrics.forget_partition(
                &self.labels[0],
                &self.labels[1],
                &part.topic,
                part.partition,
            );
        }
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
