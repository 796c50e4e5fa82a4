//! The running coordinator: takes part in the leader election, serves gRPC (WorkerService,
//! AdminService) and HTTP, and ticks the lease clock, until the shutdown token fires.
//!
//! It builds the [`Shared`] state (see [`crate::shared`] for how a call runs), starts the
//! election ([`crate::leadership`]), the gRPC ([`crate::grpc`]) and HTTP ([`crate::http`])
//! servers and the tick loop, and on shutdown writes the last state and hands over the lease.
//! A standby holds an empty control plane and refuses every call with the leader's address.

use crate::admission::Admission;
use crate::auth::AdminAuth;
use crate::control::Timing;
use crate::election::{Elector, Identity, Leadership};
use crate::events::RecentEvents;
use crate::metrics::Metrics;
use crate::shared::Writes;
use crate::shared::{timing, Shared};
use crate::state::{StateError, StateStore};
use crate::tls::{TlsError, TlsFiles};
use crate::{grpc, http, tasks};
use lockstep_config::{Config, CoordinatorConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} server failed: {message}")]
    Serve { what: &'static str, message: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("coordinator.grpc_listen {addr} is not a loopback address, and gRPC has no TLS: worker ids would be unauthenticated and task specs (with Kafka and object-store credentials) would cross the network in plaintext. Set [coordinator.tls] with client_ca_file (recommended), listen on 127.0.0.1, or set coordinator.trusted_network = true if the network is private")]
    Plaintext { addr: SocketAddr },
}

/// The address a standby names for this coordinator: `advertise_*` from the config, else the
/// listen address as bound (the host name when listening on every interface).
fn advertised(configured: &Option<String>, bound: SocketAddr, tls: bool, host: &str) -> String {
    if let Some(a) = configured {
        return a.clone();
    }
    let scheme = if tls { "https" } else { "http" };
    if bound.ip().is_unspecified() {
        format!("{scheme}://{host}:{}", bound.port())
    } else {
        format!("{scheme}://{bound}")
    }
}

/// Where a started coordinator listens (the ports may have been 0 in the config).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// Starts the coordinator and returns once it is listening; the returned future finishes
/// when `shutdown` fires and everything has stopped.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<
    (
        Bound,
        impl std::future::Future<Output = Result<(), CoordinatorError>>,
    ),
    CoordinatorError,
> {
    let config = Arc::new(config);
    let c = &config.coordinator;
    let store = StateStore::new(&c.state)?;
    let metrics = Metrics::for_region(&c.region);
    let timing = timing(c);
    tracing::info!(
        tasks = tasks::derive(&config).len(),
        flows = config.flows.len(),
        store = %store.cas().describe(),
        "derived tasks"
    );
    let hostname = hostname();
    plaintext_check(c)?;
    let tls = match &c.tls {
        Some(files) => {
            let files = TlsFiles::load(files, metrics.clone())?;
            tracing::info!(mutual = files.mutual(), "gRPC over TLS");
            Some(Arc::new(files))
        }
        None => None,
    };

    let grpc_listener = tokio::net::TcpListener::bind(c.grpc_listen)
        .await
        .map_err(|source| CoordinatorError::Bind {
            what: "gRPC",
            addr: c.grpc_listen,
            source,
        })?;
    let http_listener = tokio::net::TcpListener::bind(c.http_listen)
        .await
        .map_err(|source| CoordinatorError::Bind {
            what: "HTTP",
            addr: c.http_listen,
            source,
        })?;
    let bound = Bound {
        grpc: grpc_listener.local_addr().unwrap_or(c.grpc_listen),
        http: http_listener.local_addr().unwrap_or(c.http_listen),
    };
    let coordinator_id =
        c.id.clone()
            .unwrap_or_else(|| format!("{}-{hostname}", c.region));
    let identity = Identity::new(
        coordinator_id.clone(),
        advertised(&c.advertise_grpc, bound.grpc, tls.is_some(), &hostname),
        advertised(&c.advertise_http, bound.http, false, &hostname),
    );
    let mut elector = Elector::new(store.cas().clone(), identity.clone(), c.election)
        .map_err(StateError::from)?;
    let shared = Arc::new(Shared {
        control: Mutex::new(crate::leadership::placeholder(&config)),
        store,
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
        coordinator_id,
        region: c.region.clone(),
        drift: Default::default(),
        peers: Default::default(),
        auth: AdminAuth::new(&c.auth, metrics.clone()),
        identities: crate::identity::Identities::new(c.tls.as_ref()),
        admission: Admission::new(
            c.limits.heartbeat_queue,
            c.heartbeat_interval,
            metrics.clone(),
        ),
        limits: c.limits.clone(),
        leadership: Leadership::new(identity),
        config: config.clone(),
        events: RecentEvents::new(),
        started: std::time::SystemTime::now(),
        state_health: Default::default(),
        writes: Writes::default(),
    });
    if shared.auth.is_open() {
        tracing::warn!("no admin token ([coordinator.auth].token): admin calls and /api/* are open to anyone who reaches the ports");
    }
    tracing::info!(grpc = %bound.grpc, http = %bound.http, id = %shared.coordinator_id, advertise_grpc = %shared.leadership.identity().grpc, advertise_http = %shared.leadership.identity().http, "coordinator listening");
    // Leader or standby before anyone is told we are ready.
    let active = crate::leadership::first_round(&shared, &mut elector, &shutdown).await?;

    let grpc_task = tokio::spawn(grpc::serve(
        grpc_listener,
        shared.clone(),
        tls,
        shutdown.clone(),
    ));
    let http_task = tokio::spawn(http::serve(http_listener, shared.clone(), shutdown.clone()));
    let tick_task = tokio::spawn(tick_loop(shared.clone(), timing, shutdown.clone()));
    let election_stop = CancellationToken::new();
    let election_task = tokio::spawn(crate::leadership::run(
        shared.clone(),
        elector,
        active,
        election_stop.clone(),
        shutdown.clone(),
    ));
    shared.ready.store(true, Ordering::SeqCst);

    let done = async move {
        let (g, h, t) = tokio::join!(grpc_task, http_task, tick_task);
        // The servers have drained; only now stop renewing the lease.
        election_stop.cancel();
        let e = election_task.await;
        let joined =
            |what: &'static str, r: Result<Result<(), String>, tokio::task::JoinError>| match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(CoordinatorError::Serve { what, message }),
                Err(e) => Err(CoordinatorError::Serve {
                    what,
                    message: e.to_string(),
                }),
            };
        // Hand over first, whatever else failed: the last state, then the released lease
        // (standbys see it at their next read).
        let written = match e {
            Ok(mut elector) if shared.leadership.is_leading(Instant::now()) => {
                let point = {
                    let mut control = shared.control.lock().await;
                    control.mark_dirty();
                    shared.stage(&mut control)
                };
                let written = shared.persist_through(point).await;
                elector.release().await;
                written
            }
            Ok(mut elector) => {
                elector.abandon();
                Ok(())
            }
            Err(e) => {
                return Err(CoordinatorError::Serve {
                    what: "election",
                    message: e.to_string(),
                })
            }
        };
        joined("gRPC", g)?;
        joined("HTTP", h)?;
        joined("tick", t.map(|()| Ok(())))?;
        written?;
        tracing::info!("coordinator stopped");
        Ok(())
    };
    Ok((bound, done))
}

async fn tick_loop(shared: Arc<Shared>, timing: Timing, shutdown: CancellationToken) {
    let period = (timing.heartbeat_interval / 4)
        .clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {
                let point = {
                    let mut control = shared.control.lock().await;
                    let now = Instant::now();
                    if !shared.leadership.is_leading(now) {
                        continue;
                    }
                    control.tick(now);
                    shared.stage(&mut control)
                };
                // A failed write is logged and retried on the next tick.
                let _ = shared.persist_through(point).await;
            }
        }
    }
}

/// Refuses plaintext gRPC on a non-loopback address unless the network is declared trusted,
/// and says loudly what is not authenticated whenever client certificates are not required.
fn plaintext_check(c: &CoordinatorConfig) -> Result<(), CoordinatorError> {
    match &c.tls {
        None if !c.grpc_listen.ip().is_loopback() && !c.trusted_network => {
            Err(CoordinatorError::Plaintext {
                addr: c.grpc_listen,
            })
        }
        None => {
            tracing::warn!(
                grpc = %c.grpc_listen,
                trusted_network = c.trusted_network,
                "gRPC WITHOUT TLS: anyone who reaches this port can join, heartbeat or leave as any worker id and receives task specs with Kafka and object-store credentials in plaintext; set [coordinator.tls] with client_ca_file"
            );
            Ok(())
        }
        Some(t) if t.client_ca_file.is_none() => {
            tracing::warn!(
                "gRPC over TLS WITHOUT client certificates: worker ids are not authenticated (any client can act as any worker); set coordinator.tls.client_ca_file"
            );
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// The machine's host name, for ids and status; "unknown" when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}
