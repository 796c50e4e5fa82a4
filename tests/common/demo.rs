//! `lockstep demo` as a test server: the built binary on a free HTTP port, writing its
//! endpoints file into a temp dir, its stdout (the progress lines) kept apart from its log
//! (stderr). Dropped while running, it gets a SIGTERM and a bounded wait (so its own temporary
//! folders go), then a SIGKILL.

use super::{Proc, Stdout, BIN};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Demo {
    pub proc: Proc,
    endpoints: PathBuf,
    /// Holds the endpoints file, `demo.out` (stdout) and `demo.log` (stderr).
    pub dir: tempfile::TempDir,
}

impl Demo {
    /// `lockstep <global> demo --http-listen 127.0.0.1:0 --endpoints-file ... <args>` with
    /// `RUST_LOG=<rust_log>`; `global` are options before the subcommand (`--log-format`).
    pub fn start(global: &[&str], args: &[&str], rust_log: &str) -> Demo {
        let dir = tempfile::tempdir().expect("temp dir");
        let endpoints = dir.path().join("endpoints.json");
        let endpoints_arg = endpoints.display().to_string();
        let mut all = global.to_vec();
        all.extend([
            "demo",
            "--http-listen",
            "127.0.0.1:0",
            "--endpoints-file",
            &endpoints_arg,
        ]);
        all.extend_from_slice(args);
        let envs = [("RUST_LOG", rust_log)];
        let proc = Proc::spawn_in("demo", BIN, &all, &envs, None, Stdout::Apart, dir.path())
            .stop_on_drop(Duration::from_secs(20));
        Demo {
            proc,
            endpoints,
            dir,
        }
    }

    /// The endpoints file, once written and whole; fails after `within` with the output.
    pub fn endpoints(&self, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.endpoints) {
                if let Ok(v) = serde_json::from_str(&text) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the demo wrote no endpoints file within {within:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.proc.lines()
    }

    pub fn has_line(&self, f: impl Fn(&str) -> bool) -> bool {
        self.lines().iter().any(|l| f(l))
    }

    pub fn position(&self, f: impl Fn(&str) -> bool) -> Option<usize> {
        self.lines().iter().position(|l| f(l))
    }

    /// Waits for a stdout line, failing with the output so far.
    pub fn wait_line(&self, within: Duration, what: &str, f: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + within;
        while !self.has_line(&f) {
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its log (stderr) lines up to and including the first one `accept` takes; fails after
    /// `within` with the log so far.
    pub fn log_until(&self, within: Duration, accept: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let mut lines = self.proc.log_lines();
            if let Some(i) = lines.iter().position(|l| accept(l)) {
                lines.truncate(i + 1);
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no matching log line within {within:?}; stderr so far:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// stdout and stderr, for failure messages.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// Waits for the exit (bounded) and returns its code.
    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let status = self.proc.wait_exit(within, "waiting for its end");
        status.code().unwrap_or(-1)
    }
}
