//! Stream partitions as Druid's Kafka supervisor keys them, and the partition -> offset maps
//! of its status report.
//!
//! Druid writes a partition as a JSON key through `KafkaTopicPartition.KafkaTopicPartitionKeySerializer`
//! (apache/druid processing/src/main/java/org/apache/druid/data/input/kafka/KafkaTopicPartition.java):
//! `"0"` for a single-topic supervisor (`ioConfig.topic`), `"topic:0"` in multi-topic mode
//! (`ioConfig.topicPattern`, Druid 28+). Its reader, `KafkaTopicPartition.fromString`, splits at the
//! *last* `:`. The newest sources also know a `cluster|` prefix (multi-cluster supervisors); lockstep
//! does not read those and rejects such keys rather than guess.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// A stream partition as Druid keys it: `"0"` (single topic) or `"topic:0"` (`topicPattern`).
///
/// Serialized as that key string (not as a struct), so that an [`Offsets`] map serializes to
/// JSON exactly as Druid writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamPartition {
    /// The topic, present only in multi-topic mode.
    pub topic: Option<String>,
    pub partition: i32,
}

/// Partition -> offset (or lag), as in the supervisor status report. Raw values are kept,
/// negative ones included.
pub type Offsets = BTreeMap<StreamPartition, i64>;

impl StreamPartition {
    /// A single-topic partition (`"0"`).
    pub fn single(partition: i32) -> Self {
        StreamPartition {
            topic: None,
            partition,
        }
    }

    /// A multi-topic partition (`"topic:0"`).
    pub fn of_topic(topic: impl Into<String>, partition: i32) -> Self {
        StreamPartition {
            topic: Some(topic.into()),
            partition,
        }
    }

    /// Reads a key as `KafkaTopicPartition.fromString` does: split at the last `:`; no `:`
    /// means a single-topic partition. Stricter where Druid would never write the key:
    /// the partition must be plain decimal digits (Kafka partitions are >= 0), the topic
    /// non-empty, and a `cluster|` prefix is refused.
    pub fn parse(key: &str) -> Option<Self> {
        if key.contains('|') {
            return None;
        }
        let (topic, number) = match key.rfind(':') {
            Some(i) => (Some(&key[..i]), &key[i + 1..]),
            None => (None, key),
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let partition: i32 = number.parse().ok()?;
        match topic {
            Some("") => None,
            Some(t) => Some(StreamPartition::of_topic(t, partition)),
            None => Some(StreamPartition::single(partition)),
        }
    }

    /// The topic this partition belongs to: its own in multi-topic mode, else the
    /// supervisor's `stream` (its single topic).
    pub fn topic_or<'a>(&'a self, stream: &'a str) -> &'a str {
        self.topic.as_deref().unwrap_or(stream)
    }
}

impl fmt::Display for StreamPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.topic {
            Some(t) => write!(f, "{t}:{}", self.partition),
            None => write!(f, "{}", self.partition),
        }
    }
}

impl Serialize for StreamPartition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamPartition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = String::deserialize(d)?;
        StreamPartition::parse(&key).ok_or_else(|| de::Error::custom(bad_key(&key)))
    }
}

fn bad_key(key: &str) -> String {
    format!(
        "partition key {key:?} is neither \"<partition>\" nor \"<topic>:<partition>\" \
         (Druid's KafkaTopicPartition key)"
    )
}

/// Deserializes a `Map<KafkaTopicPartition, Long>` of the status report. A missing or null
/// map is empty (Druid omits null maps: `@JsonInclude(NON_NULL)` on
/// SeekableStreamSupervisorReportPayload); a null value is skipped (not yet known, never
/// zero); a key that is not a partition or a value that is not an integer fails the decode.
pub(crate) fn offsets<'de, D: Deserializer<'de>>(d: D) -> Result<Offsets, D::Error> {
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    let mut out = Offsets::new();
    for (key, value) in raw.unwrap_or_default() {
        let p = StreamPartition::parse(&key).ok_or_else(|| de::Error::custom(bad_key(&key)))?;
        match &value {
            Value::Null => {}
            Value::Number(n) => {
                let v = n.as_i64().ok_or_else(|| {
                    de::Error::custom(format!(
                        "value {n} for partition {key:?} is not a 64-bit integer offset"
                    ))
                })?;
                out.insert(p, v);
            }
            other => {
                return Err(de::Error::custom(format!(
                    "value {other} for partition {key:?} is not an integer offset"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_druid_writes_them() {
        assert_eq!(
            StreamPartition::parse("0"),
            Some(StreamPartition::single(0))
        );
        assert_eq!(
            StreamPartition::parse("clicks:12"),
            Some(StreamPartition::of_topic("clicks", 12))
        );
        // fromString splits at the last ':'.
        assert_eq!(
            StreamPartition::parse("a:b:3"),
            Some(StreamPartition::of_topic("a:b", 3))
        );
        for bad in [
            "",
            ":1",
            "x:",
            "-1",
            "+1",
            " 1",
            "1.0",
            "c1|clicks:0",
            "2147483648",
        ] {
            assert_eq!(StreamPartition::parse(bad), None, "{bad:?}");
        }
        let p = StreamPartition::of_topic("clicks", 3);
        assert_eq!(p.to_string(), "clicks:3");
        assert_eq!(p.topic_or("stream"), "clicks");
        assert_eq!(StreamPartition::single(3).topic_or("stream"), "stream");
        assert_eq!(
            serde_json::to_string(&p).ok().as_deref(),
            Some("\"clicks:3\"")
        );
        let mut m = Offsets::new();
        m.insert(p, 5);
        m.insert(StreamPartition::single(1), -2);
        assert_eq!(
            serde_json::to_string(&m).ok().as_deref(),
            Some(r#"{"1":-2,"clicks:3":5}"#)
        );
    }
}
