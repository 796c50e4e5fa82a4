//! Where each partition resumes: the checkpoints in `__lockstep_progress`, read once at start,
//! and the target partition itself, read from its checkpoint to its end (through the audit,
//! which also finds duplicates written there) or, without one, scanned backwards from its tail
//! for the highest source offset of ours. Also the one reader of target stretches
//! ([`Mirror::read_target`]) that the audit uses too.
//!
//! Reads only; the gap a resume point below the source's low watermark means is `policy`'s.

use super::{Mirror, TIMEOUT};
use crate::kafka::audit::Audit;
use crate::kafka::checkpoint::{Checkpoint, PROGRESS_TOPIC};
use crate::kafka::client_config;
use crate::kafka::error::MirrorError;
use crate::kafka::headers;
use crate::task::TaskContext;
use lockstep_config::{NoResumePoint, StartPolicy};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Records scanned per step when reading the target tail backwards.
const TAIL_WINDOW: i64 = 1_024;
/// Most tail records scanned backwards (no checkpoint) before giving up on the tail.
const TAIL_BUDGET: i64 = 262_144;
/// Without a checkpoint, how far the backward scan goes on past the first window holding one of
/// our records: a paused former owner's late batch can sit after a successor's records, so the
/// highest source offset is not always in the newest window. This bounds what one owner can have
/// outstanding (the pacing allowance of a fast broker) with room to spare.
const TAIL_DEPTH: i64 = 131_072;

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

impl Mirror {
    /// The key of a partition's checkpoint in `__lockstep_progress`.
    pub(super) fn progress_key(&self, topic: &str, partition: i32) -> String {
        Checkpoint::key(
            &self.spec.flow_name,
            &self.spec.site_name,
            &self.spec.source_name,
            topic,
            partition,
        )
    }

    /// Loads `__lockstep_progress` (small, compacted) into `progress_seen`.
    ///
    /// The topic exists by now (`settle_fencing` made sure), so a failure to read it is the
    /// broker's, and fails the start (retried by the runtime) rather than resuming without
    /// the checkpoints: that would read whole target partitions backwards, minutes on a broker
    /// that reads every record up to the end for each fetch (tansu under load: the fault suite
    /// stalled on it). Silence after part of the topic was read keeps what was read.
    pub(super) fn read_progress_topic(&mut self) -> Result<(), MirrorError> {
        // On leases the checkpoints are plain writes, read uncommitted: a broker without
        // transactions (tansu 0.6) never ends the fencing probe's transaction, and a
        // read_committed reader's end (the last stable offset) would stay at the probe's
        // record for ever. No checkpoint would be seen and every resume would read whole
        // target partitions backwards. With transactions the checkpoints are committed with
        // the records they describe, and only committed ones may be trusted.
        let uncommitted;
        let reader: &BaseConsumer = if self.transactional {
            &self.tail
        } else {
            let mut c = client_config(&self.spec.target);
            c.set(
                "group.id",
                format!(
                    "lockstep.{}.{}.{}.progress",
                    self.spec.flow_name, self.spec.site_name, self.spec.index
                ),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_uncommitted");
            uncommitted = c
                .create::<BaseConsumer>()
                .map_err(|source| MirrorError::Client {
                    cluster: format!("site {}", self.spec.site_name),
                    client: "progress reader",
                    source: Box::new(source),
                })?;
            &uncommitted
        };
        let (low, high) = reader
            .fetch_watermarks(PROGRESS_TOPIC, 0, TIMEOUT)
            .map_err(|source| MirrorError::Watermarks {
                cluster: format!("site {}", self.spec.site_name),
                topic: PROGRESS_TOPIC.to_string(),
                partition: 0,
                source: Box::new(source),
            })?;
        if high <= low {
            return Ok(());
        }
        let site = format!("site {}", self.spec.site_name);
        let read_error = |source: KafkaError| MirrorError::ReadTarget {
            site: self.spec.site_name.clone(),
            topic: PROGRESS_TOPIC.to_string(),
            partition: 0,
            from: low,
            to: high,
            source: Box::new(source),
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(PROGRESS_TOPIC, 0, Offset::Offset(low))
            .and_then(|()| reader.assign(&tpl))
            .map_err(read_error)?;
        // The topic is compacted on Kafka, but a broker that never compacts (tansu) keeps every
        // checkpoint: read it all, giving up only when the broker stops answering, so that the
        // latest checkpoints (the ones that keep the resume read short) are the ones kept.
        let mut deadline = Instant::now() + TIMEOUT;
        let mut read = 0u64;
        let result = loop {
            if Instant::now() >= deadline {
                if read == 0 {
                    break Err(MirrorError::ReadTimeout {
                        site: self.spec.site_name.clone(),
                        topic: PROGRESS_TOPIC.to_string(),
                        partition: 0,
                        from: low,
                        to: high,
                        waited: TIMEOUT,
                    });
                }
                tracing::warn!(%site, read, end = high, "reading {PROGRESS_TOPIC} got no answer for {TIMEOUT:?}; resuming from the checkpoints read so far and the target itself");
                break Ok(());
            }
            match reader.poll(Duration::from_millis(200)) {
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
                        break Ok(());
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
                Some(Err(e)) => break Err(read_error(e)),
                None => {}
            }
        };
        let _ = reader.unassign();
        result
    }

    /// Reads the records at target offsets `from..to` of `target_topic/partition` in order and
    /// calls `each` with each record's offset and, when it came from this flow's source, its
    /// source offset. Stops early at the partition's end (for a transactional target, its last
    /// stable offset). Fails when the broker sends nothing for [`TIMEOUT`].
    pub(super) fn read_target(
        &self,
        target_topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        mut each: impl FnMut(i64, Option<i64>),
    ) -> Result<(), MirrorError> {
        if from >= to {
            return Ok(());
        }
        let err = |source| MirrorError::ReadTarget {
            site: self.spec.site_name.clone(),
            topic: target_topic.to_string(),
            partition,
            from,
            to,
            source: Box::new(source),
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(target_topic, partition, Offset::Offset(from))
            .map_err(err)?;
        self.tail.assign(&tpl).map_err(err)?;
        let mut deadline = Instant::now() + TIMEOUT;
        let result = loop {
            if Instant::now() > deadline {
                break Err(MirrorError::ReadTimeout {
                    site: self.spec.site_name.clone(),
                    topic: target_topic.to_string(),
                    partition,
                    from,
                    to,
                    waited: TIMEOUT,
                });
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
                Some(Err(e)) => break Err(err(e)),
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
    ) -> Result<ResumeScan, MirrorError> {
        let (low, high) = self.target_watermarks(target_topic, partition)?;
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

    /// Where to resume a partition, how many records a gap lost (0 without a gap), and the
    /// partition's audit, positioned at the target's end.
    pub(super) fn resume_point(
        &mut self,
        topic: &str,
        target_topic: &str,
        p: i32,
        ctx: &TaskContext,
    ) -> Result<(i64, u64, Audit), MirrorError> {
        let scan = self.resume_scan(topic, target_topic, p)?;
        let (low, high) = self.source_watermarks(topic, p)?;
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
                    return Err(MirrorError::NoResumePoint {
                        site: self.spec.site_name.clone(),
                        target_topic: target_topic.to_string(),
                        partition: p,
                        scanned: scan.scanned,
                        source_name: self.spec.source_name.clone(),
                        start: self.spec.flow.start,
                        flow: self.spec.flow_name.clone(),
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
}
