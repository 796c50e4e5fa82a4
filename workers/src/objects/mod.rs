//! The object copy task: keep a site's object store holding the same files as a source
//! prefix, verified, cycle after cycle (the DistCp / rclone side of lockstep, built to run
//! continuously).
//!
//! - `store`: opendal operators from the config, with retry and timeout layers;
//! - `plan`: the pure diff (source listing × manifest × target listing → action);
//! - `manifest`: the per-shard manifest in the site's store, flushed incrementally;
//! - `copy`: one object's streamed, checksummed, all-or-nothing copy; the bandwidth limit;
//! - `sync`: one cycle (list, diff, execute under a concurrency limit) and the task loop;
//! - `error`: why a cycle stopped ([`SyncError`]), and whether running it again can help.
//!
//! A task is (flow, site, shard): it owns the keys whose hash falls in its shard, so several
//! workers share one huge prefix. It never writes outside `target_prefix` and its own
//! `.lockstep/` folder, and never deletes unless the flow says `delete = true`.

pub mod copy;
pub mod error;
pub mod manifest;
pub mod plan;
pub mod store;
pub mod sync;

use crate::task::{Task, TaskError, TaskFactory};
use lockstep_config::{Config, FlowKind, ObjectStore, ObjectsFlow, SourceKind};
use lockstep_proto as pb;

pub use error::SyncError;
pub use sync::{CycleReport, Syncer};

/// Everything one sync task needs, checked.
#[derive(Debug, Clone)]
pub struct SyncSpec {
    pub task_id: String,
    pub flow_name: String,
    pub site_name: String,
    pub flow: ObjectsFlow,
    pub source: ObjectStore,
    pub target: ObjectStore,
    pub shard: u32,
    pub shards: u32,
}

impl SyncSpec {
    /// From the coordinator's task spec (`config_json` = `{"flow","source","site"}`).
    pub fn from_task(spec: &pb::TaskSpec) -> Result<Self, TaskError> {
        let cfg = lockstep_config::TaskConfig::from_json(&spec.config_json)
            .map_err(|e| TaskError::Config(format!("task {}: {e}", spec.task_id)))?;
        Self::build(
            spec.task_id.clone(),
            &cfg.flow,
            &cfg.source,
            (&cfg.site.name, cfg.site.store.as_ref()),
            spec.index,
            spec.count,
        )
        .map_err(TaskError::Config)
    }

    /// From a loaded config, for one-shot runs (`lockstep sync`).
    pub fn from_config(
        config: &Config,
        flow: &str,
        site: &str,
        shard: u32,
    ) -> Result<Self, String> {
        let f = config
            .flow(flow)
            .ok_or_else(|| format!("no flow named \"{flow}\""))?;
        let src = config
            .source(&f.source)
            .ok_or_else(|| format!("flow {flow}: no source named \"{}\"", f.source))?;
        let s = config
            .site(site)
            .ok_or_else(|| format!("no site named \"{site}\""))?;
        let shards = f.tasks_per_site();
        Self::build(
            format!("{flow}/{site}/{shard}"),
            f,
            src,
            (&s.name, s.store.as_ref()),
            shard,
            shards,
        )
    }

    fn build(
        task_id: String,
        flow: &lockstep_config::Flow,
        source: &lockstep_config::Source,
        (site_name, store): (&str, Option<&lockstep_config::ObjectStore>),
        shard: u32,
        shards: u32,
    ) -> Result<Self, String> {
        let FlowKind::Objects(f) = &flow.kind else {
            return Err(format!(
                "task {task_id}: flow {} is not an objects flow",
                flow.name
            ));
        };
        let SourceKind::Objects(src) = &source.kind else {
            return Err(format!(
                "task {task_id}: source {} is not an objects source",
                source.name
            ));
        };
        let target = store.cloned().ok_or_else(|| {
            format!(
                "task {task_id}: site {site_name} has no [sites.store], needed by flow {}",
                flow.name
            )
        })?;
        if shards == 0 || shard >= shards {
            return Err(format!(
                "task {task_id}: shard {shard} of {shards} is out of range"
            ));
        }
        Ok(SyncSpec {
            task_id,
            flow_name: flow.name.clone(),
            site_name: site_name.to_string(),
            flow: f.clone(),
            source: (**src).clone(),
            target,
            shard,
            shards,
        })
    }
}

/// Builds object sync tasks.
pub struct ObjectsFactory {
    pub metrics: crate::metrics::WorkerMetrics,
}

impl TaskFactory for ObjectsFactory {
    fn kind(&self) -> &'static str {
        "objects"
    }

    fn create(&self, spec: &pb::TaskSpec) -> Result<Box<dyn Task>, TaskError> {
        let spec = SyncSpec::from_task(spec)?;
        Ok(Box::new(sync::SyncTask {
            spec,
            metrics: self.metrics.clone(),
        }))
    }
}
