//! Fault switches for tests and demos: drop rows in an interval, pause ingestion, unload a
//! datasource's segments, fail or stall every API request, turn basic auth on or off, pick the
//! error body shape, and switch the Router's management proxy.
//!
//! [`Faults`] is a cheap, cloneable handle; the HTTP layer reads it on every request and the
//! `/sim/faults/...` admin endpoints (see `http.rs`) flip it from another process.

use crate::error::ErrorShape;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How failed requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// HTTP 500 with a Druid error body (in the current [`ErrorShape`]).
    Http500,
    /// HTTP 502 with an HTML page, as a proxy in front of the Router would send.
    Html502,
    /// HTTP 504, a query timeout, in the current [`ErrorShape`]: `druidException` with category
    /// TIMEOUT, the legacy "Query timeout" body, or the hybrid `legacyQueryException` wrapper
    /// (see `DruidError::timeout`).
    Timeout,
    /// HTTP 503 with an empty body, as a load balancer answers when no backend is up.
    Empty503,
}

/// Basic-auth credentials the emulator demands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

/// The state of every switch, as `GET /sim/faults` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultState {
    /// Requests fail this way while set.
    pub errors: Option<ErrorMode>,
    /// How many more requests fail (None: all until cleared).
    pub errors_remaining: Option<u64>,
    /// Every API request waits this long first.
    pub stall_millis: u64,
    pub error_shape: ErrorShape,
    /// Basic auth required when set (the password is shown: this is a test stand-in).
    pub auth: Option<BasicAuth>,
    /// Supervisors whose ingestion is paused (they keep reporting RUNNING, lag grows).
    pub paused: BTreeSet<String>,
    /// Active drop intervals: (datasource, start ISO, end ISO).
    pub drops: Vec<(String, String, String)>,
    /// Datasources whose segments no Historical serves (published, not queryable).
    pub unloaded: BTreeSet<String>,
    /// Whether the Router port proxies `/druid/indexer/*` and `/druid/coordinator/*`
    /// (`druid.router.managementProxy.enabled`). A setting: `clear` keeps it.
    pub management_proxy: bool,
}

/// Handle on the fault switches of one emulator.
#[derive(Debug, Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    store: Arc<Store>,
}

impl Faults {
    pub(crate) fn new(
        store: Arc<Store>,
        auth: Option<BasicAuth>,
        shape: ErrorShape,
        management_proxy: bool,
    ) -> Faults {
        Faults {
            state: Arc::new(Mutex::new(FaultState {
                auth,
                error_shape: shape,
                management_proxy,
                ..FaultState::default()
            })),
            store,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the stored rows of `datasource` in `[start_ms, end_ms)` and keeps dropping
    /// rows ingested into that interval later. Returns the number of rows removed now.
    pub fn drop_rows(&self, datasource: &str, start_ms: i64, end_ms: i64) -> u64 {
        self.store.drop_interval(datasource, start_ms, end_ms)
    }

    /// Stops ingestion of a supervisor without telling anyone: it keeps reporting RUNNING,
    /// latest offsets keep moving and lag grows.
    pub fn pause_ingestion(&self, supervisor: &str) {
        self.lock().paused.insert(supervisor.to_string());
    }

    /// Ends [`Faults::pause_ingestion`].
    pub fn resume_ingestion(&self, supervisor: &str) {
        self.lock().paused.remove(supervisor);
    }

    pub fn is_paused(&self, supervisor: &str) -> bool {
        self.lock().paused.contains(supervisor)
    }

    /// Historicals down, or segments not loaded: the datasource's segments stay published
    /// (`sys.segments` lists them with `is_available = 0`, the Coordinator's metadata API
    /// lists them) but no server serves them, so the Broker does not know the table and SQL
    /// over it answers "Object 'ds' not found" (druid-api.md, "Unknown table").
    pub fn unload(&self, datasource: &str) {
        self.lock().unloaded.insert(datasource.to_string());
    }

    /// Ends [`Faults::unload`]: the segments are served again.
    pub fn reload(&self, datasource: &str) {
        self.lock().unloaded.remove(datasource);
    }

    pub fn is_unloaded(&self, datasource: &str) -> bool {
        self.lock().unloaded.contains(datasource)
    }

    /// The datasources currently unloaded.
    pub fn unloaded(&self) -> BTreeSet<String> {
        self.lock().unloaded.clone()
    }

    /// Turns the Router's management proxy on or off
    /// (`druid.router.managementProxy.enabled`; off by default in Druid).
    pub fn set_management_proxy(&self, enabled: bool) {
        self.lock().management_proxy = enabled;
    }

    pub fn management_proxy(&self) -> bool {
        self.lock().management_proxy
    }

    /// Fails the next `count` API requests (all, when None) in `mode`.
    pub fn fail_requests(&self, mode: ErrorMode, count: Option<u64>) {
        let mut s = self.lock();
        s.errors = Some(mode);
        s.errors_remaining = count;
    }

    /// Ends [`Faults::fail_requests`].
    pub fn clear_errors(&self) {
        let mut s = self.lock();
        s.errors = None;
        s.errors_remaining = None;
    }

    /// Delays every API request by `d` (zero ends the stall).
    pub fn stall(&self, d: Duration) {
        self.lock().stall_millis = d.as_millis().min(u128::from(u64::MAX)) as u64;
    }

    /// Requires these basic-auth credentials (None: no auth).
    pub fn set_auth(&self, auth: Option<BasicAuth>) {
        self.lock().auth = auth;
    }

    /// Picks the error body shape.
    pub fn set_error_shape(&self, shape: ErrorShape) {
        self.lock().error_shape = shape;
    }

    pub fn error_shape(&self) -> ErrorShape {
        self.lock().error_shape
    }

    /// Ends every fault: errors, stall, pauses, unloads, drop intervals (removed rows stay
    /// removed). Auth, error shape and the management proxy are settings, not faults, and stay.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.errors = None;
        s.errors_remaining = None;
        s.stall_millis = 0;
        s.paused.clear();
        s.unloaded.clear();
        drop(s);
        self.store.clear_drops();
    }

    /// A copy of every switch.
    pub fn snapshot(&self) -> FaultState {
        let mut s = self.lock().clone();
        let mut drops: Vec<(String, String, String)> = self
            .store
            .drops()
            .into_iter()
            .flat_map(|(ds, v)| {
                v.into_iter()
                    .map(move |(a, b)| (ds.clone(), crate::time::iso(a), crate::time::iso(b)))
            })
            .collect();
        drops.sort();
        s.drops = drops;
        s
    }

    /// For the HTTP layer: the stall to apply, and whether this request fails (consuming
    /// one of the remaining failures).
    pub(crate) fn on_request(&self) -> (Duration, Option<ErrorMode>) {
        let mut s = self.lock();
        let stall = Duration::from_millis(s.stall_millis);
        let fail = match (s.errors, s.errors_remaining) {
            (None, _) => None,
            (Some(m), None) => Some(m),
            (Some(m), Some(n)) => {
                if n <= 1 {
                    s.errors = None;
                    s.errors_remaining = None;
                } else {
                    s.errors_remaining = Some(n - 1);
                }
                (n > 0).then_some(m)
            }
        };
        (stall, fail)
    }

    pub(crate) fn auth(&self) -> Option<BasicAuth> {
        self.lock().auth.clone()
    }
}
