//! Why a mirror task stopped: [`MirrorError`], one variant per kind of failure, each naming the
//! cluster and, where one is involved, the topic and partition; and whether restarting the task
//! can help ([`MirrorError::is_retryable`]) or only a change of config or data can.
//!
//! Owns the wording of the mirror's failures (the log and the status page show it). Decides
//! nothing: what to do about a failure is the runtime's call. Imports nothing of the mirror's
//! own, so that every part of the mirror, and the task contract, can use it.

use super::checkpoint::PROGRESS_TOPIC;
use super::topics::TopicError;
use lockstep_config::StartPolicy;
use rdkafka::error::KafkaError;
use std::time::Duration;

/// Why a mirror task stopped.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A client of a cluster could not be created: its properties are wrong.
    #[error("{cluster}: {client}: {source}")]
    Client {
        /// `source NAME` or `site NAME`.
        cluster: String,
        client: &'static str,
        source: Box<KafkaError>,
    },
    /// A step of the target producer (starting, committing or flushing what was produced).
    #[error("site {site}: {step}: {source}")]
    Producer {
        site: String,
        step: &'static str,
        source: Box<KafkaError>,
    },
    /// A partition's low and high watermarks could not be read.
    #[error("{cluster}: watermarks of {topic}/{partition}: {source}")]
    Watermarks {
        /// `source NAME` or `site NAME`.
        cluster: String,
        topic: String,
        partition: i32,
        source: Box<KafkaError>,
    },
    /// Reading a stretch of a target partition (resume point, audit) failed.
    #[error("site {site}: reading {topic}/{partition} at offsets {from}..{to}: {source}")]
    ReadTarget {
        site: String,
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        source: Box<KafkaError>,
    },
    /// The target sent nothing for a while when asked for a stretch of a partition.
    #[error(
        "site {site}: reading {topic}/{partition} at offsets {from}..{to}: no answer for {waited:?}"
    )]
    ReadTimeout {
        site: String,
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        waited: Duration,
    },
    /// The source consumer could not be given its partitions.
    #[error("source {source_name}: assign ({partitions} partitions): {source}")]
    Assign {
        source_name: String,
        partitions: usize,
        source: Box<KafkaError>,
    },
    /// Topic discovery, or creating or growing a target topic.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A target topic was created or grown, but its metadata did not show it in time.
    #[error("site {site}: topic {topic} did not show {partitions} partitions in time")]
    PartitionsLate {
        site: String,
        topic: String,
        partitions: i32,
    },
    /// Neither a checkpoint nor a record of ours in the scanned tail of a target partition, and
    /// `on_no_resume_point = "fail"`: only the operator can say where to start.
    #[error("site {site}: {target_topic}/{partition}: no resume point: no checkpoint in {progress}, and none of the last {scanned} records comes from source {source_name}; applying start = {start:?} could repeat or lose records. If this flow never wrote to this partition, set on_no_resume_point = \"start\" on flow {flow}", progress = PROGRESS_TOPIC)]
    NoResumePoint {
        site: String,
        target_topic: String,
        partition: i32,
        /// Target records read without finding one of ours.
        scanned: i64,
        source_name: String,
        start: StartPolicy,
        flow: String,
    },
    /// The target refused a produced record (its delivery report says why).
    #[error("delivery to {topic}/{partition} failed for source offset {source_offset}: {source}")]
    Delivery {
        /// The target topic.
        topic: String,
        partition: i32,
        source_offset: i64,
        source: Box<KafkaError>,
    },
    /// The producer refused to queue a mirrored record.
    #[error("site {site}: produce to {topic}/{partition} failed: {source}")]
    Produce {
        site: String,
        /// The target topic.
        topic: String,
        partition: i32,
        source: Box<KafkaError>,
    },
    /// The producer refused to queue a record for the dead-letter topic.
    #[error("site {site}: dead-letter produce to {topic} failed: {source}")]
    DeadLetter {
        site: String,
        topic: String,
        source: Box<KafkaError>,
    },
    /// The producer refused to queue a checkpoint.
    #[error("site {site}: writing {progress} failed: {source}", progress = PROGRESS_TOPIC)]
    CheckpointWrite {
        site: String,
        source: Box<KafkaError>,
    },
    /// A record over the size limit, with `on_oversize = "fail"`.
    #[error("{record}; on_oversize = \"fail\" stops the flow here (set \"skip\" or \"dead_letter\" to pass it)")]
    Oversize { record: Oversized },
    /// `on_oversize = "dead_letter"` without a dead-letter topic.
    #[error(
        "invalid task config: flow {flow}: on_oversize = \"dead_letter\" without dead_letter_topic"
    )]
    NoDeadLetterTopic { flow: String },
    /// The lease ran out: the task stopped writing (and dropped what had not landed).
    #[error("lease lost: stopped writing")]
    LeaseLost,
    /// The mirror's thread (or the task running it) panicked or was cancelled.
    #[error("{what} ended abnormally: {source}")]
    Aborted {
        /// "mirror thread" or "mirror task".
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

impl MirrorError {
    /// Whether running the task again can help: false when it would fail the same way until
    /// the config or the data changes (a wrong client property, an oversized record under
    /// `on_oversize = "fail"`, a partition without a resume point).
    pub fn is_retryable(&self) -> bool {
        match self {
            MirrorError::Client { .. }
            | MirrorError::NoResumePoint { .. }
            | MirrorError::Oversize { .. }
            | MirrorError::NoDeadLetterTopic { .. } => false,
            MirrorError::Topic(e) => e.is_retryable(),
            MirrorError::Producer { .. }
            | MirrorError::Watermarks { .. }
            | MirrorError::ReadTarget { .. }
            | MirrorError::ReadTimeout { .. }
            | MirrorError::Assign { .. }
            | MirrorError::PartitionsLate { .. }
            | MirrorError::Delivery { .. }
            | MirrorError::Produce { .. }
            | MirrorError::DeadLetter { .. }
            | MirrorError::CheckpointWrite { .. }
            | MirrorError::LeaseLost
            | MirrorError::Aborted { .. } => true,
        }
    }
}

/// A source record over the size limit of its target: what the log, the status, the
/// dead-letter header and [`MirrorError::Oversize`] say about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("record {topic}/{partition}@{offset} is {size} bytes, over the limit of {limit} bytes for target topic {target_topic} at site {site} (max_record_bytes or the topic's max.message.bytes)")]
pub struct Oversized {
    /// The source topic.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Key, value and headers as they would be produced.
    pub size: usize,
    pub limit: usize,
    pub target_topic: String,
    pub site: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn messages_name_the_site_topic_and_partition() {
        let e = MirrorError::NoResumePoint {
            site: "a".into(),
            target_topic: "events".into(),
            partition: 0,
            scanned: 42,
            source_name: "up".into(),
            start: StartPolicy::Earliest,
            flow: "f".into(),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("site a: events/0: no resume point: no checkpoint in __lockstep_progress, and none of the last 42 records comes from source up;"),
            "{text}"
        );
        assert!(
            text.ends_with("set on_no_resume_point = \"start\" on flow f"),
            "{text}"
        );
        assert!(!e.is_retryable());

        let e = MirrorError::Delivery {
            topic: "events".into(),
            partition: 3,
            source_offset: 7,
            source: Box::new(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge,
            )),
        };
        assert!(e
            .to_string()
            .starts_with("delivery to events/3 failed for source offset 7: "));
        assert!(e.is_retryable());

        let record = Oversized {
            topic: "events".into(),
            partition: 0,
            offset: 10,
            size: 65_600,
            limit: 16_384,
            target_topic: "events".into(),
            site: "a".into(),
        };
        let e = MirrorError::Oversize { record };
        let text = e.to_string();
        assert!(
            text.contains("events/0@10") && text.contains("on_oversize = \"fail\""),
            "{text}"
        );
        assert!(!e.is_retryable());
    }
}
