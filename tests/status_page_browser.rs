//! The status page in a real browser: headless Chromium (Debian's `chromium`, driven through
//! `chromedriver` over WebDriver) loads `/` of a running `lockstep demo` while drift is in
//! sync, and, without a reload, the page's own refresh must show the fault the demo injects:
//! the drift table turns `diverged` at site-b and the divergent-bucket table names site-b.
//! Screenshots of both states are kept in `target/test-artifacts/`.
//!
//! tests/run.sh installs chromium and chromium-driver; `LOCKSTEP_CHROMIUM` and
//! `LOCKSTEP_CHROMEDRIVER` point elsewhere.

mod common;

use common::demo::Demo;
use common::{free_port, http_get, program, wait_for, Proc, BIN};
use fantoccini::{ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// When the demo injects its fault: late enough that the test has loaded the page in sync.
const FAULT_AFTER: &str = "50s";

/// Where screenshots are kept: `<target>/test-artifacts/`.
fn artifacts() -> PathBuf {
    // BIN is <target>/debug/lockstep.
    let target = Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// The datasource's verdict in the coordinator's latest drift report, if any.
fn api_verdict(http: &str, datasource: &str) -> Option<String> {
    let (code, body) = http_get(http, "/api/v1/drift").ok()?;
    if code != 200 {
        return None;
    }
    let report: serde_json::Value = serde_json::from_str(&body).ok()?;
    report["datasources"]
        .as_array()?
        .iter()
        .find(|d| d["datasource"] == datasource)
        .and_then(|d| d["verdict"].as_str())
        .map(str::to_string)
}

/// The `data-verdict` of the drift table's row for (datasource, site), as the page shows it now.
async fn page_verdict(client: &fantoccini::Client, datasource: &str, site: &str) -> Option<String> {
    let css = format!("#drift-table tr[data-datasource=\"{datasource}\"][data-site=\"{site}\"]");
    let row = client.find(Locator::Css(&css)).await.ok()?;
    row.attr("data-verdict").await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_injected_fault_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = Demo::start(
        &[],
        &["--duration", "150s", "--fault-after", FAULT_AFTER],
        "info",
    );
    let ep = demo.endpoints(Duration::from_secs(60));
    let http = format!(
        "http://{}",
        ep["coordinator_http"].as_str().expect("coordinator_http")
    );
    let site = ep["fault"]["site"]
        .as_str()
        .expect("fault.site")
        .to_string();
    let ds = ep["fault"]["datasource"]
        .as_str()
        .expect("fault.datasource")
        .to_string();

    let port = free_port();
    let _driver = Proc::spawn_cmd(
        "chromedriver",
        &program("LOCKSTEP_CHROMEDRIVER", "chromedriver"),
        &[&format!("--port={port}"), "--allowed-ips=127.0.0.1"],
        &[],
        dir.path(),
    );
    let driver = format!("http://127.0.0.1:{port}");
    // chromedriver keeps HTTP/1.0 connections open, so the harness' http_get cannot ask its
    // /status; a listening port is enough, the session request below does the rest.
    wait_for(Duration::from_secs(30), "chromedriver listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    // In sync first, before the fault: the page must then be loaded while it says so.
    wait_for(Duration::from_secs(60), "drift in_sync", || {
        api_verdict(&http, &ds).as_deref() == Some("in_sync")
    });

    let profile = dir.path().join("chromium-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        serde_json::json!({
            "binary": program("LOCKSTEP_CHROMIUM", "/usr/bin/chromium"),
            // Headless as root on a closed network: no sandbox, no GPU, and none of the
            // background connections the machine would refuse.
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver)
        .await
        .expect("a WebDriver session in headless Chromium");

    client.goto(&format!("{http}/")).await.expect("open /");
    let title = client.title().await.expect("title");
    assert!(title.starts_with("lockstep"), "title {title}");
    for section in ["drift", "sites", "flows", "workers", "tasks", "errors"] {
        client
            .find(Locator::Id(section))
            .await
            .unwrap_or_else(|e| panic!("section #{section}: {e}"));
    }
    // The API said in_sync, but starting Chromium takes seconds (more on a busy machine), and
    // the demo's next burst may have made the sites `lagging` meanwhile. The page refreshes
    // itself: within a few burst cycles it must show in_sync, and never diverged before the
    // fault (after the fault the dropped rows stay dropped, so in_sync means before it).
    let loaded = Instant::now();
    let mut first = page_verdict(&client, &ds, &site).await;
    while first.as_deref() != Some("in_sync") {
        assert!(
            first.as_deref() != Some("diverged") && loaded.elapsed() < Duration::from_secs(30),
            "the page, loaded before the fault, shows {first:?} for {ds} at {site}, not in_sync; \
             the API says {:?}",
            api_verdict(&http, &ds)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        first = page_verdict(&client, &ds, &site).await;
    }
    let shot = client.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("status-page-in-sync.png"), shot).expect("save");

    // No reload from here on: the page's script must bring the fault in.
    let started = Instant::now();
    let mut verdict = first;
    while verdict.as_deref() != Some("diverged") {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the page still shows {verdict:?} for {ds} at {site}; the API says {:?}; demo log:\n{}",
            api_verdict(&http, &ds),
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        verdict = page_verdict(&client, &ds, &site).await;
    }
    let buckets = client
        .find(Locator::Css(&format!(
            "table.buckets[data-datasource=\"{ds}\"]"
        )))
        .await
        .expect("the divergent buckets table")
        .text()
        .await
        .expect("its text");
    assert!(buckets.contains(&site), "{buckets}");
    let reason = client
        .find(Locator::Css(&format!(
            "#drift-table tr[data-datasource=\"{ds}\"] td.reason"
        )))
        .await
        .expect("the reason cell")
        .text()
        .await
        .expect("its text");
    assert!(reason.contains(&site), "the reason names {site}: {reason}");
    let updated = client
        .find(Locator::Id("updated"))
        .await
        .expect("#updated")
        .text()
        .await
        .expect("its text");
    assert!(updated.starts_with("updated "), "{updated}");
    let shot = client.screenshot().await.expect("screenshot");
    let path = artifacts().join("status-page-fault.png");
    std::fs::write(&path, shot).expect("save");
    println!("screenshot: {}", path.display());
    client.close().await.expect("close the browser");

    let status = demo.proc.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "demo exit: {status}; log:\n{}",
        demo.output()
    );
}
