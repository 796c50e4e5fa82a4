//! lockstep-sim: stand-ins for local runs and tests, used by tests and `lockstep demo` only
//! (the coordinator and workers never depend on it).
//!
//! - [`Emulator`]: a Druid Router look-alike on an HTTP port that really ingests: Kafka
//!   supervisors consume their topic into per-datasource storage, and SQL, supervisor and
//!   coordinator endpoints answer from it with Druid's documented shapes (druid-api.md);
//!   [`Faults`] switches break it on purpose.
//! - [`loadgen`]: a deterministic JSON row generator that produces to Kafka.

pub mod error;
pub mod faults;
mod http;
pub mod loadgen;
pub mod sql;
pub mod store;
pub mod supervisor;
pub mod time;

pub use error::{DruidError, ErrorShape, SimError};
pub use faults::{BasicAuth, ErrorMode, FaultState, Faults};
pub use time::Period;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How to start an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free port ([`Emulator::addr`] tells which).
    pub listen: SocketAddr,
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
            auth: None,
            segment_granularity: Period { millis: 3_600_000 },
            supervisors: Vec::new(),
            error_shape: ErrorShape::Modern,
            offsets_refresh: Duration::from_millis(500),
            version: "31.0.0-lockstep-sim".to_string(),
        }
    }
}

/// A running emulator. Dropping it stops the server and the consumers.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    faults: Faults,
    store: Arc<store::Store>,
    supervisors: Arc<supervisor::Supervisors>,
    cancel: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Binds, starts the configured supervisors and serves until shutdown or drop.
    pub async fn start(cfg: EmulatorConfig) -> Result<Emulator, SimError> {
        let store = Arc::new(store::Store::new(cfg.segment_granularity));
        let faults = Faults::new(store.clone(), cfg.auth.clone(), cfg.error_shape);
        let supervisors = Arc::new(supervisor::Supervisors::new(
            store.clone(),
            faults.clone(),
            cfg.offsets_refresh,
        ));
        for raw in &cfg.supervisors {
            supervisors.upsert(supervisor::KafkaSpec::from_json(raw)?);
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let app = http::App {
            store: store.clone(),
            supervisors: supervisors.clone(),
            faults: faults.clone(),
            version: cfg.version.clone(),
        };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let router = http::router(app);
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        tracing::info!(%addr, "Druid emulator listening");
        Ok(Emulator {
            addr,
            faults,
            store,
            supervisors,
            cancel,
            server: Some(server),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` — the "Router URL" to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

    /// Stops serving and consuming, and waits for the server to finish.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(s) = self.server.take() {
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
