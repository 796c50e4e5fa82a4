//! Leader election end to end: two real coordinator processes on one state store (a folder,
//! an S3 bucket on moto_server, or an Azure Blob container on azurite), three real workers. Checks that exactly one coordinator
//! leads, that a standby redirects gRPC (workers, CLI) and HTTP to it, that a standby takes
//! over after the leader is SIGKILLed (no task moves, worker sessions stay), that SIGTERM
//! hands over at once, and that a leader paused past its lease is fenced: it steps down and
//! never overwrites its successor's state.
//!
//! Figures (failover times) are printed, not asserted: run with `-- --nocapture`.

mod common;

use common::*;
use lockstep_proto as pb;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Objects flows between local folders: tasks that really run (state RUNNING), so "all
/// tasks running again" after a failover means something. 2 flows × 2 sites × 3 shards.
fn objects_body(root: &std::path::Path) -> String {
    for d in ["src", "site-a", "site-b"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("src/one.csv"), b"a,b\n1,2\n").expect("seed");
    format!(
        r#"
[[sites]]
name = "a"
druid.router_url = "http://127.0.0.1:1"
store = {{ service = "fs", root = "{a}" }}

[[sites]]
name = "b"
druid.router_url = "http://127.0.0.1:2"
store = {{ service = "fs", root = "{b}" }}

[[sources]]
name = "src"
kind = "objects"
[sources.store]
service = "fs"
root = "{src}"

[[flows]]
name = "daily"
kind = "objects"
source = "src"
prefix = ""
target_prefix = "daily/"
shards = 3
interval = "1s"

[[flows]]
name = "hourly"
kind = "objects"
source = "src"
prefix = ""
target_prefix = "hourly/"
shards = 3
interval = "1s"
"#,
        a = root.join("site-a").display(),
        b = root.join("site-b").display(),
        src = root.join("src").display(),
    )
}

const TASKS: usize = 12;
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

/// `[coordinator]` lines: this coordinator's id, and a short election lease for tests.
fn election(id: &str, ttl_ms: u64, renew_ms: u64) -> String {
    format!(
        "id = \"{id}\"\n[coordinator.election]\nlease_ttl = \"{ttl_ms}ms\"\nrenew_interval = \"{renew_ms}ms\"\n"
    )
}

/// worker -> its session generation, as the coordinator at `grpc` sees it.
async fn sessions(grpc: &str) -> BTreeMap<String, u64> {
    status_at(grpc)
        .await
        .expect("status")
        .workers
        .into_iter()
        .map(|w| (w.worker_id, w.session_generation))
        .collect()
}

/// Waits until every task is reported RUNNING by its worker to the coordinator at `grpc`.
async fn all_running(grpc: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = status_at(grpc).await {
            let running = s
                .tasks
                .iter()
                .filter(|t| {
                    t.phase == "assigned"
                        && t.progress
                            .as_ref()
                            .is_some_and(|p| p.state == pb::TaskState::Running as i32)
                })
                .count();
            if running == TASKS {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "tasks not all running within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the coordinator at `http` leads; returns when that was seen.
fn wait_leader(http: &str, within: Duration) -> Instant {
    wait_for(within, &format!("{http} to lead"), || is_leader(http));
    Instant::now()
}

/// "task started" lines over every worker's log: a task (re)start on a worker.
fn task_starts(cluster: &Cluster) -> usize {
    cluster
        .workers
        .values()
        .map(|w| w.log_text().matches("task started").count())
        .sum()
}

fn worker_addresses(first: &str, second: &str) -> String {
    format!("{first},{second}")
}

/// Starts a second coordinator "c2" beside the cluster's "c1"; returns its peer index and the
/// gRPC and HTTP addresses of c1 and c2.
fn start_standby(cluster: &mut Cluster) -> (usize, [String; 4]) {
    let c2 = cluster.add_peer("c2");
    cluster.start_peer(c2);
    let addresses = [
        cluster.grpc.clone(),
        cluster.http.clone(),
        cluster.peers[c2].grpc.clone(),
        cluster.peers[c2].http.clone(),
    ];
    (c2, addresses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_redirects_takes_over_after_sigkill_and_sigterm_hands_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = objects_body(dir.path());
    // Worker lease 4 s, heartbeats every 300 ms; election lease 1.5 s, renewed every 300 ms.
    let mut cluster = Cluster::start_full(&body, &election("c1", 1500, 300), 4000, 300, 200, true);
    let (c2, [c1_grpc, c1_http, c2_grpc, c2_http]) = start_standby(&mut cluster);

    // Exactly one leader.
    assert!(is_leader(&c1_http), "the first coordinator leads");
    assert_eq!(
        metric(&c2_http, "lockstep_coordinator_leader"),
        Some(0.0),
        "the second is a standby"
    );
    let (code, ready) = http_get(&c2_http, "/readyz").expect("readyz");
    assert_eq!(code, 200, "a standby is ready (it redirects): {ready}");
    assert!(ready.contains("standby") && ready.contains("c1"), "{ready}");

    // Workers are given the standby first: it sends them on to the leader.
    for w in WORKERS {
        cluster.start_worker_with(w, &worker_addresses(&c2_grpc, &c1_grpc), &[]);
    }
    let assignment = settled_on(&c1_grpc, TASKS, &WORKERS, Duration::from_secs(30)).await;
    all_running(&c1_grpc, Duration::from_secs(30)).await;
    for w in WORKERS {
        let log = cluster.workers[w].log_text();
        assert!(
            log.contains("a standby named the active coordinator: following it"),
            "{w} followed the standby's pointer:\n{log}"
        );
    }

    // gRPC to the standby: UNAVAILABLE naming the leader.
    let mut direct = pb::worker_service_client::WorkerServiceClient::connect(c2_grpc.clone())
        .await
        .expect("connect standby");
    let refused = direct
        .join(pb::JoinRequest {
            worker_id: "probe".into(),
            ..Default::default()
        })
        .await
        .expect_err("a standby answers no worker");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        pb::leader_hint(&refused).as_deref(),
        Some(c1_grpc.as_str()),
        "{refused:?}"
    );

    // The CLI pointed at the standby follows it to the leader.
    let out = std::process::Command::new(BIN)
        .args(["status", "--format", "json", "--coordinator", &c2_grpc])
        .output()
        .expect("run status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(v["coordinator_id"], "c1");
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(TASKS));

    // HTTP: /api and / answer 307 to the leader; probes and metrics are served.
    let raw = http_get_raw(&c2_http, "/api/v1/status?x=1").expect("GET");
    assert!(raw.contains(" 307 "), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains(&format!("location: {c1_http}/api/v1/status?x=1")),
        "{raw}"
    );
    assert!(http_get_raw(&c2_http, "/")
        .expect("GET /")
        .contains(" 307 "));
    assert_eq!(http_get(&c2_http, "/healthz").expect("healthz").0, 200);
    assert_eq!(
        metric(
            &c2_http,
            "lockstep_coordinator_redirects_total{api=\"http\"}"
        ),
        Some(2.0)
    );

    // SIGKILL the leader: the standby sees its lock freed and takes over; nothing moves.
    let before = sessions(&c1_grpc).await;
    let starts_before = task_starts(&cluster);
    let killed = Instant::now();
    cluster.coordinator.as_mut().expect("c1").kill();
    let serving = wait_leader(&c2_http, Duration::from_secs(20));
    let after = settled_on(&c2_grpc, TASKS, &WORKERS, Duration::from_secs(30)).await;
    all_running(&c2_grpc, Duration::from_secs(30)).await;
    let running = Instant::now();
    assert_eq!(after, assignment, "no task moved across the failover");
    assert_eq!(
        sessions(&c2_grpc).await,
        before,
        "workers kept their sessions (no re-join)"
    );
    println!(
        "failover after SIGKILL (fs, holder lock): standby serving after {:?}, all {TASKS} tasks running after {:?}, task restarts {}",
        serving - killed,
        running - killed,
        task_starts(&cluster) - starts_before
    );
    assert_eq!(
        metric(
            &c2_http,
            "lockstep_coordinator_election_transitions_total{role=\"leader\"}"
        ),
        Some(1.0)
    );

    // The old leader comes back: a standby now, pointing at c2.
    cluster.start_coordinator();
    assert_eq!(metric(&c1_http, "lockstep_coordinator_leader"), Some(0.0));
    let (_, ready) = http_get(&c1_http, "/readyz").expect("readyz");
    assert!(ready.contains("standby") && ready.contains("c2"), "{ready}");

    // SIGTERM the leader: it writes its state, releases the lease, and c1 takes over at its
    // next read of the lease.
    let starts_before = task_starts(&cluster);
    let termed = Instant::now();
    let status = cluster.peers[c2]
        .proc
        .as_mut()
        .expect("c2")
        .terminate(Duration::from_secs(20));
    let exited = Instant::now();
    assert!(status.success(), "c2 exit status {status:?}");
    let serving = wait_leader(&c1_http, Duration::from_secs(20));
    let handed = settled_on(&c1_grpc, TASKS, &WORKERS, Duration::from_secs(30)).await;
    all_running(&c1_grpc, Duration::from_secs(30)).await;
    let running = Instant::now();
    assert_eq!(handed, assignment, "no task moved across the hand-over");
    assert_eq!(sessions(&c1_grpc).await, before, "sessions kept again");
    let log = cluster.peers[c2].proc.as_ref().expect("c2").log_text();
    assert!(log.contains("leadership released"), "{log}");
    println!(
        "hand-over after SIGTERM: old leader exited after {:?}, new leader serving {:?} after that, all tasks running after {:?}, task restarts {}",
        exited - termed,
        serving.saturating_duration_since(exited),
        running - termed,
        task_starts(&cluster) - starts_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_is_fenced_and_steps_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = objects_body(dir.path());
    // A longer worker lease (6 s): the workers must find the new leader before it expires
    // while a paused coordinator holds each of their calls for a timeout.
    let mut cluster = Cluster::start_full(&body, &election("c1", 1500, 300), 6000, 500, 200, true);
    let (_, [c1_grpc, c1_http, c2_grpc, c2_http]) = start_standby(&mut cluster);
    for w in WORKERS {
        cluster.start_worker_with(w, &worker_addresses(&c1_grpc, &c2_grpc), &[]);
    }
    let assignment = settled_on(&c1_grpc, TASKS, &WORKERS, Duration::from_secs(30)).await;
    let ok_series = "lockstep_coordinator_state_writes_total{result=\"ok\"}";
    let c1_writes = metric(&c1_http, ok_series).expect("c1 state writes");
    let state_file = cluster.dir.path().join("state/coordinator-state.json");
    let read_state = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&state_file).expect("state file")).expect("json")
    };
    assert_eq!(read_state()["stamp"]["leader"], "c1");

    // Pause the leader. It keeps its holder lock (the process lives), so the standby must
    // wait out the lease TTL and take over without the lock.
    let paused = Instant::now();
    cluster.coordinator.as_ref().expect("c1").signal("STOP");
    let serving = wait_leader(&c2_http, Duration::from_secs(20));
    println!(
        "failover from a paused leader (lease TTL 1.5 s): standby serving after {:?}",
        serving - paused
    );
    let taken = read_state();
    assert_eq!(taken["stamp"]["leader"], "c2", "{taken}");
    let epoch = taken["stamp"]["epoch"].as_u64().expect("epoch");
    assert_eq!(
        metric(&c2_http, "lockstep_coordinator_election_epoch"),
        Some(epoch as f64)
    );
    let after = settled_on(&c2_grpc, TASKS, &WORKERS, Duration::from_secs(30)).await;
    assert_eq!(after, assignment, "no task moved");

    // Wake the old leader: it finds its lease gone and steps down without writing.
    cluster.coordinator.as_ref().expect("c1").signal("CONT");
    let c1_proc = cluster.coordinator.as_ref().expect("c1");
    wait_for(Duration::from_secs(20), "c1 to step down", || {
        c1_proc.log_text().contains("stepped down: now a standby")
    });
    wait_for(Duration::from_secs(10), "c1 to follow c2", || {
        http_get(&c1_http, "/readyz").is_ok_and(|(_, b)| b.contains("standby") && b.contains("c2"))
    });
    assert_eq!(metric(&c1_http, "lockstep_coordinator_leader"), Some(0.0));
    assert_eq!(
        metric(&c1_http, ok_series),
        Some(c1_writes),
        "the deposed leader wrote no state after it woke up"
    );
    assert!(is_leader(&c2_http), "c2 still leads");

    // A change made through the old leader's address lands at the new one, in its state.
    let out = std::process::Command::new(BIN)
        .args(["admin", "--coordinator", &c1_grpc, "pause-flow", "hourly"])
        .output()
        .expect("run admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = read_state();
    assert_eq!(state["stamp"]["leader"], "c2", "{state}");
    assert_eq!(state["stamp"]["epoch"].as_u64(), Some(epoch));
    assert_eq!(state["paused_flows"], serde_json::json!(["hourly"]));
    assert_eq!(
        metric(
            &c2_http,
            "lockstep_coordinator_state_writes_total{result=\"fenced\"}"
        ),
        Some(0.0)
    );
    // c2 took over without the holder lock (c1 kept it while paused); it takes the lock at
    // a renewal once c1 let go, so the next failover is immediate again.
    let lease_file = cluster.dir.path().join("state/leader.json");
    wait_for(
        Duration::from_secs(10),
        "c2 to hold the holder lock",
        || {
            let lease: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&lease_file).expect("lease")).expect("json");
            lease["holder"] == "c2" && lease["locked"] == true
        },
    );
}

/// A state store on an object-store emulator: S3 on moto_server, or Azure Blob on azurite.
struct StateBucket {
    label: &'static str,
    /// The `[coordinator.state]` table's body.
    toml: String,
    store: lockstep_config::ObjectStore,
    /// The emulator, stopped when dropped.
    _server: Box<dyn std::any::Any + Send>,
}

impl StateBucket {
    fn s3(bucket: &str, logs: &std::path::Path) -> StateBucket {
        let moto = Moto::start(bucket, logs);
        let mut s = lockstep_config::ObjectStore::fs("/lockstep/test/");
        s.service = lockstep_config::StoreService::S3;
        s.bucket = Some(bucket.to_string());
        s.endpoint = Some(moto.endpoint.clone());
        s.region = Some("us-east-1".to_string());
        s.access_key_id = Some("test".to_string());
        s.secret_access_key = Some(lockstep_config::Secret::new("test"));
        StateBucket {
            label: "s3 on moto",
            toml: format!(
                "service = \"s3\"\nbucket = \"{bucket}\"\nroot = \"/lockstep/test/\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"",
                moto.endpoint
            ),
            store: s,
            _server: Box::new(moto),
        }
    }

    fn azblob(container: &str, logs: &std::path::Path) -> StateBucket {
        let az = Azurite::start(container, logs);
        let mut s = lockstep_config::ObjectStore::fs("/lockstep/test/");
        s.service = lockstep_config::StoreService::Azblob;
        s.container = Some(container.to_string());
        s.endpoint = Some(az.endpoint.clone());
        s.account_name = Some(AZURITE_ACCOUNT.to_string());
        s.account_key = Some(lockstep_config::Secret::new(AZURITE_KEY));
        StateBucket {
            label: "azblob on azurite",
            toml: format!(
                "service = \"azblob\"\ncontainer = \"{container}\"\nroot = \"/lockstep/test/\"\nendpoint = \"{}\"\naccount_name = \"{AZURITE_ACCOUNT}\"\naccount_key = \"{AZURITE_KEY}\"",
                az.endpoint
            ),
            store: s,
            _server: Box::new(az),
        }
    }
}

/// Create-if-absent and replace-if-unchanged, as election and fenced state writes use them.
async fn honours_conditional_writes(bucket: StateBucket) {
    use lockstep_coordinator::cas::{CasStore, Expect};
    let store = CasStore::new(&bucket.store, Duration::from_secs(10)).expect(bucket.label);
    let t1 = store
        .write("doc", b"one".to_vec(), Expect::Absent)
        .await
        .expect("create");
    let again = store
        .write("doc", b"two".to_vec(), Expect::Absent)
        .await
        .expect_err("If-None-Match: * over an existing object");
    assert!(again.is_conflict(), "{}: {again}", bucket.label);
    let t2 = store
        .write("doc", b"two".to_vec(), Expect::Tag(&t1))
        .await
        .expect("If-Match with the current etag");
    let stale = store
        .write("doc", b"three".to_vec(), Expect::Tag(&t1))
        .await
        .expect_err("If-Match with a stale etag");
    assert!(stale.is_conflict(), "{}: {stale}", bucket.label);
    let (bytes, tag) = store.read("doc").await.expect("read").expect("present");
    assert_eq!((bytes.as_slice(), &tag), (b"two".as_slice(), &t2));
    let missing = store
        .write("nothing", b"x".to_vec(), Expect::Tag(&t2))
        .await
        .expect_err("If-Match on a missing object");
    assert!(missing.is_conflict(), "{}: {missing}", bucket.label);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_honours_conditional_writes() {
    let logs = tempfile::tempdir().expect("tempdir");
    honours_conditional_writes(StateBucket::s3("cas", logs.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_honours_conditional_writes() {
    let logs = tempfile::tempdir().expect("tempdir");
    honours_conditional_writes(StateBucket::azblob("cas", logs.path())).await;
}

/// SIGKILL of the leader: the standby takes over once the election lease (1.5 s) runs out,
/// no task moves, worker sessions stay, and the state in the bucket is the new leader's.
async fn standby_on_object_state_takes_over(bucket: StateBucket, dir: &std::path::Path) {
    let body = objects_body(dir);
    let mut cluster = Cluster::start_custom(
        &body,
        &election("c1", 1500, 300),
        Some(&bucket.toml),
        6000,
        500,
        200,
        true,
    );
    let (_, [c1_grpc, c1_http, c2_grpc, c2_http]) = start_standby(&mut cluster);
    assert!(is_leader(&c1_http));
    assert_eq!(metric(&c2_http, "lockstep_coordinator_leader"), Some(0.0));
    for w in WORKERS {
        cluster.start_worker_with(w, &worker_addresses(&c1_grpc, &c2_grpc), &[]);
    }
    let assignment = settled_on(&c1_grpc, TASKS, &WORKERS, Duration::from_secs(30)).await;
    all_running(&c1_grpc, Duration::from_secs(30)).await;
    let before = sessions(&c1_grpc).await;

    let starts_before = task_starts(&cluster);
    let killed = Instant::now();
    cluster.coordinator.as_mut().expect("c1").kill();
    let serving = wait_leader(&c2_http, Duration::from_secs(20));
    let after = settled_on(&c2_grpc, TASKS, &WORKERS, Duration::from_secs(30)).await;
    all_running(&c2_grpc, Duration::from_secs(30)).await;
    let running = Instant::now();
    assert_eq!(after, assignment, "no task moved");
    assert_eq!(sessions(&c2_grpc).await, before, "sessions kept");
    println!(
        "failover after SIGKILL ({}, lease TTL 1.5 s): standby serving after {:?}, all {TASKS} tasks running after {:?}, task restarts {}",
        bucket.label,
        serving - killed,
        running - killed,
        task_starts(&cluster) - starts_before
    );

    // The state in the bucket is the new leader's.
    let store = lockstep_coordinator::state::StateStore::new(&bucket.store).expect("store");
    let state = store.peek().await.expect("read").expect("state");
    let stamp = state.stamp.expect("stamped");
    assert_eq!(stamp.leader, "c2");
    assert_eq!(
        metric(&c2_http, "lockstep_coordinator_election_epoch"),
        Some(stamp.epoch as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_on_s3_state_takes_over_after_the_lease_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    standby_on_object_state_takes_over(StateBucket::s3("state", dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_on_azblob_state_takes_over_after_the_lease_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    standby_on_object_state_takes_over(StateBucket::azblob("state", dir.path()), dir.path()).await;
}
