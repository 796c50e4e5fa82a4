//! What the coordinator hands a worker with each task (`TaskSpec.config_json`): the one
//! definition of that JSON, serialised by the coordinator and read by the workers.
//!
//! It carries only what the task needs: the flow, its source (with the source cluster's or
//! bucket's credentials, which the worker reads from) and, of the site, its name and the one
//! destination the task writes: the site's Kafka for a Kafka flow, its object store for an
//! objects flow. Never the site's Druid (workers do not talk to Druid; its password stays on
//! the coordinator), nor the other destination.

use crate::{Config, Flow, FlowKind, KafkaCluster, ObjectStore, Site, Source};
use serde::{Deserialize, Serialize};

/// `TaskSpec.config_json`, both ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub flow: Flow,
    pub source: Source,
    pub site: TaskSite,
}

/// The part of a site a task writes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSite {
    pub name: String,
    /// The site's Kafka, for a Kafka flow's task (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaCluster>,
    /// The site's object store, for an objects flow's task (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<ObjectStore>,
}

impl TaskConfig {
    /// The task config of `flow` at `site`: the destination the flow's kind writes, nothing
    /// else of the site.
    pub fn new(flow: &Flow, source: &Source, site: &Site) -> Self {
        let (kafka, store) = match flow.kind {
            FlowKind::Kafka(_) => (site.kafka.clone(), None),
            FlowKind::Objects(_) => (None, site.store.clone()),
        };
        TaskConfig {
            flow: flow.clone(),
            source: source.clone(),
            site: TaskSite {
                name: site.name.clone(),
                kafka,
                store,
            },
        }
    }

    /// The task config of `flow` at `site` in `config`, when both exist.
    pub fn of(config: &Config, flow: &str, site: &str) -> Option<Self> {
        let f = config.flow(flow)?;
        let source = config.source(&f.source)?;
        let s = config.site(site)?;
        Some(TaskConfig::new(f, source, s))
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_carries_no_druid_and_only_its_own_destination() {
        let text =
            std::fs::read_to_string(crate::examples_dir().join("two-sites.toml")).expect("example");
        let env = |name: &str| match name {
            "DRUID_EU_WEST_PASSWORD" => Some("druid-pass-planted".to_string()),
            "KAFKA_US_EAST_PASSWORD" => Some("kafka-pass".to_string()),
            _ => None,
        };
        let config = crate::parse(&text, "two-sites.toml", None, &env).expect("config");
        let kafka = TaskConfig::of(&config, "clicks", "us-east").expect("task");
        let json = kafka.to_json().expect("json");
        assert!(!json.contains("\"druid\""), "{json}");
        assert!(!json.contains("druid-pass-planted"), "{json}");
        assert!(
            json.contains("kafka-pass"),
            "the worker needs its site's Kafka"
        );
        assert!(kafka.site.store.is_none());
        let back = TaskConfig::from_json(&json).expect("round trip");
        assert_eq!(back.site.name, "us-east");

        let objects = TaskConfig::of(&config, "daily-dumps", "eu-west").expect("task");
        let json = objects.to_json().expect("json");
        assert!(
            !json.contains("\"druid\"") && !json.contains("druid-pass-planted"),
            "{json}"
        );
        assert!(!json.contains("kafka-pass"), "{json}");
        assert!(objects.site.store.is_some());
    }
}
