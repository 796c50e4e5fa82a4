//! The cross-region view (issue 18), with real processes on loopback: coordinators of
//! different regions ask each other for their status (PeerService) and show every region in
//! `/api/v1/regions`, `lockstep status --all` and their metrics.
//! - Two regions see each other "ok", the asking one following a standby of the other to its
//!   leader; with every coordinator of a region killed, the other shows it "unreachable" since
//!   a time, with the error; restarted, "ok" again.
//! - A region whose address hangs (accepts, never answers) and one whose address refuses:
//!   the coordinator's own status, a worker's join and its task assignment complete well
//!   within the peer timeout, and the two regions show as unreachable.
//!
//! Every wait is bounded; nothing is timed.

mod common;

use common::{free_port, http_get, metric, run_to_end, wait_for, Proc, BIN};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A coordinator process of one region, with its own config file (the same config but for
/// its listen addresses and id).
struct Coordinator {
    id: String,
    region: String,
    config: PathBuf,
    grpc_port: u16,
    http_port: u16,
    proc: Option<Proc>,
}

impl Coordinator {
    fn grpc(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    fn http(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    fn start(&mut self, dir: &Path) {
        let config = self.config.display().to_string();
        self.proc = Some(Proc::spawn_cmd(
            &self.id,
            BIN,
            &["coordinator", "--config", &config, "--region", &self.region],
            &[("RUST_LOG", "info,lockstep_coordinator::peers=debug")],
            dir,
        ));
        let http = self.http();
        wait_for(
            Duration::from_secs(30),
            &format!("{} ready", self.id),
            || http_get(&http, "/readyz").is_ok_and(|(c, _)| c == 200),
        );
    }

    fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log_text).unwrap_or_default()
    }
}

/// `[[regions]]`: name and coordinator addresses; each region's state in its own folder.
fn regions(dir: &Path, regions: &[(&str, Vec<String>)]) -> String {
    regions
        .iter()
        .map(|(name, coordinators)| {
            let list: Vec<String> = coordinators.iter().map(|a| format!("\"{a}\"")).collect();
            format!(
                "[[regions]]\nname = \"{name}\"\ncoordinators = [{}]\nstate = {{ service = \"fs\", root = \"{}\" }}\n\n",
                list.join(", "),
                dir.join(format!("state-{name}")).display()
            )
        })
        .collect()
}

/// One site per name (`site-<region>`, in that region), and an objects flow (one shard per
/// site) from a landing folder into every site: one task per region.
fn sites(dir: &Path, regions: &[&str]) -> String {
    let mut out = String::new();
    for r in regions {
        let site = format!("site-{}", r.to_lowercase());
        out.push_str(&format!(
            "[[sites]]\nname = \"{site}\"\nregion = \"{r}\"\ndruid.router_url = \"http://127.0.0.1:9\"\nstore = {{ service = \"fs\", root = \"{}\" }}\n\n",
            dir.join(format!("store-{site}")).display()
        ));
    }
    out.push_str(&format!(
        "[[sources]]\nname = \"landing\"\nkind = \"objects\"\nstore = {{ service = \"fs\", root = \"{}\" }}\n\n\
         [[flows]]\nname = \"dumps\"\nkind = \"objects\"\nsource = \"landing\"\nprefix = \"\"\nshards = 1\ninterval = \"1s\"\n",
        dir.join("landing").display()
    ));
    out
}

/// A coordinator of `region` on the given ports, its config written: `body` is the config's
/// `[[regions]]` and `[[sites]]` part, `timing` extra `[coordinator]` lines.
fn coordinator_on(
    dir: &Path,
    id: &str,
    region: &str,
    timing: &str,
    body: &str,
    grpc_port: u16,
    http_port: u16,
) -> Coordinator {
    let config = dir.join(format!("{id}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"[coordinator]
id = "{id}"
grpc_listen = "127.0.0.1:{grpc_port}"
http_listen = "127.0.0.1:{http_port}"
lease_ttl = "4000ms"
heartbeat_interval = "500ms"
handover_margin = "300ms"
lease_safety_margin = "800ms"
{timing}
[coordinator.election]
lease_ttl = "1500ms"
renew_interval = "300ms"

{body}"#
        ),
    )
    .expect("write config");
    Coordinator {
        id: id.to_string(),
        region: region.to_string(),
        config,
        grpc_port,
        http_port,
        proc: None,
    }
}

/// `/api/v1/regions` of the coordinator at `http`, or None while it does not answer 200.
fn regions_view(http: &str) -> Option<Value> {
    let (code, body) = http_get(http, "/api/v1/regions").ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The row of `region` in a regions view.
fn row<'a>(view: &'a Value, region: &str) -> Option<&'a Value> {
    view["regions"]
        .as_array()?
        .iter()
        .find(|r| r["region"] == region)
}

/// Waits (bounded) until `f` holds for the row of `region` in `http`'s view; returns the row.
fn wait_row(
    http: &str,
    region: &str,
    within: Duration,
    what: &str,
    logs: &dyn Fn() -> String,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let view = regions_view(http);
        if let Some(r) = view.as_ref().and_then(|v| row(v, region)) {
            if f(r) {
                return r.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}; last view: {view:#?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_regions_see_each_other_and_one_that_is_gone_until_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("landing")).expect("landing");
    // Region B has a leader and a standby; A's config lists the standby first, so that A is
    // told to go to the leader and follows.
    let (b1_grpc, b1_http, b2_grpc, b2_http, a_grpc, a_http) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let body = regions(
        d,
        &[
            ("A", vec![format!("http://127.0.0.1:{a_grpc}")]),
            (
                "B",
                vec![
                    format!("http://127.0.0.1:{b2_grpc}"),
                    format!("http://127.0.0.1:{b1_grpc}"),
                ],
            ),
        ],
    ) + &sites(d, &["A", "B"]);
    let timing = "peer_interval = \"1s\"\npeer_timeout = \"800ms\"";
    let mut a = coordinator_on(d, "coord-a", "A", timing, &body, a_grpc, a_http);
    let mut b1 = coordinator_on(d, "coord-b1", "B", timing, &body, b1_grpc, b1_http);
    let mut b2 = coordinator_on(d, "coord-b2", "B", timing, &body, b2_grpc, b2_http);
    b1.start(d);
    b2.start(d);
    a.start(d);
    let mut worker = Proc::spawn_cmd(
        "worker-b",
        BIN,
        &[
            "worker",
            "--coordinator",
            &format!("{},{}", b1.grpc(), b2.grpc()),
            "--id",
            "worker-b",
            "--region",
            "B",
        ],
        &[("RUST_LOG", "info")],
        d,
    );
    let logs = || {
        let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap_or_default();
        format!(
            "coord-a log:\n{}\ncoord-b1 log:\n{}",
            read("coord-a.log"),
            read("coord-b1.log")
        )
    };

    // A sees B as B's leader answers (through the standby's pointer): its worker, its task.
    let b = wait_row(
        &a.http(),
        "B",
        Duration::from_secs(60),
        "A sees B ok with its worker and task",
        &logs,
        |r| r["state"] == "ok" && r["workers_alive"] == 1 && r["tasks_assigned"] == 1,
    );
    assert_eq!(b["coordinator_id"], "coord-b1", "{b}");
    assert_eq!(b["self"], false);
    assert_eq!(b["tasks_total"], 1);
    assert_eq!(b["tasks_unassigned"], 0);
    assert!(
        b["checked_at"].is_string() && b["unreachable_since"].is_null() && b["error"].is_null()
    );
    // A's own region first; B sees A too.
    let view = regions_view(&a.http()).expect("A's view");
    assert_eq!(view["region"], "A");
    let own = &view["regions"][0];
    assert_eq!(
        (
            &own["region"],
            &own["state"],
            &own["self"],
            &own["coordinator_id"]
        ),
        (
            &Value::from("A"),
            &Value::from("ok"),
            &Value::from(true),
            &Value::from("coord-a")
        )
    );
    assert_eq!(own["tasks_total"], 1);
    assert_eq!(
        own["tasks_unassigned"], 1,
        "A has no worker: its task waits"
    );
    wait_row(
        &b1.http(),
        "A",
        Duration::from_secs(30),
        "B sees A ok",
        &logs,
        |r| r["state"] == "ok" && r["coordinator_id"] == "coord-a",
    );
    assert_eq!(
        metric(&a.http(), "lockstep_coordinator_peer_up{peer_region=\"B\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &a.http(),
            "lockstep_coordinator_peer_unreachable_seconds{peer_region=\"B\"}"
        ),
        Some(0.0)
    );
    assert!(
        a.log().contains("following the region's leader"),
        "A followed B's standby to its leader:\n{}",
        a.log()
    );

    // `lockstep status --all`: the own status, then every region.
    let ran = run_to_end(
        &["status", "--all", "--coordinator", &a.grpc()],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("coordinator coord-a (region A)")),
        "{}",
        ran.stdout
    );
    let region_lines: Vec<&&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("REGION"))
        .skip(1)
        .collect();
    assert!(
        region_lines.len() == 2
            && region_lines[0].starts_with("A (this)")
            && region_lines[0].contains(" ok ")
            && region_lines[1].starts_with("B ")
            && region_lines[1].contains("coord-b1"),
        "{}",
        ran.stdout
    );
    let ran = run_to_end(
        &[
            "status",
            "--all",
            "--format",
            "json",
            "--coordinator",
            &a.grpc(),
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let json: Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(json["status"]["region"], "A");
    assert_eq!(json["regions"]["regions"][1]["region"], "B");
    assert_eq!(json["regions"]["regions"][1]["state"], "ok");

    // Region B gone: every coordinator (and its worker) killed.
    worker.kill();
    b1.proc.as_mut().expect("b1").kill();
    b2.proc.as_mut().expect("b2").kill();
    let gone = wait_row(
        &a.http(),
        "B",
        Duration::from_secs(30),
        "A sees B unreachable",
        &logs,
        |r| r["state"] == "unreachable",
    );
    assert!(gone["unreachable_since"].is_string(), "{gone}");
    let error = gone["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&b1.grpc())
            && error.contains(&b2.grpc())
            && error.contains("cannot connect"),
        "every address and why: {gone}"
    );
    assert!(
        gone["coordinator_id"].is_null() && gone["workers_alive"].is_null(),
        "no figures for a silent region: {gone}"
    );
    assert_eq!(
        metric(&a.http(), "lockstep_coordinator_peer_up{peer_region=\"B\"}"),
        Some(0.0)
    );
    let since = gone["unreachable_since"].clone();
    // Still unreachable at later requests: since the first failure.
    wait_for(
        Duration::from_secs(30),
        "the unreachable time grows",
        || {
            metric(
                &a.http(),
                "lockstep_coordinator_peer_unreachable_seconds{peer_region=\"B\"}",
            )
            .is_some_and(|s| s > 0.0)
        },
    );
    let later = regions_view(&a.http()).expect("A's view");
    assert_eq!(row(&later, "B").expect("B")["unreachable_since"], since);
    let ran = run_to_end(
        &["status", "--all", "--coordinator", &a.grpc()],
        &[],
        Duration::from_secs(30),
    );
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with("B ") && l.contains("unreachable since")),
        "{}",
        ran.stdout
    );
    // The status page shows it too, and A's own work is unaffected (its view answers).
    let (code, page) = http_get(&a.http(), "/").expect("page");
    assert_eq!(code, 200);
    assert!(
        page.contains(r#"data-region="B" data-state="unreachable""#),
        "{page}"
    );

    // B returns: ok again.
    b1.start(d);
    wait_row(
        &a.http(),
        "B",
        Duration::from_secs(60),
        "A sees B ok again",
        &logs,
        |r| r["state"] == "ok" && r["unreachable_since"].is_null(),
    );
    assert_eq!(
        metric(
            &a.http(),
            "lockstep_coordinator_peer_unreachable_seconds{peer_region=\"B\"}"
        ),
        Some(0.0)
    );
}

/// Accepts connections and never answers a byte, holding them open until dropped.
struct Hanging {
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hanging {
    fn start() -> Hanging {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut open = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => open.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Hanging {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_hanging_and_a_refusing_peer_delay_none_of_the_coordinators_own_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("landing")).expect("landing");
    let hanging = Hanging::start();
    let refusing = format!("http://127.0.0.1:{}", free_port());
    // The own work must be done long before a request to the hanging peer ends.
    const OWN_WORK: Duration = Duration::from_secs(15);
    let timing = "peer_interval = \"120s\"\npeer_timeout = \"40s\"";
    let (grpc, http) = (free_port(), free_port());
    let body = regions(
        d,
        &[
            ("A", vec![format!("http://127.0.0.1:{grpc}")]),
            ("H", vec![hanging.addr.clone()]),
            ("R", vec![refusing.clone()]),
        ],
    ) + &sites(d, &["A"]);
    let mut a = coordinator_on(d, "coord-a", "A", timing, &body, grpc, http);
    // Ready means serving: the peer poller has been asking H and R from the first moment.
    a.start(d);
    let logs = || {
        format!(
            "coord-a log:\n{}",
            std::fs::read_to_string(d.join("coord-a.log")).unwrap_or_default()
        )
    };

    // Its own status, at once.
    wait_for(OWN_WORK, "/api/v1/status answers", || {
        http_get(&a.http(), "/api/v1/status").is_ok_and(|(c, _)| c == 200)
    });
    // A worker joins and gets A's task.
    let _worker = Proc::spawn_cmd(
        "worker-a",
        BIN,
        &[
            "worker",
            "--coordinator",
            &a.grpc(),
            "--id",
            "worker-a",
            "--region",
            "A",
        ],
        &[("RUST_LOG", "info")],
        d,
    );
    wait_for(OWN_WORK, "worker-a joined and holds A's task", || {
        let Ok((200, body)) = http_get(&a.http(), "/api/v1/status") else {
            return false;
        };
        let Ok(status) = serde_json::from_str::<Value>(&body) else {
            return false;
        };
        let joined = status["workers"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["worker_id"] == "worker-a"));
        let assigned = status["tasks"].as_array().is_some_and(|t| {
            t.len() == 1 && t[0]["worker_id"] == "worker-a" && t[0]["phase"] == "assigned"
        });
        joined && assigned
    });
    // The regions view answers at once too: A ok with its worker, R refused already, H still
    // waited for (or, on a slow machine, given up on).
    let view = regions_view(&a.http()).expect("the regions view answers");
    let own = row(&view, "A").expect("A");
    assert_eq!(
        (&own["state"], &own["self"]),
        (&Value::from("ok"), &Value::from(true))
    );
    wait_row(
        &a.http(),
        "R",
        OWN_WORK,
        "R unreachable (refused)",
        &logs,
        |r| {
            r["state"] == "unreachable"
                && r["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(&refusing) && e.contains("cannot connect"))
        },
    );
    let h = row(&view, "H").expect("H");
    assert!(
        h["state"] == "unknown" || h["state"] == "unreachable",
        "{h}"
    );
    assert_eq!(
        metric(&a.http(), "lockstep_coordinator_peer_up{peer_region=\"R\"}"),
        Some(0.0)
    );

    // H gives up at the peer timeout: unreachable, saying so.
    let h = wait_row(
        &a.http(),
        "H",
        Duration::from_secs(120),
        "H unreachable (no answer)",
        &logs,
        |r| r["state"] == "unreachable",
    );
    assert!(
        h["error"]
            .as_str()
            .is_some_and(|e| e.contains(&hanging.addr) && e.contains("no answer within 40s")),
        "{h}"
    );
    assert!(h["unreachable_since"].is_string(), "{h}");
    // And still nothing of A's own waits: its status answers, its worker keeps its task.
    let (code, body) = http_get(&a.http(), "/api/v1/status").expect("status");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["tasks"][0]["worker_id"], "worker-a", "{status}");
    drop(hanging);
}

/// A test CA (rcgen), as in tests/security.rs: every certificate of the test signed by it.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lockstep peers test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed");
        Ca { cert, key }
    }

    /// Signs `params`, writes `<name>.crt` and `<name>.key` into `dir`; returns their paths.
    fn issue(&self, dir: &Path, name: &str, params: rcgen::CertificateParams) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c.display().to_string(), k.display().to_string())
    }

    /// A coordinator's certificate: a server on 127.0.0.1, and a client (to its peers).
    fn coordinator(&self, dir: &Path) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "coordinator");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(dir, "coordinator", params)
    }

    /// A client certificate: an operator's, or a worker's (`lockstep://worker/<id>`).
    fn client(&self, dir: &Path, name: &str, worker: bool) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        if worker {
            params.subject_alt_names = vec![rcgen::SanType::URI(
                rcgen::Ia5String::try_from(format!("lockstep://worker/{name}")).expect("uri"),
            )];
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(dir, name, params)
    }
}

/// PeerService.RegionStatus at `url` over mutual TLS with the client certificate `cert`,
/// with `token` if any: the answer's region, or the refusal's code.
async fn region_status(
    url: &str,
    ca: &Path,
    cert: &(String, String),
    token: Option<&str>,
) -> Result<String, tonic::Code> {
    let tls = lockstep_workers::ClientTls {
        ca_file: Some(ca.to_path_buf()),
        cert_file: Some(cert.0.clone().into()),
        key_file: Some(cert.1.clone().into()),
        domain: None,
    };
    let channel = tls
        .endpoint(url, Duration::from_secs(10))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect over mutual TLS");
    let token = lockstep_workers::BearerToken::new(token).expect("token");
    lockstep_proto::peer_service_client::PeerServiceClient::with_interceptor(channel, token)
        .region_status(lockstep_proto::RegionStatusRequest {
            from_region: "test".to_string(),
        })
        .await
        .map(|r| r.into_inner().region)
        .map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_ask_with_the_admin_token_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("landing")).expect("landing");
    let ca = Ca::new();
    let ca_file = d.join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).expect("write CA");
    let (cert, key) = ca.coordinator(d);
    let operator = ca.client(d, "alice", false);
    let worker = ca.client(d, "w1", true);
    const TOKEN: &str = "peer-token-0123456789";
    // A and B share the admin token; C has another one, so it refuses A (and A it).
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let body = regions(
        d,
        &[
            ("A", vec![format!("https://127.0.0.1:{}", ports[0].0)]),
            ("B", vec![format!("https://127.0.0.1:{}", ports[1].0)]),
            ("C", vec![format!("https://127.0.0.1:{}", ports[2].0)]),
        ],
    ) + &sites(d, &["A"]);
    // Mutual TLS on each port and no [coordinator.peer_tls]: peers are verified with the
    // client CA, and each coordinator presents its own certificate to them.
    let security = |token: &str| {
        format!(
            "peer_interval = \"2s\"\npeer_timeout = \"1500ms\"\n\
             [coordinator.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{}\"\n\
             [coordinator.auth]\ntoken = \"{token}\"\n",
            ca_file.display()
        )
    };
    let mut coordinators: Vec<Coordinator> = [
        ("A", TOKEN),
        ("B", TOKEN),
        ("C", "another-token-0123456789"),
    ]
    .iter()
    .zip(&ports)
    .map(|((region, token), (grpc, http))| {
        coordinator_on(
            d,
            &format!("coord-{}", region.to_lowercase()),
            region,
            &security(token),
            &body,
            *grpc,
            *http,
        )
    })
    .collect();
    for c in &mut coordinators {
        c.start(d);
    }
    let logs = || {
        let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap_or_default();
        format!("coord-a log:\n{}", read("coord-a.log"))
    };
    let a = &coordinators[0];
    let a_url = format!("https://127.0.0.1:{}", a.grpc_port);

    // /api/* needs the token too.
    let authorized = |path: &str| {
        common::http_request(
            &a.http(),
            "GET",
            path,
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        )
    };
    let view = |region: &str| -> Option<Value> {
        let (code, body) = authorized("/api/v1/regions").ok()?;
        let v: Value = (code == 200).then(|| serde_json::from_str(&body).ok())??;
        row(&v, region).cloned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (b, c) = loop {
        let (b, c) = (view("B"), view("C"));
        let done = b.as_ref().is_some_and(|b| b["state"] == "ok")
            && c.as_ref().is_some_and(|c| c["state"] == "unreachable");
        if done || std::time::Instant::now() > deadline {
            break (b, c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (b, c) = (b.unwrap_or_default(), c.unwrap_or_default());
    assert!(
        b["state"] == "ok" && b["coordinator_id"] == "coord-b",
        "A asks B over mutual TLS with the shared token: {b}\n{}",
        logs()
    );
    assert!(
        c["state"] == "unreachable"
            && c["error"]
                .as_str()
                .is_some_and(|e| e.contains("PermissionDenied") && e.contains("wrong bearer token")),
        "C refuses A's token: {c}\n{}",
        logs()
    );
    assert_eq!(
        http_get(&a.http(), "/api/v1/regions")
            .map(|(code, _)| code)
            .ok(),
        Some(401),
        "/api/v1/regions without the token"
    );

    // PeerService itself: the token, and an operator's certificate, like admin calls.
    assert_eq!(
        region_status(&a_url, &ca_file, &operator, Some(TOKEN)).await,
        Ok("A".to_string())
    );
    assert_eq!(
        region_status(&a_url, &ca_file, &operator, None).await,
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        region_status(&a_url, &ca_file, &operator, Some("wrong-token-0123456789")).await,
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        region_status(&a_url, &ca_file, &worker, Some(TOKEN)).await,
        Err(tonic::Code::PermissionDenied),
        "a worker's certificate cannot ask for a region's status"
    );
}
