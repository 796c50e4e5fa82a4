//! Task derivation: desired state (flows × sites) -> the list of tasks that must run.
//!
//! A coordinator derives only its own region's tasks: those whose destination site is in
//! `coordinator.region`. Another region's sites are fed by that region's control plane, so
//! an outage of one region leaves every other region's tasks untouched.
//!
//! A Kafka flow with `tasks = N` yields N slots per site; an objects flow with `shards = N`
//! yields N shards per site. Task ids are stable strings `<flow>/<site>/<index>` so that a
//! restarted coordinator, a log line and a metric label all name a task the same way. Config
//! names may not contain '/', so the id is unambiguous.

use lockstep_config::{Config, TaskConfig};

/// One task the coordinator must place on a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDef {
    pub id: String,
    /// "kafka" or "objects": the capability a worker needs.
    pub kind: &'static str,
    pub flow: String,
    pub site: String,
    pub index: u32,
    pub count: u32,
    /// [`TaskConfig`] as JSON, handed to the worker with the task: the flow, its source and
    /// the one destination of the site the task writes (never the site's Druid).
    pub config_json: String,
}

pub fn task_id(flow: &str, site: &str, index: u32) -> String {
    format!("{flow}/{site}/{index}")
}

/// Every task of the config whose site is in the coordinator's region, sorted by id.
pub fn derive(config: &Config) -> Vec<TaskDef> {
    let mut out = Vec::new();
    for flow in &config.flows {
        // Validation guarantees the source and sites exist; skip defensively if not.
        let Some(source) = config.source(&flow.source) else {
            continue;
        };
        let count = flow.tasks_per_site();
        for site_name in &flow.sites {
            let Some(site) = config.site(site_name) else {
                continue;
            };
            if !config.in_own_region(site) {
                continue;
            }
            // Serialising plain structs of strings and numbers cannot fail; were it to, the
            // worker would refuse the task with a config error naming it.
            let config_json = TaskConfig::new(flow, source, site)
                .to_json()
                .unwrap_or_default();
            for index in 0..count {
                out.push(TaskDef {
                    id: task_id(&flow.name, site_name, index),
                    kind: flow.kind_name(),
                    flow: flow.name.clone(),
                    site: site_name.clone(),
                    index,
                    count,
                    config_json: config_json.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coordinator_derives_only_its_regions_tasks() {
        let text =
            std::fs::read_to_string(lockstep_config::examples_dir().join("two-regions.toml"))
                .expect("example config");
        let mut config =
            lockstep_config::parse(&text, "two-regions.toml", None, &|_| Some("x".into()))
                .expect("example config");
        config.select_region(Some("us")).expect("us");
        let tasks = derive(&config);
        assert!(!tasks.is_empty());
        assert!(
            tasks.iter().all(|t| t.site == "us-east"),
            "only us sites: {:?}",
            tasks.iter().map(|t| &t.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn flows_times_sites_times_slots() {
        let config = lockstep_config::load(lockstep_config::examples_dir().join("two-sites.toml"))
            .expect("example config");
        let tasks = derive(&config);
        // clicks: 2 sites x 2 tasks; daily-dumps: 2 sites x 2 shards.
        assert_eq!(tasks.len(), 8);
        assert!(tasks
            .iter()
            .any(|t| t.id == "clicks/us-east/1" && t.kind == "kafka"));
        assert!(tasks
            .iter()
            .any(|t| t.id == "daily-dumps/eu-west/0" && t.kind == "objects"));
        let json: serde_json::Value =
            serde_json::from_str(&tasks[0].config_json).expect("task config is JSON");
        assert!(json.get("flow").is_some() && json.get("site").is_some());
    }
}
