//! A Kafka mirror flow and task outside a worker, for tests and benchmarks: the config of one
//! flow from one source into one site, the task spec the coordinator would send for one of
//! its slots, and a started task with its cancellation and progress.
//!
//! The worker never uses this module, and it is built only with the `testkit` feature (the
//! workers' own tests and benchmarks, and the root package's tests, turn it on); it exists so
//! that the fast tests, the benchmark and the fault suites describe a mirror the same way.

use crate::kafka::{KafkaFactory, MirrorError};
use crate::metrics::WorkerMetrics;
use crate::task::{LeaseGuard, Progress, TaskContext, TaskError, TaskFactory};
use lockstep_proto as pb;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One Kafka flow from one source into one site, as a config file (`[[sites]]`,
/// `[[sources]]` and `[[flows]]`, without `[coordinator]`). Values are written as TOML basic
/// strings, so keep them plain (no quotes or backslashes).
#[derive(Debug, Clone)]
pub struct FlowToml {
    pub flow: String,
    pub topics: Vec<String>,
    pub source: String,
    pub source_bootstrap: String,
    pub source_properties: Vec<(String, String)>,
    pub site: String,
    pub site_bootstrap: String,
    pub site_properties: Vec<(String, String)>,
    /// Further keys of the `[[flows]]` table, one TOML line each (`tasks = 4`).
    pub flow_lines: Vec<String>,
}

impl FlowToml {
    /// Flow `flow` of `topics` from source `(name, bootstrap servers)` into site
    /// `(name, bootstrap servers)`.
    pub fn new(flow: &str, topics: &[&str], source: (&str, &str), site: (&str, &str)) -> Self {
        FlowToml {
            flow: flow.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            source: source.0.into(),
            source_bootstrap: source.1.into(),
            source_properties: Vec::new(),
            site: site.0.into(),
            site_bootstrap: site.1.into(),
            site_properties: Vec::new(),
            flow_lines: Vec::new(),
        }
    }

    /// Adds keys to the `[[flows]]` table: TOML lines, empty ones ignored.
    pub fn flow_lines(mut self, lines: &str) -> Self {
        self.flow_lines.extend(
            lines
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
        self
    }

    /// Adds a librdkafka property for the source's clients.
    pub fn source_property(mut self, key: &str, value: &str) -> Self {
        self.source_properties.push((key.into(), value.into()));
        self
    }

    /// Adds a librdkafka property for the site's clients.
    pub fn site_property(mut self, key: &str, value: &str) -> Self {
        self.site_properties.push((key.into(), value.into()));
        self
    }

    /// The config text.
    pub fn toml(&self) -> String {
        let table = |props: &[(String, String)]| {
            let items: Vec<String> = props
                .iter()
                .map(|(k, v)| format!("{k:?} = {v:?}"))
                .collect();
            format!("{{ {} }}", items.join(", "))
        };
        let topics: Vec<String> = self.topics.iter().map(|t| format!("{t:?}")).collect();
        format!(
            r#"
[[sites]]
name = {site:?}
druid.router_url = "http://127.0.0.1:1"
kafka.bootstrap_servers = {site_bootstrap:?}
kafka.properties = {site_properties}

[[sources]]
name = {source:?}
kind = "kafka"
kafka.bootstrap_servers = {source_bootstrap:?}
kafka.properties = {source_properties}

[[flows]]
name = {flow:?}
kind = "kafka"
source = {source:?}
topics = [{topics}]
{flow_lines}
"#,
            site = self.site,
            site_bootstrap = self.site_bootstrap,
            site_properties = table(&self.site_properties),
            source = self.source,
            source_bootstrap = self.source_bootstrap,
            source_properties = table(&self.source_properties),
            flow = self.flow,
            topics = topics.join(", "),
            flow_lines = self.flow_lines.join("\n"),
        )
    }

    /// The spec of slot `index` of `count` at the site, as the coordinator sends it
    /// (`config_json` = `{"flow", "source", "site"}`). Errs with the config's errors.
    pub fn task_spec(&self, index: u32, count: u32) -> Result<pb::TaskSpec, String> {
        let config = lockstep_config::parse(&self.toml(), "flow.toml", None, &|_| None)
            .map_err(|e| e.to_string())?;
        let config_json = lockstep_config::TaskConfig::new(
            &config.flows[0],
            &config.sources[0],
            &config.sites[0],
        )
        .to_json()
        .map_err(|e| e.to_string())?;
        Ok(pb::TaskSpec {
            task_id: format!("{}/{}/{index}", self.flow, self.site),
            kind: "kafka".into(),
            flow: self.flow.clone(),
            site: self.site.clone(),
            index,
            count,
            config_json,
            assigned_generation: 1,
        })
    }
}

/// A mirror task running on the current Tokio runtime, with a lease that never expires.
pub struct RunningTask {
    pub cancel: CancellationToken,
    pub progress: Progress,
    pub handle: tokio::task::JoinHandle<Result<(), TaskError>>,
}

impl RunningTask {
    /// Creates the task for `spec` and spawns it.
    pub fn start(spec: pb::TaskSpec, metrics: &WorkerMetrics) -> Result<Self, TaskError> {
        let factory = KafkaFactory {
            metrics: metrics.clone(),
        };
        let task = factory.create(&spec)?;
        let cancel = CancellationToken::new();
        let progress = Progress::new(&spec.task_id);
        let ctx = TaskContext {
            spec: Arc::new(spec),
            shutdown: cancel.clone(),
            lease: LeaseGuard::unbounded(),
            progress: progress.clone(),
        };
        Ok(RunningTask {
            cancel,
            progress,
            handle: tokio::spawn(task.run(ctx)),
        })
    }

    /// Cancels the task and waits for it to end; its result.
    pub async fn stop(self) -> Result<(), TaskError> {
        self.cancel.cancel();
        self.handle.await.map_err(|source| MirrorError::Aborted {
            what: "mirror task",
            source,
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_toml_is_a_valid_config_and_a_task_spec() {
        let flow = FlowToml::new(
            "f",
            &["events"],
            ("up", "127.0.0.1:1"),
            ("a", "127.0.0.1:2"),
        )
        .flow_lines("tasks = 2\ndiscovery_interval = \"1s\"")
        .site_property("batch.num.messages", "1000");
        let spec = flow.task_spec(1, 2).expect("valid config");
        assert_eq!(spec.task_id, "f/a/1");
        let mirror = crate::kafka::MirrorSpec::from_task(&spec).expect("a kafka task");
        assert_eq!(mirror.source.bootstrap_servers, "127.0.0.1:1");
        assert_eq!(mirror.target.bootstrap_servers, "127.0.0.1:2");
        assert_eq!(
            mirror.flow.discovery_interval,
            std::time::Duration::from_secs(1)
        );
        assert_eq!(
            mirror.target.properties["batch.num.messages"].expose(),
            "1000"
        );
    }
}
