//! The view types that `/api/v1/status` and `/api/v1/regions` serialise and the status page
//! renders, built from AdminService's `StatusResponse` and `RegionsResponse`: one shape for the
//! JSON API, the page and `lockstep status [--all] --format json`. Imports no module of the
//! HTTP side, so the page and the API both depend on it and not on each other.

use lockstep_proto as pb;
use serde::Serialize;

/// `/api/v1/status`: the same content as AdminService.Status, as JSON.
#[derive(Serialize)]
pub struct StatusView {
    pub coordinator_id: String,
    pub region: String,
    pub generation: u64,
    pub workers: Vec<WorkerView>,
    pub tasks: Vec<TaskView>,
    pub paused_flows: Vec<String>,
}

#[derive(Serialize)]
pub struct WorkerView {
    pub worker_id: String,
    pub hostname: String,
    pub capabilities: Vec<String>,
    pub capacity: u32,
    pub session_generation: u64,
    pub lease_remaining_ms: u64,
    pub draining: bool,
    pub tasks: Vec<String>,
}

#[derive(Serialize)]
pub struct TaskView {
    pub task_id: String,
    pub kind: String,
    pub flow: String,
    pub site: String,
    pub worker_id: Option<String>,
    pub phase: String,
    pub state: Option<String>,
    pub message: Option<String>,
    pub records: u64,
    pub bytes: u64,
    pub restarts: u32,
    /// Object sync figures (objects tasks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectsView>,
    /// How a former owner is fenced (Kafka tasks, as reported): "transactions" (by the broker)
    /// or "leases" (lease timing only: late writes are detected, not prevented).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fencing: Option<String>,
    /// Partitions whose target repeats source offsets already mirrored (a paused former
    /// owner's late writes), over every owner since the coordinator started.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<DuplicatesView>,
}

/// Duplicates at the target of one task partition.
#[derive(Serialize)]
pub struct DuplicatesView {
    pub topic: String,
    pub partition: i32,
    /// Duplicate records counted so far.
    pub records: u64,
    /// The latest ranges, oldest first (at most [`crate::control::MAX_DUPLICATE_RANGES`]).
    pub ranges: Vec<DuplicateRangeView>,
}

/// Target offsets `target_from..=target_to` repeat source offsets `source_from..=source_to`.
#[derive(Serialize)]
pub struct DuplicateRangeView {
    pub target_from: i64,
    pub target_to: i64,
    pub source_from: i64,
    pub source_to: i64,
    pub records: u64,
}

impl TaskView {
    /// The task's fencing mode(s) as its partitions report them, and its duplicates.
    fn kafka_figures(p: &pb::TaskProgress) -> (Option<String>, Vec<DuplicatesView>) {
        let fencing = p.fencing_modes();
        let duplicates = p
            .partitions
            .iter()
            .filter(|q| q.duplicates > 0 || !q.duplicate_ranges.is_empty())
            .map(|q| DuplicatesView {
                topic: q.topic.clone(),
                partition: q.partition,
                records: q.duplicates,
                ranges: q
                    .duplicate_ranges
                    .iter()
                    .map(|r| DuplicateRangeView {
                        target_from: r.target_from,
                        target_to: r.target_to,
                        source_from: r.source_from,
                        source_to: r.source_to,
                        records: r.records,
                    })
                    .collect(),
            })
            .collect();
        (fencing, duplicates)
    }
}

/// An objects task's progress, as its heartbeats report it.
#[derive(Serialize)]
pub struct ObjectsView {
    pub objects_copied: u64,
    pub bytes_copied: u64,
    pub objects_pending: u64,
    pub bytes_pending: u64,
    pub oldest_pending_age_ms: u64,
    pub objects_skipped: u64,
    pub objects_adopted: u64,
    pub objects_deleted: u64,
    pub failures: u64,
    pub verify_mismatches: u64,
    pub cycles: u64,
}

impl From<&pb::ObjectProgress> for ObjectsView {
    fn from(o: &pb::ObjectProgress) -> Self {
        ObjectsView {
            objects_copied: o.objects_copied,
            bytes_copied: o.bytes_copied,
            objects_pending: o.objects_pending,
            bytes_pending: o.bytes_pending,
            oldest_pending_age_ms: o.oldest_pending_age_ms,
            objects_skipped: o.objects_skipped,
            objects_adopted: o.objects_adopted,
            objects_deleted: o.objects_deleted,
            failures: o.failures,
            verify_mismatches: o.verify_mismatches,
            cycles: o.cycles,
        }
    }
}

/// `/api/v1/regions`: every region as this coordinator sees it, its own first, the others by
/// name. Field names are a contract (other tools read them).
#[derive(Serialize)]
pub struct RegionsView {
    /// The region of the coordinator answering.
    pub region: String,
    pub regions: Vec<RegionRow>,
}

/// One region. Its figures are null unless its state is "ok".
#[derive(Serialize)]
pub struct RegionRow {
    pub region: String,
    /// "ok", "unreachable" or "unknown" (not asked yet).
    pub state: String,
    /// The region of the coordinator answering.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// The region's active coordinator, as it answered.
    pub coordinator_id: Option<String>,
    /// When the figures were received (own region: now), RFC 3339 UTC.
    pub checked_at: Option<String>,
    /// While unreachable: the first failed request after the last answer, RFC 3339 UTC.
    pub unreachable_since: Option<String>,
    /// While unreachable: why the last request failed.
    pub error: Option<String>,
    pub workers_alive: Option<u32>,
    pub tasks_total: Option<u32>,
    pub tasks_assigned: Option<u32>,
    pub tasks_unassigned: Option<u32>,
    pub mirror_lag_records: Option<u64>,
    pub object_backlog: Option<u64>,
    pub generation: Option<u64>,
    pub paused_flows: Option<Vec<String>>,
}

/// Epoch milliseconds as RFC 3339 UTC; None for 0 (never).
fn rfc3339(ms: u64) -> Option<String> {
    (ms > 0).then(|| {
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string()
    })
}

impl From<pb::RegionsResponse> for RegionsView {
    fn from(r: pb::RegionsResponse) -> Self {
        RegionsView {
            region: r.region,
            regions: r
                .regions
                .into_iter()
                .map(|v| {
                    let s = v.status;
                    RegionRow {
                        coordinator_id: s.as_ref().map(|s| s.coordinator_id.clone()),
                        checked_at: rfc3339(v.checked_at_ms),
                        unreachable_since: rfc3339(v.unreachable_since_ms),
                        error: Some(v.error).filter(|e| !e.is_empty()),
                        workers_alive: s.as_ref().map(|s| s.workers_alive),
                        tasks_total: s.as_ref().map(|s| s.tasks_total),
                        tasks_assigned: s.as_ref().map(|s| s.tasks_assigned),
                        tasks_unassigned: s.as_ref().map(|s| s.tasks_unassigned),
                        mirror_lag_records: s.as_ref().map(|s| s.mirror_lag_records),
                        object_backlog: s.as_ref().map(|s| s.object_backlog),
                        generation: s.as_ref().map(|s| s.generation),
                        paused_flows: s.map(|s| s.paused_flows),
                        region: v.region,
                        state: v.state,
                        is_self: v.is_self,
                    }
                })
                .collect(),
        }
    }
}

impl From<pb::StatusResponse> for StatusView {
    fn from(s: pb::StatusResponse) -> Self {
        StatusView {
            coordinator_id: s.coordinator_id,
            region: s.region,
            generation: s.generation,
            workers: s
                .workers
                .into_iter()
                .map(|w| WorkerView {
                    worker_id: w.worker_id,
                    hostname: w.hostname,
                    capabilities: w.capabilities,
                    capacity: w.capacity,
                    session_generation: w.session_generation,
                    lease_remaining_ms: w.lease_remaining_ms,
                    draining: w.draining,
                    tasks: w.tasks,
                })
                .collect(),
            tasks: s
                .tasks
                .into_iter()
                .map(|t| {
                    let p = t.progress.as_ref();
                    let (fencing, duplicates) = p.map(TaskView::kafka_figures).unwrap_or_default();
                    TaskView {
                        // UNSPECIFIED: no report from the current owner yet (the coordinator
                        // shows a former owner's duplicates only).
                        state: p
                            .filter(|p| p.state != pb::TaskState::Unspecified as i32)
                            .map(|p| {
                                pb::TaskState::try_from(p.state)
                                    .map(|s| {
                                        s.as_str_name()
                                            .trim_start_matches("TASK_STATE_")
                                            .to_lowercase()
                                    })
                                    .unwrap_or_else(|_| format!("unknown({})", p.state))
                            }),
                        message: p.map(|p| p.message.clone()).filter(|m| !m.is_empty()),
                        records: p.map(|p| p.records).unwrap_or(0),
                        bytes: p.map(|p| p.bytes).unwrap_or(0),
                        restarts: p.map(|p| p.restarts).unwrap_or(0),
                        objects: p.and_then(|p| p.objects.as_ref()).map(ObjectsView::from),
                        fencing,
                        duplicates,
                        worker_id: Some(t.worker_id).filter(|w| !w.is_empty()),
                        task_id: t.task_id,
                        kind: t.kind,
                        flow: t.flow,
                        site: t.site,
                        phase: t.phase,
                    }
                })
                .collect(),
            paused_flows: s.paused_flows,
        }
    }
}
