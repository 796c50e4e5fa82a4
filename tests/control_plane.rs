//! Control plane end to end: a real coordinator process and real worker processes over gRPC
//! on loopback. Checks spreading, failover after SIGKILL, minimal movement on join,
//! assignment kept across a coordinator restart, and generation fencing.

mod common;

use common::*;
use lockstep_proto as pb;
use std::time::{Duration, Instant};

const TTL_MS: u64 = 2000;
const HB_MS: u64 = 300;
const MARGIN_MS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_spreads_fails_over_and_survives_restarts() {
    // 2 flows x 2 sites x 3 slots = 12 tasks over 3 workers.
    let mut cluster = Cluster::start(&two_flows_two_sites(3), TTL_MS, HB_MS, MARGIN_MS);
    for w in ["w1", "w2", "w3"] {
        cluster.start_worker(w);
    }
    let initial = cluster
        .settled(12, &["w1", "w2", "w3"], Duration::from_secs(30))
        .await;
    let counts = per_worker(&initial);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 4),
        "spread evenly: {counts:?}"
    );

    // SIGKILL w3: only its tasks move, within TTL + margin + one heartbeat (plus the
    // observation's own polling and a heartbeat of slack for scheduling on a busy machine).
    let w3_tasks: Vec<String> = initial
        .iter()
        .filter(|(_, w)| *w == "w3")
        .map(|(t, _)| t.clone())
        .collect();
    let killed_at = Instant::now();
    cluster.workers.get_mut("w3").expect("w3").kill();
    let after_kill = cluster
        .settled(12, &["w1", "w2"], Duration::from_secs(20))
        .await;
    let took = killed_at.elapsed();
    let bound = Duration::from_millis(TTL_MS + MARGIN_MS + 2 * HB_MS + 500);
    assert!(took <= bound, "failover took {took:?}, bound {bound:?}");
    for (task, worker) in &initial {
        if worker != "w3" {
            assert_eq!(
                &after_kill[task], worker,
                "task {task} of a live worker moved"
            );
        }
    }
    let counts = per_worker(&after_kill);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![6, 6],
        "{counts:?}"
    );
    assert!(w3_tasks.iter().all(|t| after_kill[t] != "w3"));
    println!("failover after SIGKILL: {took:?} (bound {bound:?})");

    // A new worker joins: at most ceil(12 / 3) = 4 tasks move, all to it.
    cluster.start_worker("w4");
    let deadline = Instant::now() + Duration::from_secs(20);
    let after_join = loop {
        let a = cluster
            .settled(12, &["w1", "w2", "w4"], Duration::from_secs(20))
            .await;
        if per_worker(&a).get("w4").copied().unwrap_or(0) == 4 {
            break a;
        }
        assert!(Instant::now() < deadline, "w4 never got its share: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let moved: Vec<&String> = after_join
        .iter()
        .filter(|(t, w)| after_kill[*t] != **w)
        .map(|(t, _)| t)
        .collect();
    assert!(moved.len() <= 4, "moved {} tasks: {moved:?}", moved.len());
    assert!(
        moved.iter().all(|t| after_join[*t] == "w4"),
        "moved only to the new worker"
    );

    // Coordinator restart (SIGKILL: no chance to write anything on the way out): the
    // assignment is the same afterwards, and stays the same over several heartbeats.
    let generation_before = cluster.status().await.generation;
    cluster.coordinator.as_mut().expect("coordinator").kill();
    tokio::time::sleep(Duration::from_millis(HB_MS * 2)).await;
    cluster.start_coordinator();
    let after_restart = cluster
        .settled(12, &["w1", "w2", "w4"], Duration::from_secs(20))
        .await;
    assert_eq!(after_restart, after_join, "restart kept the assignment");
    tokio::time::sleep(Duration::from_millis(TTL_MS + MARGIN_MS + HB_MS)).await;
    let later = cluster.assignment().await;
    assert_eq!(later, after_join, "still the same one lease later");
    // And the workers were answered all along: the restarted coordinator's first write (its
    // takeover fence) covers the steady heartbeats, which change nothing and so write nothing.
    let (_, metrics) = common::metrics_get(&cluster.http).expect("metrics");
    let answered = |code: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "lockstep_coordinator_grpc_requests_total{{code=\"{code}\",method=\"Heartbeat\"}}"
                ))
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        answered("OK") >= 6.0 && answered("Unavailable") == 0.0,
        "heartbeats after the restart: {} answered, {} refused",
        answered("OK"),
        answered("Unavailable")
    );
    assert!(
        cluster.status().await.generation >= generation_before,
        "generation never goes back"
    );

    // SIGTERM on a worker: it leaves cleanly and its tasks move without waiting for its lease.
    let status = cluster
        .workers
        .get_mut("w4")
        .expect("w4")
        .terminate(Duration::from_secs(15));
    assert!(status.success(), "worker exit status {status:?}");
    let log = cluster.workers["w4"].log_text();
    assert!(
        log.contains("left the coordinator"),
        "clean leave in log:\n{log}"
    );
    let after_leave = cluster
        .settled(12, &["w1", "w2"], Duration::from_secs(10))
        .await;
    assert_eq!(per_worker(&after_leave).values().sum::<usize>(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_unknown_generations_are_refused() {
    let cluster = Cluster::start(&two_flows_two_sites(1), 5000, 1000, 200);
    // A fresh coordinator holds every task for lease_ttl + handover_margin (issue 22).
    wait_for(
        Duration::from_secs(30),
        "the fresh-start hold to end",
        || {
            cluster
                .coordinator
                .as_ref()
                .is_some_and(|c| c.log_text().contains("hold over"))
        },
    );
    let mut client = pb::worker_service_client::WorkerServiceClient::connect(cluster.grpc.clone())
        .await
        .expect("connect");
    let join = |client: &mut pb::worker_service_client::WorkerServiceClient<_>| {
        let req = pb::JoinRequest {
            worker_id: "zombie".into(),
            capabilities: vec!["kafka".into()],
            capacity: 0,
            version: "test".into(),
            hostname: "test".into(),
            region: String::new(),
        };
        let mut c = client.clone();
        async move { c.join(req).await.expect("join").into_inner() }
    };
    let first = join(&mut client).await;
    assert_eq!(first.assigned.len(), 4, "the only worker gets every task");
    let second = join(&mut client).await;
    assert!(second.generation > first.generation);

    let hb = |generation: u64, worker: &str| pb::HeartbeatRequest {
        worker_id: worker.into(),
        generation,
        tasks: vec![],
    };
    let stale = client
        .heartbeat(hb(first.generation, "zombie"))
        .await
        .expect_err("a heartbeat of the fenced session must be refused");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
    assert!(
        stale.message().contains("stale generation"),
        "{}",
        stale.message()
    );

    let future = client
        .heartbeat(hb(second.generation + 1000, "zombie"))
        .await
        .expect_err("a generation from the future must be refused");
    assert_eq!(future.code(), tonic::Code::FailedPrecondition);

    let unknown = client
        .heartbeat(hb(second.generation, "nobody"))
        .await
        .expect_err("an unknown worker must be refused");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let ok = client
        .heartbeat(hb(second.generation, "zombie"))
        .await
        .expect("the current session is accepted")
        .into_inner();
    // The fenced session's lease may still be valid on its side (a paused process): its tasks
    // are held from the new session until that lease plus the hand-over margin has passed.
    assert!(ok.assigned.is_empty(), "held: {ok:?}");
    let held_from = Instant::now();
    let handed = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v = client
            .heartbeat(hb(second.generation, "zombie"))
            .await
            .expect("the current session is accepted")
            .into_inner();
        if !v.assigned.is_empty() || held_from.elapsed() > Duration::from_secs(15) {
            break v;
        }
    };
    assert_eq!(
        handed.assigned.len(),
        4,
        "the hold ends after lease_ttl + margin"
    );
    assert!(
        held_from.elapsed() >= Duration::from_millis(4000),
        "held for {:?}, less than the old session's lease",
        held_from.elapsed()
    );

    let empty = client
        .join(pb::JoinRequest::default())
        .await
        .expect_err("an empty worker id must be refused");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);

    // Refusals are counted in the metrics.
    let (code, body) = common::metrics_get(&cluster.http).expect("metrics");
    assert_eq!(code, 200);
    assert!(
        body.lines()
            .any(|l| l.starts_with("lockstep_coordinator_heartbeats_total{result=\"refused\"} 3")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pause_resume_and_drain() {
    let mut cluster = Cluster::start(&two_flows_two_sites(2), TTL_MS, HB_MS, MARGIN_MS);
    cluster.start_worker("a1");
    cluster.start_worker("a2");
    cluster
        .settled(8, &["a1", "a2"], Duration::from_secs(30))
        .await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["admin", "--coordinator", &cluster.grpc])
            .args(args)
            .output()
            .expect("run admin");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(run(&["pause-flow", "views"]).contains("paused flow views"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = cluster.status().await;
        let paused = s.tasks.iter().filter(|t| t.phase == "paused").count();
        if paused == 4 {
            assert_eq!(s.paused_flows, vec!["views".to_string()]);
            break;
        }
        assert!(Instant::now() < deadline, "views never paused: {s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run(&["resume-flow", "views"]);
    cluster
        .settled(8, &["a1", "a2"], Duration::from_secs(10))
        .await;
    assert!(run(&["drain-worker", "a1"]).contains("draining worker a1"));
    let drained = cluster.settled(8, &["a2"], Duration::from_secs(10)).await;
    assert_eq!(per_worker(&drained).get("a2"), Some(&8));

    // Unknown names are clear errors.
    let out = std::process::Command::new(BIN)
        .args([
            "admin",
            "--coordinator",
            &cluster.grpc,
            "pause-flow",
            "nope",
        ])
        .output()
        .expect("run admin");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flow nope"));

    // The HTTP side.
    let (code, body) = http_get(&cluster.http, "/api/v1/status").expect("status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(v["tasks"].as_array().map(|a| a.len()), Some(8));
    assert_eq!(v["region"], "test");
    assert_eq!(http_get(&cluster.http, "/healthz").expect("healthz").0, 200);
}
