//! The Kafka mirror task: consume the (remote) source, produce into the local site's Kafka,
//! exactly once, with the target log as its own checkpoint.
//!
//! - `mirror`: the task and its loop, split by concern (`mirror/mod.rs` lists the files:
//!   fencing, topic and partition sync, resume points, the produce/land loop, the limits, the
//!   gap and oversize policies, delivery reports, the audit's reads, progress reports);
//! - `error`: why a mirror task stopped ([`MirrorError`]) and whether a restart can help;
//! - `topics`: discovery of source topics, target topic creation and growth, ownership of
//!   partitions by task slot;
//! - `headers`: the provenance and source-offset headers every mirrored record carries;
//! - `checkpoint`: the per-partition resume checkpoint kept in `__lockstep_progress`;
//! - `audit`: duplicates at the target (a paused former owner's late writes), found exactly;
//! - `pacing`: what may be outstanding, so that it lands inside the lease's safety margin.
//!
//! A flow's config and a running task outside a worker, for tests and benchmarks, are in
//! `crate::testkit` (feature `testkit`).
//!
//! Exactly-once rests on three facts: the task is the single writer of its target partitions
//! (leases, enforced by the runtime's [`crate::LeaseGuard`]); every mirrored record carries its
//! source offset, so a restarted task resumes right after the last record that landed; and the
//! producer is idempotent, so retries inside a session never duplicate.

pub mod audit;
pub mod checkpoint;
pub mod error;
pub mod headers;
pub mod mirror;
pub mod pacing;
pub mod topics;

pub use error::MirrorError;

use crate::task::{Task, TaskError, TaskFactory};
use lockstep_config::{FlowKind, KafkaCluster, KafkaFlow, SourceKind};
use lockstep_proto as pb;
use rdkafka::ClientConfig;

pub use lockstep_config::TaskConfig;

/// Everything a mirror task needs, checked.
#[derive(Debug, Clone)]
pub struct MirrorSpec {
    pub task_id: String,
    pub flow_name: String,
    pub site_name: String,
    pub source_name: String,
    pub flow: KafkaFlow,
    pub source: KafkaCluster,
    pub target: KafkaCluster,
    /// This task's slot and the number of slots for (flow, site).
    pub index: u32,
    pub count: u32,
}

impl MirrorSpec {
    pub fn from_task(spec: &pb::TaskSpec) -> Result<Self, TaskError> {
        let cfg = TaskConfig::from_json(&spec.config_json)
            .map_err(|e| TaskError::Config(format!("task {}: {e}", spec.task_id)))?;
        let FlowKind::Kafka(flow) = cfg.flow.kind else {
            return Err(TaskError::Config(format!(
                "task {}: flow {} is not a kafka flow",
                spec.task_id, cfg.flow.name
            )));
        };
        let SourceKind::Kafka(source) = cfg.source.kind else {
            return Err(TaskError::Config(format!(
                "task {}: source {} is not a kafka source",
                spec.task_id, cfg.source.name
            )));
        };
        let target = cfg.site.kafka.ok_or_else(|| {
            TaskError::Config(format!(
                "task {}: site {} has no kafka",
                spec.task_id, cfg.site.name
            ))
        })?;
        if spec.count == 0 || spec.index >= spec.count {
            return Err(TaskError::Config(format!(
                "task {}: slot {} of {} is out of range",
                spec.task_id, spec.index, spec.count
            )));
        }
        Ok(MirrorSpec {
            task_id: spec.task_id.clone(),
            flow_name: cfg.flow.name,
            site_name: cfg.site.name,
            source_name: cfg.source.name,
            flow,
            source,
            target,
            index: spec.index,
            count: spec.count,
        })
    }
}

/// librdkafka client config for a cluster: bootstrap servers plus its pass-through properties.
pub fn client_config(cluster: &KafkaCluster) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cluster.bootstrap_servers);
    for (k, v) in &cluster.properties {
        c.set(k, v.expose());
    }
    c
}

/// Builds Kafka mirror tasks.
pub struct KafkaFactory {
    pub metrics: crate::metrics::WorkerMetrics,
}

impl TaskFactory for KafkaFactory {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn create(&self, spec: &pb::TaskSpec) -> Result<Box<dyn Task>, TaskError> {
        let spec = MirrorSpec::from_task(spec)?;
        Ok(Box::new(mirror::MirrorTask::new(
            spec,
            self.metrics.clone(),
        )))
    }
}
