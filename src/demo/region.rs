//! A region the demo runs: its control plane (one coordinator, selected for the region from
//! the demo's config, with the region's own state store) and its workers, all in-process.
//! A region can be stopped (the outage: its workers leave, then its coordinator stops) and
//! started again on the same addresses, the same state store, and the same worker ids and
//! metrics handles, so that it resumes where it stopped and its counters carry on.
//!
//! Every task started here is joined by [`RegionPlane::stop_workers`] and
//! [`RegionPlane::stop_coordinator`], or by the stop an outage spawns, which the restart or
//! those two join in turn: nothing is left running.

use anyhow::{Context, Result};
use lockstep_config::Config;
use lockstep_coordinator::server::Bound;
use lockstep_coordinator::CoordinatorError;
use lockstep_workers::metrics::WorkerMetrics;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Something running on its own stop token.
struct Running<T> {
    stop: CancellationToken,
    task: JoinHandle<T>,
}

/// A worker the demo runs: its id, where its metrics are served, its metrics handle (kept
/// across restarts), and its task while it runs.
pub struct DemoWorker {
    pub id: String,
    pub metrics_addr: SocketAddr,
    pub metrics: WorkerMetrics,
    running: Option<Running<Result<()>>>,
}

/// One region's control plane and workers.
pub struct RegionPlane {
    pub name: &'static str,
    /// The site the region feeds.
    pub site: &'static str,
    /// The config selected for the region, with the addresses as bound: a restart binds the
    /// same ones.
    config: Config,
    pub bound: Bound,
    coordinator: Option<Running<Result<(), CoordinatorError>>>,
    pub workers: Vec<DemoWorker>,
    /// The outage's stop, until it is joined.
    stopping: Option<JoinHandle<Result<()>>>,
}

/// Tasks per worker: each region has 3 (2 Kafka slots and 1 objects shard into its site).
const CAPACITY: u32 = 3;
/// A restart binds ports that were closed a moment ago: tried this often, a second apart.
const BIND_ATTEMPTS: u32 = 5;

impl RegionPlane {
    /// Starts the region's coordinator on `config` (already selected for the region); no
    /// workers yet.
    pub async fn start(
        name: &'static str,
        site: &'static str,
        mut config: Config,
    ) -> Result<RegionPlane, CoordinatorError> {
        let (bound, coordinator) = spawn_coordinator(config.clone()).await?;
        config.coordinator.grpc_listen = bound.grpc;
        config.coordinator.http_listen = bound.http;
        Ok(RegionPlane {
            name,
            site,
            config,
            bound,
            coordinator: Some(coordinator),
            workers: Vec::new(),
            stopping: None,
        })
    }

    /// Starts a worker of this region (`region` set: another region's coordinator would
    /// refuse it) with its metrics on a free loopback port.
    pub async fn add_worker(&mut self, id: &str) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen on a loopback port for worker metrics")?;
        let mut worker = DemoWorker {
            id: id.to_string(),
            metrics_addr: listener.local_addr()?,
            // Its series carry `region`, as a worker started with --region does.
            metrics: WorkerMetrics::for_region(Some(self.name)),
            running: None,
        };
        worker.running = Some(self.spawn_worker(&worker, listener));
        self.workers.push(worker);
        Ok(())
    }

    fn spawn_worker(
        &self,
        worker: &DemoWorker,
        listener: tokio::net::TcpListener,
    ) -> Running<Result<()>> {
        let stop = CancellationToken::new();
        let args = crate::WorkerArgs {
            coordinator: format!("http://{}", self.bound.grpc),
            id: Some(worker.id.clone()),
            region: Some(self.name.to_string()),
            capacity: CAPACITY,
            capabilities: Vec::new(),
            metrics_listen: Some(worker.metrics_addr),
            stop_timeout: Duration::from_secs(10),
            tls: Default::default(),
        };
        let task = tokio::spawn(crate::run_worker_with(
            args,
            worker.metrics.clone(),
            Some(listener),
            stop.clone(),
        ));
        Running { stop, task }
    }

    /// A worker that should be running but whose task has ended.
    pub fn ended_worker(&self) -> Option<&str> {
        self.workers
            .iter()
            .find(|w| w.running.as_ref().is_some_and(|r| r.task.is_finished()))
            .map(|w| w.id.as_str())
    }

    /// The outage: stops the workers (they leave), then the coordinator, in a task of its
    /// own; returns at once. [`RegionPlane::restart`] joins it.
    pub fn go_dark(&mut self) {
        let workers: Vec<(String, Running<Result<()>>)> = self
            .workers
            .iter_mut()
            .filter_map(|w| w.running.take().map(|r| (w.id.clone(), r)))
            .collect();
        let coordinator = self.coordinator.take();
        let region = self.name;
        self.stopping = Some(tokio::spawn(async move {
            let mut failure = None;
            for (id, w) in workers {
                if let Err(e) = join_worker(&id, w).await {
                    failure.get_or_insert(e);
                }
            }
            if let Some(c) = coordinator {
                if let Err(e) = join_coordinator(region, c).await {
                    failure.get_or_insert(e);
                }
            }
            failure.map_or(Ok(()), Err)
        }));
    }

    /// The region's return: joins the outage's stop, then starts the coordinator and the
    /// workers again on the same addresses (the state store and the targets say where to
    /// resume).
    pub async fn restart(&mut self) -> Result<()> {
        self.join_stopping().await?;
        let mut attempt = 1;
        let (_, coordinator) = loop {
            match spawn_coordinator(self.config.clone()).await {
                Ok(started) => break started,
                Err(CoordinatorError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse
                        && attempt < BIND_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "region {}'s coordinator cannot start again",
                        self.name
                    )))
                }
            }
        };
        self.coordinator = Some(coordinator);
        for i in 0..self.workers.len() {
            let listener = bind_again(self.workers[i].metrics_addr).await?;
            let running = self.spawn_worker(&self.workers[i], listener);
            self.workers[i].running = Some(running);
        }
        Ok(())
    }

    /// Stops and joins the workers (they leave) and the outage's stop if one is under way.
    pub async fn stop_workers(&mut self) -> Result<()> {
        let mut failure = self.join_stopping().await.err();
        for w in &mut self.workers {
            if let Some(r) = w.running.take() {
                if let Err(e) = join_worker(&w.id, r).await {
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Stops and joins the coordinator.
    pub async fn stop_coordinator(&mut self) -> Result<()> {
        match self.coordinator.take() {
            Some(c) => join_coordinator(self.name, c).await,
            None => Ok(()),
        }
    }

    async fn join_stopping(&mut self) -> Result<()> {
        match self.stopping.take() {
            Some(task) => task
                .await
                .map_err(|e| anyhow::anyhow!("region {}'s stop panicked: {e}", self.name))?,
            None => Ok(()),
        }
    }
}

/// Listens on `addr` again (a worker's metrics port, closed a moment ago).
async fn bind_again(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let mut attempt = 1;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot listen on {addr} again for worker metrics")))
            }
        }
    }
}

async fn spawn_coordinator(
    config: Config,
) -> Result<(Bound, Running<Result<(), CoordinatorError>>), CoordinatorError> {
    let stop = CancellationToken::new();
    let (bound, done) = lockstep_coordinator::start(config, stop.clone()).await?;
    let task = tokio::spawn(done);
    Ok((bound, Running { stop, task }))
}

async fn join_worker(id: &str, w: Running<Result<()>>) -> Result<()> {
    w.stop.cancel();
    match w.task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.context(format!("worker {id} failed"))),
        Err(e) => Err(anyhow::anyhow!("worker {id} panicked: {e}")),
    }
}

async fn join_coordinator(region: &str, c: Running<Result<(), CoordinatorError>>) -> Result<()> {
    c.stop.cancel();
    match c.task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            Err(anyhow::Error::new(e).context(format!("region {region}'s coordinator failed")))
        }
        Err(e) => Err(anyhow::anyhow!(
            "region {region}'s coordinator panicked: {e}"
        )),
    }
}
