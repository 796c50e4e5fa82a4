//! The gap and oversize policies: what the mirror does about records it cannot mirror.
//!
//! - A gap: source records deleted by retention before they were mirrored (a resume point or a
//!   next offset below the source's low watermark). Always counted, logged and shown in
//!   status; the partition goes on from the low watermark.
//! - An oversized record: over the target topic's `max.message.bytes` or the flow's
//!   `max_record_bytes`. `on_oversize` says: stop the task (`fail`), pass over it (`skip`), or
//!   send it to the dead-letter topic (`dead_letter`), with headers saying why and from where.

use super::delivery::Opaque;
use super::Mirror;
use crate::kafka::error::{MirrorError, Oversized};
use crate::task::TaskContext;
use lockstep_config::OversizePolicy;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;

impl Mirror {
    /// Source offsets `from..low` of `topic/p` were deleted before they were mirrored: logs,
    /// counts and shows the gap; the number of records lost.
    pub(super) fn record_gap(
        &self,
        ctx: &TaskContext,
        topic: &str,
        p: i32,
        from: i64,
        low: i64,
    ) -> u64 {
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
    pub(super) fn check_gaps(&mut self, ctx: &TaskContext) -> Result<(), MirrorError> {
        let mut changed = false;
        for i in 0..self.parts.len() {
            let (topic, p, next) = (
                self.parts[i].topic.clone(),
                self.parts[i].partition,
                self.parts[i].next,
            );
            let (low, _) = self.source_watermarks(&topic, p)?;
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

    /// The record `msg`, `size` bytes as it would be produced to `target_topic`, when that is
    /// over the limit: the smaller of the topic's `max.message.bytes` and the flow's
    /// `max_record_bytes`.
    pub(super) fn oversized(
        &self,
        msg: &BorrowedMessage<'_>,
        size: usize,
        target_topic: &str,
    ) -> Option<Oversized> {
        let topic_limit = self.max_bytes.get(target_topic).copied().flatten();
        let flow_limit = self.spec.flow.max_record_bytes.map(|b| b as usize);
        let limit = match (topic_limit, flow_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let limit = limit.filter(|l| size > *l)?;
        Some(Oversized {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            size,
            limit,
            target_topic: target_topic.to_string(),
            site: self.spec.site_name.clone(),
        })
    }

    /// Applies `on_oversize` to an oversized record: fails the task, or skips it, or sends it
    /// to the dead-letter topic (with `hdrs`, its mirrored headers); then shows it in status.
    pub(super) fn on_oversize(
        &mut self,
        msg: &BorrowedMessage<'_>,
        hdrs: OwnedHeaders,
        record: Oversized,
        ctx: &TaskContext,
    ) -> Result<(), MirrorError> {
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        match self.spec.flow.on_oversize {
            OversizePolicy::Fail => {
                self.count_error("oversize");
                tracing::error!(
                    topic,
                    partition,
                    offset,
                    "{record}: the task stops (on_oversize = \"fail\")"
                );
                return Err(MirrorError::Oversize { record });
            }
            OversizePolicy::Skip => {
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    "{record}: skipped (on_oversize = \"skip\")"
                );
                self.count_skip("oversize");
            }
            OversizePolicy::DeadLetter => {
                self.dead_letter(msg, hdrs, &record.to_string())?;
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    "{record}: sent to the dead-letter topic"
                );
                self.metrics
                    .mirror_dead_letters
                    .with_label_values(&[&self.labels[0], &self.labels[1]])
                    .inc();
            }
        }
        ctx.progress.update(|t| t.message = record.to_string());
        Ok(())
    }

    /// Produces `msg` to the flow's dead-letter topic (one partition, created if need be),
    /// with headers naming `why` and where it came from.
    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        hdrs: OwnedHeaders,
        why: &str,
    ) -> Result<(), MirrorError> {
        let Some(dlq) = self.spec.flow.dead_letter_topic.clone() else {
            return Err(MirrorError::NoDeadLetterTopic {
                flow: self.spec.flow_name.clone(),
            });
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
        self.producer
            .send(record)
            .map_err(|(source, _)| MirrorError::DeadLetter {
                site: self.spec.site_name.clone(),
                topic: dlq.clone(),
                source: Box::new(source),
            })?;
        self.sent += 1;
        Ok(())
    }
}
