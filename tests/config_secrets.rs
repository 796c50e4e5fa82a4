//! Config errors in a hostile environment (issue 22): `lockstep config check` and the
//! coordinator's start-up error name the field and the kind of reference, and never print
//! what a `${...}` reference produced (the process environment least of all), nor the text of
//! a reference; a FIFO as `${file:}` is answered at once instead of hanging.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A liveness guard, not a timing measurement: a run still going after this long is hung.
const HANG: Duration = Duration::from_secs(20);

/// The value planted in the child's environment; it must appear in no output.
fn planted() -> String {
    format!("hunter2-planted-{}", std::process::id())
}

/// A config valid except for `coordinator` lines and a password line put in by each test.
fn config(dir: &Path, coordinator: &str, password: &str) -> PathBuf {
    let text = format!(
        r#"
[coordinator]
{coordinator}

[[sites]]
name = "a"
druid.router_url = "http://127.0.0.1:8888"
druid.username = "u"
{password}
kafka.bootstrap_servers = "127.0.0.1:9092"

[[sources]]
name = "up"
kind = "kafka"
kafka.bootstrap_servers = "127.0.0.1:9093"

[[flows]]
name = "f"
kind = "kafka"
source = "up"
topics = ["t"]
"#
    );
    let path = dir.join("lockstep.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// Runs lockstep with `args` and the planted variable; (exit code, stdout + stderr). The child
/// is killed, and the test fails, if it is still running after [`HANG`].
fn run(args: &[&str]) -> (i32, String) {
    let planted = planted();
    let ran = common::run_to_end(
        args,
        &[("LOCKSTEP_PLANTED", &planted), ("RUST_LOG", "debug")],
        HANG,
    );
    (ran.code, ran.stdout + &ran.stderr)
}

fn check(config: &Path) -> (i32, String) {
    run(&["config", "check", &config.display().to_string()])
}

/// No planted value and no value of this process's environment in `output`. (Values that the
/// output shows for other reasons, such as a HOME that holds the temporary folder, are skipped.)
fn assert_no_environment(what: &str, output: &str, config: &Path) {
    assert!(
        !output.contains(&planted()),
        "{what} printed the planted value:\n{output}"
    );
    assert!(!output.contains("hunter2"), "{what}:\n{output}");
    assert!(!output.contains("LOCKSTEP_PLANTED"), "{what}:\n{output}");
    let config = config.display().to_string();
    for name in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(name) {
            if value.len() >= 4 && !config.contains(&value) {
                assert!(
                    !output.contains(&value),
                    "{what} printed ${name}:\n{output}"
                );
            }
        }
    }
}

#[test]
fn the_environment_as_a_file_reference_is_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "lease_ttl = \"${file:/proc/self/environ}\"", "");
    let (code, out) = check(&path);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("coordinator.lease_ttl"), "{out}");
    assert!(
        out.contains("${file:PATH}"),
        "names the kind of reference:\n{out}"
    );
    assert_no_environment("config check", &out, &path);

    // The coordinator's start-up error goes through the same path.
    let (code, out) = run(&["coordinator", "--config", &path.display().to_string()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("coordinator.lease_ttl"), "{out}");
    assert_no_environment("coordinator start-up", &out, &path);
}

#[test]
fn an_invalid_value_from_the_environment_is_not_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "lease_ttl = \"${LOCKSTEP_PLANTED}\"", "");
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("coordinator.lease_ttl: the value from a reference `${NAME}`"),
        "{out}"
    );
    assert_no_environment("config check", &out, &path);
}

#[test]
fn a_fifo_as_a_file_reference_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("password.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    // Nothing ever writes to it: a blocking open would hang `config check`.
    let path = config(dir.path(), "", "druid.password = \"${file:password.fifo}\"");
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "sites[0].druid.password: `${file:PATH}` reference #1: not a regular file (a FIFO)"
        ),
        "{out}"
    );
    assert!(
        !out.contains("password.fifo"),
        "the reference's text:\n{out}"
    );
}

#[test]
fn a_malformed_reference_in_a_password_is_not_quoted_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(
        dir.path(),
        "",
        "druid.password = \"pw-${hunter2-planted}-x\"",
    );
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("sites[0].druid.password: reference #1 is malformed"),
        "{out}"
    );
    assert!(!out.contains("pw-$") && !out.contains("hunter2"), "{out}");
}
