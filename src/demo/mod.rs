//! `lockstep demo`: the whole system in one process, with no external services.
//!
//! - Kafka: three in-process `rdkafka::mocking` clusters, the source and one per site, each
//!   with the topic `clicks` (the mock cluster has no CreateTopics: topics exist up front);
//! - object stores: folders in a temporary directory, a landing folder and one per site;
//! - Druid: one `lockstep_sim::Emulator` per site, its Kafka supervisor ingesting the site's
//!   mirrored `clicks` topic into the datasource `clicks`;
//! - two regions, each with its own control plane ([`region`]): `eu` feeds site-a and `us`
//!   feeds site-b; each runs the real coordinator (drift poller every 2 s, its own state
//!   folder) and one real worker of its region, in-process, on loopback; each worker serves
//!   `/metrics` on its own free port;
//! - a load generator ([`load`]): a backfill over past hours, then bursts separated by quiet
//!   periods (so drift reaches `in_sync` between them), and files dropped for the objects flow.
//!
//! It prints where to look, replication progress, one line per drift poll (read from region
//! eu's coordinator's `/api/v1/drift`, see [`view`]), then injects a fault (site-b's Druid
//! loses the rows of one past hour) and prints when the drift engine reports it. Then region
//! us goes dark ([`outage`]): its coordinator and worker stop while the load keeps producing;
//! it prints that eu keeps mirroring into site-a, that eu's coordinator reports us unreachable
//! (`/api/v1/regions`), that us is back (same addresses and state folder) and when site-b has
//! caught up. At `--duration` or on Ctrl-C / SIGTERM it stops the load, the workers (which
//! leave), the coordinators and the emulators, in that order, joins them, and exits 0 (the
//! in-process Kafka clusters go with the process).
//!
//! The stdout lines `drift: <datasource> <verdict> ...`, `replication: ...`,
//! `fault injected: ...`, `fault detected: <datasource> diverged ... site-b ...`,
//! `region outage: us ...`, `region eu keeps flowing: site-a +N records ...`,
//! `region outage reported: eu sees us unreachable since ...` (or, from a coordinator without
//! the peer view, `note: region outage not reported: ...`), `region back: us ...`,
//! `region back reported: eu sees us ok again ...`,
//! `region caught up: us, site-b mirrored everything produced (N records) Xs after its return`,
//! the `summary: ...` lines and the final `demo finished`, and the `--endpoints-file` JSON,
//! are a contract: tests and other tools read them.

mod load;
mod outage;
mod region;
mod view;

use anyhow::{Context, Result};
use lockstep_config::Config;
use lockstep_coordinator::CoordinatorError;
use lockstep_sim::{Emulator, EmulatorConfig};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use region::RegionPlane;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const DEMO_CONFIG: &str = include_str!("demo.toml");
const SITES: [&str; 2] = ["site-a", "site-b"];
/// The regions, each with the site it feeds and its worker, in the order of [`SITES`]. The
/// first one's coordinator is the one the demo reads (and serves on --http-listen).
const REGIONS: [(&str, &str, &str); 2] = [
    ("eu", "site-a", "eu-worker-1"),
    ("us", "site-b", "us-worker-1"),
];
/// The Kafka flow, its topic and its datasource share this name.
const CLICKS: &str = "clicks";
const PARTITIONS: i32 = 4;
/// Where the fault is injected.
const FAULT_SITE: &str = "site-b";
const HOUR_MS: i64 = 3_600_000;

/// `lockstep demo` arguments.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// How long to run (e.g. 60s, 5m); Ctrl-C or SIGTERM stops it earlier.
    #[arg(long, default_value = "60s", value_parser = crate::humantime_duration)]
    pub duration: Duration,
    /// Region eu's coordinator's HTTP address (status page `/`, `/api/v1/...`, `/metrics`);
    /// region us's listens on a free port. When the port is taken, a free port is used
    /// instead, and printed.
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub http_listen: SocketAddr,
    /// When to inject the fault (site-b's Druid loses the rows of one past hour). Default: as
    /// soon as drift is in_sync after a burst of load has been caught up, at the latest after
    /// half of --duration. Region us's outage follows the fault's detection.
    #[arg(long, value_parser = crate::humantime_duration)]
    pub fault_after: Option<Duration>,
    /// Once everything listens, write the addresses here as JSON (atomically):
    /// {"coordinator_http", "coordinator_grpc" (region eu's), "worker_metrics": [every
    /// worker's], "regions": {"eu": {"coordinator_http", "coordinator_grpc", "sites",
    /// "worker_metrics"}, "us": {..}}, "druid": {"site-a", "site-b"}, "fault": {"site",
    /// "datasource"}, "outage": {"region"}}.
    #[arg(long)]
    pub endpoints_file: Option<PathBuf>,
}

type Mock = MockCluster<'static, DefaultProducerContext>;

/// What the demo's config needs filled in besides the addresses of each coordinator.
struct Placeholders {
    state_dir: String,
    kafka_source: String,
    kafka_sites: [String; 2],
    druid_sites: [String; 2],
    /// Every region's coordinator gRPC address, in the order of [`REGIONS`].
    grpc: [SocketAddr; 2],
}

impl Placeholders {
    /// The demo's config, selected for `region`, listening on that region's gRPC address
    /// and on `http`.
    fn config(&self, region: usize, http: SocketAddr) -> Result<Config> {
        let text = DEMO_CONFIG
            .replace("@STATE_DIR@", &self.state_dir)
            .replace("@GRPC_LISTEN@", &self.grpc[region].to_string())
            .replace("@HTTP_LISTEN@", &http.to_string())
            .replace("@GRPC_EU@", &self.grpc[0].to_string())
            .replace("@GRPC_US@", &self.grpc[1].to_string())
            .replace("@KAFKA_SOURCE@", &self.kafka_source)
            .replace("@KAFKA_SITE_A@", &self.kafka_sites[0])
            .replace("@KAFKA_SITE_B@", &self.kafka_sites[1])
            .replace("@DRUID_SITE_A@", &self.druid_sites[0])
            .replace("@DRUID_SITE_B@", &self.druid_sites[1]);
        // No environment: the built-in config means the same everywhere.
        let mut config = lockstep_config::parse(&text, "demo.toml (built in)", None, &|_| None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        config
            .select_region(Some(REGIONS[region].0))
            .map_err(|e| anyhow::anyhow!("demo.toml (built in): {e}"))?;
        Ok(config)
    }
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let signals = crate::shutdown_on_signals();
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("lockstep-demo-")
        .tempdir()
        .context("cannot create a temporary folder for the demo's state and stores")?;
    let root = dir.path().to_path_buf();
    for sub in ["state-eu", "state-us", "landing/dumps", "site-a", "site-b"] {
        std::fs::create_dir_all(root.join(sub))
            .with_context(|| format!("cannot create {}", root.join(sub).display()))?;
    }

    // Kafka. The clusters are not Send: they stay in this (never spawned) future and live
    // until the process exits.
    let source = mock_cluster("source")?;
    let site_kafka = [mock_cluster("site-a")?, mock_cluster("site-b")?];

    // Druid: one emulator per site, ingesting the site's mirrored topic.
    let mut emulators = Vec::new();
    for k in &site_kafka {
        emulators.push(
            Emulator::start(EmulatorConfig {
                supervisors: vec![supervisor_spec(&k.bootstrap_servers())],
                offsets_refresh: Duration::from_millis(250),
                ..EmulatorConfig::default()
            })
            .await
            .context("cannot start a Druid emulator")?,
        );
    }

    // The load's backfill goes into the source topic first: the first drift poll already
    // sees it (not yet mirrored), instead of two empty sites "in sync".
    let now = lockstep_drift::poller::now_ms();
    let this_hour = now.div_euclid(HOUR_MS) * HOUR_MS;
    // The fault hour: in the middle of the backfill, well inside the drift window.
    let fault_hour = this_hour - 3 * HOUR_MS;
    let plan = load::Plan {
        topic: CLICKS.to_string(),
        partitions: PARTITIONS,
        backfill_rows: 20_000,
        backfill_start_ms: this_hour - 5 * HOUR_MS,
        backfill_end_ms: this_hour,
        first_burst: Duration::from_secs(8),
        burst_rows: 600,
        burst_every: Duration::from_secs(8),
        burst_length: Duration::from_secs(2),
        burst_span: Duration::from_secs(90 * 60),
        dump_every: Duration::from_secs(10),
        dump_rows: 200,
    };
    let counters = Arc::new(load::Counters::default());
    let producer = load::producer(&source.bootstrap_servers())?;
    load::backfill(&producer, &plan, &counters).await?;

    // The two regions: each its coordinator, then its worker.
    let placeholders = Placeholders {
        state_dir: root.to_string_lossy().into_owned(),
        kafka_source: source.bootstrap_servers(),
        kafka_sites: [
            site_kafka[0].bootstrap_servers(),
            site_kafka[1].bootstrap_servers(),
        ],
        druid_sites: [emulators[0].url(), emulators[1].url()],
        grpc: [free_loopback_port()?, free_loopback_port()?],
    };
    let mut planes = start_regions(&placeholders, args.http_listen).await?;

    if let Some(path) = &args.endpoints_file {
        write_atomically(
            path,
            &serde_json::to_vec_pretty(&endpoints(&planes, &emulators))?,
        )?;
    }

    print_header(
        &args,
        &planes,
        &emulators,
        &source,
        &site_kafka,
        &root,
        fault_hour,
    );
    println!(
        "load: backfilled {} rows with timestamps from {} to {} into the source topic {CLICKS}; \
         then bursts of {} rows every {}s with quiet periods, and a file into landing/dumps/ every {}s",
        plan.backfill_rows,
        lockstep_drift::druid::format_time(plan.backfill_start_ms),
        lockstep_drift::druid::format_time(plan.backfill_end_ms),
        plan.burst_rows,
        plan.burst_every.as_secs(),
        plan.dump_every.as_secs(),
    );
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    let load_stop = CancellationToken::new();
    let mut load_task = tokio::spawn(load::run(
        producer,
        root.join("landing"),
        plan,
        counters.clone(),
        hold_rx,
        load_stop.clone(),
    ));

    // Watch: drift polls, progress, the fault, the outage.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("cannot build an HTTP client")?;
    let drift_url = format!("http://{}/api/v1/drift", planes[0].bound.http);
    let deadline = started + args.duration;
    let fault_due = started + args.fault_after.unwrap_or(args.duration / 2);
    let mut drift_tick = tokio::time::interval(Duration::from_millis(300));
    let mut progress_tick = tokio::time::interval_at(
        Instant::now() + Duration::from_secs(3),
        Duration::from_secs(5),
    );
    let mut last_checked = String::new();
    let mut first_in_sync: Option<Duration> = None;
    let mut in_sync_after_burst = false;
    // When: monotonic, since the start, epoch ms.
    let mut injected: Option<(Instant, Duration, i64)> = None;
    let mut detected: Option<Duration> = None;
    let mut outage = outage::Outage::new();
    let mut load_done = false;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            _ = signals.cancelled() => {
                println!("\nsignal received: stopping");
                break;
            }
            _ = tokio::time::sleep_until(deadline) => break,
            r = &mut load_task, if !load_done => {
                load_done = true;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => { failure = Some(e.context("the load generator failed")); break; }
                    Err(e) => { failure = Some(anyhow::anyhow!("the load generator panicked: {e}")); break; }
                }
            }
            _ = progress_tick.tick() => {
                replication_line(&counters, &planes, &emulators, &root, started.elapsed());
                if let Some(id) = planes.iter().find_map(|p| p.ended_worker()) {
                    failure = Some(anyhow::anyhow!("worker {id} stopped unexpectedly"));
                    break;
                }
            }
            _ = drift_tick.tick() => {
                if let Some(report) = fetch_drift(&http, &drift_url).await {
                    if report.checked_at != last_checked {
                        last_checked = report.checked_at.clone();
                        let at = started.elapsed();
                        // A check that started before the injection cannot see the fault.
                        let checked = lockstep_drift::druid::parse_time(&report.checked_at).unwrap_or(0);
                        let stale = injected.is_some_and(|(_, _, wall)| checked < wall);
                        for ds in &report.datasources {
                            println!(
                                "{}  [{:.1}s]{}",
                                view::line(ds),
                                at.as_secs_f64(),
                                if stale { " (check started before the fault)" } else { "" }
                            );
                            // In sync once the sites hold data, not while both are empty.
                            let has_rows = ds.sites.iter().all(|s| s.rows.is_some_and(|r| r > 0));
                            if ds.verdict == "in_sync" && has_rows {
                                first_in_sync.get_or_insert(at);
                                // Caught up after a burst too: lagging and in_sync have both
                                // been shown; time for the fault.
                                if counters.bursts.load(Ordering::Relaxed) > 0
                                    && checked > counters.last_burst_end_ms.load(Ordering::Relaxed)
                                {
                                    in_sync_after_burst = true;
                                }
                            }
                            let Some((when, _, _)) = injected else { continue };
                            if detected.is_some() || ds.datasource != CLICKS {
                                continue;
                            }
                            if let Some(bucket) = view::divergence_at(ds, FAULT_SITE) {
                                let after = when.elapsed();
                                detected = Some(after);
                                let rows: Vec<String> = bucket
                                    .rows
                                    .iter()
                                    .map(|(s, r)| format!("{s} {r} rows"))
                                    .collect();
                                println!(
                                    "fault detected: {} diverged at {FAULT_SITE}, {:.1}s after the injection: {} (hour {}: {})",
                                    ds.datasource,
                                    after.as_secs_f64(),
                                    ds.reason,
                                    bucket.bucket,
                                    rows.join(", ")
                                );
                                let _ = hold_tx.send(false);
                            }
                        }
                    }
                }
                let due = match args.fault_after {
                    Some(_) => Instant::now() >= fault_due,
                    None => in_sync_after_burst || Instant::now() >= fault_due,
                };
                if injected.is_none() && due && Instant::now() < deadline {
                    // Hold bursts until the fault is seen: the drift poll then compares
                    // caught-up sites and names the one that lost rows.
                    let _ = hold_tx.send(true);
                    let dropped = emulators[1].faults().drop_rows(CLICKS, fault_hour, fault_hour + HOUR_MS);
                    injected = Some((
                        Instant::now(),
                        started.elapsed(),
                        lockstep_drift::poller::now_ms(),
                    ));
                    println!(
                        "fault injected: {FAULT_SITE}'s Druid lost the {CLICKS} rows of the hour {} ({dropped} rows dropped now; rows arriving for that hour are dropped too)  [{:.1}s]{}",
                        lockstep_drift::druid::format_time(fault_hour),
                        started.elapsed().as_secs_f64(),
                        if first_in_sync.is_none() { " (drift has not been in_sync yet)" } else { "" }
                    );
                }
                let step = outage.step(outage::Cx {
                    planes: &mut planes,
                    counters: &counters,
                    http: &http,
                    started,
                    deadline,
                    fault_detected: detected.is_some(),
                });
                if let Err(e) = step.await {
                    failure = Some(e);
                    break;
                }
            }
        }
    }

    // Stop everything, in order, and join it all.
    println!("stopping: load, workers (they leave), coordinators, Druid emulators");
    load_stop.cancel();
    if !load_done {
        match load_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e.context("the load generator failed"));
            }
            Err(e) => {
                failure.get_or_insert(anyhow::anyhow!("the load generator panicked: {e}"));
            }
        }
    }
    replication_line(&counters, &planes, &emulators, &root, started.elapsed());
    for plane in &mut planes {
        if let Err(e) = plane.stop_workers().await {
            failure.get_or_insert(e);
        }
    }
    for plane in &mut planes {
        if let Err(e) = plane.stop_coordinator().await {
            failure.get_or_insert(e);
        }
    }
    for emu in emulators {
        emu.shutdown().await;
    }
    // The Kafka clusters are not destroyed here but left to the process exit, which follows:
    // work that outlives its owner may still hold clients of them for a while (a drift
    // check the coordinator abandoned at shutdown reads Kafka on the blocking pool until its
    // calls return; the emulators' consumer threads close on their own time), and destroying
    // a cluster under a live client makes librdkafka log "all brokers down" errors.
    std::mem::forget(site_kafka);
    std::mem::forget(source);

    println!();
    match first_in_sync {
        Some(t) => println!("summary: drift first in_sync at {:.1}s", t.as_secs_f64()),
        None => println!("summary: drift was not seen in_sync"),
    }
    match (injected, detected) {
        (Some((_, at, _)), Some(after)) => println!(
            "summary: fault injected at {FAULT_SITE} at {:.1}s, detected {:.1}s later",
            at.as_secs_f64(),
            after.as_secs_f64()
        ),
        (Some((_, at, _)), None) => println!(
            "summary: fault injected at {FAULT_SITE} at {:.1}s, not detected before the end",
            at.as_secs_f64()
        ),
        (None, _) => println!("summary: no fault injected"),
    }
    println!("{}", outage.summary(&planes));
    if let Some(e) = failure {
        return Err(e);
    }
    drop(dir);
    println!("demo finished");
    Ok(ExitCode::SUCCESS)
}

/// Starts every region's coordinator, then its worker. Region eu's coordinator listens on
/// `http_listen`, or on a free port when that one is taken (said in a `note:` line); the
/// others on free ports.
async fn start_regions(p: &Placeholders, http_listen: SocketAddr) -> Result<Vec<RegionPlane>> {
    let mut planes = Vec::new();
    for (i, (name, site, _)) in REGIONS.iter().enumerate() {
        let http = if i == 0 {
            http_listen
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        };
        let plane = match RegionPlane::start(name, site, p.config(i, http)?).await {
            Ok(plane) => plane,
            Err(CoordinatorError::Bind {
                what: "HTTP",
                addr,
                source,
            }) if source.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
                let free = SocketAddr::new(addr.ip(), 0);
                let plane = RegionPlane::start(name, site, p.config(i, free)?).await?;
                println!(
                    "note: {addr} is taken; region {name}'s coordinator's HTTP listens on {} instead",
                    plane.bound.http
                );
                plane
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("region {name}'s coordinator cannot start")))
            }
        };
        planes.push(plane);
    }
    for (plane, (_, _, worker)) in planes.iter_mut().zip(REGIONS) {
        plane.add_worker(worker).await?;
    }
    Ok(planes)
}

/// A loopback address with a port free now: for the coordinators' gRPC, which the config
/// must name (every region lists its coordinators) before any of them starts.
fn free_loopback_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?)
}

/// The `--endpoints-file` JSON: region eu's coordinator at the top level (as before regions),
/// every worker's metrics, and each region's addresses.
fn endpoints(planes: &[RegionPlane], emulators: &[Emulator]) -> serde_json::Value {
    let metrics = |p: &RegionPlane| -> Vec<String> {
        p.workers
            .iter()
            .map(|w| w.metrics_addr.to_string())
            .collect()
    };
    let regions: serde_json::Map<String, serde_json::Value> = planes
        .iter()
        .map(|p| {
            (
                p.name.to_string(),
                serde_json::json!({
                    "coordinator_http": p.bound.http.to_string(),
                    "coordinator_grpc": p.bound.grpc.to_string(),
                    "sites": [p.site],
                    "worker_metrics": metrics(p),
                }),
            )
        })
        .collect();
    serde_json::json!({
        "coordinator_http": planes[0].bound.http.to_string(),
        "coordinator_grpc": planes[0].bound.grpc.to_string(),
        "worker_metrics": planes.iter().flat_map(metrics).collect::<Vec<_>>(),
        "regions": regions,
        "druid": { "site-a": emulators[0].url(), "site-b": emulators[1].url() },
        "fault": { "site": FAULT_SITE, "datasource": CLICKS },
        "outage": { "region": planes[outage::DOWN].name },
    })
}

/// Where to look, and what will happen.
fn print_header(
    args: &DemoArgs,
    planes: &[RegionPlane],
    emulators: &[Emulator],
    source: &Mock,
    site_kafka: &[Mock; 2],
    root: &Path,
    fault_hour: i64,
) {
    let first = &planes[0];
    println!(
        "lockstep demo: the whole system in one process, two regions, for {} (Ctrl-C stops it earlier)",
        humantime::format_duration(args.duration)
    );
    println!(
        "  status page          http://{}/   (region {})",
        first.bound.http, first.name
    );
    println!(
        "  drift report         http://{}/api/v1/drift",
        first.bound.http
    );
    println!(
        "  regions view         http://{}/api/v1/regions",
        first.bound.http
    );
    for p in planes {
        println!(
            "  region {:<13} feeds {}; coordinator http://{}/ (gRPC {}), state {}/state-{}",
            p.name,
            p.site,
            p.bound.http,
            p.bound.grpc,
            root.display(),
            p.name
        );
    }
    for p in planes {
        println!(
            "  coordinator metrics  http://{}/metrics   (region {})",
            p.bound.http, p.name
        );
    }
    let workers = planes
        .iter()
        .flat_map(|p| p.workers.iter().map(move |w| (p, w)));
    for (i, (p, w)) in workers.enumerate() {
        println!(
            "  worker {} metrics     http://{}/metrics   ({}: region {}, feeds {})",
            i + 1,
            w.metrics_addr,
            w.id,
            p.name,
            p.site
        );
    }
    for (site, emu) in SITES.iter().zip(emulators) {
        println!(
            "  {site} Druid         {} (emulated Router; try /druid/v2/sql)",
            emu.url()
        );
    }
    println!(
        "  Kafka (in-process)   source {}, site-a {}, site-b {}; topic {CLICKS}, {PARTITIONS} partitions",
        source.bootstrap_servers(),
        site_kafka[0].bootstrap_servers(),
        site_kafka[1].bootstrap_servers()
    );
    println!("  object stores        {}/{{landing,site-a,site-b}} (flow dumps: landing/dumps/ -> each site)", root.display());
    println!(
        "  the fault            {FAULT_SITE} will lose the {CLICKS} rows of the hour {}",
        lockstep_drift::druid::format_time(fault_hour)
    );
    println!(
        "  the outage           region {} (its coordinator and worker) goes dark once the fault is detected, then comes back",
        planes[outage::DOWN].name
    );
    if let Some(f) = args.fault_after.filter(|f| *f >= args.duration) {
        println!(
            "note: --fault-after {} is not within --duration: no fault this time",
            humantime::format_duration(f)
        );
    }
    println!();
}

fn mock_cluster(name: &str) -> Result<Mock> {
    let cluster = MockCluster::new(1)
        .with_context(|| format!("cannot start the in-process Kafka cluster {name}"))?;
    // The mock cluster has no CreateTopics: the mirror finds its target topic and its
    // checkpoint topic ready.
    cluster
        .create_topic(CLICKS, PARTITIONS, 1)
        .with_context(|| format!("cannot create topic {CLICKS} on the Kafka cluster {name}"))?;
    let progress = lockstep_workers::kafka::checkpoint::PROGRESS_TOPIC;
    cluster
        .create_topic(progress, 1, 1)
        .with_context(|| format!("cannot create topic {progress} on the Kafka cluster {name}"))?;
    Ok(cluster)
}

/// The Kafka supervisor every site runs: topic `clicks` into datasource `clicks`, hourly
/// segments, no rollup (each record is one row), from the earliest offset.
fn supervisor_spec(bootstrap: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "kafka",
        "spec": {
            "dataSchema": {
                "dataSource": CLICKS,
                "timestampSpec": { "column": "timestamp", "format": "iso" },
                "granularitySpec": { "segmentGranularity": "HOUR", "rollup": false }
            },
            "ioConfig": {
                "topic": CLICKS,
                "inputFormat": { "type": "json" },
                "consumerProperties": { "bootstrap.servers": bootstrap },
                "useEarliestOffset": true,
                "taskDuration": "PT1H"
            },
            "tuningConfig": { "type": "kafka" }
        }
    })
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The coordinator's latest drift report; None until its first check, or on any error (the
/// next tick tries again).
async fn fetch_drift(http: &reqwest::Client, url: &str) -> Option<view::Report> {
    let response = http.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    match response.json::<view::Report>().await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the drift report");
            None
        }
    }
}

/// `replication: ...`: records produced, mirrored into each site (the workers' counters),
/// rows in each site's Druid, and files landed and copied.
fn replication_line(
    counters: &load::Counters,
    planes: &[RegionPlane],
    emulators: &[Emulator],
    root: &Path,
    elapsed: Duration,
) {
    let mut line = format!(
        "replication: source {} records",
        counters.produced.load(Ordering::Relaxed)
    );
    for (site, emu) in SITES.iter().zip(emulators) {
        line.push_str(&format!(
            " | {site} mirrored {}, Druid {} rows",
            mirrored(planes, site),
            emu.row_count(CLICKS)
        ));
    }
    line.push_str(&format!(
        " | dumps landed {}",
        counters.dumps.load(Ordering::Relaxed)
    ));
    for site in SITES {
        line.push_str(&format!(
            ", {site} {}",
            count_files(&root.join(site).join("dumps"))
        ));
    }
    println!("{line}  [{:.1}s]", elapsed.as_secs_f64());
}

/// Records of the Kafka flow mirrored into `site`, over every worker of every region, running
/// or not (their metrics handles outlive a stop; read without creating series that a worker
/// does not have).
fn mirrored(planes: &[RegionPlane], site: &str) -> u64 {
    planes
        .iter()
        .flat_map(|p| &p.workers)
        .flat_map(|w| w.metrics.registry.gather())
        .filter(|f| f.name() == "lockstep_mirror_records_total")
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .filter(|m| {
                    let labels = m.get_label();
                    labels
                        .iter()
                        .any(|l| l.name() == "flow" && l.value() == CLICKS)
                        && labels
                            .iter()
                            .any(|l| l.name() == "site" && l.value() == site)
                })
                .map(|m| m.get_counter().get_value() as u64)
                .collect::<Vec<_>>()
        })
        .sum()
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .count()
        })
        .unwrap_or(0)
}
