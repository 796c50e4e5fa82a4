//! lockstep workers: stateless processes that run the tasks a coordinator assigns them.
//!
//! - `runtime`: join, heartbeat, lease clock, task lifecycle (knows tasks only by trait); it
//!   reaches the coordinator through `lockstep_proto`'s client side (TLS, following a standby
//!   to the leader), whose types are re-exported here for the worker's options;
//! - `task`: the task contract ([`Task`], [`TaskFactory`], [`TaskContext`]);
//! - task kinds: the Kafka mirror (`kafka/`) and the object copy (`objects/`), each behind
//!   [`TaskFactory`];
//! - `testkit` (feature `testkit`, for tests and benchmarks only): a mirror flow's config and a
//!   running mirror task outside a worker.

pub mod kafka;
pub mod metrics;
pub mod objects;
pub mod runtime;
pub mod task;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use lockstep_proto::tls::{BearerToken, ClientError, ClientTls};
pub use runtime::{Worker, WorkerError, WorkerOptions};
pub use task::{LeaseGuard, Progress, Task, TaskContext, TaskError, TaskFactory};

/// The task kinds this build can run. A worker advertises exactly these as capabilities.
pub fn builtin_factories(metrics: &metrics::WorkerMetrics) -> Vec<std::sync::Arc<dyn TaskFactory>> {
    vec![
        std::sync::Arc::new(kafka::KafkaFactory {
            metrics: metrics.clone(),
        }),
        std::sync::Arc::new(objects::ObjectsFactory {
            metrics: metrics.clone(),
        }),
    ]
}
