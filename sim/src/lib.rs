//! lockstep-sim: stand-ins for local runs and tests, used by tests and `lockstep demo` only
//! (the coordinator and workers never depend on it).
//!
//! - [`Emulator`]: a Druid cluster look-alike that really ingests: Kafka supervisors consume
//!   their topic into per-datasource storage, and SQL, supervisor and coordinator endpoints
//!   answer from it with Druid's shapes (druid-api.md). It listens on two ports: a Router
//!   (SQL, and the management APIs while its management proxy is on) and an
//!   Overlord+Coordinator (the management APIs always); [`Faults`] switches break it on
//!   purpose.
//! - [`loadgen`]: a deterministic JSON row generator that produces to Kafka.

pub mod error;
pub mod faults;
mod http;
pub mod input;
pub mod loadgen;
pub mod sql;
pub mod store;
pub mod supervisor;
pub mod time;
pub mod transform;

pub use error::{DruidError, ErrorShape, SimError, SqlPos};
pub use faults::{BasicAuth, ErrorMode, FaultState, Faults};
pub use time::Period;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How to start an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where the Router listens; port 0 picks a free port ([`Emulator::addr`] tells which).
    pub listen: SocketAddr,
    /// Where the Overlord+Coordinator listens (default a free loopback port;
    /// [`Emulator::overlord_addr`] tells which).
    pub overlord_listen: SocketAddr,
    /// Whether the Router proxies `/druid/indexer/*` and `/druid/coordinator/*` to the
    /// Overlord and Coordinator (`druid.router.managementProxy.enabled`). Druid's default is
    /// off; the emulator's is on, so a Router URL alone reaches everything. Can be changed
    /// later via faults.
    pub management_proxy: bool,
    /// Basic-auth credentials to demand (None: open). Can be changed later via faults.
    pub auth: Option<BasicAuth>,
    /// Segment granularity for datasources whose spec names none (default one hour).
    pub segment_granularity: Period,
    /// Kafka supervisor specs (as posted to `/druid/indexer/v1/supervisor`) to start with.
    pub supervisors: Vec<serde_json::Value>,
    /// Error body shape at start (default the newer `druidException`).
    pub error_shape: ErrorShape,
    /// How often supervisors read the topic's high watermarks (default 500 ms).
    pub offsets_refresh: Duration,
    /// The Druid version `/status` reports.
    pub version: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            overlord_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            management_proxy: true,
            auth: None,
            segment_granularity: Period { millis: 3_600_000 },
            supervisors: Vec::new(),
            error_shape: ErrorShape::Modern,
            offsets_refresh: Duration::from_millis(500),
            version: "31.0.0-lockstep-sim".to_string(),
        }
    }
}

/// A running emulator. Dropping it stops the servers and the consumers.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    overlord_addr: SocketAddr,
    faults: Faults,
    store: Arc<store::Store>,
    supervisors: Arc<supervisor::Supervisors>,
    cancel: CancellationToken,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds a listener and tells its address.
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), SimError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Serves `router` on `listener` until `stop` is cancelled.
fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let r = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, server = what, "emulator server stopped");
        }
    })
}

impl Emulator {
    /// Binds, starts the configured supervisors and serves until shutdown or drop.
    pub async fn start(cfg: EmulatorConfig) -> Result<Emulator, SimError> {
        let store = Arc::new(store::Store::new(cfg.segment_granularity));
        let faults = Faults::new(
            store.clone(),
            cfg.auth.clone(),
            cfg.error_shape,
            cfg.management_proxy,
        );
        let supervisors = Arc::new(supervisor::Supervisors::new(
            store.clone(),
            faults.clone(),
            cfg.offsets_refresh,
        ));
        // Bind (and read every spec) before any consumer starts, so a failed start leaves
        // nothing running.
        let (listener, addr) = bind(cfg.listen).await?;
        let (overlord_listener, overlord_addr) = bind(cfg.overlord_listen).await?;
        let specs = cfg
            .supervisors
            .iter()
            .map(supervisor::KafkaSpec::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        for spec in specs {
            supervisors.upsert(spec);
        }
        let app = http::App {
            store: store.clone(),
            supervisors: supervisors.clone(),
            faults: faults.clone(),
            version: cfg.version.clone(),
            host: addr.to_string(),
        };
        let cancel = CancellationToken::new();
        let servers = vec![
            serve(
                listener,
                http::router_port(app.clone()),
                cancel.clone(),
                "router",
            ),
            serve(
                overlord_listener,
                http::overlord_port(app),
                cancel.clone(),
                "overlord",
            ),
        ];
        tracing::info!(%addr, %overlord_addr, "Druid emulator listening (router, overlord)");
        Ok(Emulator {
            addr,
            overlord_addr,
            faults,
            store,
            supervisors,
            cancel,
            servers,
        })
    }

    /// The Router's bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` — the "Router URL" to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Overlord+Coordinator's bound address.
    pub fn overlord_addr(&self) -> SocketAddr {
        self.overlord_addr
    }

    /// `http://ADDR` of the Overlord+Coordinator: the supervisor and coordinator APIs,
    /// whatever the Router's management proxy switch says.
    pub fn overlord_url(&self) -> String {
        format!("http://{}", self.overlord_addr)
    }

    /// The fault switches.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Creates or updates a supervisor, as `POST /druid/indexer/v1/supervisor` does.
    pub fn submit_supervisor(&self, spec: &serde_json::Value) -> Result<String, SimError> {
        Ok(self
            .supervisors
            .upsert(supervisor::KafkaSpec::from_json(spec)?))
    }

    /// The supervisor status document (`GET .../{id}/status`), if the supervisor exists.
    pub fn supervisor_status(&self, id: &str) -> Option<serde_json::Value> {
        self.supervisors.get(id).map(|s| s.status())
    }

    /// Total stored rows of a datasource (0 if it does not exist).
    pub fn row_count(&self, datasource: &str) -> u64 {
        self.store
            .with_datasource(datasource, |d| d.total_rows)
            .unwrap_or(0)
    }

    /// Stops serving and consuming, and waits for the servers to finish.
    pub async fn shutdown(mut self) {
        self.stop();
        for s in std::mem::take(&mut self.servers) {
            let _ = s.await;
        }
    }

    fn stop(&self) {
        self.cancel.cancel();
        self.supervisors.shutdown();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}
