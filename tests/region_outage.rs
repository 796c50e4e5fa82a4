//! Issue 18's acceptance test: a whole region goes dark and stops nobody else. Three regions
//! A, B and C, each with its own coordinator and worker processes, its own state store (an fs
//! folder) and its own target broker (tansu; site a is in A, b in B, c in C); one source
//! broker and one Kafka flow (exactly once, 4 partitions, 2 tasks per site) into the three
//! sites, while a loader writes records to the source at a steady rate.
//!
//! - While records flow, every process of region A is SIGKILLed (coordinator, worker, broker)
//!   and its state folder is renamed away. Records produced after the kill must reach b and c,
//!   and how long that takes is printed beside the same measure taken just before the kill
//!   (expected: no interruption). B's and C's `GET /api/v1/regions` must show A unreachable,
//!   and nothing may recreate A's state folder while A is away.
//! - A comes back (its state folder, its broker on the same data, its coordinator and worker):
//!   the time until its target holds what the source held when it returned is printed with
//!   that backlog (the records produced while A was down, and the few it had not copied yet
//!   when it died).
//! - After the loader stops, each of a, b and c equals the source partition by partition (the
//!   `lockstep.src.offset` sequence is the source's offsets: 0 missing, 0 duplicates, with the
//!   same keys, values, timestamps and headers), and B's and C's `/api/v1/regions` show A ok.
//!
//! Every wait is bounded, and so is the whole test (`BUDGET`). The brokers keep their data in
//! SQLite files (see `Tansu::sqlite`), so A's target survives its broker's SIGKILL. The
//! figures are printed on lines starting `REGION OUTAGE` (`-- --nocapture`).
//!
//! `a_dead_region_stops_no_copy_elsewhere_and_copies_only_what_it_missed` is the same outage
//! for an objects flow, without brokers or the peer view (two regions, fs stores); it runs
//! with the other tests, the Kafka one with the tansu suites (tests/run.sh).

mod common;

use common::kafka::*;
use common::*;
use rdkafka::consumer::BaseConsumer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;
/// Records per second the loader writes; it stops when told, or at `MAX_RECORDS` at the latest.
const RATE: f64 = 200.0;
const MAX_RECORDS: usize = 100_000;
/// How long region A stays down.
const OUTAGE: Duration = Duration::from_secs(20);
/// The whole test, from the first broker's start to the last check.
const BUDGET: Duration = Duration::from_secs(330);
/// The peer view's settings: each coordinator asks the other regions' coordinators every
/// 1.5 s and gives each a second to answer (the timeout must be below the interval).
const PEER_VIEW: &str = "peer_interval = \"1500ms\"\npeer_timeout = \"1s\"";
/// (region, its site, its worker's id).
const REGIONS: [(&str, &str, &str); 3] = [("A", "a", "wa"), ("B", "b", "wb"), ("C", "c", "wc")];

/// One region: its control plane (coordinator and worker processes, with its config file and
/// their logs in the cluster's dir), its state folder and its target broker.
struct Region {
    /// Copies the processes' logs into the kept dir when the test fails (dropped before the
    /// cluster's dir is removed).
    _keep: CopyLogsOnPanic,
    name: &'static str,
    site: &'static str,
    worker: &'static str,
    cluster: Cluster,
    state: PathBuf,
    target: Tansu,
    /// Reads the target broker. Never dropped: closing a consumer can wait on a broker that
    /// is gone; the test process reclaims it.
    reader: ManuallyDrop<BaseConsumer>,
}

impl Region {
    fn start_control_plane(&mut self) {
        start_region(&mut self.cluster, self.name, self.worker);
    }
}

/// Region `name`'s control plane, not started yet: its config file in a temp dir (its own
/// `[coordinator]` table, with its listen addresses and the `extra` lines, then `body`, which
/// is the same in every region's file), its coordinator run as `lockstep coordinator --config
/// F` with `LOCKSTEP_REGION`.
fn region_cluster(name: &str, grpc_port: u16, http_port: u16, extra: &str, body: &str) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("lockstep.toml");
    let text = format!(
        r#"[coordinator]
grpc_listen = "127.0.0.1:{grpc_port}"
http_listen = "127.0.0.1:{http_port}"
lease_ttl = "3000ms"
heartbeat_interval = "500ms"
handover_margin = "300ms"
lease_safety_margin = "600ms"
{extra}
{body}"#
    );
    std::fs::write(&config, text).expect("config");
    // A config the coordinator refuses would only show as a coordinator that never gets ready.
    let path = config.display().to_string();
    let check = run_to_end(&["config", "check", &path], &[], Duration::from_secs(30));
    assert_eq!(
        check.code, 0,
        "region {name}'s config is refused:\n{}{}",
        check.stdout, check.stderr
    );
    Cluster {
        config,
        grpc: format!("http://127.0.0.1:{grpc_port}"),
        http: format!("http://127.0.0.1:{http_port}"),
        coordinator: None,
        peers: Vec::new(),
        workers: BTreeMap::new(),
        env: vec![("LOCKSTEP_REGION".to_string(), name.to_string())],
        dir,
    }
}

/// Starts a region's coordinator (and waits until it is ready), then its worker `worker`
/// with `--region`.
fn start_region(cluster: &mut Cluster, name: &str, worker: &str) {
    cluster.start_coordinator();
    let grpc = cluster.grpc.clone();
    cluster.start_worker_with(worker, &grpc, &["--region", name]);
}

/// `[[regions]]` for each (name, its coordinator's gRPC port, its state folder).
fn regions_toml(regions: &[(&str, u16, &Path)]) -> String {
    let mut out = String::new();
    for (name, grpc_port, state) in regions {
        out.push_str(&format!(
            r#"
[[regions]]
name = "{name}"
coordinators = ["http://127.0.0.1:{grpc_port}"]
state = {{ service = "fs", root = "{}" }}
"#,
            state.display()
        ));
    }
    out
}

/// The Kafka test's sites (site, its region, its broker), source and flow into every site.
/// Small batches and fetches keep tansu answering in time (see tests/mirror_faults.rs).
fn kafka_toml(sites: &[(&str, &str, String)], source: &str) -> String {
    let mut out = String::new();
    for (site, region, bootstrap) in sites {
        out.push_str(&format!(
            r#"
[[sites]]
name = "{site}"
region = "{region}"
druid.router_url = "http://127.0.0.1:1"
kafka.bootstrap_servers = "{bootstrap}"
kafka.properties = {{ "batch.num.messages" = "1000" }}
"#
        ));
    }
    out.push_str(&format!(
        r#"
[[sources]]
name = "up"
kind = "kafka"
kafka.bootstrap_servers = "{source}"
kafka.properties = {{ "fetch.max.bytes" = "1048576" }}

[[flows]]
name = "events"
kind = "kafka"
source = "up"
topics = ["events"]
mode = "exactly_once"
tasks = 2
discovery_interval = "2s"
"#
    ));
    out
}

/// The earlier of `within` from now and the end of the test's budget.
fn by(within: Duration, budget: Instant) -> Instant {
    (Instant::now() + within).min(budget)
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The high watermarks of `c`'s broker, waited for (bounded): a broker just restarted may
/// take a moment to answer.
async fn watermarks(c: &BaseConsumer, what: &str, deadline: Instant) -> Vec<i64> {
    loop {
        if let Some(h) = high_watermarks(c, PARTITIONS) {
            return h;
        }
        assert!(Instant::now() < deadline, "{what}: no watermarks");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every partition of each target holds at least `need[p]` records and returns,
/// per target, how long after `since` that was first seen. Fails at `deadline` with what each
/// held. A target's high watermark is enough: the mirror writes source partition p into
/// target partition p and nothing else there, and the final check proves that target offset
/// o holds source offset o, so a high watermark above S means source record S had landed.
async fn wait_hold(
    targets: &[&Region],
    need: &[i64],
    since: Instant,
    deadline: Instant,
    what: &str,
) -> Vec<Duration> {
    let mut done: Vec<Option<Duration>> = vec![None; targets.len()];
    let mut held: Vec<Option<Vec<i64>>> = vec![None; targets.len()];
    loop {
        for (i, r) in targets.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            held[i] = high_watermarks(&r.reader, PARTITIONS);
            if let Some(h) = &held[i] {
                if h.iter().zip(need).all(|(h, n)| h >= n) {
                    done[i] = Some(since.elapsed());
                }
            }
        }
        if done.iter().all(Option::is_some) {
            return done.into_iter().flatten().collect();
        }
        if Instant::now() > deadline {
            let held: Vec<String> = targets
                .iter()
                .zip(&held)
                .map(|(r, h)| format!("{}: {h:?}", r.site))
                .collect();
            panic!(
                "{what}: not there after {}: need {need:?} per partition, hold {}",
                secs(since.elapsed()),
                held.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /api/v1/regions` at a coordinator's HTTP address, parsed (Err: what it answered
/// instead).
fn regions_view(http: &str) -> Result<Value, String> {
    let (code, body) = http_get(http, "/api/v1/regions").map_err(|e| format!("no answer: {e}"))?;
    if code != 200 {
        return Err(format!("HTTP {code}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))
}

/// The entry of `region` in a regions view.
fn entry<'a>(view: &'a Value, region: &str) -> Option<&'a Value> {
    view["regions"]
        .as_array()?
        .iter()
        .find(|r| r["region"] == region)
}

/// Waits until the regions view of each region in `at` satisfies `ok(its name, view)` and
/// returns, per region, how long after `since` it first did. Fails at `deadline` with each
/// one's last answer.
async fn wait_views(
    at: &[&Region],
    since: Instant,
    deadline: Instant,
    what: &str,
    ok: impl Fn(&str, &Value) -> bool,
) -> Vec<Duration> {
    let mut done: Vec<Option<Duration>> = vec![None; at.len()];
    let mut last: Vec<Result<Value, String>> = vec![Err("not asked".into()); at.len()];
    loop {
        for (i, r) in at.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            last[i] = regions_view(&r.cluster.http);
            if matches!(&last[i], Ok(v) if ok(r.name, v)) {
                done[i] = Some(since.elapsed());
            }
        }
        if done.iter().all(Option::is_some) {
            return done.into_iter().flatten().collect();
        }
        if Instant::now() > deadline {
            let answers: Vec<String> = at
                .iter()
                .zip(&last)
                .map(|(r, v)| match v {
                    Ok(v) => format!("{}: {v}", r.name),
                    Err(e) => format!("{}: {e}", r.name),
                })
                .collect();
            panic!(
                "{what}: not seen within {} in GET /api/v1/regions; last answers:\n{}",
                secs(since.elapsed()),
                answers.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A view in which `own` is itself and ok, `down` is unreachable (since a time), and every
/// other region is ok.
fn shows_unreachable(own: &str, view: &Value, down: &str) -> bool {
    let state = |r: &str| entry(view, r).map(|e| e["state"].clone());
    view["region"] == own
        && entry(view, own).is_some_and(|e| e["self"] == true)
        && entry(view, down)
            .is_some_and(|e| e["state"] == "unreachable" && e["unreachable_since"].is_string())
        && REGIONS
            .iter()
            .filter(|(r, _, _)| *r != down)
            .all(|(r, _, _)| state(r) == Some("ok".into()))
}

/// A view in which every region is ok, and `back` answers with its one worker and its two
/// tasks.
fn shows_healthy(own: &str, view: &Value, back: &str) -> bool {
    view["region"] == own
        && REGIONS
            .iter()
            .all(|(r, _, _)| entry(view, r).is_some_and(|e| e["state"] == "ok"))
        && entry(view, back).is_some_and(|e| {
            e["unreachable_since"].is_null() && e["workers_alive"] == 1 && e["tasks_total"] == 2
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_region_stops_nobody_and_catches_up_exactly_once() {
    let started = Instant::now();
    let budget = started + BUDGET;
    let log = |msg: String| {
        eprintln!(
            "[{:>6.1}s] region outage: {msg}",
            started.elapsed().as_secs_f64()
        )
    };
    let logs = KeepOnPanic::new();
    let source = Tansu::sqlite("tansu-source", logs.path());
    let src = source.bootstrap();
    create_topic(&src, "events", PARTITIONS).await;
    let src_reader = ManuallyDrop::new(reader(&src));

    // Each region: its ports, its state folder, its target broker; then the same body in
    // three config files, each with its own listen addresses.
    let plan: Vec<_> = REGIONS
        .iter()
        .map(|(name, site, worker)| {
            let target = Tansu::sqlite(&format!("tansu-{site}"), logs.path());
            let state = logs.path().join(format!("state-{name}"));
            (
                *name,
                *site,
                *worker,
                free_port(),
                free_port(),
                state,
                target,
            )
        })
        .collect();
    let regions_part: Vec<(&str, u16, &Path)> = plan
        .iter()
        .map(|(name, _, _, grpc, _, state, _)| (*name, *grpc, state.as_path()))
        .collect();
    let sites: Vec<(&str, &str, String)> = plan
        .iter()
        .map(|(name, site, _, _, _, _, target)| (*site, *name, target.bootstrap()))
        .collect();
    let body = regions_toml(&regions_part) + &kafka_toml(&sites, &src);
    let mut regions: Vec<Region> = Vec::new();
    for (name, site, worker, grpc_port, http_port, state, target) in plan {
        let cluster = region_cluster(name, grpc_port, http_port, PEER_VIEW, &body);
        regions.push(Region {
            _keep: logs.also_keep_in(cluster.dir.path(), &format!("region-{name}")),
            name,
            site,
            worker,
            cluster,
            state,
            reader: ManuallyDrop::new(reader(&target.bootstrap())),
            target,
        });
    }

    // The loader: RATE records per second from now until told to finish (or MAX_RECORDS).
    // The pace only abandons it when the test fails (its mirrored count is not used).
    let delivery = Arc::new(Delivery {
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let pace = Arc::new(Pace {
        mirrored: AtomicUsize::new(0),
        stopped: false.into(),
    });
    let _abandon_loader = StopOnDrop(pace.clone());
    let finish = Arc::new(AtomicBool::new(false));
    let loader = {
        let (src, delivery, pace, finish) =
            (src.clone(), delivery.clone(), pace.clone(), finish.clone());
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            produce_with(&src, PARTITIONS, 0, &delivery, |i| loop {
                if pace.stopped.load(Ordering::Relaxed) {
                    return Next::Abandon;
                }
                if finish.load(Ordering::Relaxed) || i >= MAX_RECORDS {
                    return Next::Finish;
                }
                let due = start + Duration::from_secs_f64(i as f64 / RATE);
                let now = Instant::now();
                if now >= due {
                    return Next::Send;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
            })
        })
    };

    for r in &mut regions {
        r.start_control_plane();
    }
    for r in &regions {
        // Each region's coordinator owns its site's two tasks, on its own worker.
        let within = by(Duration::from_secs(90), budget).saturating_duration_since(Instant::now());
        let assigned = settled_on(&r.cluster.grpc, 2, &[r.worker], within).await;
        assert!(
            assigned
                .keys()
                .all(|t| t.starts_with(&format!("events/{}/", r.site))),
            "region {} owns only tasks into site {}: {assigned:?}",
            r.name,
            r.site
        );
    }
    log(format!(
        "3 regions running, {} records produced (load average {})",
        delivery.ok.load(Ordering::Relaxed),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    ));

    // Before the fault: how long new records take to reach each site.
    // (Measured as after the kill: from before the source's watermarks are read.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = Instant::now();
    let now = watermarks(&src_reader, "source", by(Duration::from_secs(10), budget)).await;
    let need: Vec<i64> = now.iter().map(|h| h + 1).collect();
    let everyone: Vec<&Region> = regions.iter().collect();
    let baseline = wait_hold(
        &everyone,
        &need,
        asked,
        by(Duration::from_secs(60), budget),
        "new records at a, b and c before the outage",
    )
    .await;

    // Region A goes dark while records flow: its coordinator, its worker and its broker
    // SIGKILLed, its state store gone.
    let away = logs.path().join("state-A.away");
    let (a, others) = regions.split_first_mut().expect("region A");
    let killed = Instant::now();
    a.cluster
        .coordinator
        .as_mut()
        .expect("A's coordinator")
        .kill();
    a.cluster
        .workers
        .get_mut(a.worker)
        .expect("A's worker")
        .kill();
    a.target.proc.kill();
    std::fs::rename(&a.state, &away).expect("take A's state folder away");
    let at_kill = watermarks(&src_reader, "source", by(Duration::from_secs(10), budget)).await;
    log(format!(
        "region A killed (coordinator, worker, broker SIGKILLed, state folder away) with {} records in the source",
        at_kill.iter().sum::<i64>()
    ));

    // Records produced after the kill reach b and c.
    let bc: Vec<&Region> = others.iter().collect();
    let need: Vec<i64> = at_kill.iter().map(|h| h + 1).collect();
    // Both watched at once: records produced after the kill reaching b and c, and B and C
    // seeing A unreachable.
    let (after, seen) = tokio::join!(
        wait_hold(
            &bc,
            &need,
            killed,
            by(Duration::from_secs(60), budget),
            "records produced after A's kill at b and c",
        ),
        wait_views(
            &bc,
            killed,
            by(Duration::from_secs(20), budget),
            "A unreachable in B's and C's peer view",
            |own, v| shows_unreachable(own, v, "A"),
        )
    );
    eprintln!(
        "REGION OUTAGE: records produced after region A's kill reached b after {} and c after {} (every partition; before the kill, new records reached a, b, c after {}, {}, {})",
        secs(after[0]),
        secs(after[1]),
        secs(baseline[0]),
        secs(baseline[1]),
        secs(baseline[2])
    );
    log(format!(
        "B and C show A unreachable in /api/v1/regions {} and {} after the kill",
        secs(seen[0]),
        secs(seen[1])
    ));

    // A stays down; b and c keep receiving.
    let remaining = OUTAGE.saturating_sub(killed.elapsed());
    tokio::time::sleep(remaining).await;
    let source_then = watermarks(&src_reader, "source", by(Duration::from_secs(10), budget)).await;
    let mut grew = Vec::new();
    for r in &bc {
        let h = watermarks(&r.reader, r.site, by(Duration::from_secs(10), budget)).await;
        grew.push(h.iter().sum::<i64>());
    }
    log(format!(
        "after {} of outage the source holds {} records ({} produced since the kill); b holds {}, c {}",
        secs(killed.elapsed()),
        source_then.iter().sum::<i64>(),
        source_then.iter().sum::<i64>() - at_kill.iter().sum::<i64>(),
        grew[0],
        grew[1]
    ));

    // A comes back: its state folder, its broker on the same data, its control plane.
    assert!(
        !a.state.exists(),
        "something recreated region A's state folder while A was down"
    );
    std::fs::rename(&away, &a.state).expect("restore A's state folder");
    let back = Instant::now();
    a.target.restart();
    // A new reader: the old one's connection died with the broker, and librdkafka waits up to
    // reconnect.backoff.max.ms before it tries again.
    a.reader = ManuallyDrop::new(reader(&a.target.bootstrap()));
    let held = watermarks(&a.reader, "a", by(Duration::from_secs(30), budget)).await;
    let source_back = watermarks(&src_reader, "source", by(Duration::from_secs(10), budget)).await;
    // The backlog: what the source held when A returned, less what A's target held.
    let (held_sum, kill_sum, back_sum) = (
        held.iter().sum::<i64>(),
        at_kill.iter().sum::<i64>(),
        source_back.iter().sum::<i64>(),
    );
    let backlog = back_sum - held_sum;
    a.start_control_plane();
    let up = back.elapsed();
    // Watched at once: A's tasks running again (once the lease of its worker's previous
    // session has surely ended: the restarted coordinator counts a whole lease_ttl +
    // handover_margin from its start), A's target catching up, B and C seeing A ok again.
    let within = by(Duration::from_secs(60), budget).saturating_duration_since(Instant::now());
    let (only_a, others_view): (Vec<&Region>, Vec<&Region>) = (vec![&*a], others.iter().collect());
    let (running, caught_up, seen) = tokio::join!(
        async {
            settled_on(&a.cluster.grpc, 2, &[a.worker], within).await;
            back.elapsed()
        },
        wait_hold(
            &only_a,
            &source_back,
            back,
            by(Duration::from_secs(120), budget),
            "A catching up",
        ),
        wait_views(
            &others_view,
            back,
            by(Duration::from_secs(60), budget),
            "A ok again in B's and C's peer view",
            |own, v| shows_healthy(own, v, "A"),
        )
    );
    eprintln!(
        "REGION OUTAGE: region A back after {} down with a backlog of {backlog} records ({} produced while it was down, {} not yet copied at the kill): broker and control plane up {}, its tasks running {} and the backlog caught up {} after its restart began",
        secs(back - killed),
        back_sum - kill_sum,
        kill_sum - held_sum,
        secs(up),
        secs(running),
        secs(caught_up[0]),
    );
    log(format!(
        "B and C show A ok in /api/v1/regions {} and {} after its restart began",
        secs(seen[0]),
        secs(seen[1])
    ));
    let abc: Vec<&Region> = std::iter::once(&*a).chain(others.iter()).collect();

    // The loader stops; every site gets everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    finish.store(true, Ordering::Relaxed);
    let produced = loader.await.expect("loader");
    let last = watermarks(&src_reader, "source", by(Duration::from_secs(10), budget)).await;
    assert_eq!(
        last.iter().sum::<i64>(),
        produced as i64,
        "the source holds every record the loader wrote"
    );
    wait_hold(
        &abc,
        &last,
        Instant::now(),
        by(Duration::from_secs(120), budget),
        "every record at a, b and c",
    )
    .await;
    // A little longer: nothing more may arrive (a duplicate would show up as extra records).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let verifying = Instant::now();
    // New readers: A's old one may still hold the error events of its broker's death, which
    // read_all would take for a failed read.
    let verifiers: Vec<ManuallyDrop<BaseConsumer>> = abc
        .iter()
        .map(|r| ManuallyDrop::new(reader(&r.target.bootstrap())))
        .collect();
    for p in 0..PARTITIONS {
        // The four brokers at once: each serves its reads one at a time.
        let (source, targets) = std::thread::scope(|s| {
            let targets: Vec<_> = verifiers
                .iter()
                .map(|r| s.spawn(|| read_all(r, p)))
                .collect();
            let source = read_all(&src_reader, p);
            let targets: Vec<Vec<Row>> = targets
                .into_iter()
                .map(|t| t.join().expect("read a target"))
                .collect();
            (source, targets)
        });
        for (r, target) in abc.iter().zip(&targets) {
            assert_exact_copy(&format!("site {}", r.site), p, &source, target);
        }
    }
    log(format!(
        "a, b and c each hold the {produced} source records exactly once, in order (checked in {})",
        secs(verifying.elapsed())
    ));
    wait_views(
        &abc[1..],
        Instant::now(),
        by(Duration::from_secs(10), budget),
        "A ok in B's and C's peer view at the end",
        |own, v| shows_healthy(own, v, "A"),
    )
    .await;
    log(format!(
        "done in {} ({produced} records at {RATE} per second)",
        secs(started.elapsed())
    ));
}

/// The files named `dump-*` in a folder: name -> content.
fn dumps(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let content = std::fs::read(e.path()).ok()?;
            name.starts_with("dump-").then_some((name, content))
        })
        .collect()
}

/// Waits until `store` holds exactly the files `want` (bounded), and returns how long after
/// `since` it did.
async fn wait_dumps(
    store: &Path,
    want: &BTreeMap<String, Vec<u8>>,
    since: Instant,
    within: Duration,
    what: &str,
) -> Duration {
    loop {
        let held = dumps(store);
        if &held == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "{what}: not there within {within:?}: holds {:?}, want {:?}",
            held.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same outage for an objects flow, without brokers: two regions, each with its own
/// coordinator, worker, state folder and site store, one landing folder copied into both. A's
/// processes are SIGKILLed and its state folder and site store renamed away while files
/// arrive: B copies the new ones (the time is printed) and nothing recreates A's folders. When
/// A returns, it copies what it missed and nothing it had copied before (its store and the
/// manifests there say what it holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_region_stops_no_copy_elsewhere_and_copies_only_what_it_missed() {
    let logs = KeepOnPanic::new();
    let root = logs.path();
    let landing = root.join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    let add = |from: usize, to: usize| {
        for i in from..to {
            std::fs::write(
                landing.join(format!("dump-{i}.json")),
                format!("{{\"n\":{i}}}\n"),
            )
            .expect("write a dump");
        }
    };
    add(0, 5);
    let [(grpc_a, http_a), (grpc_b, http_b)] =
        [(free_port(), free_port()), (free_port(), free_port())];
    let (state_a, state_b) = (root.join("state-A"), root.join("state-B"));
    let (store_a, store_b) = (root.join("store-a"), root.join("store-b"));
    let mut body = regions_toml(&[("A", grpc_a, &state_a), ("B", grpc_b, &state_b)]);
    for (site, region, store) in [("a", "A", &store_a), ("b", "B", &store_b)] {
        body.push_str(&format!(
            r#"
[[sites]]
name = "{site}"
region = "{region}"
druid.router_url = "http://127.0.0.1:1"
store = {{ service = "fs", root = "{}" }}
"#,
            store.display()
        ));
    }
    body.push_str(&format!(
        r#"
[[sources]]
name = "landing"
kind = "objects"
store = {{ service = "fs", root = "{}" }}

[[flows]]
name = "dumps"
kind = "objects"
source = "landing"
prefix = ""
shards = 2
interval = "1s"
"#,
        landing.display()
    ));
    let mut a = region_cluster("A", grpc_a, http_a, "", &body);
    let mut b = region_cluster("B", grpc_b, http_b, "", &body);
    let _keep_a = logs.also_keep_in(a.dir.path(), "region-A");
    let _keep_b = logs.also_keep_in(b.dir.path(), "region-B");
    start_region(&mut a, "A", "wa");
    start_region(&mut b, "B", "wb");
    let started = Instant::now();
    let want = dumps(&landing);
    let within = Duration::from_secs(60);
    wait_dumps(&store_a, &want, started, within, "the first dumps at a").await;
    wait_dumps(&store_b, &want, started, within, "the first dumps at b").await;
    // A's manifests record its copies within 500 ms; its cycles (every second) find nothing
    // more to do.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mtime = |dir: &Path| -> BTreeMap<String, std::time::SystemTime> {
        dumps(dir)
            .into_keys()
            .map(|name| {
                let m = std::fs::metadata(dir.join(&name)).and_then(|m| m.modified());
                (name, m.expect("mtime"))
            })
            .collect()
    };
    let copied_before = mtime(&store_a);

    // Region A goes: its processes SIGKILLed, its state folder and its site's store gone.
    a.coordinator.as_mut().expect("A's coordinator").kill();
    a.workers.get_mut("wa").expect("A's worker").kill();
    let (state_away, store_away) = (root.join("state-A.away"), root.join("store-a.away"));
    std::fs::rename(&state_a, &state_away).expect("take A's state folder away");
    std::fs::rename(&store_a, &store_away).expect("take A's store away");
    let killed = Instant::now();
    add(5, 10);
    let want = dumps(&landing);
    let at_b = wait_dumps(
        &store_b,
        &want,
        killed,
        within,
        "new dumps at b while A is down",
    )
    .await;
    eprintln!(
        "REGION OUTAGE (objects): the dumps added after region A's kill were all at b {} later",
        secs(at_b)
    );
    assert!(
        !state_a.exists() && !store_a.exists(),
        "something recreated region A's state folder or store while A was down"
    );

    // A comes back and copies what it missed, from its own manifests.
    std::fs::rename(&state_away, &state_a).expect("restore A's state folder");
    std::fs::rename(&store_away, &store_a).expect("restore A's store");
    let back = Instant::now();
    start_region(&mut a, "A", "wa");
    let caught_up = wait_dumps(&store_a, &want, back, within, "A catching up").await;
    eprintln!(
        "REGION OUTAGE (objects): region A back: the 5 dumps it missed copied {} after its restart began",
        secs(caught_up)
    );
    let copied_after = mtime(&store_a);
    for (name, before) in &copied_before {
        assert_eq!(
            copied_after.get(name),
            Some(before),
            "{name}, copied to a before the outage, was copied again after A's return"
        );
    }
}
