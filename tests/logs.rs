//! Logs: `--log-format json` writes one JSON object per line on stderr, and a Kafka mirror
//! task's events carry the span fields flow, site and task, with topic and partition on the
//! per-partition events; `--log-format text` prints the same span fields inline. Checked on
//! the demo (real coordinator, real workers, mirror tasks on mock clusters).

mod common;

use common::demo::Demo;
use std::time::Duration;

/// Runs the demo with `format`, returns its stderr lines up to (and including) the first line
/// `accept` takes, then stops it with SIGTERM and checks that it exits 0.
fn demo_logs_until(format: &str, accept: impl Fn(&str) -> bool) -> Vec<String> {
    let mut demo = Demo::start(&["--log-format", format], &["--duration", "120s"], "info");
    let lines = demo.log_until(Duration::from_secs(90), accept);
    let exit = demo.proc.terminate(Duration::from_secs(30));
    assert!(exit.success(), "demo exit: {exit}");
    lines
}

#[test]
fn json_logs_carry_flow_site_task_and_partition() {
    let is_resume = |line: &str| line.contains("resume point");
    let lines = demo_logs_until("json", is_resume);
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
    }
    let resume: serde_json::Value =
        serde_json::from_str(lines.last().expect("a line")).expect("JSON");
    assert_eq!(resume["message"], "resume point", "{resume}");
    assert_eq!(resume["topic"], "clicks", "{resume}");
    assert!(resume["partition"].is_i64(), "partition field: {resume}");
    let span = &resume["span"];
    assert_eq!(span["flow"], "clicks", "{resume}");
    let site = span["site"].as_str().expect("span.site");
    assert!(site == "site-a" || site == "site-b", "{resume}");
    let task = span["task"].as_str().expect("span.task");
    assert!(task.starts_with(&format!("clicks/{site}/")), "{resume}");
}

#[test]
fn text_logs_show_the_span_fields_inline() {
    let lines = demo_logs_until("text", |line| line.contains("resume point"));
    let line = lines.last().expect("a line");
    for field in ["task=clicks/", "flow=clicks", "site=site-", "partition="] {
        assert!(line.contains(field), "{field} missing in: {line}");
    }
    assert!(
        serde_json::from_str::<serde_json::Value>(line).is_err(),
        "text, not JSON: {line}"
    );
}
