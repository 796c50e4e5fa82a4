//! `lockstep-sim`: run the Druid emulator or the load generator by hand.
//!
//! ```sh
//! lockstep-sim serve --listen 127.0.0.1:8888 --overlord-listen 127.0.0.1:8090 \
//!     --supervisor clicks.json --no-management-proxy --error-shape hybrid
//! lockstep-sim load --bootstrap 127.0.0.1:9092 --topic clicks --rows 10000 \
//!     --start 2026-11-23T00:00:00Z --end 2026-11-24T00:00:00Z
//! ```

use anyhow::Context;
use clap::{Parser, Subcommand};
use lockstep_sim::loadgen::{self, LoadSpec};
use lockstep_sim::{BasicAuth, Emulator, EmulatorConfig, ErrorShape, Period};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "lockstep-sim",
    about = "Druid API emulator that really ingests, and a load generator"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the Druid emulator until Ctrl-C. Prints the Router URL, then the
    /// Overlord+Coordinator URL, one per line.
    Serve {
        /// The Router (SQL; the management APIs while the management proxy is on).
        #[arg(long, default_value = "127.0.0.1:8888")]
        listen: SocketAddr,
        /// The Overlord+Coordinator (supervisor and coordinator APIs, always).
        #[arg(long, default_value = "127.0.0.1:8090")]
        overlord_listen: SocketAddr,
        /// Start with the Router's management proxy off, as a default Druid Router
        /// (`druid.router.managementProxy.enabled=false`): `/druid/indexer/*` and
        /// `/druid/coordinator/*` answer 404 at the Router. Switch at runtime with
        /// `POST /sim/faults/management-proxy {"enabled": bool}`.
        #[arg(long)]
        no_management_proxy: bool,
        /// Basic-auth user (with --password).
        #[arg(long, requires = "password")]
        user: Option<String>,
        #[arg(long, env = "LOCKSTEP_SIM_PASSWORD", requires = "user")]
        password: Option<String>,
        /// Kafka supervisor spec files (JSON) to start with; more can be POSTed later.
        #[arg(long)]
        supervisor: Vec<PathBuf>,
        /// Default segment granularity (HOUR, DAY, FIFTEEN_MINUTE, PT6H, ...).
        #[arg(long, default_value = "HOUR")]
        segment_granularity: String,
        /// Error body shape: modern (`druidException`), legacy (before Druid 27) or hybrid
        /// (Druid 27+: query exceptions in the `legacyQueryException` wrapper).
        #[arg(
            long,
            value_enum,
            default_value = "modern",
            conflicts_with = "legacy_errors"
        )]
        error_shape: ShapeArg,
        /// Same as `--error-shape legacy`.
        #[arg(long)]
        legacy_errors: bool,
    },
    /// Produce generated JSON rows to a Kafka topic.
    Load {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
        /// Start of the time range (ISO-8601).
        #[arg(long)]
        start: String,
        /// End of the time range, exclusive (ISO-8601).
        #[arg(long)]
        end: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rows per second (default: unthrottled).
        #[arg(long)]
        rate: Option<u32>,
        #[arg(long, default_value = "timestamp")]
        time_field: String,
        /// `count` values are uniform in 1..=count_max.
        #[arg(long, default_value_t = 1)]
        count_max: u32,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ShapeArg {
    Modern,
    Legacy,
    Hybrid,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Serve {
            listen,
            overlord_listen,
            no_management_proxy,
            error_shape,
            user,
            password,
            supervisor,
            segment_granularity,
            legacy_errors,
        } => {
            let mut specs = Vec::new();
            for path in &supervisor {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading supervisor spec {}", path.display()))?;
                specs.push(
                    serde_json::from_str(&text)
                        .with_context(|| format!("parsing supervisor spec {}", path.display()))?,
                );
            }
            let cfg = EmulatorConfig {
                listen,
                overlord_listen,
                management_proxy: !no_management_proxy,
                auth: user
                    .zip(password)
                    .map(|(user, password)| BasicAuth { user, password }),
                segment_granularity: Period::parse_granularity(&segment_granularity)
                    .with_context(|| format!("--segment-granularity {segment_granularity}"))?,
                supervisors: specs,
                error_shape: match (legacy_errors, error_shape) {
                    (true, _) | (false, ShapeArg::Legacy) => ErrorShape::Legacy,
                    (false, ShapeArg::Modern) => ErrorShape::Modern,
                    (false, ShapeArg::Hybrid) => ErrorShape::Hybrid,
                },
                ..EmulatorConfig::default()
            };
            let emu = Emulator::start(cfg).await?;
            println!("{}", emu.url());
            println!("{}", emu.overlord_url());
            tokio::signal::ctrl_c().await?;
            emu.shutdown().await;
        }
        Cmd::Load {
            bootstrap,
            topic,
            rows,
            start,
            end,
            partitions,
            seed,
            rate,
            time_field,
            count_max,
        } => {
            let start_ms = lockstep_sim::time::parse_iso(&start)
                .with_context(|| format!("--start {start}"))?;
            let end_ms =
                lockstep_sim::time::parse_iso(&end).with_context(|| format!("--end {end}"))?;
            anyhow::ensure!(end_ms > start_ms, "--end must be after --start");
            let spec = LoadSpec {
                partitions,
                seed,
                rate_per_sec: rate,
                time_field,
                count_max,
                ..LoadSpec::new(&topic, rows, start_ms, end_ms)
            };
            let s = loadgen::produce(&bootstrap, &spec).await?;
            println!(
                "produced {} rows to {topic} in {:.2}s",
                s.rows,
                s.elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}
