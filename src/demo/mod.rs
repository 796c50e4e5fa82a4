//! `lockstep demo`: the whole system in one process, with no external services.
//!
//! - Kafka: three in-process `rdkafka::mocking` clusters, the source and one per site, each
//!   with the topic `clicks` (the mock cluster has no CreateTopics: topics exist up front);
//! - object stores: folders in a temporary directory, a landing folder and one per site;
//! - Druid: one `lockstep_sim::Emulator` per site, its Kafka supervisor ingesting the site's
//!   mirrored `clicks` topic into the datasource `clicks`;
//! - the real coordinator (drift poller every 2 s) and two real workers, in-process, on
//!   loopback; each worker serves `/metrics` on its own free port;
//! - a load generator ([`load`]): a backfill over past hours, then bursts separated by quiet
//!   periods (so drift reaches `in_sync` between them), and files dropped for the objects flow.
//!
//! It prints where to look, replication progress, one line per drift poll (read from the
//! coordinator's `/api/v1/drift`, see [`view`]), then injects a fault (site-b's Druid loses
//! the rows of one past hour) and prints when the drift engine reports it. At `--duration` or
//! on Ctrl-C / SIGTERM it stops the load, the workers (which leave), the coordinator and the
//! emulators, in that order, joins them, and exits 0 (the in-process Kafka clusters go with
//! the process).
//!
//! The stdout lines `drift: <datasource> <verdict> ...`, `fault injected: ...`,
//! `fault detected: <datasource> diverged ... site-b ...` and `demo finished`, and the
//! `--endpoints-file` JSON, are a contract: tests and other tools read them.

mod load;
mod view;

use anyhow::{Context, Result};
use lockstep_coordinator::CoordinatorError;
use lockstep_sim::{Emulator, EmulatorConfig};
use lockstep_workers::metrics::WorkerMetrics;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
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
    /// The coordinator's HTTP address (status page `/`, `/api/v1/...`, `/metrics`). When the
    /// port is taken, a free port is used instead, and printed.
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub http_listen: SocketAddr,
    /// When to inject the fault (site-b's Druid loses the rows of one past hour). Default: as
    /// soon as drift is in_sync after a burst of load has been caught up, at the latest after
    /// half of --duration.
    #[arg(long, value_parser = crate::humantime_duration)]
    pub fault_after: Option<Duration>,
    /// Once everything listens, write the addresses here as JSON (atomically):
    /// {"coordinator_http", "coordinator_grpc", "worker_metrics": [..], "druid": {"site-a",
    /// "site-b"}, "fault": {"site", "datasource"}}.
    #[arg(long)]
    pub endpoints_file: Option<PathBuf>,
}

type Mock = MockCluster<'static, DefaultProducerContext>;

/// A worker the demo runs: where its metrics are served, its metrics handle, its task.
struct DemoWorker {
    metrics_addr: SocketAddr,
    metrics: WorkerMetrics,
    task: tokio::task::JoinHandle<Result<()>>,
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let signals = crate::shutdown_on_signals();
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("lockstep-demo-")
        .tempdir()
        .context("cannot create a temporary folder for the demo's state and stores")?;
    let root = dir.path().to_path_buf();
    for sub in ["coordinator", "landing/dumps", "site-a", "site-b"] {
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

    // The coordinator, on the requested HTTP address or a free one.
    let config_for = |http: SocketAddr| {
        let text = DEMO_CONFIG
            .replace("@STATE_DIR@", &root.to_string_lossy())
            .replace("@HTTP_LISTEN@", &http.to_string())
            .replace("@KAFKA_SOURCE@", &source.bootstrap_servers())
            .replace("@KAFKA_SITE_A@", &site_kafka[0].bootstrap_servers())
            .replace("@KAFKA_SITE_B@", &site_kafka[1].bootstrap_servers())
            .replace("@DRUID_SITE_A@", &emulators[0].url())
            .replace("@DRUID_SITE_B@", &emulators[1].url());
        // No environment: the built-in config means the same everywhere.
        lockstep_config::parse(&text, "demo.toml (built in)", None, &|_| None)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let coordinator_stop = CancellationToken::new();
    let (bound, coordinator) =
        match lockstep_coordinator::start(config_for(args.http_listen)?, coordinator_stop.clone())
            .await
        {
            Ok(started) => started,
            Err(CoordinatorError::Bind {
                what: "HTTP",
                addr,
                source,
            }) if source.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
                let free = SocketAddr::new(addr.ip(), 0);
                let started =
                    lockstep_coordinator::start(config_for(free)?, coordinator_stop.clone())
                        .await?;
                println!(
                    "note: {addr} is taken; the coordinator's HTTP listens on {} instead",
                    started.0.http
                );
                started
            }
            Err(e) => return Err(e.into()),
        };
    let coordinator_task = tokio::spawn(coordinator);

    // Two workers, each with its metrics on a free loopback port.
    let workers_stop = CancellationToken::new();
    let mut workers: Vec<DemoWorker> = Vec::new();
    for id in ["demo-worker-1", "demo-worker-2"] {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen on a loopback port for worker metrics")?;
        let metrics_addr = listener.local_addr()?;
        let metrics = WorkerMetrics::new();
        let worker_args = crate::WorkerArgs {
            coordinator: format!("http://{}", bound.grpc),
            id: Some(id.to_string()),
            region: None,
            // Three tasks each (2 Kafka slots + 1 objects shard per site = 6 tasks): the
            // first worker to join does not take everything only to hand half of it over.
            capacity: 3,
            capabilities: Vec::new(),
            metrics_listen: Some(metrics_addr),
            stop_timeout: Duration::from_secs(10),
            tls: Default::default(),
        };
        let task = tokio::spawn(crate::run_worker_with(
            worker_args,
            metrics.clone(),
            Some(listener),
            workers_stop.clone(),
        ));
        workers.push(DemoWorker {
            metrics_addr,
            metrics,
            task,
        });
    }

    if let Some(path) = &args.endpoints_file {
        let json = serde_json::json!({
            "coordinator_http": bound.http.to_string(),
            "coordinator_grpc": bound.grpc.to_string(),
            "worker_metrics": workers.iter().map(|w| w.metrics_addr.to_string()).collect::<Vec<_>>(),
            "druid": { "site-a": emulators[0].url(), "site-b": emulators[1].url() },
            "fault": { "site": FAULT_SITE, "datasource": CLICKS },
        });
        write_atomically(path, &serde_json::to_vec_pretty(&json)?)?;
    }

    println!(
        "lockstep demo: the whole system in one process, for {} (Ctrl-C stops it earlier)",
        humantime::format_duration(args.duration)
    );
    println!("  status page          http://{}/", bound.http);
    println!("  drift report         http://{}/api/v1/drift", bound.http);
    println!(
        "  coordinator metrics  http://{}/metrics   (gRPC {})",
        bound.http, bound.grpc
    );
    for (i, w) in workers.iter().enumerate() {
        println!(
            "  worker {} metrics     http://{}/metrics",
            i + 1,
            w.metrics_addr
        );
    }
    for (site, emu) in SITES.iter().zip(&emulators) {
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
    if let Some(f) = args.fault_after.filter(|f| *f >= args.duration) {
        println!(
            "note: --fault-after {} is not within --duration: no fault this time",
            humantime::format_duration(f)
        );
    }
    println!();

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

    // Watch: drift polls, progress, the fault.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("cannot build an HTTP client")?;
    let drift_url = format!("http://{}/api/v1/drift", bound.http);
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
    let mut load_done = false;
    let mut failure: Option<anyhow::Error> = None;
    let progress = |elapsed: Duration| {
        replication_line(&counters, &workers, &emulators, &root, elapsed);
    };
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
                progress(started.elapsed());
                if let Some(i) = workers.iter().position(|w| w.task.is_finished()) {
                    failure = Some(anyhow::anyhow!("demo-worker-{} stopped unexpectedly", i + 1));
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
            }
        }
    }

    // Stop everything, in order, and join it all.
    println!("stopping: load, workers (they leave), coordinator, Druid emulators");
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
    progress(started.elapsed());
    workers_stop.cancel();
    for (i, w) in workers.into_iter().enumerate() {
        match w.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e.context(format!("demo-worker-{} failed", i + 1)));
            }
            Err(e) => {
                failure.get_or_insert(anyhow::anyhow!("demo-worker-{} panicked: {e}", i + 1));
            }
        }
    }
    coordinator_stop.cancel();
    match coordinator_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            failure.get_or_insert(anyhow::Error::new(e).context("the coordinator failed"));
        }
        Err(e) => {
            failure.get_or_insert(anyhow::anyhow!("the coordinator panicked: {e}"));
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
    if let Some(e) = failure {
        return Err(e);
    }
    drop(dir);
    println!("demo finished");
    Ok(ExitCode::SUCCESS)
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
    workers: &[DemoWorker],
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
            mirrored(workers, site),
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

/// Records of the Kafka flow mirrored into `site`, over every worker (read without creating
/// series that a worker does not have).
fn mirrored(workers: &[DemoWorker], site: &str) -> u64 {
    workers
        .iter()
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
