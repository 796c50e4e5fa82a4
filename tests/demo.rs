//! `lockstep demo` end to end, as the built binary: the endpoints file appears with reachable
//! addresses (both regions' coordinators and workers), replication reaches both sites (Kafka
//! mirror, Druid ingestion, object copies), drift is shown in_sync, then the injected fault is
//! detected naming site-b, metrics are populated; region us then goes dark while eu keeps
//! flowing, the outage is reported (or the demo says its coordinator has no peer view), us
//! comes back and catches up; and the demo exits 0 at --duration. A SIGTERM mid-run also exits
//! 0 cleanly. No timing is asserted.

mod common;

use common::demo::Demo;
use common::http_get;
use std::time::Duration;

/// `lockstep demo --duration <duration>` with warnings only on its log.
fn start(duration: &str) -> Demo {
    Demo::start(&[], &["--duration", duration], "warn")
}

fn str_of<'a>(v: &'a serde_json::Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

/// `drift: clicks in_sync | site-a 20000 rows, 0 behind | ...`: the rows of every site.
fn rows_in_drift_line(line: &str) -> Vec<i64> {
    line.split(" | ")
        .skip(1)
        .filter_map(|part| {
            let mut words = part.split_whitespace();
            let _site = words.next()?;
            let n = words.next()?.parse().ok()?;
            (words.next()? == "rows,").then_some(n)
        })
        .collect()
}

/// `replication: ... | site-a mirrored 20600, Druid 20600 rows | ...`: records mirrored into
/// `site`.
fn mirrored_in(line: &str, site: &str) -> Option<u64> {
    let part = line
        .split(" | ")
        .find(|p| p.starts_with(&format!("{site} mirrored ")))?;
    part.trim_start_matches(&format!("{site} mirrored "))
        .split(',')
        .next()?
        .parse()
        .ok()
}

/// Whether an exposition line is a sample of `name` with (at least) these labels, in any
/// order among others.
fn series(line: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
        return false;
    };
    let Some((inside, _)) = rest.split_once('}') else {
        return false;
    };
    let have: Vec<&str> = inside.split(',').collect();
    labels
        .iter()
        .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()))
}

#[test]
fn demo_replicates_shows_in_sync_detects_the_fault_and_exits_0() {
    // The default length: the outage and the catch-up follow the fault.
    let mut demo = start("60s");
    let ep = demo.endpoints(Duration::from_secs(60));

    // The contract's keys, every address reachable while the demo runs.
    let http = str_of(&ep["coordinator_http"], "coordinator_http").to_string();
    let grpc = str_of(&ep["coordinator_grpc"], "coordinator_grpc").to_string();
    assert_eq!(ep["fault"]["site"], "site-b", "{ep}");
    assert_eq!(ep["fault"]["datasource"], "clicks", "{ep}");
    let (code, _) = http_get(&http, "/healthz").expect("coordinator HTTP");
    assert_eq!(code, 200);
    std::net::TcpStream::connect(&grpc).expect("coordinator gRPC port");
    let workers: Vec<String> = ep["worker_metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("worker_metrics: {ep}"))
        .iter()
        .map(|w| str_of(w, "worker_metrics[]").to_string())
        .collect();
    assert_eq!(workers.len(), 2, "{ep}");
    assert_ne!(workers[0], workers[1]);
    for w in &workers {
        let (code, body) = http_get(w, "/metrics").expect("worker metrics");
        assert_eq!(code, 200);
        assert!(body.contains("lockstep_worker_tasks_running"), "{body}");
    }
    // Each region: its coordinator (eu's is the top-level one), its site, its worker.
    assert_eq!(ep["outage"]["region"], "us", "{ep}");
    assert_eq!(
        ep["regions"]["eu"]["coordinator_http"].as_str(),
        Some(http.as_str())
    );
    assert_eq!(
        ep["regions"]["eu"]["coordinator_grpc"].as_str(),
        Some(grpc.as_str())
    );
    let mut region_workers = Vec::new();
    for (region, site) in [("eu", "site-a"), ("us", "site-b")] {
        let r = &ep["regions"][region];
        assert_eq!(r["sites"], serde_json::json!([site]), "{ep}");
        let h = str_of(&r["coordinator_http"], "regions.*.coordinator_http");
        let (code, _) = http_get(h, "/healthz").expect("region coordinator HTTP");
        assert_eq!(code, 200, "region {region}");
        std::net::TcpStream::connect(str_of(&r["coordinator_grpc"], "regions.*.coordinator_grpc"))
            .expect("region coordinator gRPC port");
        let w = r["worker_metrics"]
            .as_array()
            .unwrap_or_else(|| panic!("regions.{region}.worker_metrics: {ep}"));
        assert_eq!(w.len(), 1, "{ep}");
        region_workers.push(str_of(&w[0], "worker_metrics[]").to_string());
    }
    assert_eq!(
        region_workers, workers,
        "every region's workers, in order: {ep}"
    );
    let us_http = str_of(&ep["regions"]["us"]["coordinator_http"], "us http").to_string();
    assert_ne!(us_http, http);
    let druid: Vec<String> = ["site-a", "site-b"]
        .iter()
        .map(|s| str_of(&ep["druid"][*s], "druid site").to_string())
        .collect();
    for d in &druid {
        let (code, body) = http_get(d, "/status").expect("Druid emulator");
        assert_eq!(code, 200, "{body}");
    }

    // In sync first (with data at both sites), then the fault, then its detection.
    demo.wait_line(Duration::from_secs(60), "fault detected line", |l| {
        l.starts_with("fault detected:")
    });
    let in_sync = demo
        .position(|l| {
            l.starts_with("drift: clicks in_sync")
                && rows_in_drift_line(l).len() == 2
                && rows_in_drift_line(l).iter().all(|r| *r > 0)
        })
        .unwrap_or_else(|| panic!("no in_sync line with data\n{}", demo.output()));
    let injected = demo
        .position(|l| l.starts_with("fault injected:"))
        .unwrap_or_else(|| panic!("no fault injected line\n{}", demo.output()));
    let detected = demo
        .position(|l| l.starts_with("fault detected: clicks diverged") && l.contains("site-b"))
        .unwrap_or_else(|| panic!("the detection does not name site-b\n{}", demo.output()));
    assert!(
        in_sync < injected && injected < detected,
        "order: in_sync {in_sync}, injected {injected}, detected {detected}\n{}",
        demo.output()
    );

    // The coordinator's API and metrics agree; Druid at both sites ingested the mirrored
    // topic.
    let (code, body) = http_get(&http, "/api/v1/drift").expect("drift API");
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("drift JSON");
    let ds = &report["datasources"][0];
    assert_eq!(ds["datasource"], "clicks", "{report}");
    assert_eq!(ds["verdict"], "diverged", "{report}");
    assert!(
        ds["divergent_buckets"][0]["sites"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "site-b")),
        "{report}"
    );
    let rows = |site: &str| {
        ds["sites"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["site"] == site))
            .and_then(|s| s["rows"].as_i64())
            .unwrap_or_else(|| panic!("no rows for {site}: {report}"))
    };
    assert!(rows("site-a") >= 20_000, "{report}");
    assert!(
        rows("site-b") > 0 && rows("site-b") < rows("site-a"),
        "{report}"
    );
    let (_, metrics) = http_get(&http, "/metrics").expect("coordinator metrics");
    assert!(
        metrics.lines().any(|l| series(
            l,
            "lockstep_drift_verdict",
            &[("datasource", "clicks"), ("verdict", "diverged")]
        ) && l.ends_with(" 1")),
        "no diverged verdict for clicks in:\n{metrics}"
    );
    for needle in [
        "lockstep_druid_request_duration_seconds_count{",
        "lockstep_coordinator_",
    ] {
        assert!(metrics.contains(needle), "no {needle} in:\n{metrics}");
    }
    for site in ["site-a", "site-b"] {
        let status = http_get(
            &druid[if site == "site-a" { 0 } else { 1 }],
            "/druid/indexer/v1/supervisor/clicks/status",
        )
        .expect("supervisor status")
        .1;
        let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
        let ingested: i64 = status["payload"]["latestOffsets"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_i64()).sum())
            .unwrap_or(0);
        assert!(
            ingested >= 20_000,
            "{site}'s topic holds {ingested} records: {status}"
        );
    }
    // The region outage, after the fault's detection: us goes dark, eu keeps mirroring into
    // site-a, eu reports us unreachable (or says it has no peer view), us comes back and
    // catches up.
    demo.wait_line(Duration::from_secs(60), "region caught up line", |l| {
        l.starts_with("region caught up: us, site-b mirrored everything produced (")
    });
    let at = |what: &str, f: &dyn Fn(&str) -> bool| {
        demo.position(f)
            .unwrap_or_else(|| panic!("no {what} line\n{}", demo.output()))
    };
    let outage = at("region outage", &|l| {
        l.starts_with("region outage: us (coordinator and workers stopped)")
    });
    let flowing = at("keeps flowing", &|l| {
        l.starts_with("region eu keeps flowing: site-a +")
            && l.contains(" records mirrored since the outage")
    });
    let reported = at("outage reported (or its note)", &|l| {
        l.starts_with("region outage reported: eu sees us unreachable since ")
            || l.starts_with("note: region outage not reported: ")
    });
    let back = at("region back", &|l| l.starts_with("region back: us"));
    let caught_up = at("region caught up", &|l| {
        l.starts_with("region caught up: us, site-b")
    });
    assert!(
        detected < outage && outage < flowing && outage < reported,
        "order: detected {detected}, outage {outage}, flowing {flowing}, reported {reported}\n{}",
        demo.output()
    );
    assert!(
        flowing < back && reported < back && back < caught_up,
        "order: flowing {flowing}, reported {reported}, back {back}, caught up {caught_up}\n{}",
        demo.output()
    );
    // The number of records is a count, and site-a grew by some.
    let plus: u64 = demo.lines()[flowing]
        .trim_start_matches("region eu keeps flowing: site-a +")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {}", demo.lines()[flowing]));
    assert!(plus > 0);
    let peer_view = demo.lines()[reported].starts_with("region outage reported:");
    // us answers again once back.
    let (code, _) = http_get(&us_http, "/healthz").expect("us coordinator HTTP after its return");
    assert_eq!(code, 200);

    // The workers mirrored into both sites and copied files (us's worker is back: its
    // counters carried on over the outage).
    let worker_metrics: String = workers
        .iter()
        .map(|w| http_get(w, "/metrics").expect("worker metrics").1)
        .collect();
    for site in ["site-a", "site-b"] {
        for (name, labels) in [
            ("lockstep_mirror_records_total", vec![("flow", "clicks")]),
            (
                "lockstep_objects_copied_objects_total",
                vec![("flow", "dumps"), ("reason", "new")],
            ),
        ] {
            let mut labels = labels;
            labels.push(("site", site));
            assert!(
                worker_metrics.lines().any(|l| series(l, name, &labels)),
                "no {name} {labels:?} in:\n{worker_metrics}"
            );
        }
    }

    // Runs to --duration, then stops cleanly.
    let code = demo.wait_exit(Duration::from_secs(90));
    assert_eq!(code, 0, "exit code\n{}", demo.output());
    let lines = demo.lines();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("demo finished"),
        "{}",
        demo.output()
    );
    let last_progress = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("replication:"))
        .unwrap_or_else(|| panic!("no replication line\n{}", demo.output()));
    for site in ["site-a", "site-b"] {
        let n = mirrored_in(last_progress, site)
            .unwrap_or_else(|| panic!("no {site} in {last_progress}"));
        assert!(n >= 20_000, "{site} mirrored {n}: {last_progress}");
    }
    // From the detection on, every diverged line names site-b only, also in polls where
    // site-a happens to be a few records behind (the name must not flip with lag).
    for l in lines[detected..]
        .iter()
        .filter(|l| l.starts_with("drift: clicks diverged"))
    {
        assert!(
            l.contains("at site-b") && !l.contains("at site-a"),
            "a diverged line that does not name site-b alone: {l}\n{}",
            demo.output()
        );
    }
    if peer_view {
        assert!(
            lines[back..]
                .iter()
                .any(|l| l.starts_with("region back reported: eu sees us ok again")),
            "eu reported the outage but not us's return\n{}",
            demo.output()
        );
    }
    assert!(
        demo.has_line(|l| l.starts_with("summary: region us down at ")
            && l.contains("eu kept flowing")
            && l.contains(", caught up ")),
        "{}",
        demo.output()
    );
    for h in [&http, &us_http] {
        assert!(
            std::net::TcpStream::connect(h).is_err(),
            "a coordinator still listens after the demo ended"
        );
    }
}

#[test]
fn demo_stops_cleanly_on_sigterm() {
    let mut demo = start("5m");
    let ep = demo.endpoints(Duration::from_secs(60));
    let http = str_of(&ep["coordinator_http"], "coordinator_http").to_string();
    // Mid-run: the first drift poll is out and the load is running.
    demo.wait_line(Duration::from_secs(60), "a drift line", |l| {
        l.starts_with("drift: clicks ")
    });
    demo.proc.signal("TERM");
    let code = demo.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 0, "exit code after SIGTERM\n{}", demo.output());
    assert!(
        demo.has_line(|l| l == "signal received: stopping"),
        "{}",
        demo.output()
    );
    assert!(demo.has_line(|l| l == "demo finished"), "{}", demo.output());
    assert!(
        std::net::TcpStream::connect(&http).is_err(),
        "the coordinator still listens after the demo ended"
    );
}

#[test]
fn line_parsers() {
    let l = "drift: clicks in_sync | site-a 20407 rows, 0 behind | site-b 20407 rows, 0 behind | every site holds the same rows  [10.8s]";
    assert_eq!(rows_in_drift_line(l), vec![20407, 20407]);
    let r = "replication: source 20600 records | site-a mirrored 20600, Druid 20600 rows | site-b mirrored 20590, Druid 16509 rows | dumps landed 2, site-a 2, site-b 2  [13.6s]";
    assert_eq!(mirrored_in(r, "site-a"), Some(20600));
    assert_eq!(mirrored_in(r, "site-b"), Some(20590));
    let m = "lockstep_drift_verdict{datasource=\"clicks\",region=\"eu\",verdict=\"diverged\"} 1";
    assert!(series(
        m,
        "lockstep_drift_verdict",
        &[("verdict", "diverged"), ("datasource", "clicks")]
    ));
    assert!(!series(
        m,
        "lockstep_drift_verdict",
        &[("verdict", "in_sync")]
    ));
    assert!(!series(m, "lockstep_drift", &[]));
}
