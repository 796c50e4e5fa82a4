//! Topic and partition sync: which source topics the flow selects, their target topics
//! (created or grown to the source's partition count, with the source's topic configs), the
//! partitions this slot owns (`topics::owned_partitions`), and the consumer's assignment.
//! Also lockstep's own one-partition topics on the target (dead letters, checkpoints).
//!
//! Partitions are only ever added while the task runs; a failed re-scan changes nothing.

use super::delivery::Delivered;
use super::{Mirror, Part, TIMEOUT};
use crate::kafka::error::MirrorError;
use crate::kafka::topics;
use crate::task::TaskContext;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Mirror {
    /// Finds new topics and partitions, prepares their targets and starts consuming them.
    pub(super) fn discover(&mut self, ctx: &TaskContext) -> Result<(), MirrorError> {
        let fresh = self.new_partitions(ctx)?;
        self.add_partitions(fresh)
    }

    /// The periodic re-scan. A failed one leaves the running partitions alone: it is counted,
    /// logged, shown in status, and tried again at the next interval. `failed`: the status
    /// message of the last failed re-scan, cleared once one works again.
    pub(super) fn rediscover(
        &mut self,
        ctx: &TaskContext,
        failed: &mut Option<String>,
    ) -> Result<(), MirrorError> {
        match self.new_partitions(ctx) {
            Ok(fresh) => {
                if let Some(message) = failed.take() {
                    tracing::info!("topic discovery works again");
                    ctx.progress.update(|t| {
                        if t.message == message {
                            t.message.clear();
                        }
                    });
                }
                self.add_partitions(fresh)
            }
            Err(e) => {
                self.count_error("discovery");
                tracing::warn!(error = %e, "topic discovery failed; mirroring the known partitions, trying again in {:?}", self.spec.flow.discovery_interval);
                let message =
                    format!("topic discovery failed (mirroring the known partitions): {e}");
                ctx.progress.update(|t| t.message = message.clone());
                *failed = Some(message);
                Ok(())
            }
        }
    }

    /// Source partitions this slot owns and does not mirror yet, with their target topics
    /// created or grown and their resume points read. Changes nothing the loop depends on, so
    /// a failure here (a broker too slow to answer in time) can simply be tried again.
    fn new_partitions(&mut self, ctx: &TaskContext) -> Result<Vec<Part>, MirrorError> {
        let src = format!("source {}", self.spec.source_name);
        let tgt = format!("site {}", self.spec.site_name);
        let topics = topics::discover(self.consumer.client(), &src, &self.spec.flow.topics)?;
        if topics.is_empty() {
            tracing::warn!(selector = ?self.spec.flow.topics, "no source topic matches the flow yet");
        }
        let mut fresh = Vec::new();
        for (topic, count) in &topics {
            let target_topic = topics::target_name(&self.spec.flow.target_topic, topic);
            let existing = topics::partition_count(self.tail.client(), &tgt, &target_topic)?;
            if existing.is_none_or(|n| n < *count) {
                let configs = self
                    .rt
                    .block_on(topics::topic_configs(&self.source_admin, topic));
                self.rt.block_on(topics::ensure_target(
                    &self.target_admin,
                    &tgt,
                    &target_topic,
                    *count,
                    existing,
                    &configs,
                ))?;
                self.wait_for_partitions(&target_topic, *count)?;
            }
            if !self.max_bytes.contains_key(&target_topic) {
                let limit = self
                    .rt
                    .block_on(topics::max_message_bytes(&self.target_admin, &target_topic));
                self.max_bytes.insert(target_topic.clone(), limit);
            }
            for p in topics::owned_partitions(topic, *count, self.spec.index, self.spec.count) {
                if self.index.get(topic).is_some_and(|m| m.contains_key(&p)) {
                    continue;
                }
                let (next, gaps, audit) = self.resume_point(topic, &target_topic, p, ctx)?;
                self.metrics
                    .init_partition(&self.spec.flow_name, &self.spec.site_name, topic, p);
                fresh.push(Part {
                    topic: topic.clone(),
                    target_topic: target_topic.clone(),
                    partition: p,
                    next,
                    delivered: Arc::new(Delivered::new(next, audit)),
                    source_high: next,
                    gaps,
                    skipped_since_write: false,
                    written: None,
                });
            }
        }
        Ok(fresh)
    }

    /// Starts consuming the given partitions (with all the others).
    fn add_partitions(&mut self, fresh: Vec<Part>) -> Result<(), MirrorError> {
        if fresh.is_empty() {
            return Ok(());
        }
        for part in fresh {
            let i = self.parts.len();
            self.index
                .entry(part.topic.clone())
                .or_default()
                .insert(part.partition, i);
            self.parts.push(part);
        }
        self.assign()?;
        tracing::info!(partitions = self.parts.len(), "mirroring");
        Ok(())
    }

    /// Metadata can lag a topic creation: wait (bounded) until the target shows the partitions.
    fn wait_for_partitions(&self, topic: &str, count: i32) -> Result<(), MirrorError> {
        let tgt = format!("site {}", self.spec.site_name);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if topics::partition_count(self.tail.client(), &tgt, topic)? >= Some(count) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(MirrorError::PartitionsLate {
                    site: self.spec.site_name.clone(),
                    topic: topic.to_string(),
                    partitions: count,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Hands every partition to the source consumer, each at its next offset.
    pub(super) fn assign(&mut self) -> Result<(), MirrorError> {
        let err = |source| MirrorError::Assign {
            source_name: self.spec.source_name.clone(),
            partitions: self.parts.len(),
            source: Box::new(source),
        };
        let mut tpl = TopicPartitionList::new();
        for p in &self.parts {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
                .map_err(err)?;
        }
        self.consumer.assign(&tpl).map_err(err)
    }

    /// Creates (once per task run) a one-partition topic of lockstep's own on the target: the
    /// dead-letter topic or `__lockstep_progress`.
    pub(super) fn ensure_single_partition_topic(
        &mut self,
        topic: &str,
        config: (&str, &str),
    ) -> Result<(), MirrorError> {
        if self.max_bytes.contains_key(topic) {
            return Ok(());
        }
        let site = format!("site {}", self.spec.site_name);
        let existing = topics::partition_count(self.tail.client(), &site, topic)?;
        let configs: BTreeMap<String, String> =
            [(config.0.to_string(), config.1.to_string())].into();
        self.rt.block_on(topics::ensure_target(
            &self.target_admin,
            &site,
            topic,
            1,
            existing,
            &configs,
        ))?;
        self.wait_for_partitions(topic, 1)?;
        self.max_bytes.insert(topic.to_string(), None);
        Ok(())
    }
}
