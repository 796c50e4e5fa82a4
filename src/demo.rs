//! `lockstep demo`: a coordinator and two workers in one process on a built-in config, on
//! loopback with free ports and a temporary state folder. It prints where to look and the
//! assignment as it settles, then shuts everything down cleanly.

use anyhow::{Context, Result};
use lockstep_proto as pb;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const DEMO_CONFIG: &str = include_str!("demo.toml");

pub async fn run(duration: Duration) -> Result<ExitCode> {
    let shutdown = crate::shutdown_on_signals();
    let state_dir = tempfile::tempdir().context("cannot create a temporary state folder")?;
    let text = DEMO_CONFIG.replace("@STATE_DIR@", &state_dir.path().to_string_lossy());
    let config = lockstep_config::parse(&text, "demo.toml (built in)", None, &|n| {
        std::env::var(n).ok()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (bound, coordinator) = lockstep_coordinator::start(config, shutdown.clone()).await?;
    println!(
        "lockstep demo: coordinator gRPC on {}, HTTP on {}",
        bound.grpc, bound.http
    );
    println!("  status:  http://{}/api/v1/status", bound.http);
    println!("  metrics: http://{}/metrics", bound.http);
    println!(
        "  running for {} (Ctrl-C stops earlier)\n",
        humantime::format_duration(duration)
    );

    let coordinator_task = tokio::spawn(coordinator);
    let workers = CancellationToken::new();
    let mut worker_tasks = Vec::new();
    for id in ["demo-worker-1", "demo-worker-2"] {
        let args = crate::WorkerArgs {
            coordinator: format!("http://{}", bound.grpc),
            id: Some(id.to_string()),
            capacity: 0,
            capabilities: Vec::new(),
            metrics_listen: None,
            stop_timeout: Duration::from_secs(10),
            tls: Default::default(),
        };
        worker_tasks.push(tokio::spawn(crate::run_worker(args, workers.clone())));
    }

    let mut client =
        pb::admin_service_client::AdminServiceClient::connect(format!("http://{}", bound.grpc))
            .await
            .context("cannot reach the demo coordinator")?;
    let started = Instant::now();
    let mut last_generation = u64::MAX;
    while started.elapsed() < duration && !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let status = client.status(pb::StatusRequest {}).await?.into_inner();
        if status.generation != last_generation {
            last_generation = status.generation;
            println!(
                "[{:>5.1}s] generation {}:",
                started.elapsed().as_secs_f64(),
                status.generation
            );
            for w in &status.workers {
                println!("  {:<14} {}", w.worker_id, w.tasks.join(" "));
            }
            let unassigned: Vec<&str> = status
                .tasks
                .iter()
                .filter(|t| t.worker_id.is_empty())
                .map(|t| t.task_id.as_str())
                .collect();
            if !unassigned.is_empty() {
                println!("  unassigned     {}", unassigned.join(" "));
            }
        }
    }

    println!("\nstopping workers, then the coordinator");
    workers.cancel();
    for w in worker_tasks {
        w.await.context("worker task panicked")??;
    }
    shutdown.cancel();
    coordinator_task
        .await
        .context("coordinator task panicked")??;
    println!("demo finished");
    Ok(ExitCode::SUCCESS)
}
