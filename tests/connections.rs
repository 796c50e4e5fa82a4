//! Bounded connections (issue 22), end to end on a real coordinator and worker: a flood of idle
//! and slowloris connections on the HTTP port and idle ones on the gRPC port, several times the
//! cap, stays bounded to the cap (descriptors of the process included) while `/healthz`
//! answers and a worker keeps its lease; evictions and timeouts show in the metrics.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const TTL_MS: u64 = 2000;
const HB_MS: u64 = 300;
const MARGIN_MS: u64 = 200;
/// `limits.max_connections` in this test.
const CAP: usize = 64;
/// Flood connections per kind: four times the cap.
const FLOOD: usize = 4 * CAP;

/// Open descriptors of a process (entries of /proc/<pid>/fd).
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(usize::MAX)
}

/// `n` TCP connections to `addr`, each sending `first` (may be empty) and then nothing.
/// Connections the server refuses at once are still returned (their sends just fail).
fn flood(addr: &str, n: usize, first: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            let _ = s.write_all(first);
            Some(s)
        })
        .collect()
}

fn counter(http: &str, series: &str) -> f64 {
    metric(http, series).unwrap_or(0.0)
}

fn closed(listener: &str, reason: &str) -> String {
    format!("lockstep_coordinator_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

fn healthz_ok(http: &str) {
    // http_get reads with a 5 s timeout: a liveness bound, not a measurement.
    let (code, body) = http_get(http, "/healthz").expect("/healthz answers during the flood");
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_flood_stays_at_the_cap_while_healthz_and_heartbeats_go_on() {
    let body = format!(
        "[coordinator.limits]\nmax_connections = {CAP}\nheader_read_timeout = \"2s\"\nidle_timeout = \"5s\"\n{}",
        two_flows_two_sites(1)
    );
    let mut cluster = Cluster::start(&body, TTL_MS, HB_MS, MARGIN_MS);
    cluster.start_worker("w1");
    let before = cluster.settled(4, &["w1"], Duration::from_secs(30)).await;
    let session = |s: &lockstep_proto::StatusResponse| {
        s.workers
            .iter()
            .find(|w| w.worker_id == "w1")
            .map(|w| w.session_generation)
    };
    let w1_session = session(&cluster.status().await).expect("w1 joined");
    let pid = cluster.coordinator.as_ref().expect("running").pid();
    let baseline = open_fds(pid);
    assert_eq!(
        metric(
            &cluster.http,
            "lockstep_coordinator_connections_limit{listener=\"http\"}"
        ),
        Some(CAP as f64)
    );
    let http_addr = cluster.http.trim_start_matches("http://").to_string();
    let grpc_addr = cluster.grpc.trim_start_matches("http://").to_string();

    // The flood: idle and slowloris on HTTP, idle on gRPC, in rounds with checks between.
    let (mut idle, mut slow, mut silent) = (Vec::new(), Vec::new(), Vec::new());
    let mut most_fds = 0;
    for round in 0..4 {
        idle.extend(flood(&http_addr, FLOOD / 4, b""));
        slow.extend(flood(
            &http_addr,
            FLOOD / 4,
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Round: {round}\r\n").as_bytes(),
        ));
        silent.extend(flood(&grpc_addr, FLOOD / 4, b""));
        // Slowloris: a header line now and then on every half-sent request.
        for s in slow.iter_mut() {
            let _ = s.write_all(b"X-Slow: 1\r\n");
        }
        most_fds = most_fds.max(open_fds(pid));
        healthz_ok(&cluster.http);
        most_fds = most_fds.max(open_fds(pid));
    }
    let held = idle.len() + slow.len() + silent.len();
    println!(
        "flood: {held} client connections held; coordinator descriptors: {baseline} before, at most {most_fds} during (cap {CAP} per listener)"
    );

    // Bounded near the cap: both listeners at their caps plus what the process had before,
    // with a little room for connections closing as others open.
    assert!(
        most_fds <= baseline + 2 * CAP + 16,
        "{most_fds} descriptors open under the flood (baseline {baseline}, cap {CAP} per listener)"
    );
    for listener in ["http", "grpc"] {
        let open = counter(
            &cluster.http,
            &format!("lockstep_coordinator_connections{{listener=\"{listener}\"}}"),
        );
        assert!(open <= CAP as f64, "{listener}: {open} open");
        let evicted = counter(&cluster.http, &closed(listener, "evicted"));
        assert!(evicted > 0.0, "{listener}: no eviction under the flood");
    }

    // The worker keeps its lease and its session across several heartbeat intervals with
    // the flood still open.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(HB_MS * 2)).await;
        healthz_ok(&cluster.http);
        let status = cluster.status().await;
        assert_eq!(session(&status), Some(w1_session), "w1 had to re-join");
        let w1 = status
            .workers
            .iter()
            .find(|w| w.worker_id == "w1")
            .expect("w1 still a member");
        assert!(w1.lease_remaining_ms > 0, "{w1:?}");
    }
    assert_eq!(
        cluster.assignment().await,
        before,
        "tasks moved under the flood"
    );
    let log = cluster.workers["w1"].log_text();
    assert!(!log.contains("lease ran out"), "{log}");

    // With nothing else arriving, the timeouts close what the evictions left: the half-sent
    // requests and silent gRPC connections (header_read_timeout), the idle ones.
    wait_for(
        Duration::from_secs(30),
        "the flood closed by timeouts",
        || {
            counter(
                &cluster.http,
                "lockstep_coordinator_connections{listener=\"http\"}",
            ) <= 1.0
                && counter(
                    &cluster.http,
                    "lockstep_coordinator_connections{listener=\"grpc\"}",
                ) <= 3.0
        },
    );
    for listener in ["http", "grpc"] {
        assert!(
            counter(&cluster.http, &closed(listener, "header_timeout")) > 0.0,
            "{listener}: nothing closed for its headers; {}",
            common::metrics_get(&cluster.http)
                .map(|(_, m)| m)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("lockstep_coordinator_connections"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    drop((idle, slow, silent));
    println!(
        "after: {} descriptors; closed http evicted={} header_timeout={}, grpc evicted={} header_timeout={}",
        open_fds(pid),
        counter(&cluster.http, &closed("http", "evicted")),
        counter(&cluster.http, &closed("http", "header_timeout")),
        counter(&cluster.http, &closed("grpc", "evicted")),
        counter(&cluster.http, &closed("grpc", "header_timeout")),
    );
    assert_eq!(session(&cluster.status().await), Some(w1_session));
    // A clean stop with the worker still connected (graceful shutdown of both listeners).
    let exit = cluster
        .coordinator
        .as_mut()
        .expect("running")
        .terminate(Duration::from_secs(20));
    assert!(exit.success(), "coordinator exit: {exit:?}");
}
