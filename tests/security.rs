//! Security and hardening end to end, on real coordinator and worker processes: mutual TLS
//! refuses workers without a valid client certificate and picks up rotated certificates;
//! the admin token gives 401/UNAUTHENTICATED when missing and 403/PERMISSION_DENIED when wrong
//! (gRPC, CLI and HTTP); planted secrets show in no debug log, status or `config check`
//! output; garbage, malformed protobuf and oversized messages leave the coordinator serving;
//! one client flooding heartbeats is refused while another worker keeps its lease.

mod common;

use common::*;
use lockstep_proto as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::worker_service_client::WorkerServiceClient;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

const TTL_MS: u64 = 2000;
const HB_MS: u64 = 300;
const MARGIN_MS: u64 = 200;

// ---------------------------------------------------------------------------------------
// Certificates, generated per test run (never committed).
// ---------------------------------------------------------------------------------------

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// (certificate PEM, key PEM) for a server on 127.0.0.1 or a client.
    fn issue(&self, name: &str, server: bool) -> (String, String) {
        let sans = if server {
            vec!["127.0.0.1".to_string(), "localhost".to_string()]
        } else {
            vec![format!("{name}.workers.test")]
        };
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        self.sign(params)
    }

    /// A worker's client certificate: its id as the URI SAN `lockstep://worker/<id>`.
    fn issue_worker(&self, id: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{id}.workers.test"));
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::Ia5String::try_from(format!("lockstep://worker/{id}")).unwrap(),
        )];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// Signs `params` with this CA under a new key: (certificate PEM, key PEM).
    fn sign(&self, params: rcgen::CertificateParams) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, self.cert.pem()).unwrap();
        p
    }
}

/// The test CA in `dir` (`ca.pem`) and the coordinator's certificate it signed (for
/// 127.0.0.1): the CA, its file, and the server's (certificate, key) paths.
fn test_ca(dir: &Path) -> (Ca, String, (String, String)) {
    let ca = Ca::new("lockstep test CA");
    let ca_file = ca.write(dir, "ca").display().to_string();
    let server = write_pair(dir, "server", &ca.issue("coordinator", true));
    (ca, ca_file, server)
}

/// Writes `<name>.crt` and `<name>.key`; returns their paths as strings.
fn write_pair(dir: &Path, name: &str, pair: &(String, String)) -> (String, String) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&key, &pair.1).unwrap();
    std::fs::write(&cert, &pair.0).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

fn client_tls(ca: &str, cert: Option<&(String, String)>) -> lockstep_workers::ClientTls {
    lockstep_workers::ClientTls {
        ca_file: Some(ca.into()),
        cert_file: cert.map(|c| c.0.clone().into()),
        key_file: cert.map(|c| c.1.clone().into()),
        domain: None,
    }
}

/// AdminService.Status over TLS; an error as text (connect or call).
async fn tls_status(
    url: &str,
    tls: &lockstep_workers::ClientTls,
) -> Result<pb::StatusResponse, String> {
    let channel = tls
        .endpoint(url, Duration::from_secs(5))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    AdminServiceClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// Sends bytes that are neither TLS nor HTTP/2 and reads until the server hangs up.
fn send_garbage(addr: &str, seed: u64, len: usize) {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            // xorshift: different junk per connection, no extra crate.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

// ---------------------------------------------------------------------------------------
// mTLS
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_workers_without_a_valid_client_certificate_and_reloads_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let (ca, ca_file, (server_cert, server_key)) = test_ca(d);
    let good = write_pair(d, "good", &ca.issue_worker("good"));
    // The operator's certificate (status, the CLI): a worker's cannot make admin calls.
    let op = write_pair(d, "op", &ca.issue("operator", false));
    let rogue_ca = Ca::new("rogue CA");
    let rogue = write_pair(d, "rogue", &rogue_ca.issue("rogue", false));

    let body = format!(
        r#"
[coordinator.tls]
cert_file = "{server_cert}"
key_file = "{server_key}"
client_ca_file = "{ca_file}"
{}"#,
        two_flows_two_sites(1)
    );
    let mut cluster = Cluster::start(&body, TTL_MS, HB_MS, MARGIN_MS);
    let https = cluster.grpc.replace("http://", "https://");
    let addr = cluster.grpc.trim_start_matches("http://").to_string();

    cluster.start_worker_with(
        "good",
        &https,
        &[
            "--tls-ca",
            &ca_file,
            "--tls-cert",
            &good.0,
            "--tls-key",
            &good.1,
        ],
    );
    cluster.start_worker_with("nocert", &https, &["--tls-ca", &ca_file]);
    cluster.start_worker_with(
        "rogue",
        &https,
        &[
            "--tls-ca",
            &ca_file,
            "--tls-cert",
            &rogue.0,
            "--tls-key",
            &rogue.1,
        ],
    );
    // Plaintext against the TLS port.
    let plain = cluster.grpc.clone();
    cluster.start_worker_with("plain", &plain, &[]);

    // Garbage on the TLS port meanwhile.
    for i in 0..10 {
        send_garbage(&addr, 7 + i, 4096);
    }

    let admin = client_tls(&ca_file, Some(&op));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = tls_status(&https, &admin).await {
            if s.workers.iter().any(|w| w.worker_id == "good") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the worker with a certificate never joined"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each refused worker has tried (and failed) several times by now.
    for id in ["nocert", "rogue", "plain"] {
        let w = &cluster.workers[id];
        wait_for(Duration::from_secs(30), &format!("{id} retrying"), || {
            count(&w.log_text(), "join failed") >= 3
        });
    }
    let status = tls_status(&https, &admin).await.expect("status over mTLS");
    let ids: Vec<&str> = status
        .workers
        .iter()
        .map(|w| w.worker_id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["good"],
        "only the worker with a valid certificate joined"
    );

    // A client without a certificate cannot even read status.
    let anonymous = tls_status(&https, &client_tls(&ca_file, None)).await;
    assert!(
        anonymous.is_err(),
        "no client certificate, yet: {anonymous:?}"
    );
    // The CLI likewise: with its certificate it gets through, without it does not.
    let (ok, out, err) = cli(
        &[
            "status",
            "--coordinator",
            &https,
            "--tls-ca",
            &ca_file,
            "--tls-cert",
            &op.0,
            "--tls-key",
            &op.1,
        ],
        &[],
    );
    assert!(ok && out.contains("good"), "{out}{err}");
    let (ok, _, err) = cli(
        &["status", "--coordinator", &https, "--tls-ca", &ca_file],
        &[],
    );
    assert!(
        !ok,
        "the CLI without a client certificate got through: {err}"
    );
    let (_, metrics) = common::metrics_get(&cluster.http).unwrap();
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("lockstep_coordinator_tls_handshake_failures_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failures >= 3.0, "handshake failures counted: {failures}");

    // Rotation: the coordinator gets a certificate from a new CA; once it notices the files
    // changed, clients that trust only the new CA get through, without a restart.
    let ca2 = Ca::new("rotated CA");
    let ca2_file = ca2.write(d, "ca2").display().to_string();
    let pair2 = ca2.issue("coordinator", true);
    std::fs::write(&server_key, &pair2.1).unwrap();
    std::fs::write(&server_cert, &pair2.0).unwrap();
    let rotated = client_tls(&ca2_file, Some(&op));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tls_status(&https, &rotated).await {
            Ok(s) => {
                assert!(s.workers.iter().any(|w| w.worker_id == "good"));
                break;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "rotated certificate never served: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(
        tls_status(&https, &admin).await.is_err(),
        "the old CA no longer verifies the coordinator"
    );
    let coordinator = cluster.coordinator.as_ref().unwrap();
    assert!(coordinator
        .log_text()
        .contains("TLS files changed: reloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_ca_serves_clients_that_trust_the_ca() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let ca = Ca::new("lockstep test CA");
    let ca_file = ca.write(d, "ca").display().to_string();
    let (cert, key) = write_pair(d, "server", &ca.issue("coordinator", true));
    let other = Ca::new("some other CA");
    let other_file = other.write(d, "other").display().to_string();
    let body = format!(
        "[coordinator.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n{}",
        two_flows_two_sites(1)
    );
    let mut cluster = Cluster::start(&body, TTL_MS, HB_MS, MARGIN_MS);
    let https = cluster.grpc.replace("http://", "https://");
    cluster.start_worker_with("w1", &https, &["--tls-ca", &ca_file]);
    let trusted = client_tls(&ca_file, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = tls_status(&https, &trusted).await {
            if s.workers.iter().any(|w| w.worker_id == "w1") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "w1 never joined over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A client that does not trust the coordinator's CA, and a plaintext one, get nowhere.
    assert!(tls_status(&https, &client_tls(&other_file, None))
        .await
        .is_err());
    let plain = AdminServiceClient::connect(cluster.grpc.clone()).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut c) => c.status(pb::StatusRequest {}).await.is_err(),
    };
    assert!(refused, "plaintext gRPC on the TLS port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_beyond_max_workers_are_refused() {
    let mut cluster = Cluster::start_with(&two_flows_two_sites(1), TTL_MS, HB_MS, MARGIN_MS, false);
    let text = std::fs::read_to_string(&cluster.config).unwrap().replacen(
        "region = \"test\"\n",
        "region = \"test\"\nmax_workers = 1\n",
        1,
    );
    std::fs::write(&cluster.config, text).unwrap();
    cluster.start_coordinator();
    cluster.start_worker("w1");
    cluster.settled(4, &["w1"], Duration::from_secs(30)).await;
    let mut client = WorkerServiceClient::connect(cluster.grpc.clone())
        .await
        .unwrap();
    let e = client
        .join(pb::JoinRequest {
            worker_id: "w2".into(),
            capabilities: vec!["kafka".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // The worker already in is unaffected.
    let status = cluster.status().await;
    assert_eq!(status.workers.len(), 1);
    assert_eq!(status.workers[0].worker_id, "w1");
}

// ---------------------------------------------------------------------------------------
// Admin token
// ---------------------------------------------------------------------------------------

const TOKEN: &str = "admin-token-0123456789abcdef";

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

fn cli(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("LOCKSTEP_TOKEN")
        .envs(envs.iter().copied())
        .output()
        .expect("run lockstep");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_the_token() {
    let body = format!(
        "[coordinator.auth]\ntoken = \"{TOKEN}\"\n{}",
        two_flows_two_sites(1)
    );
    let cluster = Cluster::start(&body, TTL_MS, HB_MS, MARGIN_MS);
    let mut client = AdminServiceClient::connect(cluster.grpc.clone())
        .await
        .unwrap();

    // gRPC: missing, wrong, right.
    let missing = client
        .status(with_token(pb::StatusRequest {}, None))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let wrong = client
        .status(with_token(
            pb::StatusRequest {},
            Some("admin-token-0123456789abcdeX"),
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied, "{wrong:?}");
    client
        .status(with_token(pb::StatusRequest {}, Some(TOKEN)))
        .await
        .expect("status with the token");
    let flow = || pb::FlowRequest {
        flow: "clicks".into(),
    };
    assert_eq!(
        client
            .pause_flow(with_token(flow(), None))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        client
            .pause_flow(with_token(flow(), Some("nope-nope-nope-nope")))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        client
            .drain_worker(with_token(
                pb::DrainRequest {
                    worker_id: "w".into()
                },
                None
            ))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // Nothing was paused by the refused calls.
    let status = client
        .status(with_token(pb::StatusRequest {}, Some(TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert!(status.paused_flows.is_empty());

    // The CLI: no token, wrong token (env), right token (env and file).
    let grpc = cluster.grpc.as_str();
    let (ok, _, err) = cli(&["status", "--coordinator", grpc], &[]);
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
    let (ok, _, err) = cli(
        &["status", "--coordinator", grpc],
        &[("LOCKSTEP_TOKEN", "admin-token-wrong-wrong-wrong")],
    );
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    let (ok, out, err) = cli(
        &["status", "--coordinator", grpc],
        &[("LOCKSTEP_TOKEN", TOKEN)],
    );
    assert!(ok, "{err}");
    assert!(out.contains("coordinator"), "{out}");
    let token_file = cluster.dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let tf = token_file.display().to_string();
    let (ok, out, err) = cli(
        &[
            "admin",
            "--coordinator",
            grpc,
            "--token-file",
            &tf,
            "pause-flow",
            "clicks",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("paused flow clicks"), "{out}");
    let (ok, _, err) = cli(
        &["admin", "--coordinator", grpc, "resume-flow", "clicks"],
        &[],
    );
    assert!(!ok && err.contains("Unauthenticated"), "{err}");

    // HTTP: /api/v1/* needs the token; /metrics and /healthz stay open.
    let http = cluster.http.as_str();
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(http_get(http, "/api/v1/status").unwrap().0, 401);
    assert_eq!(
        http_request(
            http,
            "GET",
            "/api/v1/status",
            &[("Authorization", "Bearer wrong-wrong-wrong-wrong")]
        )
        .unwrap()
        .0,
        403
    );
    let (code, body) =
        http_request(http, "GET", "/api/v1/status", &[("Authorization", &bearer)]).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"paused_flows\":[\"clicks\"]"), "{body}");
    assert_eq!(
        http_request(http, "POST", "/api/v1/status", &[]).unwrap().0,
        401
    );
    // The status page is guarded like the API, and says how to open it to browsers.
    let (code, body) = http_get(http, "/").unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("open_read_only"), "{body}");
    let (code, body) = http_request(http, "GET", "/", &[("Authorization", &bearer)]).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("<h2>Task assignment</h2>"), "{body}");
    assert!(!body.contains(TOKEN), "the page never shows the token");
    assert_eq!(http_get(http, "/api/v1/errors").unwrap().0, 401);
    assert_eq!(common::metrics_get(http).unwrap().0, 200);
    assert_eq!(http_get(http, "/healthz").unwrap().0, 200);
    let (_, metrics) = common::metrics_get(http).unwrap();
    // The series exists from the start at 0 (label sets are initialised): count, not presence.
    assert!(
        sample(
            &metrics,
            "lockstep_coordinator_auth_failures_total{api=\"http\",reason=\"missing\"}"
        ) >= 1.0,
        "{metrics}"
    );
}

/// The value of one series in a Prometheus text scrape (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_read_only_opens_reads_but_not_writes() {
    let body = format!(
        "[coordinator.auth]\ntoken = \"{TOKEN}\"\nopen_read_only = true\n{}",
        two_flows_two_sites(1)
    );
    let cluster = Cluster::start(&body, TTL_MS, HB_MS, MARGIN_MS);
    let mut client = AdminServiceClient::connect(cluster.grpc.clone())
        .await
        .unwrap();
    client
        .status(pb::StatusRequest {})
        .await
        .expect("status is open");
    let refused = client
        .pause_flow(pb::FlowRequest {
            flow: "clicks".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let http = cluster.http.as_str();
    assert_eq!(http_get(http, "/api/v1/status").unwrap().0, 200);
    assert_eq!(http_get(http, "/").unwrap().0, 200, "the page is a read");
    assert_eq!(
        http_request(http, "POST", "/api/v1/status", &[]).unwrap().0,
        401
    );
    assert_eq!(
        http_request(
            http,
            "DELETE",
            "/api/v1/status",
            &[("Authorization", "Bearer wrong-wrong-wrong-wrong")]
        )
        .unwrap()
        .0,
        403
    );
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

const KAFKA_PW: &str = "kafka-pw-PLANTED-91bc";
const S3_SECRET: &str = "s3-secret-PLANTED-c0de";
const DRUID_PW: &str = "druid-pw-PLANTED-7f3a";
const ADMIN_TOKEN: &str = "admin-token-PLANTED-5e5e5e5e";

fn secrets_body(extra: &str) -> String {
    let props = format!(
        r#"{{ "security.protocol" = "SASL_PLAINTEXT", "sasl.mechanism" = "PLAIN", "sasl.username" = "mirror", "sasl.password" = "{KAFKA_PW}" }}"#
    );
    let store = r#"{ service = "s3", bucket = "data", endpoint = "http://127.0.0.1:1", region = "us-east-1", access_key_id = "AKIATEST", secret_access_key = "${file:s3.secret}" }"#;
    format!(
        r#"
[coordinator.auth]
token = "${{LOCKSTEP_TEST_ADMIN_TOKEN}}"
open_read_only = true

[[sites]]
name = "a"
druid.router_url = "http://127.0.0.1:1"
druid.username = "admin"
druid.password = "${{LOCKSTEP_TEST_DRUID_PW}}"
kafka.bootstrap_servers = "127.0.0.1:1"
kafka.properties = {props}
store = {store}

[[sources]]
name = "up"
kind = "kafka"
kafka.bootstrap_servers = "127.0.0.1:2"
kafka.properties = {props}

[[sources]]
name = "bucket"
kind = "objects"
store = {store}

[[flows]]
name = "clicks"
kind = "kafka"
source = "up"
topics = ["clicks"]

[[flows]]
name = "files"
kind = "objects"
source = "bucket"
prefix = ""
{extra}
"#
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [KAFKA_PW, S3_SECRET, DRUID_PW, ADMIN_TOKEN] {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret}:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_appear_in_no_log_status_or_config_check() {
    let mut cluster = Cluster::start_with(&secrets_body(""), TTL_MS, HB_MS, MARGIN_MS, false);
    std::fs::write(
        cluster.dir.path().join("s3.secret"),
        format!("{S3_SECRET}\n"),
    )
    .unwrap();
    let env = [
        ("LOCKSTEP_TEST_DRUID_PW", DRUID_PW),
        ("LOCKSTEP_TEST_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    cluster.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("RUST_LOG".to_string(), "debug".to_string())])
        .collect();
    cluster.start_coordinator();
    cluster.start_worker("w1");
    // Both tasks (kafka and objects) reached the worker with their secrets and reported back.
    cluster.settled(2, &["w1"], Duration::from_secs(30)).await;
    // Let the tasks fail and retry against the unreachable services once or twice.
    let worker = &cluster.workers["w1"];
    wait_for(Duration::from_secs(30), "a task failure logged", || {
        worker.log_text().contains("task failed")
    });

    // An admin call with the token, through the CLI, while debug logging runs.
    let config = cluster.config.display().to_string();
    let (ok, out, err) = cli(
        &[
            "admin",
            "--coordinator",
            &cluster.grpc,
            "pause-flow",
            "clicks",
        ],
        &[("LOCKSTEP_TOKEN", ADMIN_TOKEN), ("RUST_LOG", "debug")],
    );
    assert!(ok, "{err}");
    assert_no_secret("admin CLI output", &format!("{out}{err}"));
    let (ok, out, err) = cli(
        &["status", "--coordinator", &cluster.grpc, "--format", "json"],
        &[("LOCKSTEP_TOKEN", ADMIN_TOKEN), ("RUST_LOG", "debug")],
    );
    assert!(ok, "{err}");
    assert_no_secret("status CLI output", &format!("{out}{err}"));

    let (code, status) = http_get(&cluster.http, "/api/v1/status").unwrap();
    assert_eq!(code, 200);
    assert!(status.contains("\"task_id\""), "{status}");
    assert_no_secret("/api/v1/status", &status);

    // `config check`, valid and invalid.
    let (ok, out, err) = cli(&["config", "check", &config], &env);
    assert!(ok, "{out}{err}");
    assert_no_secret("config check", &format!("{out}{err}"));
    let bad = cluster.dir.path().join("bad.toml");
    let bad_text = std::fs::read_to_string(&cluster.config).unwrap().replace(
        "topics = [\"clicks\"]",
        "topics = [\"clicks\"]\nsites = [\"nowhere\"]",
    );
    std::fs::write(&bad, bad_text).unwrap();
    let (ok, out, err) = cli(&["config", "check", &bad.display().to_string()], &env);
    assert!(
        !ok && out.contains("unknown site \"nowhere\""),
        "{out}{err}"
    );
    assert_no_secret("config check (invalid)", &format!("{out}{err}"));

    // The logs, at debug level.
    let coordinator_log = cluster.coordinator.as_ref().unwrap().log_text();
    let worker_log = cluster.workers["w1"].log_text();
    assert!(
        coordinator_log.contains("DEBUG") && worker_log.contains("DEBUG"),
        "debug logging was on"
    );
    assert_no_secret("coordinator log", &coordinator_log);
    assert_no_secret("worker log", &worker_log);
}

// ---------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------

/// Any bytes as a protobuf message body: what a broken or hostile client may send.
#[derive(Clone, Default, PartialEq)]
struct RawMessage(Vec<u8>);

impl std::fmt::Debug for RawMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawMessage({} bytes)", self.0.len())
    }
}

impl prost::Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        _tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, _tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

async fn raw_call(grpc: &str, path: &'static str, body: Vec<u8>) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(grpc.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.expect("ready");
    client
        .unary::<RawMessage, pb::HeartbeatResponse, _>(
            tonic::Request::new(RawMessage(body)),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_leaves_the_coordinator_serving_other_workers() {
    let body = format!(
        "[coordinator.limits]\nmax_message_bytes = \"64KiB\"\n{}",
        two_flows_two_sites(1)
    );
    let mut cluster = Cluster::start(&body, TTL_MS, HB_MS, MARGIN_MS);
    cluster.start_worker("w1");
    let before = cluster.settled(4, &["w1"], Duration::from_secs(30)).await;
    let session = |s: &pb::StatusResponse| {
        s.workers
            .iter()
            .find(|w| w.worker_id == "w1")
            .map(|w| w.session_generation)
    };
    let w1_session = session(&cluster.status().await).expect("w1 joined");
    let addr = cluster.grpc.trim_start_matches("http://").to_string();

    // Garbage bytes, plain and after an HTTP/2 preface.
    for i in 0..20 {
        send_garbage(&addr, 1000 + i, 16 * 1024);
    }
    if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x09\xff\xff\xff\xff\xffjunkjunk",
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }

    // Malformed protobuf on every worker method: refused, not a crash.
    for path in [
        "/lockstep.v1.WorkerService/Join",
        "/lockstep.v1.WorkerService/Heartbeat",
        "/lockstep.v1.WorkerService/Release",
        "/lockstep.v1.AdminService/PauseFlow",
    ] {
        let e = raw_call(&cluster.grpc, path, vec![0xff; 64])
            .await
            .unwrap_err();
        // The caller's error, not the server's (lockstep_proto::codec).
        assert_eq!(e.code(), Code::InvalidArgument, "{path}: {e:?}");
    }
    // A truncated field: a length prefix longer than the message.
    let e = raw_call(
        &cluster.grpc,
        "/lockstep.v1.WorkerService/Heartbeat",
        vec![0x0a, 0xff, 0x7f, b'x'],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // An oversized, otherwise valid heartbeat: refused while decoding.
    let mut client = WorkerServiceClient::connect(cluster.grpc.clone())
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let huge = pb::HeartbeatRequest {
        worker_id: "w1".into(),
        generation: 1,
        tasks: vec![pb::TaskProgress {
            task_id: "x".into(),
            message: "m".repeat(200 * 1024),
            ..Default::default()
        }],
    };
    let e = client.heartbeat(huge).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );

    // The coordinator still runs, w1 kept its session, and a new worker joins and gets work.
    let coordinator = cluster.coordinator.as_mut().unwrap();
    assert!(
        coordinator
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "coordinator exited: {}",
        coordinator.log_text()
    );
    assert_eq!(session(&cluster.status().await), Some(w1_session));
    cluster.start_worker("w2");
    let after = cluster
        .settled(4, &["w1", "w2"], Duration::from_secs(30))
        .await;
    assert_eq!(before.len(), after.len());
    assert!(
        per_worker(&after).get("w2").copied().unwrap_or(0) > 0,
        "{after:?}"
    );
    assert_eq!(session(&cluster.status().await), Some(w1_session));
}

// ---------------------------------------------------------------------------------------
// Heartbeat flood
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_flood_from_one_client_does_not_starve_other_workers() {
    let mut cluster = Cluster::start(&two_flows_two_sites(1), TTL_MS, HB_MS, MARGIN_MS);
    cluster.start_worker("w1");
    cluster.settled(4, &["w1"], Duration::from_secs(30)).await;
    let w1_session = cluster
        .status()
        .await
        .workers
        .iter()
        .find(|w| w.worker_id == "w1")
        .map(|w| w.session_generation)
        .expect("w1");

    let mut client = WorkerServiceClient::connect(cluster.grpc.clone())
        .await
        .unwrap();
    let joined = client
        .join(pb::JoinRequest {
            worker_id: "flooder".into(),
            capabilities: vec!["none".into()],
            ..Default::default()
        })
        .await
        .expect("flooder joins")
        .into_inner();

    // Four concurrent loops, 1500 heartbeats each, as fast as the coordinator answers.
    let mut loops = Vec::new();
    for _ in 0..4 {
        let mut c = client.clone();
        let generation = joined.generation;
        loops.push(tokio::spawn(async move {
            let (mut ok, mut exhausted, mut other) = (0u32, 0u32, 0u32);
            for _ in 0..1500 {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    c.heartbeat(pb::HeartbeatRequest {
                        worker_id: "flooder".into(),
                        generation,
                        tasks: vec![],
                    }),
                )
                .await;
                match r {
                    Ok(Ok(_)) => ok += 1,
                    Ok(Err(s)) if s.code() == Code::ResourceExhausted => exhausted += 1,
                    _ => other += 1,
                }
            }
            (ok, exhausted, other)
        }));
    }
    let (mut ok, mut exhausted, mut other) = (0, 0, 0);
    for l in loops {
        let (a, b, c) = l.await.unwrap();
        ok += a;
        exhausted += b;
        other += c;
    }
    println!("flood: {ok} admitted, {exhausted} refused (RESOURCE_EXHAUSTED), {other} other");
    assert!(ok >= 1, "some of the flood is admitted");
    assert!(exhausted > 0, "the flood is cut down");

    // w1 kept its lease and its session throughout, and still holds all its tasks.
    let status = cluster.status().await;
    let w1 = status
        .workers
        .iter()
        .find(|w| w.worker_id == "w1")
        .expect("w1 still a member");
    assert_eq!(w1.session_generation, w1_session, "w1 never had to re-join");
    let log = cluster.workers["w1"].log_text();
    assert!(!log.contains("lease ran out"), "{log}");
    assert!(!log.contains("heartbeat refused"), "{log}");
    assert!(w1.lease_remaining_ms > 0);
    let (_, metrics) = common::metrics_get(&cluster.http).unwrap();
    assert!(
        sample(
            &metrics,
            "lockstep_coordinator_worker_calls_rejected_total{reason=\"rate\"}"
        ) >= 1.0,
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------
// Worker identity (issue 22)
// ---------------------------------------------------------------------------------------

/// A gRPC channel over mutual TLS with the given client certificate.
async fn mtls_channel(url: &str, ca: &str, cert: &(String, String)) -> tonic::transport::Channel {
    client_tls(ca, Some(cert))
        .endpoint(url, Duration::from_secs(5))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect over mTLS")
}

fn join_as(id: &str) -> pb::JoinRequest {
    pb::JoinRequest {
        worker_id: id.into(),
        capabilities: vec!["kafka".into()],
        hostname: "test-host".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_acts_only_as_its_own_worker_and_roles_never_mix() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    // One CA signs them all: the worker id comes from the certificate, not the CA.
    let (ca, ca_file, (server_cert, server_key)) = test_ca(d);
    let w1 = write_pair(d, "w1", &ca.issue_worker("w1"));
    let w2 = write_pair(d, "w2", &ca.issue_worker("w2"));
    let op = write_pair(d, "op", &ca.issue("alice", false));
    let druid_password = "druid-planted-d8f1a0c4e7";
    let body = format!(
        r#"
[coordinator.tls]
cert_file = "{server_cert}"
key_file = "{server_key}"
client_ca_file = "{ca_file}"
{}"#,
        two_flows_two_sites(1).replace(
            "druid.router_url = \"http://127.0.0.1:1\"",
            &format!(
                "druid.router_url = \"http://127.0.0.1:1\"\ndruid.username = \"admin\"\ndruid.password = \"{druid_password}\""
            )
        )
    );
    assert!(body.contains(druid_password));
    let mut cluster = Cluster::start(&body, TTL_MS, HB_MS, MARGIN_MS);
    let https = cluster.grpc.replace("http://", "https://");
    cluster.start_worker_with(
        "w1",
        &https,
        &[
            "--tls-ca",
            &ca_file,
            "--tls-cert",
            &w1.0,
            "--tls-key",
            &w1.1,
        ],
    );
    let admin = client_tls(&ca_file, Some(&op));
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        if let Ok(s) = tls_status(&https, &admin).await {
            let tasks = s
                .workers
                .iter()
                .find(|w| w.worker_id == "w1")
                .map_or(0, |w| w.tasks.len());
            if tasks == 4 {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "w1 never got its 4 tasks");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let w1_before = before
        .workers
        .iter()
        .find(|w| w.worker_id == "w1")
        .cloned()
        .expect("w1");

    // w2's certificate cannot leave, join, heartbeat or release as w1.
    let mut as_w2 = WorkerServiceClient::new(mtls_channel(&https, &ca_file, &w2).await);
    let leave = as_w2
        .leave(pb::LeaveRequest {
            worker_id: "w1".into(),
            generation: before.generation,
        })
        .await
        .expect_err("w2 left as w1");
    assert_eq!(leave.code(), Code::PermissionDenied, "{leave:?}");
    assert!(leave.message().contains("worker w2"), "{leave:?}");
    let join = as_w2
        .join(join_as("w1"))
        .await
        .expect_err("w2 joined as w1");
    assert_eq!(join.code(), Code::PermissionDenied, "{join:?}");
    let hb = as_w2
        .heartbeat(pb::HeartbeatRequest {
            worker_id: "w1".into(),
            generation: before.generation,
            tasks: vec![],
        })
        .await
        .expect_err("w2 heartbeat as w1");
    assert_eq!(hb.code(), Code::PermissionDenied, "{hb:?}");
    let release = as_w2
        .release(pb::ReleaseRequest {
            worker_id: "w1".into(),
            generation: before.generation,
            task_ids: w1_before.tasks.clone(),
        })
        .await
        .expect_err("w2 released w1's tasks");
    assert_eq!(release.code(), Code::PermissionDenied, "{release:?}");

    // The operator's certificate is no worker; a worker's certificate makes no admin call.
    let mut as_op = WorkerServiceClient::new(mtls_channel(&https, &ca_file, &op).await);
    let e = as_op
        .join(join_as("alice"))
        .await
        .expect_err("operator joined");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = tls_status(&https, &client_tls(&ca_file, Some(&w1)))
        .await
        .expect_err("a worker certificate read the status");
    assert!(e.starts_with("PermissionDenied"), "{e}");
    let mut admin_as_w1 = AdminServiceClient::new(mtls_channel(&https, &ca_file, &w1).await);
    let e = admin_as_w1
        .pause_flow(pb::FlowRequest {
            flow: "clicks".into(),
        })
        .await
        .expect_err("a worker certificate paused a flow");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // w1 is untouched: same session, same tasks, nothing moved.
    let after = tls_status(&https, &admin).await.expect("status");
    let w1_after = after
        .workers
        .iter()
        .find(|w| w.worker_id == "w1")
        .expect("w1 still a member");
    assert_eq!(w1_after.session_generation, w1_before.session_generation);
    assert_eq!(w1_after.tasks, w1_before.tasks);
    assert!(after.paused_flows.is_empty());

    // w2 as itself is welcome, and its task specs carry no Druid credentials.
    let joined = as_w2
        .join(join_as("w2"))
        .await
        .expect("w2 joins")
        .into_inner();
    let mut specs = joined.assigned;
    let deadline = Instant::now() + Duration::from_secs(30);
    while specs.is_empty() {
        assert!(Instant::now() < deadline, "w2 never got a task");
        tokio::time::sleep(Duration::from_millis(HB_MS)).await;
        specs = as_w2
            .heartbeat(pb::HeartbeatRequest {
                worker_id: "w2".into(),
                generation: joined.generation,
                tasks: vec![],
            })
            .await
            .expect("w2 heartbeat")
            .into_inner()
            .assigned;
    }
    for spec in &specs {
        assert!(
            !spec.config_json.contains(druid_password) && !spec.config_json.contains("\"druid\""),
            "a task spec carries the site's Druid: {}",
            spec.config_json
        );
    }

    // A worker whose --id contradicts its certificate stops before it connects.
    let (ok, _, err) = cli(
        &[
            "worker",
            "--coordinator",
            &https,
            "--id",
            "w9",
            "--tls-ca",
            &ca_file,
            "--tls-cert",
            &w2.0,
            "--tls-key",
            &w2.1,
        ],
        &[],
    );
    assert!(
        !ok && err.contains("the client certificate names worker w2"),
        "{err}"
    );

    let log = cluster.coordinator.as_ref().unwrap().log_text();
    assert!(
        log.contains("worker call refused: the id does not match the client certificate"),
        "{log}"
    );
    assert!(!log.contains(druid_password));
    let (_, metrics) = common::metrics_get(&cluster.http).unwrap();
    assert!(
        sample(
            &metrics,
            "lockstep_coordinator_worker_calls_rejected_total{reason=\"identity\"}"
        ) >= 5.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "lockstep_coordinator_auth_failures_total{api=\"grpc\",reason=\"worker_certificate\"}"
        ) >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_worker_ids_are_refused_and_plaintext_stays_on_loopback() {
    let mut cluster = Cluster::start(&two_flows_two_sites(1), TTL_MS, HB_MS, MARGIN_MS);
    cluster.start_worker("w1");
    cluster.settled(4, &["w1"], Duration::from_secs(60)).await;
    let mut client = WorkerServiceClient::connect(cluster.grpc.clone())
        .await
        .unwrap();
    let huge = "w".repeat(256 * 1024);
    let forged = "w9\n2026-12-03T00:00:00Z  INFO forged line";
    let mut refused = Vec::new();
    for req in [
        join_as(&huge),
        join_as(forged),
        join_as("w9\u{1b}[2J"),
        pb::JoinRequest {
            hostname: "host\r\nforged".into(),
            ..join_as("w9")
        },
        pb::JoinRequest {
            capabilities: (0..100).map(|i| format!("c{i}")).collect(),
            ..join_as("w9")
        },
        pb::JoinRequest {
            version: "1.0\u{7}".into(),
            ..join_as("w9")
        },
    ] {
        let e = client.join(req).await.expect_err("accepted");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().len() < 200, "the refusal repeats the input");
        refused.push(e.message().to_string());
    }
    assert!(
        refused[0].contains("262144 bytes long; at most 128"),
        "{refused:?}"
    );
    let e = client
        .heartbeat(pb::HeartbeatRequest {
            worker_id: forged.into(),
            generation: 1,
            tasks: vec![],
        })
        .await
        .expect_err("accepted");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let status = cluster.status().await;
    let ids: Vec<&str> = status
        .workers
        .iter()
        .map(|w| w.worker_id.as_str())
        .collect();
    assert_eq!(ids, vec!["w1"], "a refused join left a trace");
    let state = std::fs::metadata(cluster.dir.path().join("state/coordinator-state.json"))
        .expect("state file")
        .len();
    assert!(state < 16 * 1024, "state file of {state} bytes");
    let log = cluster.coordinator.as_ref().unwrap().log_text();
    assert!(!log.contains("forged"), "{log}");
    assert!(!log.contains('\u{1b}'), "an escape code reached the log");
    assert!(
        log.contains("gRPC WITHOUT TLS"),
        "no warning about plaintext: {log}"
    );
    let (_, metrics) = common::metrics_get(&cluster.http).unwrap();
    assert!(
        sample(
            &metrics,
            "lockstep_coordinator_worker_calls_rejected_total{reason=\"invalid\"}"
        ) >= 7.0
    );

    // Joins that change no assignment (nothing a "none" worker can run) write no state: a
    // flood of made-up ids costs the store nothing and heartbeats wait on no write.
    let writes = |m: &str| sample(m, "lockstep_coordinator_state_writes_total{result=\"ok\"}");
    let (_, before) = common::metrics_get(&cluster.http).unwrap();
    for i in 0..20 {
        client
            .join(pb::JoinRequest {
                capabilities: vec!["none".into()],
                ..join_as(&format!("made-up-{i}"))
            })
            .await
            .expect("a well-formed join");
    }
    let (_, after) = common::metrics_get(&cluster.http).unwrap();
    assert!(writes(&before) >= 1.0, "the first state write is counted");
    assert!(
        writes(&after) - writes(&before) < 3.0,
        "20 joins without assignment changes made {} state writes",
        writes(&after) - writes(&before)
    );

    // The worker refuses a bad --id before it connects.
    let (ok, _, err) = cli(
        &["worker", "--coordinator", &cluster.grpc, "--id", "bad id"],
        &[],
    );
    assert!(
        !ok && err.contains("--id: worker id has a character outside"),
        "{err}"
    );

    // Plaintext off loopback: refused at start, before anything is bound.
    let text = std::fs::read_to_string(&cluster.config).unwrap();
    let port = free_port();
    let exposed: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("grpc_listen") {
                format!("grpc_listen = \"0.0.0.0:{port}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let config = cluster.dir.path().join("exposed.toml");
    std::fs::write(&config, exposed).unwrap();
    let ran = run_to_end(
        &["coordinator", "--config", &config.display().to_string()],
        &[],
        Duration::from_secs(30),
    );
    assert_ne!(ran.code, 0, "a plaintext coordinator on 0.0.0.0 started");
    let err = ran.stderr;
    assert!(
        err.contains("is not a loopback address") && err.contains("trusted_network"),
        "{err}"
    );
}
