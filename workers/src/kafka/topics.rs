//! Topic discovery on the source, target topic creation and growth, and which task slot owns
//! which partition.
//!
//! Ownership must never change while partitions are added, or two slots could write the same
//! target partition: partition p of topic t belongs to slot `(hash(t) + p) % slots`, which
//! depends only on t and p.

use lockstep_config::TopicSelector;
use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::collections::BTreeMap;
use std::time::Duration;

/// Topic configs copied from the source to a newly created target topic.
pub const COPIED_CONFIGS: &[&str] = &[
    "retention.ms",
    "cleanup.policy",
    "max.message.bytes",
    "compression.type",
    "message.timestamp.type",
];

const TIMEOUT: Duration = Duration::from_secs(10);
/// DescribeConfigs is optional for us (some Kafka-compatible brokers lack it): ask briefly.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("{cluster}: metadata request failed: {source}")]
    Metadata {
        cluster: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{cluster}: topic {topic}: {message}")]
    Admin {
        cluster: String,
        topic: String,
        message: String,
    },
    #[error("topic_regex does not compile: {0}")]
    Regex(#[from] regex::Error),
}

impl TopicError {
    /// Whether asking again can help: a broker's answer may change, a bad regex does not.
    pub fn is_retryable(&self) -> bool {
        match self {
            TopicError::Metadata { .. } | TopicError::Admin { .. } => true,
            TopicError::Regex(_) => false,
        }
    }
}

/// FNV-1a: a stable hash (std's hasher may change between Rust versions, and ownership must
/// be the same on every worker of every version).
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The partitions of `topic` that slot `index` of `count` owns.
pub fn owned_partitions(topic: &str, partitions: i32, index: u32, count: u32) -> Vec<i32> {
    let base = stable_hash(topic) % u64::from(count.max(1));
    (0..partitions)
        .filter(|p| (base + *p as u64) % u64::from(count.max(1)) == u64::from(index))
        .collect()
}

/// Target topic name for a source topic.
pub fn target_name(template: &str, topic: &str) -> String {
    template.replace("{topic}", topic)
}

/// Topics of the source that the selector picks, with their partition counts.
pub fn discover<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    cluster: &str,
    selector: &TopicSelector,
) -> Result<BTreeMap<String, i32>, TopicError> {
    let metadata = client
        .fetch_metadata(None, TIMEOUT)
        .map_err(|source| TopicError::Metadata {
            cluster: cluster.to_string(),
            source,
        })?;
    let regex = match selector {
        TopicSelector::Regex(r) => Some(regex::Regex::new(r)?),
        TopicSelector::List(_) => None,
    };
    let mut out = BTreeMap::new();
    for t in metadata.topics() {
        let wanted = match (selector, &regex) {
            (TopicSelector::List(list), _) => list.iter().any(|n| n == t.name()),
            (_, Some(re)) => !t.name().starts_with("__") && re.is_match(t.name()),
            _ => false,
        };
        if wanted && t.error().is_none() && !t.partitions().is_empty() {
            out.insert(t.name().to_string(), t.partitions().len() as i32);
        }
    }
    Ok(out)
}

/// Partition count of a topic on a cluster, None when it does not exist.
pub fn partition_count<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    cluster: &str,
    topic: &str,
) -> Result<Option<i32>, TopicError> {
    let metadata = client
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|source| TopicError::Metadata {
            cluster: cluster.to_string(),
            source,
        })?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// The configs of a topic that we copy, where the broker answers DescribeConfigs.
pub async fn topic_configs(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> BTreeMap<String, String> {
    let opts = AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT));
    let mut out = BTreeMap::new();
    match admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
    {
        Ok(results) => {
            for r in results.into_iter().flatten() {
                for e in r.entries {
                    if COPIED_CONFIGS.contains(&e.name.as_str()) && !e.is_default {
                        if let Some(v) = e.value {
                            out.insert(e.name, v);
                        }
                    }
                }
            }
        }
        Err(e) => {
            tracing::debug!(topic, error = %e, "describe_configs unsupported or failed; copying no topic configs")
        }
    }
    out
}

/// `max.message.bytes` of a target topic, where the broker tells it.
pub async fn max_message_bytes(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Option<usize> {
    let opts = AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
        .ok()?;
    results
        .into_iter()
        .flatten()
        .flat_map(|r| r.entries)
        .find(|e| e.name == "max.message.bytes")
        .and_then(|e| e.value)
        .and_then(|v| v.parse().ok())
}

/// Makes sure the target topic exists with at least `partitions` partitions, creating it with
/// the given configs. Races with other slots doing the same are harmless.
pub async fn ensure_target(
    admin: &AdminClient<DefaultClientContext>,
    cluster: &str,
    topic: &str,
    partitions: i32,
    existing: Option<i32>,
    configs: &BTreeMap<String, String>,
) -> Result<(), TopicError> {
    let opts = AdminOptions::new()
        .request_timeout(Some(TIMEOUT))
        .operation_timeout(Some(TIMEOUT));
    let admin_err = |message: String| TopicError::Admin {
        cluster: cluster.to_string(),
        topic: topic.to_string(),
        message,
    };
    match existing {
        None => {
            let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
            for (k, v) in configs {
                new = new.set(k, v);
            }
            let results = admin
                .create_topics([&new], &opts)
                .await
                .map_err(|e| admin_err(format!("create failed: {e}")))?;
            for r in results {
                match r {
                    Ok(_) => {
                        tracing::info!(cluster, topic, partitions, ?configs, "created target topic")
                    }
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => return Err(admin_err(format!("create failed: {code}"))),
                }
            }
        }
        Some(have) if have < partitions => {
            let grow = NewPartitions::new(topic, partitions as usize);
            let results = admin.create_partitions([&grow], &opts).await.map_err(|e| {
                admin_err(format!("growing to {partitions} partitions failed: {e}"))
            })?;
            for r in results {
                match r {
                    Ok(_) => tracing::info!(
                        cluster,
                        topic,
                        from = have,
                        to = partitions,
                        "grew target topic"
                    ),
                    Err((_, RDKafkaErrorCode::InvalidPartitions)) => {}
                    Err((_, code)) => {
                        return Err(admin_err(format!(
                            "growing to {partitions} partitions failed: {code}"
                        )))
                    }
                }
            }
        }
        Some(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_a_partition_and_stable_under_growth() {
        for count in 1..6u32 {
            let mut seen = [0; 24];
            for index in 0..count {
                for p in owned_partitions("clicks", 24, index, count) {
                    seen[p as usize] += 1;
                    // Growing the topic never changes the owner of an existing partition.
                    assert!(owned_partitions("clicks", 48, index, count).contains(&p));
                }
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "each partition has exactly one owner"
            );
        }
    }

    #[test]
    fn target_names() {
        assert_eq!(target_name("{topic}", "a"), "a");
        assert_eq!(target_name("mirror.{topic}", "a"), "mirror.a");
    }
}
