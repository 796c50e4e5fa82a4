//! deploy/ checked without a cluster or a Docker daemon: the Kubernetes manifests parse
//! (Python's YAML parser, PyYAML) and hang together (selectors, named ports, probes, the
//! ServiceMonitors, a coordinator with a standby, every `${VAR}` of the config provided),
//! the config in the ConfigMap passes `lockstep config check`, the systemd units pass
//! `systemd-analyze verify`, and the Dockerfile builds the binary that the units and
//! manifests run. The per-region manifests (deploy/kubernetes/regions/, one file per region,
//! each applied in its own cluster) also run `--region R` on both sides, point each region's
//! workers at its own coordinators only, share one config whose regions keep their own state
//! stores, and fence gRPC with NetworkPolicies that select the right pods.

mod common;

use common::{run_to_end, BIN};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// The document of kind/name `k`.
fn find<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_name(d) == k)
        .unwrap_or_else(|| panic!("{k} missing"))
}

fn assert_kinds(docs: &[Value], expected: &[&str], file: &str) {
    let kinds: Vec<String> = docs.iter().map(kind_name).collect();
    for expected in expected {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{file}: {expected} missing: {kinds:?}"
        );
    }
}

/// True when every `matchLabels` pair is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn pod_labels(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["metadata"]["labels"]
}

fn first_container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
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

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The value of `--flag V` or `--flag=V` among `args`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_string)
        }
    })
}

/// A literal `env` value of `container`.
fn env_value(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
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

/// Checks what every manifest of lockstep must hold: Deployments select their pods, run
/// lockstep's image and probe declared ports; the coordinator has a standby, rolls out
/// surge-first and answers its probes on /readyz and /healthz; Services and ServiceMonitors
/// select something with the ports they name; the PodDisruptionBudget covers the coordinators.
fn check_workloads(docs: &[Value], file: &str) {
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();

    // A leader and a standby, rolled out surge-first, never both down.
    let coordinator = find(docs, "Deployment/lockstep-coordinator");
    assert!(
        coordinator["spec"]["replicas"].as_u64() >= Some(2),
        "{file}: a coordinator with a standby replica"
    );
    assert_eq!(coordinator["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        coordinator["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );

    for d in &deployments {
        let name = format!("{file}: {}", kind_name(d));
        let labels = pod_labels(d);
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
    let c = first_container(coordinator);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{file}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{file}");

    // Services select pods and name ports those pods declare.
    let services: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Service").collect();
    for s in &services {
        let name = format!("{file}: {}", kind_name(s));
        let targets: Vec<&&Value> = deployments
            .iter()
            .filter(|d| selects(&s["spec"]["selector"], pod_labels(d)))
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
        let name = format!("{file}: {}", kind_name(m));
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
    let pdb = find(docs, "PodDisruptionBudget/lockstep-coordinator");
    assert!(
        selects(
            &pdb["spec"]["selector"]["matchLabels"],
            pod_labels(coordinator)
        ),
        "{file}: the PodDisruptionBudget covers the coordinators"
    );
}

/// The ConfigMap's config and a value for every `${VAR}` it names: each must be given to the
/// coordinator (its env or the Secret it loads), and the coordinator must run the file the
/// ConfigMap is mounted as. Returns the config text and the environment that loads it.
fn config_and_env(docs: &[Value], file: &str) -> (String, BTreeMap<String, String>) {
    let toml = find(docs, "ConfigMap/lockstep-config")["data"]["lockstep.toml"]
        .as_str()
        .expect("lockstep.toml")
        .to_string();
    let container = first_container(find(docs, "Deployment/lockstep-coordinator"));
    let mut provided: BTreeSet<String> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect();
    let secret = find(docs, "Secret/lockstep-secrets");
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
        "{file}: the advertised address is the pod's"
    );
    for name in &referenced {
        assert!(
            provided.contains(name),
            "{file}: ${{{name}}} is not provided to the coordinator"
        );
    }
    let mounted = container["volumeMounts"][0]["mountPath"]
        .as_str()
        .expect("mount");
    assert_eq!(
        flag(&args(container), "--config").as_deref(),
        Some(format!("{mounted}/lockstep.toml").as_str()),
        "{file}: the coordinator runs the mounted config"
    );
    let env = provided
        .into_iter()
        .map(|name| {
            let value = match name.as_str() {
                "POD_NAME" => "lockstep-coordinator-5d9c-x2",
                "POD_IP" => "10.1.2.3",
                "STATE_BUCKET" => "lockstep-state",
                "STATE_REGION" => "eu-west-1",
                _ => "x",
            };
            (name, value.to_string())
        })
        .collect();
    (toml, env)
}

/// `lockstep config check` on `toml` (written to a temp file) with `env`: it must pass.
fn config_check_passes(toml: &str, env: &BTreeMap<String, String>, what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("lockstep.toml");
    std::fs::write(&file, toml).expect("write");
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ran = run_to_end(
        &["config", "check", &file.display().to_string()],
        &envs,
        Duration::from_secs(30),
    );
    assert!(
        ran.code == 0 && ran.stdout.starts_with("OK: "),
        "{what}: lockstep config check: {}{}",
        ran.stdout,
        ran.stderr
    );
}

#[test]
fn kubernetes_manifests_hang_together() {
    let path = repo().join("deploy/kubernetes/lockstep.yaml");
    let docs = yaml_documents(&path);
    assert_kinds(
        &docs,
        &[
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
        ],
        "lockstep.yaml",
    );

    // The config's plaintext gRPC (trusted_network) is fenced in: the policy selects the
    // coordinator pods and lets the worker pods (and no others) reach 7400.
    let policy = find(&docs, "NetworkPolicy/lockstep-coordinator-grpc");
    let labels_of = |d: &str| pod_labels(find(&docs, d)).clone();
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        &labels_of("Deployment/lockstep-coordinator")
    ));
    let grpc_rule = policy["spec"]["ingress"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["ports"][0]["port"] == 7400))
        .expect("an ingress rule for 7400");
    assert!(selects(
        &grpc_rule["from"][0]["podSelector"]["matchLabels"],
        &labels_of("Deployment/lockstep-worker")
    ));

    check_workloads(&docs, "lockstep.yaml");

    // The config: every ${VAR} is given to the coordinator (env or the Secret), and with
    // them the config passes `lockstep config check`.
    let (toml, env) = config_and_env(&docs, "lockstep.yaml");
    config_check_passes(&toml, &env, "lockstep.yaml's ConfigMap");
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

/// The regions of deploy/kubernetes/regions/ (one file each) and of
/// config/examples/two-regions.toml (deploy/systemd/regions/, one env file each).
const REGIONS: [&str; 2] = ["eu", "us"];
/// The pod label that says which region's control plane a pod belongs to.
const REGION_LABEL: &str = "lockstep/region";

/// One region's manifest: its region, file name, namespace and documents.
struct RegionFile {
    region: &'static str,
    file: String,
    namespace: String,
    docs: Vec<Value>,
}

/// A pod of a region's Deployment, as NetworkPolicies see it.
struct Pod {
    region: &'static str,
    namespace: String,
    /// "coordinator" or "worker".
    component: String,
    labels: Value,
}

impl Pod {
    fn is(&self, region: &str, component: &str) -> bool {
        self.region == region && self.component == component
    }
}

impl std::fmt::Display for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.region, self.component)
    }
}

/// True when `selector` (a label selector: `matchLabels`, no `matchExpressions`) takes in
/// `labels`; an empty selector takes in everything, as in Kubernetes.
fn label_selector_matches(selector: &Value, labels: &Value) -> bool {
    assert!(
        selector.get("matchExpressions").is_none(),
        "matchLabels only, please"
    );
    selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Whether a NetworkPolicy peer (an entry of `from` or `to`) of a policy in `policy_ns`
/// takes in `pod`. An ipBlock names a network outside the cluster, so no pod here.
fn peer_selects(
    peer: &Value,
    policy_ns: &str,
    namespaces: &BTreeMap<String, Value>,
    pod: &Pod,
) -> bool {
    if peer.get("ipBlock").is_some() {
        return false;
    }
    let namespace_ok = match peer.get("namespaceSelector") {
        Some(selector) => label_selector_matches(selector, &namespaces[&pod.namespace]),
        None => pod.namespace == policy_ns,
    };
    let pod_ok = peer
        .get("podSelector")
        .is_none_or(|selector| label_selector_matches(selector, &pod.labels));
    namespace_ok && pod_ok
}

/// Whether a NetworkPolicy rule's `ports` let TCP `port` through (no `ports`: every port).
fn rule_covers_tcp(rule: &Value, port: u64) -> bool {
    let Some(ports) = rule["ports"].as_array() else {
        return true;
    };
    ports.iter().any(|p| {
        let tcp = p["protocol"].as_str().unwrap_or("TCP") == "TCP";
        let from = p["port"].as_u64().expect("numeric port");
        let to = p["endPort"].as_u64().unwrap_or(from);
        tcp && (from..=to).contains(&port)
    })
}

/// The pods (of every region's file) that `rules` (`ingress` or `egress` of a policy in
/// `policy_ns`, peers under `side`: "from" or "to") let through on TCP `port`. Also whether
/// one of those rules opens `port` to a network outside the cluster or to everything.
fn pods_through<'a>(
    rules: &Value,
    side: &str,
    port: u64,
    policy_ns: &str,
    namespaces: &BTreeMap<String, Value>,
    pods: &'a [Pod],
) -> (Vec<&'a Pod>, bool) {
    let rules: Vec<&Value> = rules
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| rule_covers_tcp(r, port))
        .collect();
    let outside = rules.iter().any(|r| {
        r[side].as_array().is_none_or(|peers| {
            peers.is_empty() || peers.iter().any(|p| p.get("ipBlock").is_some())
        })
    });
    let through = pods
        .iter()
        .filter(|pod| {
            rules.iter().any(|r| {
                r[side].as_array().is_none_or(|peers| {
                    peers.is_empty()
                        || peers
                            .iter()
                            .any(|p| peer_selects(p, policy_ns, namespaces, pod))
                })
            })
        })
        .collect();
    (through, outside)
}

/// `http://HOST:PORT` or `https://HOST:PORT` as (host, port).
fn host_port(address: &str) -> (String, u64) {
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or_else(|| panic!("{address}: not http(s)://HOST:PORT"));
    let (host, port) = rest
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{address}: no port"));
    (host.to_string(), port.parse().expect("port"))
}

/// Where a state store keeps its documents (service, endpoint, bucket or container, root).
fn store_location(store: &lockstep_config::ObjectStore) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {}",
        store.service,
        store.endpoint,
        store.bucket,
        store.container,
        store.root.trim_matches('/')
    )
}

#[test]
fn kubernetes_region_manifests_hang_together() {
    let files: Vec<RegionFile> = REGIONS
        .iter()
        .map(|&region| {
            let file = format!("regions/{region}.yaml");
            let docs = yaml_documents(&repo().join("deploy/kubernetes").join(&file));
            let namespaces: Vec<&Value> =
                docs.iter().filter(|d| d["kind"] == "Namespace").collect();
            assert_eq!(namespaces.len(), 1, "{file}: one Namespace");
            let namespace = namespaces[0]["metadata"]["name"]
                .as_str()
                .expect("namespace name")
                .to_string();
            RegionFile {
                region,
                file,
                namespace,
                docs,
            }
        })
        .collect();
    let namespaces: BTreeMap<String, Value> = files
        .iter()
        .map(|f| {
            let mut labels = find(&f.docs, &format!("Namespace/{}", f.namespace))["metadata"]
                ["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            labels.insert(
                "kubernetes.io/metadata.name".to_string(),
                Value::from(f.namespace.clone()),
            );
            (f.namespace.clone(), Value::Object(labels))
        })
        .collect();
    assert_eq!(
        namespaces.len(),
        files.len(),
        "a namespace per region, so that both files also go into one cluster"
    );
    let pods: Vec<Pod> = files
        .iter()
        .flat_map(|f| {
            f.docs
                .iter()
                .filter(|d| d["kind"] == "Deployment")
                .map(|d| Pod {
                    region: f.region,
                    namespace: f.namespace.clone(),
                    component: pod_labels(d)["app.kubernetes.io/component"]
                        .as_str()
                        .expect("component label")
                        .to_string(),
                    labels: pod_labels(d).clone(),
                })
        })
        .collect();

    // One config for every region, byte for byte.
    let configs: Vec<(String, BTreeMap<String, String>)> = files
        .iter()
        .map(|f| config_and_env(&f.docs, &f.file))
        .collect();
    for (f, (toml, _)) in files.iter().zip(&configs).skip(1) {
        assert_eq!(
            toml, &configs[0].0,
            "{}: the ConfigMap's config differs from {}'s",
            f.file, files[0].file
        );
    }

    for (f, (toml, env)) in files.iter().zip(&configs) {
        let (r, file, ns, docs) = (f.region, f.file.as_str(), f.namespace.as_str(), &f.docs);
        let namespace_kind = format!("Namespace/{ns}");
        assert_kinds(
            docs,
            &[
                namespace_kind.as_str(),
                "ConfigMap/lockstep-config",
                "Secret/lockstep-secrets",
                "Deployment/lockstep-coordinator",
                "Deployment/lockstep-worker",
                "Service/lockstep-coordinator",
                "Service/lockstep-coordinator-peer",
                "Service/lockstep-worker-metrics",
                "ServiceMonitor/lockstep-coordinator",
                "ServiceMonitor/lockstep-worker",
                "PodDisruptionBudget/lockstep-coordinator",
                "NetworkPolicy/lockstep-coordinator-grpc",
                "NetworkPolicy/lockstep-worker-egress",
            ],
            file,
        );
        for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
            assert_eq!(
                d["metadata"]["namespace"],
                ns,
                "{file}: {} is not in the region's namespace",
                kind_name(d)
            );
        }
        check_workloads(docs, file);

        // The config loads with lockstep's own loader (and passes `lockstep config check`),
        // lists every region, each with its own state store, and has sites in this one.
        config_check_passes(toml, env, &format!("{file}'s ConfigMap"));
        let config = lockstep_config::parse(toml, file, None, &|name| env.get(name).cloned())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let names: BTreeSet<&str> = config.regions.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, BTreeSet::from(REGIONS), "{file}: [[regions]]");
        let locations: BTreeSet<String> = config
            .regions
            .iter()
            .map(|g| store_location(&g.state))
            .collect();
        assert_eq!(
            locations.len(),
            config.regions.len(),
            "{file}: every region keeps its own state store: {locations:?}"
        );
        let mut own = config.clone();
        own.select_region(Some(r))
            .unwrap_or_else(|e| panic!("{file}: --region {r}: {e}"));
        assert_eq!(
            store_location(&own.coordinator.state),
            store_location(&config.region(r).expect("region").state),
            "{file}: --region {r} runs on {r}'s state store"
        );
        assert!(
            config.sites.iter().any(|s| s.region == r),
            "{file}: no site in region {r}"
        );

        // The coordinators: a leader and a standby of this region.
        let coordinator = find(docs, "Deployment/lockstep-coordinator");
        assert_eq!(coordinator["spec"]["replicas"], 2, "{file}");
        assert_eq!(pod_labels(coordinator)[REGION_LABEL], r, "{file}");
        let c = first_container(coordinator);
        assert_eq!(
            flag(&args(c), "--region").as_deref(),
            Some(r),
            "{file}: the coordinators run --region {r}"
        );
        assert!(env_value(c, "LOCKSTEP_REGION").is_none_or(|v| v == r));

        // The workers: this region's, pointed at this region's coordinator Service only.
        let worker = find(docs, "Deployment/lockstep-worker");
        assert_eq!(pod_labels(worker)[REGION_LABEL], r, "{file}");
        let w = first_container(worker);
        let worker_args = args(w);
        assert_eq!(
            flag(&worker_args, "--region").as_deref(),
            Some(r),
            "{file}: the workers run --region {r}"
        );
        assert!(env_value(w, "LOCKSTEP_REGION").is_none_or(|v| v == r));
        let addresses = flag(&worker_args, "--coordinator")
            .or_else(|| env_value(w, "LOCKSTEP_COORDINATOR"))
            .unwrap_or_else(|| panic!("{file}: the workers name no coordinator"));
        let others: BTreeSet<&String> = config
            .regions
            .iter()
            .filter(|g| g.name != r)
            .flat_map(|g| &g.coordinators)
            .collect();
        for address in addresses.split(',') {
            assert!(
                !others.contains(&address.to_string()),
                "{file}: the workers name another region's coordinators"
            );
            let (host, port) = host_port(address);
            let (service, domain) = host.split_once('.').unwrap_or((host.as_str(), ""));
            let domains = [
                String::new(),
                ns.to_string(),
                format!("{ns}.svc"),
                format!("{ns}.svc.cluster.local"),
            ];
            assert!(
                domains.iter().any(|d| d == domain),
                "{file}: {address} is not a Service of {ns}"
            );
            let s = find(docs, &format!("Service/{service}"));
            assert!(
                selects(&s["spec"]["selector"], pod_labels(coordinator)),
                "{file}: {address} does not reach {r}'s coordinators"
            );
            assert!(
                s["spec"]["ports"]
                    .as_array()
                    .expect("ports")
                    .iter()
                    .any(|p| p["port"] == port && p["targetPort"] == "grpc"),
                "{file}: {address}: no gRPC port {port} on Service/{service}"
            );
        }

        // The other regions reach this one's coordinators at the addresses [[regions]] gives
        // it: the peer Service's load balancer, on gRPC.
        let peer = find(docs, "Service/lockstep-coordinator-peer");
        assert!(selects(&peer["spec"]["selector"], pod_labels(coordinator)));
        let hostname = peer["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"]
            .as_str()
            .expect("the peer Service's DNS name");
        let listed = &config.region(r).expect("region").coordinators;
        assert!(
            !listed.is_empty(),
            "{file}: [[regions]] {r} lists no address"
        );
        for address in listed {
            let (host, port) = host_port(address);
            assert_eq!(host, hostname, "{file}: {r}'s address in [[regions]]");
            assert!(
                peer["spec"]["ports"]
                    .as_array()
                    .expect("ports")
                    .iter()
                    .any(|p| p["port"] == port && p["targetPort"] == "grpc"),
                "{file}: the peer Service has no gRPC port {port}"
            );
        }

        // NetworkPolicy, ingress: it covers this region's coordinators (and nothing else); on
        // gRPC it admits this region's workers and the other regions' coordinators, never
        // another region's workers.
        let policy = find(docs, "NetworkPolicy/lockstep-coordinator-grpc");
        assert!(policy["spec"]["policyTypes"]
            .as_array()
            .expect("policyTypes")
            .contains(&Value::from("Ingress")));
        let covered: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                p.namespace == ns
                    && label_selector_matches(&policy["spec"]["podSelector"], &p.labels)
            })
            .collect();
        assert!(
            covered.len() == 1 && covered[0].is(r, "coordinator"),
            "{file}: the coordinator policy covers {}",
            covered
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (admitted, outside) = pods_through(
            &policy["spec"]["ingress"],
            "from",
            7400,
            ns,
            &namespaces,
            &pods,
        );
        let admitted_names: Vec<String> = admitted.iter().map(|p| p.to_string()).collect();
        for p in &pods {
            let expected = p.is(r, "worker") || p.component == "coordinator";
            assert_eq!(
                admitted.iter().any(|a| std::ptr::eq(*a, p)),
                expected,
                "{file}: gRPC of {r}'s coordinators admits {admitted_names:?}"
            );
        }
        // From another cluster: the other regions' network, as the peer load balancer.
        assert!(
            outside,
            "{file}: no ingress for the other regions' coordinators"
        );
        let blocks: BTreeSet<&str> = policy["spec"]["ingress"]
            .as_array()
            .expect("ingress")
            .iter()
            .flat_map(|rule| rule["from"].as_array().into_iter().flatten())
            .filter_map(|p| p["ipBlock"]["cidr"].as_str())
            .collect();
        let ranges: BTreeSet<&str> = peer["spec"]["loadBalancerSourceRanges"]
            .as_array()
            .expect("loadBalancerSourceRanges")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            blocks, ranges,
            "{file}: the peer networks, in the policy and the load balancer"
        );

        // NetworkPolicy, egress: this region's workers open gRPC to this region's
        // coordinators only (the ingress rule above lets another region's network in).
        let egress = find(docs, "NetworkPolicy/lockstep-worker-egress");
        assert!(egress["spec"]["policyTypes"]
            .as_array()
            .expect("policyTypes")
            .contains(&Value::from("Egress")));
        let covered: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                p.namespace == ns
                    && label_selector_matches(&egress["spec"]["podSelector"], &p.labels)
            })
            .collect();
        assert!(
            covered.len() == 1 && covered[0].is(r, "worker"),
            "{file}: the worker egress policy covers {}",
            covered
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (reached, outside) = pods_through(
            &egress["spec"]["egress"],
            "to",
            7400,
            ns,
            &namespaces,
            &pods,
        );
        assert!(
            !outside && reached.len() == 1 && reached[0].is(r, "coordinator"),
            "{file}: {r}'s workers reach gRPC (7400) of {}{}",
            reached
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if outside {
                " and outside the cluster"
            } else {
                ""
            }
        );
        let (_, outside) = pods_through(
            &egress["spec"]["egress"],
            "to",
            9092,
            ns,
            &namespaces,
            &pods,
        );
        assert!(outside, "{file}: the workers reach Kafka (9092) anywhere");
    }
}

#[test]
fn two_regions_example_and_its_systemd_env_files() {
    let example = repo().join("config/examples/two-regions.toml");
    let ran = run_to_end(
        &["config", "check", &example.display().to_string()],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    let config = lockstep_config::load(&example).expect("two-regions.toml");
    let names: BTreeSet<&str> = config.regions.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(REGIONS));

    // deploy/systemd/regions/R.env, as /etc/lockstep/lockstep.env on R's hosts: R, R's
    // coordinators, and every secret the example names.
    let text = std::fs::read_to_string(&example).expect("two-regions.toml");
    for r in REGIONS {
        let path = repo().join(format!("deploy/systemd/regions/{r}.env"));
        let env: BTreeMap<String, String> = std::fs::read_to_string(&path)
            .expect("env file")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{r}.env: {l}"));
                (k.to_string(), v.to_string())
            })
            .collect();
        assert_eq!(env["LOCKSTEP_REGION"], r, "{r}.env");
        assert_eq!(
            env["LOCKSTEP_COORDINATOR"],
            config.region(r).expect("region").coordinators.join(","),
            "{r}.env: its region's coordinators"
        );
        for name in env_references(&text) {
            assert!(env.contains_key(&name), "{r}.env: no {name}");
        }
    }
}
