//! The CLI's contract: `config check` exit codes and messages, and `--help` that teaches.

mod common;

use common::BIN;
use std::process::Command;

fn check(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(path)
        .output()
        .expect("run lockstep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(name)
}

#[test]
fn examples_check_ok() {
    for name in ["two-sites.toml", "three-sites.toml"] {
        let (code, out) = check(&example(name));
        assert_eq!(code, 0, "{name}: {out}");
        assert!(out.starts_with("OK: "), "{out}");
    }
}

#[test]
fn typo_in_a_site_name_names_the_field_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(example("two-sites.toml"))
        .expect("example")
        .replace(
            "sites = [\"eu-west\", \"us-east\"]",
            "sites = [\"eu-west\", \"us-esat\"]",
        );
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, text).expect("write");
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("typo.toml: flows[0].sites[1]: unknown site \"us-esat\""),
        "{out}"
    );
}

#[test]
fn syntax_error_gives_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[coordinator]\nregion = \"eu\"\nlease_ttl = \"10s\n").expect("write");
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken.toml:3:"), "{out}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, out) = check(std::path::Path::new("/nonexistent/lockstep.toml"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("/nonexistent/lockstep.toml: cannot read"),
        "{out}"
    );
}

#[test]
fn help_lists_every_subcommand() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "coordinator",
        "worker",
        "config",
        "status",
        "admin",
        "drift-check",
        "demo",
    ] {
        assert!(text.contains(sub), "--help lacks {sub}:\n{text}");
    }
}

fn drift_config(dir: &std::path::Path) -> std::path::PathBuf {
    // Nothing listens on these ports: both Druid Routers are down.
    let (a, b) = (common::free_port(), common::free_port());
    let text = format!(
        r#"
[[sites]]
name = "eu-west"
druid.router_url = "http://127.0.0.1:{a}"
druid.timeout = "2s"

[[sites]]
name = "us-east"
druid.router_url = "http://127.0.0.1:{b}"
druid.timeout = "2s"

[[sources]]
name = "bucket"
kind = "objects"
store = {{ service = "fs", root = "/tmp/in" }}

[[flows]]
name = "dumps"
kind = "objects"
source = "bucket"
sites = []
prefix = ""
datasources = ["dumps"]
"#
    );
    // An objects flow needs sites with stores; give both one.
    let text = text.replace("sites = []\n", "").replace(
        "druid.timeout = \"2s\"\n",
        "druid.timeout = \"2s\"\nstore = { service = \"fs\", root = \"/tmp/site\" }\n",
    );
    let path = dir.join("drift.toml");
    std::fs::write(&path, text).expect("write");
    path
}

fn drift_check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("drift-check")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lockstep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn drift_check_with_sites_down_is_unknown_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = drift_config(dir.path());
    let config = config.to_str().expect("utf-8 path");
    let (code, out, err) = drift_check(&["--config", config]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("dumps (flow dumps): UNKNOWN"), "{out}");
    assert!(out.contains("site eu-west: Druid unreachable"), "{out}");
    assert!(out.contains("verdict: unknown"), "{out}");
    // Never zero for a site that could not be read.
    assert!(!out.contains(" 0 "), "{out}");
    assert!(
        !err.contains("checking drift"),
        "no progress bar off a terminal: {err}"
    );

    let (code, out, _) = drift_check(&["--config", config, "--format", "json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["verdict"], "unknown");
    let ds = &v["datasources"][0];
    assert_eq!(ds["datasource"], "dumps");
    assert_eq!(ds["sites"][0]["rows"], serde_json::Value::Null);
    assert_eq!(ds["sites"][0]["error_kind"], "unreachable");
}

#[test]
fn drift_check_unknown_datasource_or_bad_flags_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = drift_config(dir.path());
    let config = config.to_str().expect("utf-8 path");
    let (code, _, err) = drift_check(&["--config", config, "--datasource", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no flow names datasource \"nope\" (datasources: dumps)"),
        "{err}"
    );
    let (code, _, err) = drift_check(&["--config", config, "--max-drift", "300%"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("300%"), "{err}");
}
