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
    for sub in ["coordinator", "worker", "config", "status", "admin", "demo"] {
        assert!(text.contains(sub), "--help lacks {sub}:\n{text}");
    }
}
