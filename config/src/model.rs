//! The configuration as written in TOML (`Raw*` shapes parsed by serde) and as the rest of
//! lockstep uses it (validated, typed). Only `validate` turns the one into the other, so a
//! `Config` in hand is always consistent: every site a flow names exists, every regex compiles,
//! every duration is sane.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A validated configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub coordinator: CoordinatorConfig,
    /// Every region, each with its own control plane and state store: `[[regions]]`, or,
    /// without that list, one region named `[coordinator] region` whose state store is
    /// `[coordinator.state]` (every site in it).
    pub regions: Vec<Region>,
    pub sites: Vec<Site>,
    pub sources: Vec<Source>,
    pub flows: Vec<Flow>,
}

impl Config {
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn flow(&self, name: &str) -> Option<&Flow> {
        self.flows.iter().find(|f| f.name == name)
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Makes this config the control plane of region `name` (None: `[coordinator] region`):
    /// `coordinator.region` names it and `coordinator.state` is its state store. A region the
    /// config does not list is an error naming the regions it does.
    pub fn select_region(&mut self, name: Option<&str>) -> Result<(), String> {
        let name = name.unwrap_or(&self.coordinator.region).to_string();
        let Some(region) = self.region(&name) else {
            let known: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
            return Err(format!(
                "region \"{name}\" is not in the config's regions ({}): give --region or [coordinator] region one of them",
                known.join(", ")
            ));
        };
        self.coordinator.state = region.state.clone();
        self.coordinator.region = name;
        Ok(())
    }

    /// Whether a site belongs to the coordinator's region (the tasks it owns write there).
    pub fn in_own_region(&self, site: &Site) -> bool {
        site.region == self.coordinator.region
    }
}

/// `[[regions]]`: a datacenter with its own control plane. Its coordinators own exactly the
/// tasks whose destination site is in it, elect their leader over its state store only, and
/// accept only its workers; no region depends on another at run time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    /// Its coordinators' gRPC addresses (`http://HOST:PORT` or `https://...`): named to a
    /// worker of this region that calls another region's coordinator.
    pub coordinators: Vec<String>,
    /// Where its coordinators keep assignment, pauses and the leader lease.
    pub state: ObjectStore,
}

/// `[coordinator]`: where the coordinator listens, where it keeps state, and lease timing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoordinatorConfig {
    /// Region name, shown in status and metrics.
    pub region: String,
    /// Coordinator instance id (default: `<region>-<hostname>`).
    pub id: Option<String>,
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// Where assignment and pauses are persisted.
    pub state: ObjectStore,
    #[serde(with = "humantime_serde_compat")]
    pub lease_ttl: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub heartbeat_interval: Duration,
    /// Wait after a lease expires before its tasks are handed to another worker.
    #[serde(with = "humantime_serde_compat")]
    pub handover_margin: Duration,
    /// A worker stops producing this long before its lease would expire.
    #[serde(with = "humantime_serde_compat")]
    pub lease_safety_margin: Duration,
    pub max_workers: u32,
    /// How often the coordinator checks drift across sites.
    #[serde(with = "humantime_serde_compat")]
    pub drift_interval: Duration,
    /// How often the active coordinator asks every other region's coordinators for their
    /// status (PeerService), for the cross-region view.
    #[serde(with = "humantime_serde_compat")]
    pub peer_interval: Duration,
    /// Longest one such request to one address may take (connecting included); a region
    /// whose every address fails or times out is unreachable. Less than `peer_interval`.
    #[serde(with = "humantime_serde_compat")]
    pub peer_timeout: Duration,
    /// `[coordinator.peer_tls]`: how this coordinator connects to `https://` peers. None: from
    /// `[coordinator.tls]` when it has a `client_ca_file` ([`CoordinatorConfig::peer_tls_files`]).
    #[serde(default)]
    pub peer_tls: Option<crate::security::PeerTlsConfig>,
    /// `[coordinator.tls]`: TLS (and mutual TLS) on the gRPC port; None = plaintext.
    #[serde(default)]
    pub tls: Option<crate::security::TlsConfig>,
    /// `[coordinator.auth]`: the admin token.
    #[serde(default)]
    pub auth: crate::security::AuthConfig,
    /// `[coordinator.limits]`.
    #[serde(default)]
    pub limits: crate::security::Limits,
    /// The gRPC address a standby names when it redirects workers and the CLI here
    /// (`http://HOST:PORT` or `https://...`). None: derived from `grpc_listen` at start.
    #[serde(default)]
    pub advertise_grpc: Option<String>,
    /// The HTTP address a standby redirects `/` and `/api/...` to. None: derived from
    /// `http_listen` at start.
    #[serde(default)]
    pub advertise_http: Option<String>,
    /// `[coordinator.election]`: leader election among coordinators sharing one state store.
    #[serde(default)]
    pub election: ElectionConfig,
    /// Allows a plaintext gRPC listener (no `[coordinator.tls]`) on a non-loopback address:
    /// the operator states that the network between workers and coordinator is private.
    /// Without it such a coordinator refuses to start.
    #[serde(default)]
    pub trusted_network: bool,
}

impl CoordinatorConfig {
    /// The files this coordinator connects to `https://` peers with: `[coordinator.peer_tls]`
    /// when given; else, with mutual TLS on its own port, the CA that signs client certificates
    /// (to verify the peers' certificates: one CA signs every certificate) and its own
    /// certificate and key (as its client certificate: an operator's, not a worker's); else
    /// none (only `http://` peers can be asked).
    pub fn peer_tls_files(&self) -> Option<crate::security::PeerTlsConfig> {
        if let Some(p) = &self.peer_tls {
            return Some(p.clone());
        }
        let tls = self.tls.as_ref()?;
        Some(crate::security::PeerTlsConfig {
            ca_file: tls.client_ca_file.clone()?,
            cert_file: Some(tls.cert_file.clone()),
            key_file: Some(tls.key_file.clone()),
        })
    }
}

/// `[coordinator.election]`: coordinators that share a state store elect one active leader
/// through a lease document (`leader.json`) beside the state. The others are standbys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionConfig {
    /// A standby takes over when the lease has not been renewed for this long.
    #[serde(with = "humantime_serde_compat")]
    pub lease_ttl: Duration,
    /// How often the leader renews the lease (standbys read it twice as often).
    #[serde(with = "humantime_serde_compat")]
    pub renew_interval: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            lease_ttl: Duration::from_secs(10),
            renew_interval: Duration::from_secs(2),
        }
    }
}

/// A site: one Druid cluster in one datacenter, with its local Kafka and object store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Site {
    pub name: String,
    /// The region whose control plane feeds this site.
    pub region: String,
    pub druid: Druid,
    pub kafka: Option<KafkaCluster>,
    pub store: Option<ObjectStore>,
}

/// How to reach a site's Druid Router.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Druid {
    pub router_url: String,
    /// The Overlord's own URL, for the supervisor API. None: through the Router, which only
    /// proxies it with `druid.router.managementProxy.enabled=true` (off by default).
    pub overlord_url: Option<String>,
    /// The Coordinator's own URL, for its metadata API (used segments). None: through the
    /// Router, under the same management-proxy condition.
    pub coordinator_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// PEM file with extra CA certificates for an HTTPS router.
    pub ca_file: Option<String>,
}

/// A Kafka cluster: bootstrap servers plus librdkafka client properties passed through as
/// they are (`security.protocol`, `sasl.*`, `ssl.*`, ...). Values are secrets: a
/// `sasl.password` must never be printed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KafkaCluster {
    pub bootstrap_servers: String,
    pub properties: BTreeMap<String, Secret>,
}

/// The object-store services lockstep can read and write (through opendal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreService {
    S3,
    Azblob,
    Gcs,
    Webhdfs,
    Fs,
}

impl StoreService {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreService::S3 => "s3",
            StoreService::Azblob => "azblob",
            StoreService::Gcs => "gcs",
            StoreService::Webhdfs => "webhdfs",
            StoreService::Fs => "fs",
        }
    }
}

/// One object store location: a service, a bucket or container, and a root prefix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObjectStore {
    pub service: StoreService,
    #[serde(default)]
    pub root: String,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    #[serde(default)]
    pub account_name: Option<String>,
    #[serde(default)]
    pub account_key: Option<Secret>,
    /// GCS service-account JSON (the content, usually `${file:...}`).
    #[serde(default)]
    pub credential: Option<Secret>,
    /// Any further opendal option for the service, passed through.
    #[serde(default)]
    pub options: BTreeMap<String, Secret>,
}

impl ObjectStore {
    /// A local directory.
    pub fn fs(root: impl Into<String>) -> Self {
        ObjectStore {
            service: StoreService::Fs,
            root: root.into(),
            bucket: None,
            container: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            account_name: None,
            account_key: None,
            credential: None,
            options: BTreeMap::new(),
        }
    }

    /// The options opendal's builder for this service takes (`Operator::from_iter`): the typed
    /// fields first, then `options` passed through (they win, so an operator can set
    /// anything opendal knows). Secrets are exposed here, and only here.
    pub fn service_options(&self) -> std::collections::HashMap<String, String> {
        let mut m = std::collections::HashMap::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v.to_string());
            }
        };
        if !self.root.is_empty() {
            put("root", Some(&self.root));
        }
        put("endpoint", self.endpoint.as_deref());
        match self.service {
            StoreService::S3 => {
                put("bucket", self.bucket.as_deref());
                put("region", self.region.as_deref());
                put("access_key_id", self.access_key_id.as_deref());
                put(
                    "secret_access_key",
                    self.secret_access_key.as_ref().map(|s| s.expose()),
                );
            }
            StoreService::Azblob => {
                put("container", self.container.as_deref());
                put("account_name", self.account_name.as_deref());
                put("account_key", self.account_key.as_ref().map(|s| s.expose()));
            }
            StoreService::Gcs => {
                put("bucket", self.bucket.as_deref());
                put("credential", self.credential.as_ref().map(|s| s.expose()));
            }
            StoreService::Webhdfs | StoreService::Fs => {}
        }
        for (k, v) in &self.options {
            m.insert(k.clone(), v.expose().to_string());
        }
        m
    }

    /// `service://bucket/root at endpoint`, for errors, logs and the status page: where the
    /// store is, never a credential.
    pub fn describe(&self) -> String {
        let place = self
            .bucket
            .as_deref()
            .or(self.container.as_deref())
            .unwrap_or("");
        let mut s = format!("{}://{place}", self.service.as_str());
        if !self.root.is_empty() {
            if !place.is_empty() && !self.root.starts_with('/') {
                s.push('/');
            }
            s.push_str(&self.root);
        }
        if let Some(e) = &self.endpoint {
            s.push_str(&format!(" at {e}"));
        }
        s
    }
}

/// An upstream input every site must receive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Kafka(KafkaCluster),
    Objects(Box<ObjectStore>),
}

impl SourceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::Kafka(_) => "kafka",
            SourceKind::Objects(_) => "objects",
        }
    }
}

/// One replication rule: a source into a set of sites.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub name: String,
    pub source: String,
    pub sites: Vec<String>,
    /// The Druid datasource(s) this flow feeds at every site.
    pub datasources: Vec<String>,
    pub kind: FlowKind,
    /// How drift is measured for this flow's datasources.
    #[serde(default)]
    pub drift: DriftSettings,
}

/// `[flows.drift]`: how the drift engine compares this flow's datasources across sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftSettings {
    /// How far back a check looks (`now - window` .. `now - settle`).
    #[serde(with = "humantime_serde_compat")]
    pub window: Duration,
    /// The most recent data still settling (in flight, not yet handed off): not compared.
    #[serde(with = "humantime_serde_compat")]
    pub settle: Duration,
    /// Time bucket of the fine, per-bucket comparison.
    pub granularity: Granularity,
    /// How rows are counted, when configured: `COUNT(*)`, or `SUM("count")` for rolled-up
    /// datasources. None (the default): chosen per datasource from its supervisor spec
    /// (`SUM` of its count metric when it rolls up, `COUNT(*)` otherwise).
    pub count: Option<CountExpr>,
    /// How long source records may wait, not yet in a site's Druid, before that site counts
    /// as lagging (records in flight in a steady pipeline are not lag). A site that is
    /// lagging stays so until its wait falls under half of this (hysteresis).
    #[serde(with = "humantime_serde_compat")]
    pub lag_tolerance: Duration,
    /// Largest tolerated relative difference per bucket (0.001 = 0.1%).
    pub max_drift: f64,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            window: Duration::from_secs(24 * 3600),
            settle: Duration::from_secs(300),
            granularity: Granularity::Hour,
            count: None,
            lag_tolerance: Duration::from_secs(30),
            max_drift: 0.0,
        }
    }
}

/// A time bucket for per-bucket row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Minute,
    FifteenMinute,
    Hour,
    Day,
}

impl Granularity {
    /// Length of one bucket.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Granularity::Minute => 60,
            Granularity::FifteenMinute => 900,
            Granularity::Hour => 3600,
            Granularity::Day => 86400,
        })
    }

    /// ISO-8601 period for Druid's `TIME_FLOOR`.
    pub fn iso_period(self) -> &'static str {
        match self {
            Granularity::Minute => "PT1M",
            Granularity::FifteenMinute => "PT15M",
            Granularity::Hour => "PT1H",
            Granularity::Day => "P1D",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::FifteenMinute => "fifteen_minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// Parses `minute`, `fifteen_minute`, `hour` or `day`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "minute" => Some(Granularity::Minute),
            "fifteen_minute" | "15m" => Some(Granularity::FifteenMinute),
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            _ => None,
        }
    }
}

/// How the drift engine counts rows in a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountExpr {
    /// `COUNT(*)`: one row per Druid row (right for datasources without rollup).
    Rows,
    /// `SUM("<column>")`: the ingested-event count of a rolled-up datasource.
    Sum(String),
}

impl CountExpr {
    /// Parses `COUNT(*)` or `SUM("col")` (quotes optional). The column may contain only
    /// letters, digits, `_`, `-` and `.`, so the SQL built from it needs no escaping.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let upper = t.to_ascii_uppercase();
        if upper.replace(' ', "") == "COUNT(*)" {
            return Some(CountExpr::Rows);
        }
        if upper.starts_with("SUM(") && t.ends_with(')') {
            let inner = t[4..t.len() - 1].trim();
            let col = inner
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .unwrap_or(inner);
            if !col.is_empty()
                && col
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Some(CountExpr::Sum(col.to_string()));
            }
        }
        None
    }

    /// The SQL aggregate.
    pub fn sql(&self) -> String {
        match self {
            CountExpr::Rows => "COUNT(*)".to_string(),
            CountExpr::Sum(col) => format!("SUM(\"{col}\")"),
        }
    }

    /// Whether `sys.segments.num_rows` counts the same thing (only for `COUNT(*)`; a
    /// rolled-up row stands for many events, so the coarse pass then compares Druid rows,
    /// which still differ whenever the events do, and the fine pass decides).
    pub fn is_rows(&self) -> bool {
        matches!(self, CountExpr::Rows)
    }
}

impl Flow {
    /// "kafka" or "objects": the task kind a worker must be capable of.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FlowKind::Kafka(_) => "kafka",
            FlowKind::Objects(_) => "objects",
        }
    }

    /// Tasks per site: kafka slots or object shards.
    pub fn tasks_per_site(&self) -> u32 {
        match &self.kind {
            FlowKind::Kafka(k) => k.tasks,
            FlowKind::Objects(o) => o.shards,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    Kafka(KafkaFlow),
    Objects(ObjectsFlow),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorMode {
    ExactlyOnce,
    AtLeastOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPolicy {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizePolicy {
    Fail,
    Skip,
    DeadLetter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fencing {
    /// The default: broker transactions where the target supports them (found out at task
    /// start by committing one probe transaction), otherwise leases alone, said at start-up,
    /// in status and in `lockstep_mirror_fencing_info`.
    Auto,
    /// Leases only (works on every Kafka-protocol broker). A paused former owner's late writes
    /// are detected and reported, not prevented.
    Leases,
    /// Leases plus broker transactions with a stable transactional.id per task; a task whose
    /// target refuses transactions fails instead of falling back.
    Transactions,
}

/// What a Kafka task does when it finds no resume point: no checkpoint in
/// `__lockstep_progress` and none of its records within the scanned tail of a non-empty
/// target partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoResumePoint {
    /// Stop with an error that says so (the default): applying `start` there could repeat
    /// (`earliest`) or lose (`latest`) records.
    Fail,
    /// Apply the flow's `start` policy: for a flow that never wrote to this site before.
    Start,
}

/// Which topics a Kafka flow mirrors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicSelector {
    List(Vec<String>),
    Regex(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KafkaFlow {
    pub topics: TopicSelector,
    pub mode: MirrorMode,
    pub fencing: Fencing,
    pub start: StartPolicy,
    /// When no resume point can be found in a non-empty target partition.
    #[serde(default = "default_no_resume_point")]
    pub on_no_resume_point: NoResumePoint,
    /// Tasks (slots) per site; partitions are spread over them.
    pub tasks: u32,
    /// Bytes per second per site, None = unlimited.
    pub bandwidth_limit: Option<u64>,
    /// Target topic name, `{topic}` replaced by the source topic.
    pub target_topic: String,
    pub on_oversize: OversizePolicy,
    /// Dead-letter topic for `on_oversize = "dead_letter"`.
    pub dead_letter_topic: Option<String>,
    /// Largest record (key + value + headers) this flow writes; larger ones go through
    /// `on_oversize`. The target topic's `max.message.bytes` applies too where the broker
    /// reports it.
    pub max_record_bytes: Option<u64>,
    #[serde(with = "humantime_serde_compat")]
    pub discovery_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Size only.
    Size,
    /// Size and the source's etag/content-md5.
    Etag,
    /// Re-read the target and compare the checksum recorded at copy time.
    Checksum,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectsFlow {
    pub prefix: String,
    /// Target prefix at each site (default: the same as `prefix`).
    pub target_prefix: String,
    pub delete: bool,
    pub verify: VerifyMode,
    pub shards: u32,
    pub concurrency: u32,
    pub bandwidth_limit: Option<u64>,
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
}

fn default_no_resume_point() -> NoResumePoint {
    NoResumePoint::Fail
}

/// Durations are serialized as humantime strings ("10s") so that a task's JSON config reads well.
pub(crate) mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

// ----------------------------------------------------------------------------------------
// Raw shapes: exactly what the TOML file may contain. Unknown keys are errors.
// ----------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub coordinator: RawCoordinator,
    #[serde(default)]
    pub regions: Vec<RawRegion>,
    #[serde(default)]
    pub sites: Vec<RawSite>,
    #[serde(default)]
    pub sources: Vec<RawSource>,
    #[serde(default)]
    pub flows: Vec<RawFlow>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCoordinator {
    pub region: Option<String>,
    pub id: Option<String>,
    pub grpc_listen: Option<String>,
    pub http_listen: Option<String>,
    pub state: Option<ObjectStore>,
    pub lease_ttl: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub handover_margin: Option<String>,
    pub lease_safety_margin: Option<String>,
    pub max_workers: Option<u32>,
    pub drift_interval: Option<String>,
    pub peer_interval: Option<String>,
    pub peer_timeout: Option<String>,
    pub peer_tls: Option<crate::security::RawPeerTls>,
    pub tls: Option<crate::security::RawTls>,
    pub auth: Option<crate::security::RawAuth>,
    pub limits: Option<crate::security::RawLimits>,
    pub advertise_grpc: Option<String>,
    pub advertise_http: Option<String>,
    pub election: Option<RawElection>,
    pub trusted_network: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawElection {
    pub lease_ttl: Option<String>,
    pub renew_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegion {
    pub name: String,
    #[serde(default)]
    pub coordinators: Vec<String>,
    pub state: ObjectStore,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSite {
    pub name: String,
    pub region: Option<String>,
    pub druid: RawDruid,
    pub kafka: Option<RawKafka>,
    pub store: Option<ObjectStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDruid {
    pub router_url: String,
    pub overlord_url: Option<String>,
    pub coordinator_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub timeout: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafka {
    pub bootstrap_servers: String,
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub name: String,
    pub kind: String,
    pub kafka: Option<RawKafka>,
    pub store: Option<ObjectStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlow {
    pub name: String,
    pub kind: String,
    pub source: String,
    /// Default: every site.
    pub sites: Option<Vec<String>>,
    #[serde(default)]
    pub datasources: Vec<String>,
    // kafka
    pub topics: Option<Vec<String>>,
    pub topic_regex: Option<String>,
    pub mode: Option<MirrorMode>,
    pub fencing: Option<Fencing>,
    pub start: Option<StartPolicy>,
    pub on_no_resume_point: Option<NoResumePoint>,
    pub tasks: Option<u32>,
    pub target_topic: Option<String>,
    pub on_oversize: Option<OversizePolicy>,
    pub dead_letter_topic: Option<String>,
    pub max_record_bytes: Option<String>,
    pub discovery_interval: Option<String>,
    // objects
    pub prefix: Option<String>,
    pub target_prefix: Option<String>,
    pub delete: Option<bool>,
    pub verify: Option<VerifyMode>,
    pub shards: Option<u32>,
    pub concurrency: Option<u32>,
    pub interval: Option<String>,
    // both
    pub bandwidth_limit: Option<String>,
    pub drift: Option<RawDrift>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDrift {
    pub window: Option<String>,
    pub settle: Option<String>,
    pub granularity: Option<String>,
    pub count: Option<String>,
    pub max_drift: Option<String>,
    pub lag_tolerance: Option<String>,
}
