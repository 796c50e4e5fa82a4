//! Test harness: starts real `lockstep` processes and the test servers (tansu, moto, azurite,
//! the demo) on loopback with free ports, and kills them when dropped. Every integration test
//! in this folder uses it (`mod common;`); each compiles its own copy, hence the
//! `allow(dead_code)` for the helpers a test does not use.
#![allow(dead_code)]

pub mod demo;
pub mod drift;
pub mod kafka;

use lockstep_proto as pb;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lockstep");

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process killed (SIGKILL) on drop unless already stopped; with
/// [`Proc::stop_on_drop`], given a SIGTERM and some time first.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    /// Its stderr, and its stdout unless that goes to [`Proc::out`].
    pub log: PathBuf,
    /// Its stdout, when kept apart from the log ([`Stdout::Apart`]).
    pub out: Option<PathBuf>,
    /// How long a SIGTERM on drop may take before the SIGKILL (None: SIGKILL at once).
    pub stop_on_drop: Option<Duration>,
}

/// Where a [`Proc`]'s stdout goes.
pub enum Stdout {
    /// Into its log, with stderr.
    Log,
    /// Into `<log_dir>/<name>.out` ([`Proc::lines`]).
    Apart,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], log_dir: &Path) -> Proc {
        Self::spawn_cmd(name, BIN, args, &[("RUST_LOG", "info")], log_dir)
    }

    /// Any program, with extra environment, logging to `<log_dir>/<name>.log` (appended, so a
    /// restarted process keeps one log).
    pub fn spawn_cmd(
        name: &str,
        program: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        log_dir: &Path,
    ) -> Proc {
        Self::spawn_in(name, program, args, envs, None, Stdout::Log, log_dir)
    }

    /// [`Proc::spawn_cmd`] in a working directory (`cwd`), its stdout where `stdout` says.
    pub fn spawn_in(
        name: &str,
        program: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        cwd: Option<&Path>,
        stdout: Stdout,
        log_dir: &Path,
    ) -> Proc {
        let append = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file")
        };
        let log = log_dir.join(format!("{name}.log"));
        let err = append(&log);
        let out_path = match stdout {
            Stdout::Log => None,
            Stdout::Apart => Some(log_dir.join(format!("{name}.out"))),
        };
        let out = match &out_path {
            Some(path) => append(path),
            None => err.try_clone().expect("log file"),
        };
        let mut cmd = Command::new(program);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program}: {e} (tests/run.sh installs the test servers)")
            });
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
            out: out_path,
            stop_on_drop: None,
        }
    }

    /// A SIGTERM on drop, and up to `within` for a clean exit (its temporary files go), before
    /// the SIGKILL.
    pub fn stop_on_drop(mut self, within: Duration) -> Proc {
        self.stop_on_drop = Some(within);
        self
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} {}", self.name);
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit (bounded).
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(within, "after SIGTERM")
    }

    /// Waits for the exit; after `within` the process is killed and the test fails with its
    /// output (`what` says what it was waited for after, in the message).
    pub fn wait_exit(&mut self, within: Duration, what: &str) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{} did not exit within {within:?} ({what}); log: {}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The lines written to stdout so far ([`Stdout::Apart`]).
    pub fn lines(&self) -> Vec<String> {
        complete_lines(
            self.out
                .as_ref()
                .expect("stdout kept apart (Stdout::Apart)"),
        )
    }

    /// The lines written to the log so far.
    pub fn log_lines(&self) -> Vec<String> {
        complete_lines(&self.log)
    }

    /// Everything it wrote, for a failure message: the log, and stdout when kept apart.
    pub fn output(&self) -> String {
        match &self.out {
            None => self.log_text(),
            Some(out) => format!(
                "stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(out).unwrap_or_default(),
                self.log_text()
            ),
        }
    }
}

/// The whole lines of a file still being written (a line without its newline yet is left out).
fn complete_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_string).collect()
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let (Some(within), Some(c)) = (self.stop_on_drop, self.child.as_mut()) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + within;
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.kill();
    }
}

/// Another coordinator of a [`Cluster`]: the same config and state store, its own ports and
/// id (leader election decides which one is active).
pub struct Peer {
    pub name: String,
    pub config: PathBuf,
    pub grpc: String,
    pub http: String,
    pub proc: Option<Proc>,
}

/// A coordinator with a generated config in a temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub grpc: String,
    pub http: String,
    pub coordinator: Option<Proc>,
    /// Further coordinators on the same state (standbys), see [`Cluster::add_peer`].
    pub peers: Vec<Peer>,
    pub workers: BTreeMap<String, Proc>,
    /// Extra environment for the coordinator and workers (e.g. `RUST_LOG=debug`, secrets
    /// the config interpolates); later entries override earlier ones.
    pub env: Vec<(String, String)>,
}

impl Cluster {
    /// `body` is the config without `[coordinator]`; timing is fast for tests.
    pub fn start(body: &str, lease_ttl_ms: u64, heartbeat_ms: u64, margin_ms: u64) -> Cluster {
        Self::start_with(body, lease_ttl_ms, heartbeat_ms, margin_ms, true)
    }

    /// Like `start`, optionally without starting the coordinator yet.
    pub fn start_with(
        body: &str,
        lease_ttl_ms: u64,
        heartbeat_ms: u64,
        margin_ms: u64,
        run: bool,
    ) -> Cluster {
        Self::start_full(body, "", lease_ttl_ms, heartbeat_ms, margin_ms, run)
    }

    /// Like `start_with`, with extra `[coordinator]` lines (e.g. `drift_interval = "1s"`).
    pub fn start_full(
        body: &str,
        coordinator_extra: &str,
        lease_ttl_ms: u64,
        heartbeat_ms: u64,
        margin_ms: u64,
        run: bool,
    ) -> Cluster {
        Self::start_custom(
            body,
            coordinator_extra,
            None,
            lease_ttl_ms,
            heartbeat_ms,
            margin_ms,
            run,
        )
    }

    /// Like `start_full`, with the `[coordinator.state]` table's body given (e.g. an s3
    /// bucket on moto) instead of a folder in the temp dir.
    pub fn start_custom(
        body: &str,
        coordinator_extra: &str,
        state: Option<&str>,
        lease_ttl_ms: u64,
        heartbeat_ms: u64,
        margin_ms: u64,
        run: bool,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let grpc_port = free_port();
        let http_port = free_port();
        let config = dir.path().join("lockstep.toml");
        let text = format!(
            r#"[coordinator]
region = "test"
grpc_listen = "127.0.0.1:{grpc_port}"
http_listen = "127.0.0.1:{http_port}"
lease_ttl = "{lease_ttl_ms}ms"
heartbeat_interval = "{heartbeat_ms}ms"
handover_margin = "{margin_ms}ms"
lease_safety_margin = "{safety}ms"
{coordinator_extra}
[coordinator.state]
{state}

{body}
"#,
            safety = lease_ttl_ms / 5,
            state = match state {
                Some(s) => s.to_string(),
                None => format!(
                    "service = \"fs\"\nroot = \"{}\"",
                    dir.path().join("state").display()
                ),
            },
        );
        std::fs::write(&config, text).expect("write config");
        let mut cluster = Cluster {
            dir,
            config,
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            http: format!("http://127.0.0.1:{http_port}"),
            coordinator: None,
            peers: Vec::new(),
            workers: BTreeMap::new(),
            env: Vec::new(),
        };
        if run {
            cluster.start_coordinator();
        }
        cluster
    }

    /// `RUST_LOG=info` plus the cluster's own environment.
    fn envs(&self) -> Vec<(&str, &str)> {
        let mut envs = vec![("RUST_LOG", "info")];
        envs.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        envs
    }

    pub fn start_coordinator(&mut self) {
        let config = self.config.display().to_string();
        let p = Proc::spawn_cmd(
            "coordinator",
            BIN,
            &["coordinator", "--config", &config],
            &self.envs(),
            self.dir.path(),
        );
        self.coordinator = Some(p);
        wait_for(Duration::from_secs(30), "coordinator ready", || {
            http_get(&self.http, "/readyz")
                .map(|(c, _)| c == 200)
                .unwrap_or(false)
        });
    }

    /// Another coordinator on the same config and state, with its own free ports and the id
    /// `name` (the config's `id = "..."` line, if any, is replaced). Not started yet.
    pub fn add_peer(&mut self, name: &str) -> usize {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let grpc_port = free_port();
        let http_port = free_port();
        let mut out = String::new();
        for line in text.lines() {
            let t = line.trim_start();
            if t.starts_with("grpc_listen") {
                out.push_str(&format!("grpc_listen = \"127.0.0.1:{grpc_port}\"\n"));
            } else if t.starts_with("http_listen") {
                out.push_str(&format!("http_listen = \"127.0.0.1:{http_port}\"\n"));
            } else if t.starts_with("id =") {
                // replaced below
            } else if t == "[coordinator]" {
                out.push_str(&format!("[coordinator]\nid = \"{name}\"\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, out).expect("write peer config");
        self.peers.push(Peer {
            name: name.to_string(),
            config,
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            http: format!("http://127.0.0.1:{http_port}"),
            proc: None,
        });
        self.peers.len() - 1
    }

    /// Starts peer `i` and waits until it is ready (leader, or standby that redirects).
    pub fn start_peer(&mut self, i: usize) {
        let envs = self.envs();
        let peer = &self.peers[i];
        let config = peer.config.display().to_string();
        let p = Proc::spawn_cmd(
            &peer.name,
            BIN,
            &["coordinator", "--config", &config],
            &envs,
            self.dir.path(),
        );
        let http = peer.http.clone();
        self.peers[i].proc = Some(p);
        wait_for(Duration::from_secs(30), "peer coordinator ready", || {
            http_get(&http, "/readyz")
                .map(|(c, _)| c == 200)
                .unwrap_or(false)
        });
    }

    pub fn start_worker(&mut self, id: &str) {
        let grpc = self.grpc.clone();
        self.start_worker_with(id, &grpc, &[]);
    }

    /// A worker with another coordinator address (e.g. `https://...`) and extra arguments.
    pub fn start_worker_with(&mut self, id: &str, coordinator: &str, extra: &[&str]) {
        let mut args = vec!["worker", "--coordinator", coordinator, "--id", id];
        args.extend_from_slice(extra);
        let p = Proc::spawn_cmd(id, BIN, &args, &self.envs(), self.dir.path());
        self.workers.insert(id.to_string(), p);
    }

    pub async fn status(&self) -> pb::StatusResponse {
        let mut client = pb::admin_service_client::AdminServiceClient::connect(self.grpc.clone())
            .await
            .expect("connect admin");
        client
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    }

    /// task -> worker for every task with a worker.
    pub async fn assignment(&self) -> BTreeMap<String, String> {
        self.status()
            .await
            .tasks
            .into_iter()
            .filter(|t| !t.worker_id.is_empty() && t.phase == "assigned")
            .map(|t| (t.task_id, t.worker_id))
            .collect()
    }

    /// Waits until every given worker has joined, every task is assigned (phase "assigned")
    /// to those workers only, and each task has been reported through a heartbeat.
    pub async fn settled(
        &self,
        total: usize,
        workers: &[&str],
        within: Duration,
    ) -> BTreeMap<String, String> {
        settled_on(&self.grpc, total, workers, within).await
    }
}

/// [`Cluster::settled`] against the coordinator at `grpc` (which must be the leader once it
/// settles; refusals while an election is under way are waited out).
pub async fn settled_on(
    grpc: &str,
    total: usize,
    workers: &[&str],
    within: Duration,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let status = match status_at(grpc).await {
            Ok(s) => s,
            Err(e) => {
                if Instant::now() > deadline {
                    panic!("not settled within {within:?}: {grpc} answers {e:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let assigned: BTreeMap<String, String> = status
            .tasks
            .iter()
            .filter(|t| t.phase == "assigned")
            .map(|t| (t.task_id.clone(), t.worker_id.clone()))
            .collect();
        let reported = status.tasks.iter().filter(|t| t.progress.is_some()).count();
        let on_expected = assigned.values().all(|w| workers.contains(&w.as_str()));
        // Every expected worker must have joined: otherwise a state in which a slow
        // starter has not arrived yet would pass for settled.
        let all_joined = workers
            .iter()
            .all(|id| status.workers.iter().any(|w| w.worker_id == *id));
        if assigned.len() == total && on_expected && all_joined && reported == total {
            return assigned;
        }
        if Instant::now() > deadline {
            panic!(
                "not settled within {within:?}: {} of {total} assigned, {reported} reported, on {:?}; status: {status:#?}",
                assigned.len(),
                assigned.values().collect::<std::collections::BTreeSet<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` every 50 ms until it is true, or panics after `within`.
pub fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for`] in async code: polls `f` every 50 ms without blocking the runtime.
pub async fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A program the test servers need: `$<env>` when set, else `default` (found on PATH, where
/// tests/run.sh installs it).
pub fn program(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_string())
}

/// What a run of `lockstep` to its end printed.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `lockstep <args>` (with `envs` added) to its end. A run still going after `within` is
/// hung: it is killed and the test fails with its output.
pub fn run_to_end(args: &[&str], envs: &[(&str, &str)], within: Duration) -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proc = Proc::spawn_in("lockstep", BIN, args, envs, None, Stdout::Apart, dir.path());
    let status = proc.wait_exit(within, &format!("lockstep {args:?}"));
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(dir.path().join("lockstep.out")).unwrap_or_default(),
        stderr: proc.log_text(),
    }
}

/// A minimal blocking HTTP/1.0 GET: (status code, body). Written by hand so that the harness
/// can poll readiness from sync code without an HTTP client runtime.
pub fn http_get(base: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(base, "GET", path, &[])
}

/// Like [`http_get`], with any method and extra headers (`("Authorization", "Bearer x")`).
pub fn http_request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n{extra}\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The whole HTTP/1.0 answer to a GET, headers included (for redirects).
pub fn http_get_raw(base: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// The value of one series (`name` or `name{labels}`, exactly as exported) on a `/metrics`
/// page, or None when absent or unreachable.
pub fn metric(http: &str, series: &str) -> Option<f64> {
    let (code, body) = metrics_get(http).ok()?;
    if code != 200 {
        return None;
    }
    body.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// `GET /metrics`, with the constant `region` label (every coordinator series carries it,
/// README, Metrics) taken out of each series, so that a test names a series as the catalog
/// does: `lockstep_coordinator_leader`, `lockstep_drift_verdict{datasource="x",verdict="y"}`.
/// tests/observability.rs checks the label itself on every series.
pub fn metrics_get(base: &str) -> std::io::Result<(u16, String)> {
    let (code, body) = http_get(base, "/metrics")?;
    Ok((code, strip_region(&body)))
}

/// Exposition text without `region="..."` label pairs (and without a `{}` left empty).
pub fn strip_region(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    for line in body.lines() {
        let stripped = match (line.find('{'), line.rfind('}')) {
            (Some(open), Some(close)) if !line.starts_with('#') && open < close => {
                let labels: Vec<&str> = line[open + 1..close]
                    .split(',')
                    .filter(|l| !l.is_empty() && !l.starts_with("region="))
                    .collect();
                if labels.is_empty() {
                    format!("{}{}", &line[..open], &line[close + 1..])
                } else {
                    format!(
                        "{}{{{}}}{}",
                        &line[..open],
                        labels.join(","),
                        &line[close + 1..]
                    )
                }
            }
            _ => line.to_string(),
        };
        out.push_str(&stripped);
        out.push('\n');
    }
    out
}

/// True when the coordinator at `http` says it is the leader (`lockstep_coordinator_leader 1`).
pub fn is_leader(http: &str) -> bool {
    metric(http, "lockstep_coordinator_leader") == Some(1.0)
}

/// AdminService.Status at one address, without following redirects.
pub async fn status_at(grpc: &str) -> Result<pb::StatusResponse, tonic::Status> {
    let mut client = pb::admin_service_client::AdminServiceClient::connect(grpc.to_string())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    client
        .status(pb::StatusRequest {})
        .await
        .map(|r| r.into_inner())
}

/// Counts tasks per worker.
pub fn per_worker(assignment: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in assignment.values() {
        *m.entry(w.clone()).or_insert(0) += 1;
    }
    m
}

/// Two kafka flows over two sites, `tasks` slots each: 4 × tasks tasks.
pub fn two_flows_two_sites(tasks: u32) -> String {
    format!(
        r#"
[[sites]]
name = "a"
druid.router_url = "http://127.0.0.1:1"
kafka.bootstrap_servers = "127.0.0.1:1"

[[sites]]
name = "b"
druid.router_url = "http://127.0.0.1:2"
kafka.bootstrap_servers = "127.0.0.1:2"

[[sources]]
name = "up"
kind = "kafka"
kafka.bootstrap_servers = "127.0.0.1:3"

[[flows]]
name = "clicks"
kind = "kafka"
source = "up"
topics = ["clicks"]
tasks = {tasks}

[[flows]]
name = "views"
kind = "kafka"
source = "up"
topics = ["views"]
tasks = {tasks}
"#
    )
}

/// `tansu`, a Kafka-compatible broker, as an external process on a free loopback port.
/// The tansu binary: `$LOCKSTEP_TANSU`, else the build tests/run.sh installs (with the
/// SQLite storage engine), else `tansu` on PATH.
pub fn tansu_program() -> String {
    if let Ok(p) = std::env::var("LOCKSTEP_TANSU") {
        return p;
    }
    if let Ok(home) = std::env::var("HOME") {
        let p = Path::new(&home).join(".cache/lockstep/tansu-0.6.0-sql/bin/tansu");
        if p.exists() {
            return p.display().to_string();
        }
    }
    "tansu".to_string()
}

/// A tansu broker (Kafka protocol) on a free loopback port. `Tansu::sqlite` keeps its data in
/// a SQLite file under the log dir, so it survives a restart. (tansu 0.6's object-store engine,
/// `memory://` or `s3://`, answers ListOffsets(latest) with the last batch's base offset + 1 and
/// cannot fetch from an offset inside a batch, so it is not a faithful Kafka for our tests.)
pub struct Tansu {
    pub proc: Proc,
    pub port: u16,
    pub storage: String,
    pub envs: Vec<(String, String)>,
    pub name: String,
    pub log_dir: PathBuf,
    pub data_dir: Option<PathBuf>,
}

impl Tansu {
    /// A broker whose data lives in `<log_dir>/<name>-data/tansu.db`.
    ///
    /// tansu 0.6's SQLite schema has no index on `header (topition, offset_id)`, yet its fetch
    /// reads each record's headers with one query joined on exactly those columns, so every
    /// fetched record scans the whole header table: fetching gets slower with every record
    /// stored (24 ms per record at 58k records), the storage engine answers one request at a
    /// time, and a broker holding 100k records with headers stops answering metadata requests
    /// within seconds. So the broker is started once to create its schema, stopped, given that
    /// index (`python3`'s sqlite3 module), and started again. The index changes no answer of
    /// the broker, only how fast it finds them.
    pub fn sqlite(name: &str, log_dir: &Path) -> Tansu {
        let data = log_dir.join(format!("{name}-data"));
        std::fs::create_dir_all(&data).expect("tansu data dir");
        let mut t = Self::start_in(name, "sqlite://tansu.db", &[], Some(data.clone()), log_dir);
        // Listening means the schema is in place (tansu runs its DDL before it binds), and
        // committed: SQLite is crash-safe, so SIGKILL is enough.
        t.proc.kill();
        add_header_index(&data.join("tansu.db"));
        t.proc = t.spawn();
        t.wait_ready();
        t
    }

    fn start_in(
        name: &str,
        storage: &str,
        envs: &[(&str, &str)],
        data_dir: Option<PathBuf>,
        log_dir: &Path,
    ) -> Tansu {
        let port = free_port();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut t = Tansu {
            proc: Proc {
                name: name.to_string(),
                child: None,
                log: log_dir.join(format!("{name}.log")),
                out: None,
                stop_on_drop: None,
            },
            port,
            storage: storage.to_string(),
            envs,
            name: name.to_string(),
            log_dir: log_dir.to_path_buf(),
            data_dir,
        };
        t.proc = t.spawn();
        t.wait_ready();
        t
    }

    fn spawn(&self) -> Proc {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Proc::spawn_in(
            &self.name,
            &tansu_program(),
            &[
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                &self.storage,
            ],
            &envs,
            self.data_dir.as_deref(),
            Stdout::Log,
            &self.log_dir,
        )
    }

    fn wait_ready(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for(
            Duration::from_secs(30),
            &format!("{} listening", self.name),
            || std::net::TcpStream::connect(&addr).is_ok(),
        );
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL and start again on the same port and storage.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = self.spawn();
        self.wait_ready();
    }
}

/// Adds the index tansu 0.6's SQLite schema lacks (see [`Tansu::sqlite`]).
fn add_header_index(db: &Path) {
    const SCRIPT: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("create index if not exists lockstep_header_record on header (topition, offset_id)")
c.commit()
c.close()
"#;
    let status = Command::new("python3")
        .args(["-c", SCRIPT, &db.display().to_string()])
        .status()
        .expect("python3");
    assert!(
        status.success(),
        "index the header table of {}",
        db.display()
    );
}

/// `moto_server` (S3) on a free loopback port, with one bucket.
pub struct Moto {
    pub proc: Proc,
    pub endpoint: String,
}

impl Moto {
    pub fn start(bucket: &str, log_dir: &Path) -> Moto {
        let port = free_port();
        let proc = Proc::spawn_cmd(
            "moto",
            "moto_server",
            &["-H", "127.0.0.1", "-p", &port.to_string()],
            &[],
            log_dir,
        );
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for(Duration::from_secs(30), "moto listening", || {
            http_get(&endpoint, "/").is_ok()
        });
        let status = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
            .stdout(Stdio::null())
            .status()
            .expect("curl");
        assert!(status.success(), "create bucket {bucket}");
        Moto { proc, endpoint }
    }

    pub fn create_bucket(&self, bucket: &str) {
        let status = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{}/{bucket}", self.endpoint)])
            .stdout(Stdio::null())
            .status()
            .expect("curl");
        assert!(status.success(), "create bucket {bucket}");
    }
}

/// `azurite-blob` (Azure Blob emulator) on a free loopback port, with one container. Found on
/// PATH, or where tests/run.sh installs it (`$LOCKSTEP_TOOLS/azurite` or
/// `~/.cache/lockstep/azurite`).
pub struct Azurite {
    pub proc: Proc,
    pub endpoint: String,
    pub dir: tempfile::TempDir,
}

/// The emulator's well-known development account (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn azurite_program() -> String {
    let candidates = [
        std::env::var("LOCKSTEP_TOOLS")
            .ok()
            .map(|d| format!("{d}/azurite/node_modules/.bin/azurite-blob")),
        std::env::var("HOME")
            .ok()
            .map(|h| format!("{h}/.cache/lockstep/azurite/node_modules/.bin/azurite-blob")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| "azurite-blob".to_string())
}

impl Azurite {
    pub fn start(container: &str, log_dir: &Path) -> Azurite {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let proc = Proc::spawn_cmd(
            "azurite",
            &azurite_program(),
            &[
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--location",
                &dir.path().display().to_string(),
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ],
            &[],
            log_dir,
        );
        let endpoint = format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}");
        wait_for(Duration::from_secs(30), "azurite listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let az = Azurite {
            proc,
            endpoint,
            dir,
        };
        az.create_container(container);
        az
    }

    /// Creates a container with one Shared Key signed REST call (opendal does not create
    /// containers). Python's standard library signs it, so nothing more is installed.
    pub fn create_container(&self, container: &str) {
        const SCRIPT: &str = r#"
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
endpoint, account, key, container = sys.argv[1:5]
date = formatdate(usegmt=True)
version = "2021-08-06"
resource = f"/{account}/{account}/{container}\nrestype:container"
to_sign = "PUT\n\n\n\n\n\n\n\n\n\n\n\n" + f"x-ms-date:{date}\nx-ms-version:{version}\n" + resource
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"{endpoint}/{container}?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
             "Authorization": f"SharedKey {account}:{sig}"})
urllib.request.urlopen(req).read()
"#;
        let status = Command::new("python3")
            .args([
                "-c",
                SCRIPT,
                &self.endpoint,
                AZURITE_ACCOUNT,
                AZURITE_KEY,
                container,
            ])
            .status()
            .expect("python3");
        assert!(status.success(), "create container {container}");
    }
}
