//! deploy/ checked without a cluster or a Docker daemon: the Kubernetes manifests parse
//! (Python's YAML parser, PyYAML) and hang together (selectors, named ports, probes, the
//! ServiceMonitors, a coordinator with a standby, every `${VAR}` of the config provided),
//! the config in the ConfigMap passes `lockstep config check`, the systemd units pass
//! `systemd-analyze verify`, and the Dockerfile builds the binary that the units and
//! manifests run.

mod common;

use common::BIN;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document of `path`, as JSON values (through PyYAML's safe loader).
fn yaml_documents(path: &Path) -> Vec<Value> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
        print(json.dumps(docs))\n";
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &path.display().to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{} does not parse (PyYAML; tests/run.sh installs it): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// True when every `matchLabels` pair is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn container_ports(deployment: &Value) -> BTreeSet<String> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

/// `${NAME}` and `${NAME:-default}` references in a text (not `${file:...}`).
fn env_references(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        rest = &rest[i + 2..];
        let end = rest.find('}').unwrap_or(rest.len());
        let inner = &rest[..end];
        if !inner.starts_with("file:") {
            let name = inner.split(":-").next().unwrap_or(inner);
            names.insert(name.to_string());
        }
        rest = &rest[end..];
    }
    names
}

#[test]
fn kubernetes_manifests_hang_together() {
    let path = repo().join("deploy/kubernetes/lockstep.yaml");
    let docs = yaml_documents(&path);
    let kinds: Vec<String> = docs.iter().map(kind_name).collect();
    for expected in [
        "ConfigMap/lockstep-config",
        "Secret/lockstep-secrets",
        "Deployment/lockstep-coordinator",
        "Deployment/lockstep-worker",
        "Service/lockstep-coordinator",
        "Service/lockstep-worker-metrics",
        "ServiceMonitor/lockstep-coordinator",
        "ServiceMonitor/lockstep-worker",
        "PodDisruptionBudget/lockstep-coordinator",
        "NetworkPolicy/lockstep-coordinator-grpc",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} missing: {kinds:?}"
        );
    }
    let find = |k: &str| {
        docs.iter()
            .find(|d| kind_name(d) == k)
            .unwrap_or_else(|| panic!("{k}"))
    };
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();

    // The config's plaintext gRPC (trusted_network) is fenced in: the policy selects the
    // coordinator pods and lets the worker pods (and no others) reach 7400.
    let policy = find("NetworkPolicy/lockstep-coordinator-grpc");
    let pod_labels = |d: &str| find(d)["spec"]["template"]["metadata"]["labels"].clone();
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        &pod_labels("Deployment/lockstep-coordinator")
    ));
    let grpc_rule = policy["spec"]["ingress"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["ports"][0]["port"] == 7400))
        .expect("an ingress rule for 7400");
    assert!(selects(
        &grpc_rule["from"][0]["podSelector"]["matchLabels"],
        &pod_labels("Deployment/lockstep-worker")
    ));

    // A leader and a standby, rolled out surge-first, never both down.
    let coordinator = find("Deployment/lockstep-coordinator");
    assert!(
        coordinator["spec"]["replicas"].as_u64() >= Some(2),
        "a coordinator with a standby replica"
    );
    assert_eq!(coordinator["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        coordinator["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );

    for d in &deployments {
        let name = kind_name(d);
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&d["spec"]["selector"]["matchLabels"], labels),
            "{name}: selector does not match its pod template"
        );
        let ports = container_ports(d);
        for c in d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
        {
            assert_eq!(c["image"], "lockstep:latest", "{name}");
            for probe in ["readinessProbe", "livenessProbe"] {
                if let Some(port) = c[probe]["httpGet"]["port"].as_str() {
                    assert!(
                        ports.contains(port),
                        "{name}: {probe} port {port} not declared"
                    );
                }
            }
        }
    }
    assert_eq!(
        find("Deployment/lockstep-coordinator")["spec"]["template"]["spec"]["containers"][0]
            ["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );

    // Services select pods and name ports those pods declare.
    let services: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Service").collect();
    for s in &services {
        let name = kind_name(s);
        let targets: Vec<&&Value> = deployments
            .iter()
            .filter(|d| {
                selects(
                    &s["spec"]["selector"],
                    &d["spec"]["template"]["metadata"]["labels"],
                )
            })
            .collect();
        assert_eq!(targets.len(), 1, "{name} selects one Deployment");
        let ports = container_ports(targets[0]);
        for p in s["spec"]["ports"].as_array().expect("ports") {
            let target = p["targetPort"].as_str().expect("named targetPort");
            assert!(
                ports.contains(target),
                "{name}: targetPort {target} not declared"
            );
        }
    }

    // ServiceMonitors: each selects a Service that has the port it scrapes.
    for m in docs.iter().filter(|d| d["kind"] == "ServiceMonitor") {
        let name = kind_name(m);
        let matched: Vec<&&Value> = services
            .iter()
            .filter(|s| {
                selects(
                    &m["spec"]["selector"]["matchLabels"],
                    &s["metadata"]["labels"],
                )
            })
            .collect();
        assert!(!matched.is_empty(), "{name} selects no Service");
        for e in m["spec"]["endpoints"].as_array().expect("endpoints") {
            let port = e["port"].as_str().expect("port name");
            assert!(
                matched.iter().all(|s| s["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == port)),
                "{name}: port {port} missing on a selected Service"
            );
        }
    }
    let pdb = find("PodDisruptionBudget/lockstep-coordinator");
    assert!(selects(
        &pdb["spec"]["selector"]["matchLabels"],
        &coordinator["spec"]["template"]["metadata"]["labels"]
    ));

    // The config: every ${VAR} is given to the coordinator (env or the Secret), and with
    // them the config passes `lockstep config check`.
    let toml = find("ConfigMap/lockstep-config")["data"]["lockstep.toml"]
        .as_str()
        .expect("lockstep.toml")
        .to_string();
    let container = &coordinator["spec"]["template"]["spec"]["containers"][0];
    let mut provided: BTreeSet<String> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect();
    let secret = find("Secret/lockstep-secrets");
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        "lockstep-secrets"
    );
    provided.extend(
        secret["stringData"]
            .as_object()
            .expect("stringData")
            .keys()
            .cloned(),
    );
    let referenced = env_references(&toml);
    assert!(
        referenced.contains("POD_IP"),
        "the advertised address is the pod's"
    );
    for name in &referenced {
        assert!(
            provided.contains(name),
            "${{{name}}} is not provided to the coordinator"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("lockstep.toml");
    std::fs::write(&file, &toml).expect("write");
    let out = Command::new(BIN)
        .args(["config", "check", &file.display().to_string()])
        .env("POD_NAME", "lockstep-coordinator-5d9c-x2")
        .env("POD_IP", "10.1.2.3")
        .env("DRUID_PASSWORD", "x")
        .env("STATE_BUCKET", "lockstep-state")
        .env("STATE_REGION", "eu-west-1")
        .output()
        .expect("config check");
    assert!(
        out.status.success(),
        "the ConfigMap's config: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mounted = container["volumeMounts"][0]["mountPath"]
        .as_str()
        .expect("mount");
    assert!(container["args"]
        .as_array()
        .expect("args")
        .iter()
        .any(|a| a.as_str() == Some(&format!("{mounted}/lockstep.toml"))));
}

#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("systemd-analyze not installed: the units were not verified");
        return;
    }
    // The units run /usr/local/bin/lockstep; verify them against the binary just built.
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in ["lockstep-coordinator.service", "lockstep-worker@.service"] {
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(unit))
            .expect("unit file")
            .replace("/usr/local/bin/lockstep", BIN);
        std::fs::write(dir.path().join(unit), text).expect("write");
    }
    std::fs::copy(
        dir.path().join("lockstep-worker@.service"),
        dir.path().join("lockstep-worker@1.service"),
    )
    .expect("instance");
    let out = Command::new("systemd-analyze")
        .args([
            "verify",
            "./lockstep-coordinator.service",
            "./lockstep-worker@1.service",
        ])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn dockerfile_builds_the_binary_the_deployments_run() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    assert!(
        text.contains("cargo build --release --locked --bin lockstep"),
        "builds the lockstep binary, locked"
    );
    assert!(text.contains("COPY --from=build /src/target/release/lockstep /usr/local/bin/lockstep"));
    let expose = text
        .lines()
        .find(|l| l.starts_with("EXPOSE"))
        .expect("EXPOSE");
    for port in ["7400", "7401", "7402"] {
        assert!(expose.contains(port), "{expose}");
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context leaves target/ out"
    );
    // The rust image must be new enough for the workspace's rust-version.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains("rust-version = \"1.85\""));
    assert!(
        text.contains("FROM rust:1-bookworm"),
        "tracks stable Rust 1.x"
    );
}
