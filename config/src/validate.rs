//! Semantic validation: turns the raw TOML shapes into a typed [`Config`], collecting every
//! problem with its field path. Defaults are applied here, in one place.
//!
//! A message may quote the value of its own field (`redact` replaces the message of a field
//! whose value came from a `${...}` reference), but it names another field's value through
//! [`Checker::shown`], which shows a field path instead of a value a reference produced.

use crate::bounds::{name_too_long, MAX_NAME_BYTES};
use crate::interp::Produced;
use crate::model::*;
use crate::FieldError;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

/// Collects errors while converting; a failed field yields a placeholder so that validation
/// goes on and reports everything.
struct Checker<'a> {
    errors: Vec<FieldError>,
    produced: &'a Produced,
}

impl Checker<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    /// `"value"`, the value of the field at `path` quoted in a message about another field;
    /// `<the value of PATH>` when a `${...}` reference produced it.
    fn shown(&self, path: &str, value: &str) -> String {
        match self.produced.kinds(path) {
            Some(_) => format!("<the value of {path}>"),
            None => format!("\"{value}\""),
        }
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if d.is_zero() => {
                    self.err(path, "must be greater than zero");
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.err(
                        path,
                        format!("invalid duration \"{text}\": {e} (examples: \"500ms\", \"10s\", \"5m\")"),
                    );
                    default
                }
            },
        }
    }

    fn addr(&mut self, path: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let text = value.unwrap_or(default);
        match text.parse() {
            Ok(a) => a,
            Err(_) => {
                self.err(
                    path,
                    format!("\"{text}\" is not a socket address (expected IP:PORT, e.g. \"0.0.0.0:7400\")"),
                );
                // The default is a constant that parses.
                default
                    .parse()
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
            }
        }
    }

    fn name(&mut self, path: &str, name: &str) {
        if name.is_empty() {
            self.err(path, "must not be empty");
        } else if let Some(message) = name_too_long(name) {
            self.err(path, message);
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.err(
                path,
                format!("\"{name}\" may contain only letters, digits, '-', '_' and '.'"),
            );
        }
    }

    /// An advertised address: `http://HOST:PORT` or `https://HOST:PORT`, nothing after.
    fn advertise(&mut self, path: &str, text: &str) {
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"));
        let ok = rest.is_some_and(|r| {
            !r.contains('/')
                && r.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                })
        });
        if !ok {
            self.err(
                path,
                format!("\"{text}\" must be http://HOST:PORT or https://HOST:PORT (e.g. \"http://10.0.0.5:7400\")"),
            );
        }
    }

    fn byte_size(&mut self, path: &str, value: Option<&str>) -> Option<u64> {
        let text = value?;
        let trimmed = text.trim().trim_end_matches("/s");
        match trimmed.parse::<bytesize::ByteSize>() {
            Ok(b) if b.as_u64() > 0 => Some(b.as_u64()),
            Ok(_) => {
                self.err(path, "must be greater than zero (omit it for no limit)");
                None
            }
            Err(e) => {
                self.err(
                    path,
                    format!(
                        "invalid byte size \"{text}\": {e} (examples: \"50MiB\", \"200 MB/s\")"
                    ),
                );
                None
            }
        }
    }

    fn store(&mut self, path: &str, store: &ObjectStore) {
        let need = |c: &mut Checker, field: &str, v: &Option<String>| {
            if v.as_deref().is_none_or(str::is_empty) {
                let service = c.shown(&format!("{path}.service"), store.service.as_str());
                c.err(
                    format!("{path}.{field}"),
                    format!("required for service {service}"),
                );
            }
        };
        match store.service {
            StoreService::S3 | StoreService::Gcs => need(self, "bucket", &store.bucket),
            StoreService::Azblob => {
                need(self, "container", &store.container);
                need(self, "account_name", &store.account_name);
            }
            StoreService::Webhdfs => need(self, "endpoint", &store.endpoint),
            StoreService::Fs => {
                if store.root.is_empty() {
                    self.err(format!("{path}.root"), "required for service \"fs\"");
                }
            }
        }
        if let Some(endpoint) = &store.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                self.err(
                    format!("{path}.endpoint"),
                    format!("\"{endpoint}\" must start with http:// or https://"),
                );
            }
        }
    }

    fn kafka(&mut self, path: &str, raw: RawKafka) -> KafkaCluster {
        if raw.bootstrap_servers.trim().is_empty() {
            self.err(format!("{path}.bootstrap_servers"), "must not be empty");
        }
        for key in raw.properties.keys() {
            if key == "bootstrap.servers" {
                self.err(
                    format!("{path}.properties.\"{key}\""),
                    "set bootstrap_servers instead",
                );
            }
        }
        KafkaCluster {
            bootstrap_servers: raw.bootstrap_servers,
            properties: raw.properties,
        }
    }
}

/// `[coordinator.election]`: defaults, and a renewal often enough that one lost write does
/// not depose the leader.
/// `peer_interval` (default 10 s) and `peer_timeout` (default 3 s, and less than the
/// interval: a request to a silent peer ends before the next is due).
fn peer_timing(
    c: &mut Checker,
    interval: Option<&str>,
    timeout: Option<&str>,
) -> (Duration, Duration) {
    let interval = c.duration(
        "coordinator.peer_interval",
        interval,
        Duration::from_secs(10),
    );
    let timeout = c.duration(
        "coordinator.peer_timeout",
        timeout,
        Duration::from_secs(3).min(interval / 2),
    );
    if timeout >= interval {
        c.err(
            "coordinator.peer_timeout",
            format!(
                "{} is not less than peer_interval ({}): a request to a silent peer must end before the next one is due",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        );
    }
    (interval, timeout)
}

fn election(c: &mut Checker, raw: RawElection) -> ElectionConfig {
    let defaults = ElectionConfig::default();
    let lease_ttl = c.duration(
        "coordinator.election.lease_ttl",
        raw.lease_ttl.as_deref(),
        defaults.lease_ttl,
    );
    let renew_interval = c.duration(
        "coordinator.election.renew_interval",
        raw.renew_interval.as_deref(),
        (lease_ttl / 5).min(defaults.renew_interval),
    );
    if renew_interval * 3 > lease_ttl {
        let ttl = c.shown(
            "coordinator.election.lease_ttl",
            &humantime::format_duration(lease_ttl).to_string(),
        );
        c.err(
            "coordinator.election.renew_interval",
            format!(
                "{} is more than a third of lease_ttl ({}): the leader would lose its lease after one failed renewal",
                humantime::format_duration(renew_interval),
                unquoted(ttl)
            ),
        );
    }
    ElectionConfig {
        lease_ttl,
        renew_interval,
    }
}

/// Flags fields that belong to the other flow kind.
fn forbid<T>(c: &mut Checker, path: &str, field: &str, value: &Option<T>, kind: &str) {
    if value.is_some() {
        c.err(
            format!("{path}.{field}"),
            format!("not allowed in a flow of kind \"{kind}\""),
        );
    }
}

fn duplicates<'a>(c: &mut Checker, what: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(first) = seen.get(name) {
            let first = format!("{what}[{first}].name");
            let name = c.shown(&first, name);
            c.err(
                format!("{what}[{i}].name"),
                format!("duplicate name {name} (also {first})"),
            );
        } else {
            seen.insert(name, i);
        }
    }
}

/// `produced` says which fields got their value from a `${...}` reference.
pub(crate) fn validate(raw: RawConfig, produced: &Produced) -> Result<Config, Vec<FieldError>> {
    let mut c = Checker {
        errors: Vec::new(),
        produced,
    };

    // [coordinator]
    let rc = raw.coordinator;
    let lease_ttl = c.duration(
        "coordinator.lease_ttl",
        rc.lease_ttl.as_deref(),
        Duration::from_secs(10),
    );
    let heartbeat_interval = c.duration(
        "coordinator.heartbeat_interval",
        rc.heartbeat_interval.as_deref(),
        Duration::from_secs(2),
    );
    let handover_margin = c.duration(
        "coordinator.handover_margin",
        rc.handover_margin.as_deref(),
        Duration::from_secs(1),
    );
    let lease_safety_margin = c.duration(
        "coordinator.lease_safety_margin",
        rc.lease_safety_margin.as_deref(),
        lease_ttl / 5,
    );
    if heartbeat_interval * 2 > lease_ttl {
        let ttl = c.shown(
            "coordinator.lease_ttl",
            &humantime::format_duration(lease_ttl).to_string(),
        );
        c.err(
            "coordinator.heartbeat_interval",
            format!(
                "{} is more than half of lease_ttl ({}): one lost heartbeat would expire the lease",
                humantime::format_duration(heartbeat_interval),
                unquoted(ttl)
            ),
        );
    }
    if lease_safety_margin + heartbeat_interval >= lease_ttl {
        c.err(
            "coordinator.lease_safety_margin",
            "lease_safety_margin + heartbeat_interval must be less than lease_ttl",
        );
    }
    let region_given = rc.region.is_some();
    let region = rc.region.unwrap_or_else(|| "default".to_string());
    c.name("coordinator.region", &region);
    // Any text is accepted as an id (it defaults to `<region>-<hostname>`), but not any length.
    if let Some(message) = rc.id.as_deref().and_then(name_too_long) {
        c.err("coordinator.id", message);
    }
    if rc.state.is_some() && !raw.regions.is_empty() {
        c.err(
            "coordinator.state",
            "with [[regions]] each region names its own state store: move it to [regions.state] of the region that used it",
        );
    }
    let state = rc
        .state
        .unwrap_or_else(|| ObjectStore::fs("lockstep-state"));
    c.store("coordinator.state", &state);

    // [[regions]]: listed, or one implicit region holding every site.
    duplicates(
        &mut c,
        "regions",
        raw.regions.iter().map(|r| r.name.as_str()),
    );
    let mut regions = Vec::new();
    for (i, r) in raw.regions.iter().enumerate() {
        let p = format!("regions[{i}]");
        c.name(&format!("{p}.name"), &r.name);
        c.store(&format!("{p}.state"), &r.state);
        for (j, a) in r.coordinators.iter().enumerate() {
            c.advertise(&format!("{p}.coordinators[{j}]"), a);
        }
        regions.push(Region {
            name: r.name.clone(),
            coordinators: r.coordinators.clone(),
            state: r.state.clone(),
        });
    }
    let listed_regions = !regions.is_empty();
    if listed_regions && region_given && !regions.iter().any(|r| r.name == region) {
        let known: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
        c.err(
            "coordinator.region",
            format!("\"{region}\" is not in [[regions]] ({})", known.join(", ")),
        );
    }
    if !listed_regions {
        regions.push(Region {
            name: region.clone(),
            coordinators: Vec::new(),
            state: state.clone(),
        });
    }
    let election = election(&mut c, rc.election.unwrap_or_default());
    let advertise_grpc = rc
        .advertise_grpc
        .inspect(|a| c.advertise("coordinator.advertise_grpc", a));
    let advertise_http = rc
        .advertise_http
        .inspect(|a| c.advertise("coordinator.advertise_http", a));
    let max_workers = rc.max_workers.unwrap_or(1000);
    if max_workers == 0 {
        c.err("coordinator.max_workers", "must be at least 1");
    }
    let (peer_interval, peer_timeout) = peer_timing(
        &mut c,
        rc.peer_interval.as_deref(),
        rc.peer_timeout.as_deref(),
    );
    let peer_tls = crate::security::peer_tls(rc.peer_tls, &mut c.errors);
    let coordinator = CoordinatorConfig {
        region: region.clone(),
        id: rc.id,
        grpc_listen: c.addr(
            "coordinator.grpc_listen",
            rc.grpc_listen.as_deref(),
            "0.0.0.0:7400",
        ),
        http_listen: c.addr(
            "coordinator.http_listen",
            rc.http_listen.as_deref(),
            "0.0.0.0:7401",
        ),
        state,
        lease_ttl,
        heartbeat_interval,
        handover_margin,
        lease_safety_margin,
        max_workers,
        drift_interval: c.duration(
            "coordinator.drift_interval",
            rc.drift_interval.as_deref(),
            Duration::from_secs(60),
        ),
        peer_interval,
        peer_timeout,
        peer_tls,
        tls: crate::security::tls(rc.tls, &mut c.errors),
        auth: crate::security::auth(rc.auth, &mut c.errors),
        limits: crate::security::limits(rc.limits, &mut c.errors),
        advertise_grpc,
        advertise_http,
        election,
        trusted_network: rc.trusted_network.unwrap_or(false),
    };

    // Coordinators ask the other regions' coordinators for their status: https:// ones
    // only with a CA to verify them.
    if regions.len() > 1 && coordinator.peer_tls_files().is_none() {
        if let Some((i, r)) = regions
            .iter()
            .enumerate()
            .find(|(_, r)| r.coordinators.iter().any(|a| a.starts_with("https://")))
        {
            c.err(
                "coordinator.peer_tls",
                format!(
                    "regions[{i}] ({}) lists https:// coordinators, which the other regions' coordinators ask for its status: set [coordinator.peer_tls] ca_file (the CA their certificates chain to), or [coordinator.tls] client_ca_file when one CA signs every certificate",
                    r.name
                ),
            );
        }
    }

    // [[sites]]
    duplicates(&mut c, "sites", raw.sites.iter().map(|s| s.name.as_str()));
    let mut sites = Vec::new();
    for (i, s) in raw.sites.into_iter().enumerate() {
        let p = format!("sites[{i}]");
        c.name(&format!("{p}.name"), &s.name);
        let url = &s.druid.router_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
            c.err(
                format!("{p}.druid.router_url"),
                format!("\"{url}\" must be an http:// or https:// URL"),
            );
        }
        for (field, value) in [
            ("overlord_url", &s.druid.overlord_url),
            ("coordinator_url", &s.druid.coordinator_url),
        ] {
            if let Some(url) = value {
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                    c.err(
                        format!("{p}.druid.{field}"),
                        format!("\"{url}\" must be an http:// or https:// URL"),
                    );
                }
            }
        }
        if s.druid.password.is_some() && s.druid.username.is_none() {
            c.err(
                format!("{p}.druid.username"),
                "required when druid.password is set",
            );
        }
        let timeout = c.duration(
            &format!("{p}.druid.timeout"),
            s.druid.timeout.as_deref(),
            Duration::from_secs(30),
        );
        let kafka = s.kafka.map(|k| c.kafka(&format!("{p}.kafka"), k));
        if let Some(store) = &s.store {
            c.store(&format!("{p}.store"), store);
        }
        let known: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
        let site_region = match s.region {
            Some(r) if known.contains(&r.as_str()) => r,
            Some(r) => {
                let shown = c.shown(&format!("{p}.region"), &r);
                c.err(
                    format!("{p}.region"),
                    format!(
                        "{shown} is not a region of this config ({})",
                        if listed_regions {
                            format!("[[regions]]: {}", known.join(", "))
                        } else {
                            format!(
                                "no [[regions]]: the one region is [coordinator] region \"{}\"",
                                region
                            )
                        }
                    ),
                );
                r
            }
            None if listed_regions => {
                c.err(
                    format!("{p}.region"),
                    format!(
                        "required with [[regions]]: the region whose coordinators feed this site ({})",
                        known.join(", ")
                    ),
                );
                String::new()
            }
            None => region.clone(),
        };
        sites.push(Site {
            name: s.name,
            region: site_region,
            druid: Druid {
                router_url: s.druid.router_url.trim_end_matches('/').to_string(),
                overlord_url: s
                    .druid
                    .overlord_url
                    .map(|u| u.trim_end_matches('/').to_string()),
                coordinator_url: s
                    .druid
                    .coordinator_url
                    .map(|u| u.trim_end_matches('/').to_string()),
                username: s.druid.username,
                password: s.druid.password,
                timeout,
                ca_file: s.druid.ca_file,
            },
            kafka,
            store: s.store,
        });
    }

    // [[sources]]
    duplicates(
        &mut c,
        "sources",
        raw.sources.iter().map(|s| s.name.as_str()),
    );
    let mut sources = Vec::new();
    // The index in [[sources]] of each source kept, for field paths.
    let mut source_index = Vec::new();
    for (i, s) in raw.sources.into_iter().enumerate() {
        let p = format!("sources[{i}]");
        c.name(&format!("{p}.name"), &s.name);
        let kind = match s.kind.as_str() {
            "kafka" => {
                forbid(&mut c, &p, "store", &s.store, "kafka");
                match s.kafka {
                    Some(k) => Some(SourceKind::Kafka(c.kafka(&format!("{p}.kafka"), k))),
                    None => {
                        c.err(
                            format!("{p}.kafka"),
                            "a source of kind \"kafka\" needs a [sources.kafka] table",
                        );
                        None
                    }
                }
            }
            "objects" => {
                forbid(&mut c, &p, "kafka", &s.kafka, "objects");
                match s.store {
                    Some(store) => {
                        c.store(&format!("{p}.store"), &store);
                        Some(SourceKind::Objects(Box::new(store)))
                    }
                    None => {
                        c.err(
                            format!("{p}.store"),
                            "a source of kind \"objects\" needs a [sources.store] table",
                        );
                        None
                    }
                }
            }
            other => {
                c.err(
                    format!("{p}.kind"),
                    format!("unknown kind \"{other}\" (expected \"kafka\" or \"objects\")"),
                );
                None
            }
        };
        if let Some(kind) = kind {
            sources.push(Source { name: s.name, kind });
            source_index.push(i);
        }
    }

    // [[flows]]
    duplicates(&mut c, "flows", raw.flows.iter().map(|f| f.name.as_str()));
    let site_names: Vec<String> = sites
        .iter()
        .enumerate()
        .map(|(k, s)| unquoted(c.shown(&format!("sites[{k}].name"), &s.name)))
        .collect();
    let source_names: Vec<String> = sources
        .iter()
        .zip(&source_index)
        .map(|(s, k)| unquoted(c.shown(&format!("sources[{k}].name"), &s.name)))
        .collect();
    let mut flows = Vec::new();
    for (i, f) in raw.flows.into_iter().enumerate() {
        let p = format!("flows[{i}]");
        c.name(&format!("{p}.name"), &f.name);
        let source = sources.iter().position(|s| s.name == f.source);
        match source {
            // Not quoted: it may be any length.
            None if f.source.len() > MAX_NAME_BYTES => c.err(
                format!("{p}.source"),
                format!(
                    "unknown source, longer than any name ({} bytes)",
                    f.source.len()
                ),
            ),
            None => c.err(
                format!("{p}.source"),
                format!(
                    "unknown source \"{}\" (known: {})",
                    f.source,
                    list(&source_names)
                ),
            ),
            Some(k) if sources[k].kind.as_str() != f.kind => c.err(
                format!("{p}.source"),
                format!(
                    "source \"{}\" is of kind {} but the flow is of kind \"{}\"",
                    f.source,
                    c.shown(
                        &format!("sources[{}].kind", source_index[k]),
                        sources[k].kind.as_str()
                    ),
                    f.kind
                ),
            ),
            Some(_) => {}
        }
        let flow_sites = f
            .sites
            .clone()
            .unwrap_or_else(|| sites.iter().map(|s| s.name.clone()).collect());
        if flow_sites.is_empty() {
            c.err(format!("{p}.sites"), "a flow needs at least one site");
        }
        let mut seen = HashSet::new();
        for (j, site) in flow_sites.iter().enumerate() {
            let at = format!("{p}.sites[{j}]");
            // Without `sites = [...]` the flow's sites are the sites' names, named by their
            // own fields.
            let site_field = match f.sites {
                Some(_) => at.clone(),
                None => format!("sites[{j}].name"),
            };
            if site.len() > MAX_NAME_BYTES {
                c.err(
                    at,
                    format!("unknown site, longer than any name ({} bytes)", site.len()),
                );
                continue;
            }
            let shown = c.shown(&site_field, site);
            if !seen.insert(site.as_str()) {
                c.err(at.clone(), format!("site {shown} is listed twice"));
            }
            match sites.iter().find(|s| &s.name == site) {
                None => c.err(
                    at,
                    format!("unknown site {shown} (known: {})", list(&site_names)),
                ),
                Some(s) if f.kind == "kafka" && s.kafka.is_none() => c.err(
                    at,
                    format!("site {shown} has no [sites.kafka] table, needed by a kafka flow"),
                ),
                Some(s) if f.kind == "objects" && s.store.is_none() => c.err(
                    at,
                    format!("site {shown} has no [sites.store] table, needed by an objects flow"),
                ),
                Some(_) => {}
            }
        }
        for (j, ds) in f.datasources.iter().enumerate() {
            if ds.trim().is_empty() {
                c.err(format!("{p}.datasources[{j}]"), "must not be empty");
            }
        }
        let bandwidth_limit = c.byte_size(
            &format!("{p}.bandwidth_limit"),
            f.bandwidth_limit.as_deref(),
        );
        let kind = match f.kind.as_str() {
            "kafka" => kafka_flow(&mut c, &p, &f, bandwidth_limit),
            "objects" => objects_flow(&mut c, &p, &f, bandwidth_limit),
            other => {
                c.err(
                    format!("{p}.kind"),
                    format!("unknown kind \"{other}\" (expected \"kafka\" or \"objects\")"),
                );
                None
            }
        };
        let drift = drift_settings(&mut c, &format!("{p}.drift"), f.drift.as_ref());
        if let Some(kind) = kind {
            flows.push(Flow {
                name: f.name,
                source: f.source,
                sites: flow_sites,
                datasources: f.datasources,
                kind,
                drift,
            });
        }
    }

    if c.errors.is_empty() {
        Ok(Config {
            coordinator,
            regions,
            sites,
            sources,
            flows,
        })
    } else {
        Err(c.errors)
    }
}

fn kafka_flow(
    c: &mut Checker,
    p: &str,
    f: &RawFlow,
    bandwidth_limit: Option<u64>,
) -> Option<FlowKind> {
    forbid(c, p, "prefix", &f.prefix, "kafka");
    forbid(c, p, "target_prefix", &f.target_prefix, "kafka");
    forbid(c, p, "delete", &f.delete, "kafka");
    forbid(c, p, "verify", &f.verify, "kafka");
    forbid(c, p, "shards", &f.shards, "kafka");
    forbid(c, p, "concurrency", &f.concurrency, "kafka");
    forbid(c, p, "interval", &f.interval, "kafka");
    let topics = match (&f.topics, &f.topic_regex) {
        (Some(_), Some(_)) => {
            c.err(
                format!("{p}.topic_regex"),
                "set either topics or topic_regex, not both",
            );
            return None;
        }
        (None, None) => {
            c.err(
                format!("{p}.topics"),
                "a kafka flow needs topics = [...] or topic_regex = \"...\"",
            );
            return None;
        }
        (Some(list), None) => {
            if list.is_empty() {
                c.err(format!("{p}.topics"), "must list at least one topic");
            }
            for (j, t) in list.iter().enumerate() {
                if t.len() > MAX_TOPIC_BYTES {
                    c.err(
                        format!("{p}.topics[{j}]"),
                        format!(
                            "too long for a Kafka topic name ({} bytes; at most {MAX_TOPIC_BYTES}; the value is not shown)",
                            t.len()
                        ),
                    );
                } else if !valid_topic(t) {
                    c.err(
                        format!("{p}.topics[{j}]"),
                        format!(
                            "\"{t}\" is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"
                        ),
                    );
                }
            }
            TopicSelector::List(list.clone())
        }
        (None, Some(re)) => {
            if let Err(e) = regex::Regex::new(re) {
                c.err(format!("{p}.topic_regex"), format!("does not compile: {e}"));
            }
            TopicSelector::Regex(re.clone())
        }
    };
    let tasks = f.tasks.unwrap_or(1);
    if !(1..=4096).contains(&tasks) {
        c.err(
            format!("{p}.tasks"),
            format!("{tasks} is out of range 1..=4096"),
        );
    }
    let target_topic = f
        .target_topic
        .clone()
        .unwrap_or_else(|| "{topic}".to_string());
    let many = !matches!(&topics, TopicSelector::List(l) if l.len() == 1);
    if many && !target_topic.contains("{topic}") {
        c.err(
            format!("{p}.target_topic"),
            "must contain {topic} when the flow mirrors more than one topic (names would collide)",
        );
    }
    let on_oversize = f.on_oversize.unwrap_or(OversizePolicy::Fail);
    let dead_letter_topic = match (on_oversize, &f.dead_letter_topic) {
        (OversizePolicy::DeadLetter, None) => Some(format!("__lockstep_dlq.{}", f.name)),
        (_, t) => t.clone(),
    };
    Some(FlowKind::Kafka(KafkaFlow {
        topics,
        mode: f.mode.unwrap_or(MirrorMode::ExactlyOnce),
        fencing: f.fencing.unwrap_or(Fencing::Auto),
        start: f.start.unwrap_or(StartPolicy::Earliest),
        on_no_resume_point: f.on_no_resume_point.unwrap_or(NoResumePoint::Fail),
        tasks,
        bandwidth_limit,
        target_topic,
        on_oversize,
        dead_letter_topic,
        max_record_bytes: c.byte_size(
            &format!("{p}.max_record_bytes"),
            f.max_record_bytes.as_deref(),
        ),
        discovery_interval: c.duration(
            &format!("{p}.discovery_interval"),
            f.discovery_interval.as_deref(),
            Duration::from_secs(30),
        ),
    }))
}

fn objects_flow(
    c: &mut Checker,
    p: &str,
    f: &RawFlow,
    bandwidth_limit: Option<u64>,
) -> Option<FlowKind> {
    forbid(c, p, "topics", &f.topics, "objects");
    forbid(c, p, "topic_regex", &f.topic_regex, "objects");
    forbid(c, p, "mode", &f.mode, "objects");
    forbid(c, p, "fencing", &f.fencing, "objects");
    forbid(c, p, "start", &f.start, "objects");
    forbid(c, p, "on_no_resume_point", &f.on_no_resume_point, "objects");
    forbid(c, p, "tasks", &f.tasks, "objects");
    forbid(c, p, "target_topic", &f.target_topic, "objects");
    forbid(c, p, "on_oversize", &f.on_oversize, "objects");
    forbid(c, p, "dead_letter_topic", &f.dead_letter_topic, "objects");
    forbid(c, p, "max_record_bytes", &f.max_record_bytes, "objects");
    forbid(c, p, "discovery_interval", &f.discovery_interval, "objects");
    let Some(prefix) = f.prefix.clone() else {
        c.err(
            format!("{p}.prefix"),
            "an objects flow needs prefix = \"...\" (\"\" for the whole bucket)",
        );
        return None;
    };
    let shards = f.shards.unwrap_or(1);
    if !(1..=4096).contains(&shards) {
        c.err(
            format!("{p}.shards"),
            format!("{shards} is out of range 1..=4096"),
        );
    }
    let concurrency = f.concurrency.unwrap_or(16);
    if !(1..=1024).contains(&concurrency) {
        c.err(
            format!("{p}.concurrency"),
            format!("{concurrency} is out of range 1..=1024"),
        );
    }
    Some(FlowKind::Objects(ObjectsFlow {
        target_prefix: f.target_prefix.clone().unwrap_or_else(|| prefix.clone()),
        prefix,
        delete: f.delete.unwrap_or(false),
        verify: f.verify.unwrap_or(VerifyMode::Etag),
        shards,
        concurrency,
        bandwidth_limit,
        interval: c.duration(
            &format!("{p}.interval"),
            f.interval.as_deref(),
            Duration::from_secs(60),
        ),
    }))
}

fn drift_settings(c: &mut Checker, p: &str, raw: Option<&RawDrift>) -> DriftSettings {
    let d = DriftSettings::default();
    let Some(raw) = raw else { return d };
    let window = c.duration(&format!("{p}.window"), raw.window.as_deref(), d.window);
    // A zero settling period is allowed: it compares up to now.
    let settle = match raw.settle.as_deref() {
        Some(t) if t.trim() == "0" || t.trim() == "0s" => Duration::ZERO,
        other => c.duration(&format!("{p}.settle"), other, d.settle),
    };
    if settle >= window {
        let shown_window = c.shown(
            &format!("{p}.window"),
            &humantime::format_duration(window).to_string(),
        );
        c.err(
            format!("{p}.settle"),
            format!(
                "{} must be shorter than window ({}): nothing would be compared",
                humantime::format_duration(settle),
                unquoted(shown_window)
            ),
        );
    }
    let granularity = match raw.granularity.as_deref() {
        None => d.granularity,
        Some(t) => Granularity::parse(t).unwrap_or_else(|| {
            c.err(
                format!("{p}.granularity"),
                format!(
                    "unknown granularity \"{t}\" (expected minute, fifteen_minute, hour or day)"
                ),
            );
            d.granularity
        }),
    };
    let count = match raw.count.as_deref() {
        None => d.count,
        Some(t) if t.trim().eq_ignore_ascii_case("auto") => None,
        Some(t) => Some(CountExpr::parse(t).unwrap_or_else(|| {
            c.err(
                format!("{p}.count"),
                format!("\"{t}\" is not \"auto\", COUNT(*) or SUM(\"column\")"),
            );
            CountExpr::Rows
        })),
    };
    // Zero is allowed: any record not yet ingested makes the site lagging.
    let lag_tolerance = match raw.lag_tolerance.as_deref() {
        Some(t) if t.trim() == "0" || t.trim() == "0s" => Duration::ZERO,
        other => c.duration(&format!("{p}.lag_tolerance"), other, d.lag_tolerance),
    };
    let max_drift = match raw.max_drift.as_deref() {
        None => d.max_drift,
        Some(t) => parse_ratio(t).unwrap_or_else(|| {
            c.err(
                format!("{p}.max_drift"),
                format!(
                    "\"{t}\" is not a ratio between 0 and 1 (examples: \"0\", \"0.1%\", \"0.001\")"
                ),
            );
            d.max_drift
        }),
    };
    DriftSettings {
        window,
        settle,
        granularity,
        count,
        max_drift,
        lag_tolerance,
    }
}

/// Parses a ratio written as a percentage (`"0.1%"`) or a fraction (`"0.001"`), in 0..=1.
pub fn parse_ratio(text: &str) -> Option<f64> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok()? / 100.0,
        None => t.parse::<f64>().ok()?,
    };
    (value.is_finite() && (0.0..=1.0).contains(&value)).then_some(value)
}

/// Kafka's own limit on a topic name.
const MAX_TOPIC_BYTES: usize = 249;

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TOPIC_BYTES
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A name from [`Checker::shown`] in a list or in parentheses, without its quotes.
fn unquoted(shown: String) -> String {
    match shown.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.to_string(),
        None => shown,
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}
