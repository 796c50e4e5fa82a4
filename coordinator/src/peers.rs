//! The cross-region view: every other region's control plane as this coordinator sees it.
//!
//! While leading, a coordinator asks every other region of the config that lists coordinator
//! addresses for its status (PeerService.RegionStatus), every `[coordinator] peer_interval`,
//! each region on its own loop (a silent region never delays the asking of another). One
//! request tries the region's addresses in turn and follows a standby's pointer to its leader
//! (`lockstep_proto::leader`, as workers and the CLI do); each attempt, connecting included,
//! ends after `peer_timeout`. It sends this coordinator's admin token, and reaches `https://`
//! peers with the files `[coordinator.peer_tls]` (or `[coordinator.tls]`) names.
//!
//! The answers land in a [`PeerBook`] whose lock is never held across an await: the poller
//! runs on its own task, and nothing the coordinator does for its own region (worker calls,
//! status, drift) waits for it or for a peer. Per region the book holds a [`PeerState`]:
//! `ok` with the last answer and when it came, `unreachable` since the first failed request
//! after the last answer (with the last error), or `unknown` before the first answer or
//! failure. [`view`] turns the book, the config and this region's own [`figures`] into the
//! `RegionsResponse` that AdminService.Regions, `/api/v1/regions` and the status page show.
//!
//! This module imports no module that uses it (`shared`, `grpc`, `http`, `leadership`).

use crate::events::{Level, RecentEvents};
use crate::metrics::Metrics;
use lockstep_config::{Config, PeerTlsConfig, Region, Secret};
use lockstep_proto as pb;
use pb::leader::{call_following_leader, Refusal, Route};
use pb::tls::{BearerToken, ClientTls};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What this coordinator knows of another region.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerState {
    /// Not asked yet (or no answer nor failure yet).
    Unknown,
    /// The last request was answered: these figures, received at `at`.
    Ok {
        status: pb::RegionStatusResponse,
        at: SystemTime,
    },
    /// The last request failed. `since`: the first failed request after the last answer.
    Unreachable { since: SystemTime, error: String },
}

impl PeerState {
    /// The state after one request that ended at `now` with `outcome`.
    pub fn next(
        &self,
        outcome: Result<pb::RegionStatusResponse, String>,
        now: SystemTime,
    ) -> PeerState {
        match (self, outcome) {
            (_, Ok(status)) => PeerState::Ok { status, at: now },
            // Still unreachable: since the first failure, with the newest error.
            (PeerState::Unreachable { since, .. }, Err(error)) => PeerState::Unreachable {
                since: *since,
                error,
            },
            (PeerState::Unknown | PeerState::Ok { .. }, Err(error)) => {
                PeerState::Unreachable { since: now, error }
            }
        }
    }

    /// "ok", "unreachable" or "unknown", as the API names it.
    pub fn name(&self) -> &'static str {
        match self {
            PeerState::Unknown => "unknown",
            PeerState::Ok { .. } => "ok",
            PeerState::Unreachable { .. } => "unreachable",
        }
    }

    /// How long the region has been unreachable at `now`; 0 unless it is.
    pub fn unreachable_for(&self, now: SystemTime) -> Duration {
        match self {
            PeerState::Unreachable { since, .. } => now.duration_since(*since).unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }
}

/// Every other region's [`PeerState`]: a cheap, cloneable handle. Its lock is held only to
/// read or replace an entry, never across an await.
#[derive(Debug, Clone, Default)]
pub struct PeerBook {
    inner: Arc<Mutex<BTreeMap<String, PeerState>>>,
}

impl PeerBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerState>> {
        // Every update replaces one entry whole: a poisoned lock still holds a valid map.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of `region` (unknown when not in the book).
    pub fn get(&self, region: &str) -> PeerState {
        self.lock()
            .get(region)
            .cloned()
            .unwrap_or(PeerState::Unknown)
    }

    /// Records one request's outcome; returns the states before and after.
    pub fn record(
        &self,
        region: &str,
        outcome: Result<pb::RegionStatusResponse, String>,
        now: SystemTime,
    ) -> (PeerState, PeerState) {
        let mut book = self.lock();
        let before = book.get(region).cloned().unwrap_or(PeerState::Unknown);
        let after = before.next(outcome, now);
        book.insert(region.to_string(), after.clone());
        (before, after)
    }

    /// Forgets every region (the poller stopped: nothing it knew stays current).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Epoch milliseconds of `t` (0 before the epoch).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A region's figures from its coordinator's status (`coordinator_id` and `region` as the
/// status names them), taken at `now`.
pub fn figures(status: &pb::StatusResponse, now: SystemTime) -> pb::RegionStatusResponse {
    let phase = |p: &str| status.tasks.iter().filter(|t| t.phase == p).count() as u32;
    let progress = status.tasks.iter().filter_map(|t| t.progress.as_ref());
    let mirror_lag_records = progress
        .clone()
        .flat_map(|p| &p.partitions)
        // The mirror's own lag gauge: high watermark minus the next offset to mirror.
        .map(|q| {
            (q.source_high_watermark - q.last_mirrored_source_offset.saturating_add(1)).max(0)
                as u64
        })
        .sum();
    let object_backlog = progress
        .filter_map(|p| p.objects.as_ref())
        .map(|o| o.objects_pending)
        .sum();
    pb::RegionStatusResponse {
        region: status.region.clone(),
        coordinator_id: status.coordinator_id.clone(),
        generation: status.generation,
        workers_alive: status.workers.len() as u32,
        tasks_total: status.tasks.len() as u32,
        tasks_assigned: phase("assigned"),
        tasks_unassigned: phase("unassigned"),
        mirror_lag_records,
        object_backlog,
        paused_flows: status.paused_flows.clone(),
        checked_at_ms: epoch_ms(now),
    }
}

/// The regions as this coordinator sees them: its own first (`own`, its figures now), then
/// every other region of the config by name, with what the book holds of it.
pub fn view(
    own: pb::RegionStatusResponse,
    config: &Config,
    book: &PeerBook,
) -> pb::RegionsResponse {
    let me = config.coordinator.region.clone();
    let mut others: Vec<&Region> = config.regions.iter().filter(|r| r.name != me).collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    let mut regions = vec![pb::RegionView {
        region: me.clone(),
        state: "ok".to_string(),
        is_self: true,
        checked_at_ms: own.checked_at_ms,
        status: Some(own),
        ..Default::default()
    }];
    for r in others {
        let mut row = pb::RegionView {
            region: r.name.clone(),
            ..Default::default()
        };
        match book.get(&r.name) {
            PeerState::Unknown => {
                row.state = "unknown".to_string();
                if r.coordinators.is_empty() {
                    row.error =
                        "not asked: its [[regions]] entry lists no coordinators".to_string();
                }
            }
            PeerState::Ok { status, at } => {
                row.state = "ok".to_string();
                row.checked_at_ms = epoch_ms(at);
                row.status = Some(status);
            }
            PeerState::Unreachable { since, error } => {
                row.state = "unreachable".to_string();
                row.unreachable_since_ms = epoch_ms(since);
                row.error = error;
            }
        }
        regions.push(row);
    }
    pb::RegionsResponse {
        region: me,
        regions,
    }
}

/// The regions this coordinator asks: every other region that lists coordinators.
pub fn peers_of(config: &Config) -> Vec<Region> {
    config
        .regions
        .iter()
        .filter(|r| r.name != config.coordinator.region && !r.coordinators.is_empty())
        .cloned()
        .collect()
}

/// Asks every peer region for its status until `stop`; then forgets them (book and metrics).
/// Runs while this coordinator leads (started and stopped with the drift poller).
pub async fn run(
    config: Arc<Config>,
    book: PeerBook,
    metrics: Metrics,
    events: RecentEvents,
    stop: CancellationToken,
) {
    let peers = peers_of(&config);
    if peers.is_empty() {
        return;
    }
    let c = &config.coordinator;
    let client = PeerClient::new(
        &c.region,
        c.auth.token.as_ref(),
        c.peer_tls_files(),
        c.peer_timeout,
    );
    for p in &peers {
        metrics.peer_up.with_label_values(&[&p.name]).set(0);
        metrics
            .peer_unreachable_seconds
            .with_label_values(&[&p.name])
            .set(0.0);
        metrics.peer_request_seconds.with_label_values(&[&p.name]);
    }
    tracing::info!(
        peers = ?peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        interval = %humantime::format_duration(c.peer_interval),
        timeout = %humantime::format_duration(c.peer_timeout),
        "asking the other regions for their status"
    );
    let watchers = peers.iter().map(|peer| {
        let span = tracing::info_span!("peer", region = %c.region, peer_region = %peer.name);
        watch(
            peer,
            &client,
            c.peer_interval,
            &book,
            &metrics,
            &events,
            &stop,
        )
        .instrument(span)
    });
    futures::future::join_all(watchers).await;
    book.clear();
    for p in &peers {
        let _ = metrics.peer_up.remove_label_values(&[&p.name]);
        let _ = metrics
            .peer_unreachable_seconds
            .remove_label_values(&[&p.name]);
        let _ = metrics.peer_request_seconds.remove_label_values(&[&p.name]);
    }
}

/// One region's loop: a request every `interval` (the first at once), its outcome recorded.
async fn watch(
    peer: &Region,
    client: &PeerClient,
    interval: Duration,
    book: &PeerBook,
    metrics: &Metrics,
    events: &RecentEvents,
    stop: &CancellationToken,
) {
    let name = peer.name.as_str();
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = client.ask(peer) => outcome,
        };
        metrics
            .peer_request_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        let now = SystemTime::now();
        let (before, after) = book.record(name, outcome, now);
        metrics
            .peer_up
            .with_label_values(&[name])
            .set(i64::from(matches!(after, PeerState::Ok { .. })));
        metrics
            .peer_unreachable_seconds
            .with_label_values(&[name])
            .set(after.unreachable_for(now).as_secs_f64());
        match (&before, &after) {
            (PeerState::Ok { .. } | PeerState::Unknown, PeerState::Unreachable { error, .. }) => {
                tracing::warn!(error = %error, "region does not answer: unreachable from now on");
            }
            (PeerState::Unreachable { since, .. }, PeerState::Ok { status, .. }) => {
                tracing::info!(
                    leader = %status.coordinator_id,
                    unreachable_for = %humantime::format_duration(Duration::from_secs(before.unreachable_for(now).as_secs())),
                    since = %humantime::format_rfc3339_seconds(*since),
                    "region answers again"
                );
            }
            (PeerState::Unknown, PeerState::Ok { status, .. }) => {
                tracing::info!(leader = %status.coordinator_id, "region answers");
            }
            (_, PeerState::Unreachable { error, .. }) => {
                tracing::debug!(error = %error, "region still does not answer");
            }
            _ => {}
        }
        if let PeerState::Unreachable { error, .. } = &after {
            events.record(
                Level::Warning,
                format!("region {name}"),
                format!(
                    "region {name} does not answer this coordinator's status requests: {error}"
                ),
            );
        }
    }
}

/// How this coordinator asks a peer: as itself (its region), with its admin token, over TLS
/// when the address is `https://`.
struct PeerClient {
    region: String,
    /// The admin token as a header, or why it cannot be one.
    token: Result<BearerToken, String>,
    tls: Option<PeerTlsConfig>,
    timeout: Duration,
}

/// Why one attempt at one address got no answer.
#[derive(Debug)]
enum Failure {
    /// No connection, or no answer in time: the next address may do better.
    Unreachable(String),
    /// The coordinator answered with an error; a standby's names its leader.
    Refused(tonic::Status),
}

impl Refusal for Failure {
    fn leader(&self) -> Option<String> {
        match self {
            Failure::Unreachable(_) => None,
            Failure::Refused(s) => s.leader(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(e) => f.write_str(e),
            Failure::Refused(s) => write!(f, "{:?}: {}", s.code(), s.message()),
        }
    }
}

/// An error and its causes, `: `-joined (tonic's transport errors say little on their own).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

impl PeerClient {
    fn new(
        region: &str,
        token: Option<&Secret>,
        tls: Option<PeerTlsConfig>,
        timeout: Duration,
    ) -> Self {
        PeerClient {
            region: region.to_string(),
            token: BearerToken::new(token.map(Secret::expose)).map_err(|e| e.to_string()),
            tls,
            timeout,
        }
    }

    /// The region's status from its active coordinator: each configured address in turn,
    /// following a standby to its leader, each attempt bounded by the timeout. The error names
    /// what every address said.
    async fn ask(&self, peer: &Region) -> Result<pb::RegionStatusResponse, String> {
        let mut route = Route::new(&peer.coordinators.join(",")).map_err(|e| e.to_string())?;
        let mut failures = Vec::new();
        for _ in 0..route.configured() {
            let answer = call_following_leader(
                &mut route,
                |addr| self.call(addr.to_string()),
                |standby, leader| tracing::debug!(%standby, %leader, "following the region's leader"),
            )
            .await;
            match answer {
                Ok(status) if status.region == peer.name => return Ok(status),
                Ok(status) => {
                    // A wrong address in the config: say so rather than show another region.
                    return Err(format!(
                        "{} answered for region {}, not {}: check [[regions]] coordinators",
                        route.current(),
                        lockstep_config::names::printable(&status.region),
                        peer.name
                    ));
                }
                Err(failure) => {
                    failures.push(format!("{}: {failure}", route.current()));
                    // Refused for a reason another address shares (token, certificate, an
                    // older version without PeerService): asking the others would only repeat it.
                    if let Failure::Refused(s) = &failure {
                        if s.code() != tonic::Code::Unavailable {
                            break;
                        }
                    }
                }
            }
            route.next_configured();
        }
        Err(failures.join("; "))
    }

    /// One RegionStatus call at `addr`, connecting included, within the timeout.
    async fn call(&self, addr: String) -> Result<pb::RegionStatusResponse, Failure> {
        let attempt = async {
            let token = self.token.clone().map_err(Failure::Unreachable)?;
            let tls = match (&self.tls, addr.starts_with("https://")) {
                (_, false) => ClientTls::default(),
                (Some(files), true) => ClientTls {
                    ca_file: Some(files.ca_file.clone()),
                    cert_file: files.cert_file.clone(),
                    key_file: files.key_file.clone(),
                    domain: None,
                },
                (None, true) => return Err(Failure::Unreachable(
                    "an https:// peer, and no CA to verify it: set [coordinator.peer_tls] ca_file"
                        .to_string(),
                )),
            };
            // The attempt as a whole ends at the timeout (below); tonic's own timeouts only
            // back it up, so a silent peer always fails the same way.
            let endpoint = tls
                .endpoint(&addr, self.timeout * 2)
                .map_err(|e| Failure::Unreachable(causes(&e)))?
                .connect_timeout(self.timeout * 2);
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| Failure::Unreachable(format!("cannot connect: {}", causes(&e))))?;
            pb::peer_service_client::PeerServiceClient::with_interceptor(channel, token)
                .region_status(pb::RegionStatusRequest {
                    from_region: self.region.clone(),
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(Failure::Refused)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Unreachable(format!(
                "no answer within {} (peer_timeout)",
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(region: &str) -> pb::RegionStatusResponse {
        pb::RegionStatusResponse {
            region: region.to_string(),
            coordinator_id: format!("{region}-1"),
            ..Default::default()
        }
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn unreachable_since_is_the_first_failure_after_the_last_answer() {
        let s = PeerState::Unknown;
        assert_eq!(s.name(), "unknown");
        // Never answered: unreachable since the first failure.
        let s = s.next(Err("refused".into()), at(0));
        assert_eq!(
            s,
            PeerState::Unreachable {
                since: at(0),
                error: "refused".into()
            }
        );
        // Failing on: the same since, the newest error.
        let s = s.next(Err("timed out".into()), at(10));
        assert_eq!(
            s,
            PeerState::Unreachable {
                since: at(0),
                error: "timed out".into()
            }
        );
        assert_eq!(s.unreachable_for(at(25)), Duration::from_secs(25));
        // An answer: ok, and the failures are forgotten.
        let s = s.next(Ok(answer("B")), at(30));
        assert_eq!(
            s,
            PeerState::Ok {
                status: answer("B"),
                at: at(30)
            }
        );
        assert_eq!(s.unreachable_for(at(40)), Duration::ZERO);
        // Failing again: since this failure, not the earlier ones.
        let s = s.next(Err("refused".into()), at(40));
        assert_eq!(s.unreachable_for(at(45)), Duration::from_secs(5));
        assert_eq!(s.name(), "unreachable");
    }

    #[test]
    fn the_book_records_and_forgets() {
        let book = PeerBook::default();
        assert_eq!(book.get("B"), PeerState::Unknown);
        let (before, after) = book.record("B", Err("refused".into()), at(0));
        assert_eq!((before.name(), after.name()), ("unknown", "unreachable"));
        let (before, after) = book.record("B", Ok(answer("B")), at(5));
        assert_eq!((before.name(), after.name()), ("unreachable", "ok"));
        assert_eq!(book.get("C"), PeerState::Unknown);
        book.clear();
        assert_eq!(book.get("B"), PeerState::Unknown);
    }

    #[test]
    fn figures_count_workers_tasks_lag_and_backlog() {
        let task = |phase: &str, progress: Option<pb::TaskProgress>| pb::TaskStatus {
            phase: phase.to_string(),
            progress,
            ..Default::default()
        };
        let partition = |high: i64, last: i64| pb::PartitionProgress {
            source_high_watermark: high,
            last_mirrored_source_offset: last,
            ..Default::default()
        };
        let status = pb::StatusResponse {
            coordinator_id: "eu-1".into(),
            region: "eu".into(),
            generation: 7,
            workers: vec![pb::WorkerStatus::default(), pb::WorkerStatus::default()],
            tasks: vec![
                task(
                    "assigned",
                    Some(pb::TaskProgress {
                        // 100 records (0..=99), 40 mirrored (0..=39): 60 behind; one
                        // partition caught up; one with nothing mirrored yet (-1): all 5.
                        partitions: vec![partition(100, 39), partition(50, 49), partition(5, -1)],
                        ..Default::default()
                    }),
                ),
                task(
                    "assigned",
                    Some(pb::TaskProgress {
                        objects: Some(pb::ObjectProgress {
                            objects_pending: 12,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                ),
                task("unassigned", None),
                task("paused", None),
            ],
            paused_flows: vec!["dumps".into()],
        };
        let f = figures(&status, at(0));
        assert_eq!(
            (
                f.region.as_str(),
                f.coordinator_id.as_str(),
                f.generation,
                f.workers_alive
            ),
            ("eu", "eu-1", 7, 2)
        );
        assert_eq!(
            (f.tasks_total, f.tasks_assigned, f.tasks_unassigned),
            (4, 2, 1)
        );
        assert_eq!((f.mirror_lag_records, f.object_backlog), (65, 12));
        assert_eq!(f.paused_flows, ["dumps"]);
        assert_eq!(f.checked_at_ms, epoch_ms(at(0)));
    }

    fn config() -> Config {
        let text = r#"
[coordinator]
region = "eu"
[[regions]]
name = "us"
coordinators = ["http://127.0.0.1:1"]
state = { service = "fs", root = "/tmp/us" }
[[regions]]
name = "eu"
coordinators = ["http://127.0.0.1:2"]
state = { service = "fs", root = "/tmp/eu" }
[[regions]]
name = "ap"
state = { service = "fs", root = "/tmp/ap" }
[[regions]]
name = "af"
coordinators = ["http://127.0.0.1:3"]
state = { service = "fs", root = "/tmp/af" }
"#;
        let mut c = lockstep_config::parse(text, "t.toml", None, &|_| None).expect("valid");
        c.select_region(None).expect("eu");
        c
    }

    #[test]
    fn the_view_puts_its_own_region_first_then_the_others_by_name() {
        let config = config();
        assert_eq!(
            peers_of(&config)
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["us", "af"],
            "every other region with coordinators"
        );
        let book = PeerBook::default();
        book.record("us", Ok(answer("us")), at(1));
        book.record("af", Err("refused".into()), at(2));
        let own = pb::RegionStatusResponse {
            checked_at_ms: epoch_ms(at(3)),
            ..answer("eu")
        };
        let v = view(own, &config, &book);
        assert_eq!(v.region, "eu");
        let rows: Vec<(&str, &str, bool)> = v
            .regions
            .iter()
            .map(|r| (r.region.as_str(), r.state.as_str(), r.is_self))
            .collect();
        assert_eq!(
            rows,
            [
                ("eu", "ok", true),
                ("af", "unreachable", false),
                ("ap", "unknown", false),
                ("us", "ok", false)
            ]
        );
        assert_eq!(v.regions[0].checked_at_ms, epoch_ms(at(3)));
        assert_eq!(v.regions[1].unreachable_since_ms, epoch_ms(at(2)));
        assert_eq!(v.regions[1].error, "refused");
        assert!(v.regions[1].status.is_none());
        assert!(v.regions[2].error.contains("lists no coordinators"));
        assert_eq!(v.regions[3].checked_at_ms, epoch_ms(at(1)));
        assert_eq!(
            v.regions[3]
                .status
                .as_ref()
                .map(|s| s.coordinator_id.as_str()),
            Some("us-1")
        );
    }

    fn region(coordinators: &[String]) -> Region {
        Region {
            name: "us".to_string(),
            coordinators: coordinators.to_vec(),
            state: lockstep_config::ObjectStore::fs("/tmp/us"),
        }
    }

    #[tokio::test]
    async fn a_hanging_and_a_refusing_address_fail_within_the_timeout() {
        // Accepts connections and never answers.
        let hanging = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hang = format!("http://{}", hanging.local_addr().expect("addr"));
        let keep = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = hanging.accept().await {
                open.push(conn);
            }
        });
        // Nothing listens.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        let timeout = Duration::from_millis(300);
        let client = PeerClient::new("eu", None, None, timeout);
        // Bounded: each address is tried once, each attempt ends at the timeout.
        let error = tokio::time::timeout(
            Duration::from_secs(60),
            client.ask(&region(&[hang.clone(), closed.clone()])),
        )
        .await
        .expect("the request ends on its own")
        .expect_err("nobody answers");
        assert!(
            error.contains(&format!("{hang}: no answer within 300ms"))
                && error.contains(&format!("{closed}: cannot connect")),
            "{error}"
        );
        keep.abort();
    }
}
