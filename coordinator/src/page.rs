//! The status page at `/`: one server-rendered HTML page for an operator's first look at a
//! region: every region's control plane (with more than one region), drift verdicts per
//! datasource, sites, flows, workers, the task assignment (with each Kafka task's fencing mode
//! and any duplicates at the target) and the recent errors. It reads the same state as
//! `/api/v1/status`, `/api/v1/regions`, `/api/v1/drift` and `/api/v1/errors`; no front-end build, and the page works without JavaScript. A few lines of
//! script refresh the `<main>` element every few seconds (`/?fragment=main` answers only that
//! part) and can be paused.
//!
//! Every value is escaped by maud. Nothing secret is shown: sites and sources show names and
//! addresses only (a Druid URL loses any `user:password@`), never Kafka properties or keys.

use crate::events::{Event, Level};
use crate::views::{RegionsView, StatusView, TaskView};
use lockstep_config::{Config, FlowKind, SourceKind, TopicSelector};
use lockstep_drift::{DriftReport, Verdict};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::collections::BTreeMap;
use std::time::Duration;

/// Everything the page shows, gathered by the HTTP handler.
pub struct PageData<'a> {
    pub status: &'a StatusView,
    pub regions: &'a RegionsView,
    pub drift: Option<&'a DriftReport>,
    pub events: &'a [Event],
    pub config: &'a Config,
    pub uptime: Duration,
}

/// How often the page's script refreshes `<main>`.
pub const REFRESH_SECONDS: u32 = 3;

/// The whole page.
pub fn render(d: &PageData) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "lockstep · " (d.status.region) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "lockstep" }
                    span.meta {
                        "region " b { (d.status.region) }
                        " · coordinator " b { (d.status.coordinator_id) }
                        " · up " (humantime::format_duration(Duration::from_secs(d.uptime.as_secs())))
                    }
                    span.controls {
                        span #updated {}
                        label { input #auto type="checkbox" checked; " refresh every " (REFRESH_SECONDS) " s" }
                    }
                }
                main #main { (main(d)) }
                footer {
                    "JSON: " a href="api/v1/status" { "status" } " · " a href="api/v1/regions" { "regions" }
                    " · " a href="api/v1/drift" { "drift" }
                    " · " a href="api/v1/errors" { "errors" } " · " a href="metrics" { "metrics" }
                }
                script { (PreEscaped(SCRIPT.replace("@REFRESH_MS@", &(REFRESH_SECONDS * 1000).to_string()))) }
            }
        }
    }
}

/// The refreshed part: every section.
pub fn main(d: &PageData) -> Markup {
    html! {
        (summary(d))
        (regions_section(d))
        (drift_section(d))
        (sites_section(d))
        (flows_section(d))
        (workers_section(d))
        (tasks_section(d))
        (errors_section(d))
    }
}

fn verdict_badge(v: &str) -> Markup {
    html! { span class={ "badge v-" (v) } { (v) } }
}

fn summary(d: &PageData) -> Markup {
    let s = d.status;
    let running = s
        .tasks
        .iter()
        .filter(|t| t.state.as_deref() == Some("running"))
        .count();
    let failed = s
        .tasks
        .iter()
        .filter(|t| t.state.as_deref() == Some("failed"))
        .count();
    let duplicates: u64 = s
        .tasks
        .iter()
        .flat_map(|t| &t.duplicates)
        .map(|d| d.records)
        .sum();
    html! {
        section #summary .cards {
            div.card { div.k { "drift" } div.v { @match d.drift { Some(r) => (verdict_badge(r.verdict.as_str())), None => span.muted { "not checked yet" } } } }
            div.card { div.k { "workers" } div.v { (s.workers.len()) } }
            div.card { div.k { "tasks running" } div.v { (running) " / " (s.tasks.len()) } }
            div.card { div.k { "tasks failed" } div.v class={ @if failed > 0 { "bad" } } { (failed) } }
            @if duplicates > 0 {
                div.card { div.k { "duplicate records" } div.v.bad { (duplicates) } }
            }
            div.card { div.k { "generation" } div.v { (s.generation) } }
            @if !s.paused_flows.is_empty() {
                div.card { div.k { "paused flows" } div.v { (s.paused_flows.join(", ")) } }
            }
        }
    }
}

/// Every region's control plane: its leader, workers, tasks, lag and backlog as its
/// coordinator last answered, or since when it does not. Shown with more than one region.
fn regions_section(d: &PageData) -> Markup {
    let r = d.regions;
    let num = |v: Option<u64>| v.map_or_else(|| "–".to_string(), |v| v.to_string());
    html! {
        @if r.regions.len() > 1 {
            section #regions {
                h2 { "Regions" }
                table #regions-table {
                    thead { tr { th { "region" } th { "state" } th { "leader" } th.num { "workers" } th.num { "tasks assigned" } th.num { "unassigned" }
                        th.num { "mirror lag (records)" } th.num { "object backlog" } th { "as of" } } }
                    tbody {
                        @for g in &r.regions {
                            tr data-region=(g.region) data-state=(g.state) {
                                td { b { (g.region) } @if g.is_self { " " span.muted { "(this region)" } } }
                                td { span class={ "badge r-" (g.state) } { (g.state) } }
                                @match &g.coordinator_id {
                                    Some(id) => {
                                        td { (id) }
                                        td.num { (num(g.workers_alive.map(u64::from))) }
                                        td.num { (num(g.tasks_assigned.map(u64::from))) " / " (num(g.tasks_total.map(u64::from))) }
                                        td.num class={ @if g.tasks_unassigned.is_some_and(|n| n > 0) { "warn" } } { (num(g.tasks_unassigned.map(u64::from))) }
                                        td.num { (num(g.mirror_lag_records)) }
                                        td.num { (num(g.object_backlog)) }
                                        td { (g.checked_at.as_deref().unwrap_or("–")) }
                                    }
                                    None => {
                                        td colspan="6" class={ @if g.state == "unreachable" { "bad" } @else { "muted" } } {
                                            @match &g.unreachable_since {
                                                Some(since) => { "unreachable since " (since) }
                                                None => { "not asked yet" }
                                            }
                                            @if let Some(e) = &g.error { ": " (e) }
                                        }
                                        td { "–" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn drift_section(d: &PageData) -> Markup {
    html! {
        section #drift {
            h2 { "Drift" }
            @if d.config.flows.iter().all(|f| f.datasources.is_empty()) {
                p.muted { "No flow names a datasource: drift is not tracked." }
            } @else {
            @match d.drift {
                None => p.muted { "No drift check has finished yet (every "
                    (humantime::format_duration(d.config.coordinator.drift_interval)) ")." },
                Some(r) => {
                    p.muted { "checked at " (r.checked_at) }
                    @if r.datasources.is_empty() {
                        p.muted { "No flow names a datasource." }
                    }
                    table #drift-table {
                        thead { tr { th { "datasource" } th { "flow" } th { "verdict" } th { "reason" }
                            th { "site" } th.num { "rows" } th.num { "records behind" } th.num { "source lag" } th.num { "freshness" } th { "supervisor" } } }
                        tbody {
                            @for ds in &r.datasources {
                                @let n = ds.sites.len().max(1);
                                @for (i, site) in ds.sites.iter().enumerate() {
                                    tr data-datasource=(ds.datasource) data-site=(site.site) data-verdict=(ds.verdict.as_str()) {
                                        @if i == 0 {
                                            td rowspan=(n) { b { (ds.datasource) } }
                                            td rowspan=(n) { (ds.flow) }
                                            td rowspan=(n) { (verdict_badge(ds.verdict.as_str())) }
                                            td rowspan=(n) .reason { (ds.reason) }
                                        }
                                        td { (site.site) }
                                        @match &site.error {
                                            Some(e) => td colspan="5" .bad { (site.error_kind.as_deref().unwrap_or("error")) ": " (e) },
                                            None => {
                                                td.num { (opt(site.rows)) }
                                                td.num { (opt(site.records_behind)) }
                                                td.num { @match site.source_lag_seconds { Some(f) => (format!("{f:.1}s")), None => "–" } }
                                                td.num { @match site.freshness_seconds { Some(f) => (humantime::format_duration(Duration::from_secs(f.max(0.0) as u64))), None => "–" } }
                                                td { @match &site.supervisor { Some(sv) => (sv.detailed_state.as_deref().or(sv.state.as_deref()).unwrap_or("?")), None => "–" } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @for ds in r.datasources.iter().filter(|ds| !ds.divergent_buckets.is_empty()) {
                        h3 { "Divergent buckets of " (ds.datasource) " (" (ds.divergent_bucket_count) ")" }
                        @let sites: Vec<&str> = ds.sites.iter().map(|s| s.site.as_str()).collect();
                        table.buckets data-datasource=(ds.datasource) {
                            thead { tr { th { "bucket" } @for s in &sites { th.num { (s) } } th { "differs at" } th.num { "difference" } } }
                            tbody {
                                @for b in &ds.divergent_buckets {
                                    tr {
                                        td { (b.bucket) }
                                        @for s in &sites { td.num { (opt(b.rows.get(*s).copied())) } }
                                        td.bad { (b.sites.join(", ")) }
                                        td.num { (format!("{:.2}%", b.difference * 100.0)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            }
        }
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| v.to_string())
}

/// `https://user:secret@host/x` -> `https://host/x`: credentials never reach the page.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// Worst verdict per site over every datasource the site appears in.
fn site_verdicts(drift: Option<&DriftReport>) -> BTreeMap<&str, Verdict> {
    let rank = |v: Verdict| match v {
        Verdict::InSync => 0,
        Verdict::Lagging => 1,
        Verdict::Diverged => 2,
        Verdict::Unknown => 3,
    };
    let mut out: BTreeMap<&str, Verdict> = BTreeMap::new();
    for ds in drift.map(|r| r.datasources.as_slice()).unwrap_or_default() {
        for s in &ds.sites {
            // A site's own verdict: unknown when it could not be read; for a divergent
            // datasource, diverged only where the site is named; else the datasource's.
            let v = if s.error.is_some() {
                Verdict::Unknown
            } else if ds.verdict == Verdict::Diverged
                && !ds
                    .divergent_buckets
                    .iter()
                    .any(|b| b.sites.iter().any(|n| n == &s.site))
            {
                Verdict::InSync
            } else {
                ds.verdict
            };
            let e = out.entry(s.site.as_str()).or_insert(v);
            if rank(v) > rank(*e) {
                *e = v;
            }
        }
    }
    out
}

fn sites_section(d: &PageData) -> Markup {
    let verdicts = site_verdicts(d.drift);
    let tasks_at = |site: &str| -> (usize, usize) {
        let all = d.status.tasks.iter().filter(|t| t.site == site);
        let total = all.clone().count();
        let running = all
            .filter(|t| t.state.as_deref() == Some("running"))
            .count();
        (running, total)
    };
    html! {
        section #sites {
            h2 { "Sites" }
            table {
                thead { tr { th { "site" } th { "drift" } th { "Druid router" } th { "Kafka" } th { "object store" } th.num { "tasks running" } } }
                tbody {
                    @for site in &d.config.sites {
                        @let (running, total) = tasks_at(&site.name);
                        tr data-site=(site.name) {
                            td { b { (site.name) } }
                            td { @match verdicts.get(site.name.as_str()) { Some(v) => (verdict_badge(v.as_str())), None => span.muted { "–" } } }
                            td { code { (without_userinfo(&site.druid.router_url)) } }
                            td { @match &site.kafka { Some(k) => code { (k.bootstrap_servers) }, None => span.muted { "–" } } }
                            td { @match &site.store { Some(s) => code { (s.describe()) }, None => span.muted { "–" } } }
                            td.num { (running) " / " (total) }
                        }
                    }
                }
            }
        }
    }
}

fn flows_section(d: &PageData) -> Markup {
    let totals = |flow: &str| -> (u64, u64) {
        d.status
            .tasks
            .iter()
            .filter(|t| t.flow == flow)
            .fold((0, 0), |(r, b), t| (r + t.records, b + t.bytes))
    };
    html! {
        section #flows {
            h2 { "Flows" }
            table {
                thead { tr { th { "flow" } th { "kind" } th { "source" } th { "sites" } th { "what" } th { "datasources" } th.num { "tasks / site" } th { "state" } th.num { "records" } th.num { "bytes" } } }
                tbody {
                    @for f in &d.config.flows {
                        @let (records, bytes) = totals(&f.name);
                        @let source = d.config.source(&f.source);
                        tr data-flow=(f.name) {
                            td { b { (f.name) } }
                            td { @match &f.kind { FlowKind::Kafka(_) => "kafka", FlowKind::Objects(_) => "objects" } }
                            td { (f.source) @if let Some(s) = source { " " span.muted { "(" (match &s.kind { SourceKind::Kafka(k) => k.bootstrap_servers.clone(), SourceKind::Objects(o) => o.describe() }) ")" } } }
                            td { (f.sites.join(", ")) }
                            td { @match &f.kind {
                                FlowKind::Kafka(k) => @match &k.topics {
                                    TopicSelector::List(t) => { "topics " code { (t.join(", ")) } },
                                    TopicSelector::Regex(r) => { "topics matching " code { (r) } },
                                },
                                FlowKind::Objects(o) => { "prefix " code { (o.prefix) } },
                            } }
                            td { (f.datasources.join(", ")) }
                            td.num { (f.tasks_per_site()) }
                            td { @if d.status.paused_flows.contains(&f.name) { span.badge.v-lagging { "paused" } } @else { "active" } }
                            td.num { (records) }
                            td.num { (bytesize::ByteSize(bytes).to_string()) }
                        }
                    }
                }
            }
        }
    }
}

fn workers_section(d: &PageData) -> Markup {
    html! {
        section #workers {
            h2 { "Workers" }
            @if d.status.workers.is_empty() {
                p.bad { "No worker has joined: no task runs." }
            } @else {
                table {
                    thead { tr { th { "worker" } th { "host" } th.num { "tasks" } th.num { "lease left" } th { "draining" } th { "kinds" } th.num { "capacity" } } }
                    tbody {
                        @for w in &d.status.workers {
                            tr data-worker=(w.worker_id) {
                                td { b { (w.worker_id) } }
                                td { (w.hostname) }
                                td.num { (w.tasks.len()) }
                                td.num class={ @if w.lease_remaining_ms == 0 { "bad" } } { (format!("{:.1} s", w.lease_remaining_ms as f64 / 1000.0)) }
                                td { @if w.draining { "yes" } @else { "no" } }
                                td { (w.capabilities.join(", ")) }
                                td.num { @if w.capacity == 0 { "any" } @else { (w.capacity) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn task_row(t: &TaskView) -> Markup {
    let state = t.state.as_deref().unwrap_or("–");
    html! {
        tr data-task=(t.task_id) data-state=(state) {
            td { code { (t.task_id) } }
            td { (t.kind) }
            td { (t.worker_id.as_deref().unwrap_or("–")) }
            td { (t.phase) }
            td class={ "s-" (state) } { (state) }
            td.fencing class={ @if t.fencing.as_deref() == Some("leases") { "warn" } } { (t.fencing.as_deref().unwrap_or("–")) }
            td.num { (t.records) }
            td.num { (t.restarts) }
            td.msg { (t.message.as_deref().unwrap_or("")) }
        }
        @for d in &t.duplicates {
            tr.duplicates data-duplicates-of=(t.task_id) data-topic=(d.topic) data-partition=(d.partition) {
                td {}
                td colspan="8" .bad {
                    "duplicates at the target, " (d.topic) "/" (d.partition) ": " b { (d.records) } " record(s)"
                    " (a paused former owner wrote after its lease): "
                    @for (i, r) in d.ranges.iter().enumerate() {
                        @if i > 0 { "; " }
                        "target " (r.target_from) ".." (r.target_to) " = source " (r.source_from) ".." (r.source_to) " (" (r.records) ")"
                    }
                }
            }
        }
    }
}

fn tasks_section(d: &PageData) -> Markup {
    html! {
        section #tasks {
            h2 { "Task assignment" }
            table {
                thead { tr { th { "task" } th { "kind" } th { "worker" } th { "phase" } th { "state" } th { "fencing" } th.num { "records" } th.num { "restarts" } th { "message" } } }
                tbody { @for t in &d.status.tasks { (task_row(t)) } }
            }
        }
    }
}

fn errors_section(d: &PageData) -> Markup {
    html! {
        section #errors {
            h2 { "Recent errors" }
            @if d.events.is_empty() {
                p.muted { "Nothing has gone wrong since this coordinator started." }
            } @else {
                table #errors-table {
                    thead { tr { th { "last seen" } th { "level" } th { "where" } th { "what" } th.num { "times" } } }
                    tbody {
                        @for e in d.events {
                            tr {
                                td { (e.last_at) }
                                td class={ @match e.level { Level::Error => "bad", Level::Warning => "warn" } } {
                                    @match e.level { Level::Error => "error", Level::Warning => "warning" }
                                }
                                td { (e.source) }
                                td.msg { (e.message) }
                                td.num { (e.count) }
                            }
                        }
                    }
                }
            }
        }
    }
}

const STYLE: &str = r#"
:root { --bg:#fafafa; --fg:#1d1f21; --muted:#6b7280; --line:#e5e7eb; --ok:#15803d; --warn:#b45309; --bad:#b91c1c; --unk:#6d28d9; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--fg); }
header { display:flex; flex-wrap:wrap; gap:1rem; align-items:baseline; padding:.8rem 1.2rem; background:#111827; color:#f9fafb; }
header h1 { margin:0; font-size:1.25rem; }
header .meta { color:#d1d5db; }
header .controls { margin-left:auto; color:#d1d5db; display:flex; gap:1rem; }
main { padding:0 1.2rem 1rem; }
h2 { font-size:1.05rem; margin:1.4rem 0 .4rem; }
h3 { font-size:.95rem; margin:1rem 0 .3rem; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:.3rem .55rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f3f4f6; font-weight:600; font-size:.85rem; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.msg, td.reason { max-width:38rem; }
code { font-size:.85rem; }
.muted { color:var(--muted); }
.bad { color:var(--bad); font-weight:600; }
.warn { color:var(--warn); font-weight:600; }
.badge { display:inline-block; padding:.05rem .5rem; border-radius:1rem; font-size:.8rem; font-weight:700; color:#fff; }
.v-in_sync { background:var(--ok); } .v-lagging { background:var(--warn); } .v-diverged { background:var(--bad); } .v-unknown { background:var(--unk); }
.r-ok { background:var(--ok); } .r-unreachable { background:var(--bad); } .r-unknown { background:var(--unk); }
.s-running { color:var(--ok); } .s-failed { color:var(--bad); font-weight:600; } .s-starting, .s-stopping { color:var(--warn); }
.cards { display:flex; flex-wrap:wrap; gap:.8rem; margin-top:1rem; }
.card { background:#fff; border:1px solid var(--line); border-radius:.4rem; padding:.5rem .9rem; min-width:8rem; }
.card .k { color:var(--muted); font-size:.8rem; } .card .v { font-size:1.2rem; font-weight:600; }
footer { padding:1rem 1.2rem; color:var(--muted); }
"#;

/// Refreshes `<main>` in place (no reload, scroll kept); a failed fetch says so in the
/// header and is retried at the next tick.
const SCRIPT: &str = r#"
(function () {
  var updated = document.getElementById('updated');
  var auto = document.getElementById('auto');
  function stamp(text) { updated.textContent = text; }
  stamp('updated ' + new Date().toLocaleTimeString());
  function refresh() {
    if (!auto.checked) return;
    fetch(location.pathname + '?fragment=main', { cache: 'no-store', credentials: 'same-origin' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.text(); })
      .then(function (html) {
        document.getElementById('main').innerHTML = html;
        stamp('updated ' + new Date().toLocaleTimeString());
      })
      .catch(function (e) { stamp('refresh failed (' + e.message + '), retrying'); });
  }
  setInterval(refresh, @REFRESH_MS@);
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            without_userinfo("https://admin:s3cret@druid.example:8888/x"),
            "https://druid.example:8888/x"
        );
        assert_eq!(without_userinfo("http://druid:8888"), "http://druid:8888");
        assert_eq!(without_userinfo("druid:8888"), "druid:8888");
    }

    #[test]
    fn a_task_row_shows_fencing_and_duplicates() {
        use lockstep_proto as pb;
        let status = pb::StatusResponse {
            tasks: vec![pb::TaskStatus {
                task_id: "clicks/site-b/0".into(),
                kind: "kafka".into(),
                phase: "unassigned".into(),
                // A former owner's duplicates only: no state to show.
                progress: Some(pb::TaskProgress {
                    task_id: "clicks/site-b/0".into(),
                    partitions: vec![pb::PartitionProgress {
                        topic: "clicks".into(),
                        partition: 3,
                        duplicates: 120,
                        duplicate_ranges: vec![pb::DuplicateRange {
                            target_from: 1000,
                            target_to: 1119,
                            source_from: 500,
                            source_to: 619,
                            records: 120,
                        }],
                        fencing: "leases".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let view = StatusView::from(status);
        let t = &view.tasks[0];
        assert_eq!(
            (t.state.as_deref(), t.fencing.as_deref()),
            (None, Some("leases"))
        );
        let html = task_row(t).into_string();
        assert!(html.contains(">leases<"), "{html}");
        assert!(
            html.contains("clicks/3: <b>120</b> record(s)")
                && html.contains("target 1000..1119 = source 500..619 (120)"),
            "{html}"
        );
    }

    #[test]
    fn the_regions_table_shows_figures_or_since_when_a_region_is_silent() {
        use lockstep_proto as pb;
        let regions = RegionsView::from(pb::RegionsResponse {
            region: "eu".into(),
            regions: vec![
                pb::RegionView {
                    region: "eu".into(),
                    state: "ok".into(),
                    is_self: true,
                    checked_at_ms: 1_700_000_000_000,
                    status: Some(pb::RegionStatusResponse {
                        coordinator_id: "eu-1".into(),
                        workers_alive: 2,
                        tasks_total: 6,
                        tasks_assigned: 5,
                        tasks_unassigned: 1,
                        mirror_lag_records: 42,
                        object_backlog: 7,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                pb::RegionView {
                    region: "us".into(),
                    state: "unreachable".into(),
                    unreachable_since_ms: 1_700_000_000_000,
                    error: "http://us-1:7400: cannot connect".into(),
                    ..Default::default()
                },
            ],
        });
        let status = StatusView::from(pb::StatusResponse::default());
        let config = lockstep_config::parse("", "t.toml", None, &|_| None).expect("valid");
        let html = regions_section(&PageData {
            status: &status,
            regions: &regions,
            drift: None,
            events: &[],
            config: &config,
            uptime: Duration::ZERO,
        })
        .into_string();
        assert!(
            html.contains(r#"data-region="eu" data-state="ok""#)
                && html.contains("(this region)")
                && html.contains(">eu-1<")
                && html.contains(">5 / 6<")
                && html.contains(">42<"),
            "{html}"
        );
        assert!(
            html.contains(r#"data-region="us" data-state="unreachable""#)
                && html.contains(
                    "unreachable since 2023-11-14T22:13:20.000Z: http://us-1:7400: cannot connect"
                ),
            "{html}"
        );
    }
}
