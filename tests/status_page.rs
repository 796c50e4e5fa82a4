//! The status page `/` of a real coordinator with real workers: every section is there with
//! the live assignment, the refresh fragment answers only `<main>`, and a worker's lost lease
//! shows up under "Recent errors" and in `/api/v1/errors`. (The browser test against the
//! demo, `tests/status_page_browser.rs`, checks the drift table in headless Chromium.)

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_sites_flows_workers_tasks_and_recent_errors() {
    let mut cluster = Cluster::start(&two_flows_two_sites(2), 2000, 300, 200);
    for w in ["w1", "w2"] {
        cluster.start_worker(w);
    }
    let assignment = cluster
        .settled(8, &["w1", "w2"], Duration::from_secs(30))
        .await;

    let http = cluster.http.clone();
    let (code, page) = http_get(&http, "/").expect("GET /");
    assert_eq!(code, 200, "{page}");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    for section in [
        "<h2>Drift</h2>",
        "<h2>Sites</h2>",
        "<h2>Flows</h2>",
        "<h2>Workers</h2>",
        "<h2>Task assignment</h2>",
        "<h2>Recent errors</h2>",
    ] {
        assert!(page.contains(section), "missing {section}");
    }
    for needle in [
        "data-site=\"a\"",
        "data-site=\"b\"",
        "data-flow=\"clicks\"",
        "data-flow=\"views\"",
        "data-worker=\"w1\"",
        "data-worker=\"w2\"",
        // No flow names a datasource in this config.
        "drift is not tracked",
    ] {
        assert!(page.contains(needle), "missing {needle}");
    }
    for (task, worker) in &assignment {
        assert!(
            page.contains(&format!("data-task=\"{task}\"")),
            "task {task} missing"
        );
        let row = page
            .split(&format!("data-task=\"{task}\""))
            .nth(1)
            .and_then(|rest| rest.split("</tr>").next())
            .unwrap_or_default();
        assert!(
            row.contains(&format!("<td>{worker}</td>")),
            "task {task} should show worker {worker}: {row}"
        );
    }
    assert!(page.contains("Nothing has gone wrong"), "no errors yet");

    // The script's refresh: only the inside of <main>.
    let (code, fragment) = http_get(&http, "/?fragment=main").expect("fragment");
    assert_eq!(code, 200);
    assert!(!fragment.contains("<html"), "{fragment}");
    assert!(fragment.contains("<section id=\"workers\">"), "{fragment}");
    let (code, body) = http_get(&http, "/?fragment=nope").expect("bad fragment");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("nope"), "{body}");

    // A worker dies: its lease expires, which the page and /api/v1/errors show.
    cluster.workers.get_mut("w2").expect("w2").kill();
    wait_for(
        Duration::from_secs(20),
        "the lost lease in /api/v1/errors",
        || {
            http_get(&http, "/api/v1/errors")
                .map(|(_, b)| b.contains("\"source\":\"worker w2\"") && b.contains("lease expired"))
                .unwrap_or(false)
        },
    );
    let (_, errors) = http_get(&http, "/api/v1/errors").expect("errors");
    let errors: serde_json::Value = serde_json::from_str(&errors).expect("errors are JSON");
    let first = &errors[0];
    assert_eq!(first["level"], "warning", "{errors:#}");
    assert_eq!(first["count"], 1, "{errors:#}");
    let (_, page) = http_get(&http, "/").expect("GET / after the kill");
    let table = page
        .split("id=\"errors-table\"")
        .nth(1)
        .expect("the errors table is shown");
    assert!(
        table.contains("worker w2") && table.contains("lease expired"),
        "{table}"
    );
}
