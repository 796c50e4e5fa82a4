//! Regions (issue 18): each region's control plane owns only the tasks that write into its
//! own sites, and accepts only its own workers. With real processes: region B's coordinator
//! and a worker of B, while region A has no coordinator and no worker at all. B's worker gets
//! every task into B's site and never one into A's; objects land in B's store and nothing in
//! A's. A worker of region A pointed at B's coordinator is refused and stops, naming both
//! regions and A's coordinators.

mod common;

use common::{free_port, Cluster};
use std::collections::BTreeMap;
use std::time::Duration;

/// A config of two regions (A and B, each with its own state folder), a site in each, and
/// an objects flow from one source folder into both sites.
fn config(dir: &std::path::Path, grpc_port: u16, http_port: u16) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    format!(
        r#"[coordinator]
grpc_listen = "127.0.0.1:{grpc_port}"
http_listen = "127.0.0.1:{http_port}"
lease_ttl = "4000ms"
heartbeat_interval = "500ms"
handover_margin = "300ms"
lease_safety_margin = "800ms"

[[regions]]
name = "A"
coordinators = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
state = {{ service = "fs", root = "{state_a}" }}

[[regions]]
name = "B"
coordinators = ["http://127.0.0.1:{grpc_port}"]
state = {{ service = "fs", root = "{state_b}" }}

[[sites]]
name = "site-a"
region = "A"
druid.router_url = "http://127.0.0.1:9"
store = {{ service = "fs", root = "{store_a}" }}

[[sites]]
name = "site-b"
region = "B"
druid.router_url = "http://127.0.0.1:9"
store = {{ service = "fs", root = "{store_b}" }}

[[sources]]
name = "landing"
kind = "objects"
store = {{ service = "fs", root = "{landing}" }}

[[flows]]
name = "dumps"
kind = "objects"
source = "landing"
prefix = ""
shards = 2
interval = "1s"
"#,
        state_a = p("state-a"),
        state_b = p("state-b"),
        store_a = p("store-a"),
        store_b = p("store-b"),
        landing = p("landing"),
    )
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_owns_only_its_sites_and_refuses_other_regions_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    for i in 0..6 {
        std::fs::write(
            landing.join(format!("dump-{i}.json")),
            format!("{{\"n\":{i}}}\n"),
        )
        .expect("write");
    }
    let (grpc_port, http_port) = (free_port(), free_port());
    let path = dir.path().join("lockstep.toml");
    std::fs::write(&path, config(dir.path(), grpc_port, http_port)).expect("config");
    let mut cluster = Cluster {
        config: path,
        grpc: format!("http://127.0.0.1:{grpc_port}"),
        http: format!("http://127.0.0.1:{http_port}"),
        coordinator: None,
        peers: Vec::new(),
        workers: BTreeMap::new(),
        // The coordinator runs region B (--region through its environment), and so do the
        // workers started without --region.
        env: vec![("LOCKSTEP_REGION".to_string(), "B".to_string())],
        dir,
    };
    cluster.start_coordinator();
    cluster.start_worker("worker-b");

    // Every task B owns is assigned to B's worker, and B owns no task into A's site.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let copied = files(&cluster.dir.path().join("store-b"));
        if copied.iter().filter(|f| f.starts_with("dump-")).count() == 6 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B's shards did not copy the 6 dumps within 60s: {copied:?}\ncoordinator log:\n{}\nworker log:\n{}",
            cluster.coordinator.as_ref().map(|c| c.log_text()).unwrap_or_default(),
            cluster.workers["worker-b"].log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = cluster.status().await;
    assert_eq!(status.region, "B");
    let tasks: Vec<(&str, &str, &str)> = status
        .tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t.site.as_str(), t.worker_id.as_str()))
        .collect();
    assert_eq!(
        tasks,
        vec![
            ("dumps/site-b/0", "site-b", "worker-b"),
            ("dumps/site-b/1", "site-b", "worker-b")
        ],
        "region B owns exactly the tasks into its own site"
    );
    assert!(
        files(&cluster.dir.path().join("store-a")).is_empty(),
        "nothing is written into region A's site while A has no control plane"
    );

    // A worker of region A at B's coordinator: refused, and it stops naming both regions.
    let grpc = cluster.grpc.clone();
    cluster.start_worker_with("worker-a", &grpc, &["--region", "A"]);
    let worker_a = cluster.workers.get_mut("worker-a").expect("worker-a");
    let exit = worker_a.wait_exit(Duration::from_secs(30), "the worker of region A stops");
    assert!(!exit.success(), "a refused worker exits non-zero");
    let log = worker_a.log_text();
    assert!(
        log.contains("worker worker-a is in region A, this coordinator runs region B")
            && log.contains("point the worker at region A's coordinators (http://127.0.0.1:1, http://127.0.0.1:2)"),
        "{log}"
    );
    let status = cluster.status().await;
    assert!(
        status.workers.iter().all(|w| w.worker_id != "worker-a"),
        "the refused worker never joined"
    );
    assert!(status
        .tasks
        .iter()
        .all(|t| t.worker_id == "worker-b" && t.site == "site-b"));
}

#[test]
fn a_coordinator_of_an_unknown_region_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lockstep.toml");
    std::fs::write(&path, config(dir.path(), free_port(), free_port())).expect("config");
    let ran = common::run_to_end(
        &[
            "coordinator",
            "--config",
            &path.display().to_string(),
            "--region",
            "C",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_ne!(ran.code, 0);
    assert!(
        ran.stderr
            .contains("region \"C\" is not in the config's regions (A, B)"),
        "{}",
        ran.stderr
    );
}
