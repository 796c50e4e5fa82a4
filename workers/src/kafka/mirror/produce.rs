//! The produce/land loop: one source record mirrored (loop prevention, the size policy, the
//! limits, then produced to the same partition of the target with key, value, headers and
//! timestamp preserved), what was produced made to land (transactions committed, or the queue
//! flushed), and the checkpoints written once it has. Never past the lease: when the lease is
//! gone, what is queued and in flight is dropped, not flushed.

use super::delivery::Opaque;
use super::{limits, Mirror, TIMEOUT};
use crate::kafka::checkpoint::{Checkpoint, PROGRESS_TOPIC};
use crate::kafka::error::MirrorError;
use crate::kafka::headers;
use crate::task::TaskContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, Producer, PurgeConfig};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Records produced in a transaction before it is committed, at the latest.
const COMMIT_RECORDS: usize = 10_000;
/// How long a transaction stays open with records in it, at the longest.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

impl Mirror {
    /// The error of a step of the target producer.
    pub(super) fn producer_err(
        &self,
        step: &'static str,
    ) -> impl FnOnce(KafkaError) -> MirrorError {
        let site = self.spec.site_name.clone();
        move |source| MirrorError::Producer {
            site,
            step,
            source: Box::new(source),
        }
    }

    /// Mirrors one source record, or passes over it (one of the target site's own, or
    /// oversized under `skip` or `dead_letter`).
    pub(super) fn mirror_one(
        &mut self,
        msg: &BorrowedMessage<'_>,
        ctx: &TaskContext,
    ) -> Result<(), MirrorError> {
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
            self.pass_over(i, offset);
            return Ok(());
        }
        let (hdrs, header_bytes) = headers::mirrored(msg.headers(), &self.spec.source_name, offset);
        let size = msg.key().map(<[u8]>::len).unwrap_or(0) + msg.payload_len() + header_bytes;
        let target_topic = self.parts[i].target_topic.clone();
        if let Some(record) = self.oversized(msg, size, &target_topic) {
            self.on_oversize(msg, hdrs, record, ctx)?;
            self.pass_over(i, offset);
            return Ok(());
        }
        let bandwidth = self.bandwidth.as_ref();
        limits::hold(ctx, || bandwidth.and_then(|b| b.wait(size)))?;
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

    /// Partition `i` goes on after `offset` without mirroring it; the next checkpoint moves
    /// past it.
    fn pass_over(&mut self, i: usize, offset: i64) {
        let part = &mut self.parts[i];
        part.next = offset + 1;
        part.skipped_since_write = true;
    }

    /// Produces, waiting while the local queue is full (bounded by lease and cancellation).
    /// Outstanding records are kept within the pacing allowance first (see `limits`).
    fn send<'a>(
        &mut self,
        mut record: BaseRecord<'a, [u8], [u8], Box<Opaque>>,
        ctx: &TaskContext,
    ) -> Result<(), MirrorError> {
        let (pacer, shared, sent) = (&mut self.pacer, &self.shared, self.sent);
        limits::hold(ctx, || {
            limits::pacing(pacer, sent, shared.acked.load(Ordering::Relaxed))
        })?;
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
                        return Err(MirrorError::LeaseLost);
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((source, back)) => {
                    if let Some(d) = &delivered {
                        d.outstanding.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.count_error("produce");
                    return Err(MirrorError::Produce {
                        site: self.spec.site_name.clone(),
                        topic: back.topic.to_string(),
                        partition: back.partition.unwrap_or(-1),
                        source: Box::new(source),
                    });
                }
            }
        }
    }

    /// A transaction to commit: records in it, and enough of them or open long enough.
    pub(super) fn commit_due(&self) -> bool {
        self.transactional
            && self.uncommitted > 0
            && (self.uncommitted >= COMMIT_RECORDS || self.last_commit.elapsed() >= COMMIT_EVERY)
    }

    /// Commits the open transaction and begins the next.
    pub(super) fn commit_transaction(&mut self) -> Result<(), MirrorError> {
        self.producer
            .commit_transaction(TIMEOUT)
            .map_err(self.producer_err("commit_transaction"))?;
        self.producer
            .begin_transaction()
            .map_err(self.producer_err("begin_transaction"))?;
        self.uncommitted = 0;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// The lease is gone: not one more write. Drops what is queued and what is in flight (a
    /// request already on the wire may still land; the audit of the next owner reports it),
    /// and aborts the open transaction.
    pub(super) fn drop_unlanded(&self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        if self.transactional {
            let _ = self.producer.abort_transaction(Duration::from_millis(500));
        }
        tracing::error!("lease lost: stopped producing, queued and in-flight records dropped");
    }

    /// Writes each partition's checkpoint when it changed: where its audit stands (everything
    /// below the audited target offset read, the highest source offset there). After skipped
    /// records, everything produced lands first and the checkpoint moves past them, so a
    /// restart does not process them again.
    pub(super) fn write_progress(&mut self) -> Result<(), MirrorError> {
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
            return Err(MirrorError::LeaseLost);
        }
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
            self.producer
                .send(record)
                .map_err(|(source, _)| MirrorError::CheckpointWrite {
                    site: self.spec.site_name.clone(),
                    source: Box::new(source),
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
    pub(super) fn finish(&mut self) -> Result<(), MirrorError> {
        self.write_progress()?;
        self.land(false)
    }

    /// Makes everything produced so far land (transaction committed, or queue flushed), then
    /// reports the first delivery error, if any. `reopen` begins the next transaction. Never
    /// past the lease: when it runs out first, what is queued and in flight is dropped.
    fn land(&mut self, reopen: bool) -> Result<(), MirrorError> {
        if !self.lease.valid() {
            self.drop_unlanded();
            return Err(MirrorError::LeaseLost);
        }
        if self.transactional && reopen {
            self.commit_transaction()?;
        } else if self.transactional {
            self.producer
                .commit_transaction(TIMEOUT)
                .map_err(self.producer_err("commit_transaction"))?;
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
                            return Err(MirrorError::LeaseLost);
                        }
                    }
                    Err(e) => return Err(self.producer_err("flush")(e)),
                }
            }
        }
        match self.shared.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
