//! The resume checkpoint a Kafka task keeps per partition in the target's compacted
//! `__lockstep_progress` topic, written every few seconds (not only after skips), so that a
//! successor finds the resume point however many foreign records follow the task's last write.
//!
//! A checkpoint `(source_next, target_next)` says: every record of this flow with a source
//! offset below `source_next` is mirrored, at a target offset below `target_next`; whatever lies
//! at or after `target_next` must be read to resume (the successor reads it all, in order, and
//! takes the highest source offset there). Value text: `"<source_next> <target_next>"`; the
//! older form `"<source_next>"` (written after skips only) is still read, without a target
//! offset.

/// Compacted topic on the target that holds the checkpoints.
pub const PROGRESS_TOPIC: &str = "__lockstep_progress";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub source_next: i64,
    pub target_next: Option<i64>,
}

impl Checkpoint {
    /// The record key of a partition's checkpoint.
    pub fn key(flow: &str, site: &str, source: &str, topic: &str, partition: i32) -> String {
        format!("{flow}|{site}|{source}|{topic}|{partition}")
    }

    pub fn encode(&self) -> String {
        match self.target_next {
            Some(t) => format!("{} {t}", self.source_next),
            None => self.source_next.to_string(),
        }
    }

    /// None for a value that is not a checkpoint (another tool's record, the fencing probe).
    pub fn decode(text: &str) -> Option<Checkpoint> {
        let mut parts = text.split(' ');
        let source_next = parts.next()?.parse().ok()?;
        let target_next = match parts.next() {
            Some(t) => Some(t.parse().ok()?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Checkpoint {
            source_next,
            target_next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_the_older_form() {
        let c = Checkpoint {
            source_next: 12_500,
            target_next: Some(18_978),
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        assert_eq!(
            Checkpoint::decode("42"),
            Some(Checkpoint {
                source_next: 42,
                target_next: None
            })
        );
        for bad in ["", "x", "1 y", "1 2 3", "transactions"] {
            assert_eq!(Checkpoint::decode(bad), None, "{bad:?}");
        }
    }
}
