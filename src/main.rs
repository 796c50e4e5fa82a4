//! `lockstep`: the one binary. Each subcommand is a thin edge over the library crates:
//! parse arguments, set up logging and signals, call in, and turn errors into exit codes.

mod demo;
mod drift;
mod logging;
mod sync;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lockstep_proto as pb;
use pb::leader::Refusal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "Keep independent Druid clusters in several datacenters fed with the same data, and prove it.",
    long_about = "Keep independent Druid clusters in several datacenters fed with the same data, and prove it.\n\n\
A coordinator per region assigns tasks (flows x sites) to workers; workers mirror Kafka topics and copy \
object-store files into every site. Start with `lockstep demo`, check a config with \
`lockstep config check FILE`, then run `lockstep coordinator --config FILE` and one or more \
`lockstep worker --coordinator http://HOST:7400`."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LOCKSTEP_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator of a region (gRPC for workers and admin, HTTP for metrics and status).
    Coordinator {
        /// Config file (TOML). See config/examples/.
        #[arg(long, short)]
        config: PathBuf,
        /// The region whose control plane this is (one of the config's [[regions]]; default
        /// [coordinator] region). It owns only the tasks that write into its sites, and elects
        /// its leader over that region's state store.
        #[arg(long, env = "LOCKSTEP_REGION")]
        region: Option<String>,
        /// Do not run: confirm that the state document of `[coordinator.state]` is lost (the
        /// coordinators refuse to lead), so that they start afresh, holding every task for
        /// lease_ttl + handover_margin. Refused while the document exists. See the README,
        /// "Lost or corrupted state".
        #[arg(long)]
        accept_state_loss: bool,
    },
    /// Run a worker: join the coordinator and run the tasks it assigns.
    Worker(WorkerArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show the coordinator's view: workers, tasks, assignment, generation; with --all, every
    /// region's control plane too.
    Status {
        /// Coordinator gRPC address; several separated by commas are tried in turn. A standby
        /// names the active coordinator, which is then asked instead.
        #[arg(
            long,
            default_value = "http://127.0.0.1:7400",
            env = "LOCKSTEP_COORDINATOR"
        )]
        coordinator: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also every region: its leader, workers, tasks, mirror lag and object backlog as its
        /// coordinator last told this one (PeerService), or since when it does not answer.
        /// JSON: {"status": ..., "regions": ...} (`regions` as /api/v1/regions).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Operator actions on a running coordinator.
    Admin {
        /// Coordinator gRPC address; several separated by commas are tried in turn. A standby
        /// names the active coordinator, which is then asked instead.
        #[arg(
            long,
            default_value = "http://127.0.0.1:7400",
            env = "LOCKSTEP_COORDINATOR"
        )]
        coordinator: String,
        #[command(flatten)]
        conn: AdminConn,
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Run one cycle of an objects flow now (every shard), with a progress bar on a terminal.
    /// Exits non-zero when any object failed.
    Sync {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The objects flow to run.
        #[arg(long)]
        flow: String,
        /// Only this site (default: every site of the flow).
        #[arg(long)]
        site: Option<String>,
        /// Print the plan (counts, bytes, first keys) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare what every site's Druid holds, per datasource, querying the sites directly (no
    /// coordinator needed). Exits 0 when every datasource is in sync within --max-drift, 1 on
    /// drift (lagging or diverged), 2 when a site (or the config) could not be checked.
    ///
    /// Rows are counted as each flow's `[flows.drift] count` says; by default ("auto") from
    /// each site's supervisor spec: SUM of its count metric when the datasource rolls up
    /// (Kafka rollup is best-effort, so COUNT(*) can differ between sites that hold the same
    /// events), COUNT(*) otherwise. The output names the expression used. Records behind
    /// whose oldest has waited less than the flow's `lag_tolerance` (30s) are in flight, not
    /// lag. A site whose segments are published but not loaded is unknown, never "no data".
    /// Supervisor calls go to `[sites.druid] overlord_url` when set, else through the Router
    /// (which needs druid.router.managementProxy.enabled=true).
    DriftCheck(DriftCheckArgs),
    /// Run the whole system in one process, with no external services: a source and two
    /// sites on in-process Kafka clusters, folders as object stores, two emulated Druid
    /// sites, two regions (eu feeding site-a, us feeding site-b), each with its own
    /// coordinator (with its drift poller), worker and state, and a load generator.
    /// Prints where to look, replication progress and one drift line per poll; injects a
    /// fault at site-b (an hour of rows lost) and shows the drift engine detect it; then
    /// takes region us down, shows eu keep flowing and us return and catch up.
    /// Stops cleanly at --duration or on Ctrl-C / SIGTERM.
    Demo(demo::DemoArgs),
}

#[derive(Args)]
struct WorkerArgs {
    /// Coordinator gRPC address, or the addresses of a region's coordinators separated by
    /// commas (tried in turn). A standby names the active coordinator and the worker follows.
    #[arg(
        long,
        default_value = "http://127.0.0.1:7400",
        env = "LOCKSTEP_COORDINATOR"
    )]
    coordinator: String,
    /// Stable worker id. Keep it across restarts (a Kubernetes pod name) so that a restarted
    /// worker gets its tasks back at once: 1 to 128 of [A-Za-z0-9._-]. Default: the id the
    /// client certificate names (URI SAN lockstep://worker/<id>), else HOSTNAME-PID.
    #[arg(long, env = "LOCKSTEP_WORKER_ID")]
    id: Option<String>,
    /// The worker's region: it only ever runs tasks that write into this region's sites, and
    /// another region's coordinator refuses it (the worker then stops, naming both regions).
    /// Default: the region of the coordinator it joins.
    #[arg(long, env = "LOCKSTEP_REGION")]
    region: Option<String>,
    /// Most tasks at once (0 = no limit).
    #[arg(long, default_value_t = 0)]
    capacity: u32,
    /// Task kind to advertise (repeatable); default: every kind this build runs.
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    /// Serve /metrics and /healthz here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// How long a stopping task may take before it is aborted.
    #[arg(long, default_value = "30s", value_parser = humantime_duration)]
    stop_timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS to the coordinator: give an `https://` address and at least the CA. With mutual TLS
/// on the coordinator, a client certificate and key as well.
#[derive(Args, Clone, Default)]
struct TlsArgs {
    /// CA certificate(s), PEM, that signed the coordinator's certificate.
    #[arg(long, env = "LOCKSTEP_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate chain, PEM (mutual TLS).
    #[arg(long, env = "LOCKSTEP_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client private key, PEM (mutual TLS).
    #[arg(long, env = "LOCKSTEP_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Name to check the coordinator's certificate against (default: the address's host).
    #[arg(long, env = "LOCKSTEP_TLS_DOMAIN")]
    tls_domain: Option<String>,
}

impl TlsArgs {
    fn client(&self) -> pb::tls::ClientTls {
        pb::tls::ClientTls {
            ca_file: self.tls_ca.clone(),
            cert_file: self.tls_cert.clone(),
            key_file: self.tls_key.clone(),
            domain: self.tls_domain.clone(),
        }
    }
}

/// How the CLI reaches AdminService: TLS settings and the admin token.
#[derive(Args, Clone)]
struct AdminConn {
    #[command(flatten)]
    tls: TlsArgs,
    /// Admin bearer token (the coordinator's [coordinator.auth].token). Prefer the
    /// environment variable or --token-file: a command-line argument shows in `ps`.
    #[arg(
        long,
        env = "LOCKSTEP_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// File holding the admin token (trailing newline ignored).
    #[arg(long, env = "LOCKSTEP_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl AdminConn {
    async fn client(&self, coordinator: &str) -> Result<AdminClient> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read the token file {}", file.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        let interceptor = pb::tls::BearerToken::new(token.as_deref())?;
        let channel = self
            .tls
            .client()
            .endpoint(coordinator, Duration::from_secs(30))?
            .connect()
            .await
            .with_context(|| format!("cannot reach the coordinator at {coordinator}"))?;
        Ok(pb::admin_service_client::AdminServiceClient::with_interceptor(channel, interceptor))
    }

    /// One admin call on the active coordinator: each configured address in turn (comma-
    /// separated), following a standby's pointer (`lockstep-leader`) to the leader.
    async fn call<T, F, Fut>(&self, coordinator: &str, f: F) -> Result<T>
    where
        F: Fn(AdminClient) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let Ok(mut route) = pb::leader::Route::new(coordinator) else {
            anyhow::bail!("no coordinator address given");
        };
        let f = &f;
        let mut last: Option<anyhow::Error> = None;
        for _ in 0..route.configured() {
            let answer = pb::leader::call_following_leader(
                &mut route,
                |addr| {
                    let addr = addr.to_string();
                    async move {
                        let client = self.client(&addr).await;
                        f(client.map_err(AdminFailure::Unreachable)?)
                            .await
                            .map_err(AdminFailure::Refused)
                    }
                },
                |standby, leader| {
                    tracing::info!(standby = %standby, leader = %leader, "following the active coordinator")
                },
            )
            .await;
            match answer {
                Ok(r) => return Ok(r.into_inner()),
                Err(AdminFailure::Unreachable(e)) => last = Some(e),
                Err(AdminFailure::Refused(s)) if s.code() == tonic::Code::Unavailable => {
                    last = Some(refused(s))
                }
                Err(AdminFailure::Refused(s)) => return Err(refused(s)),
            }
            route.next_configured();
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator address given")))
    }
}

/// Why an admin call on one address got no answer.
enum AdminFailure {
    /// No connection (the next configured address is tried).
    Unreachable(anyhow::Error),
    /// The coordinator answered with an error; a standby's names the leader.
    Refused(tonic::Status),
}

impl Refusal for AdminFailure {
    fn leader(&self) -> Option<String> {
        match self {
            AdminFailure::Unreachable(_) => None,
            AdminFailure::Refused(s) => s.leader(),
        }
    }
}

/// The admin client the CLI uses: a channel with the bearer token added to each call.
type AdminClient = pb::admin_service_client::AdminServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        pb::tls::BearerToken,
    >,
>;

#[derive(Args)]
struct DriftCheckArgs {
    /// Config file (TOML): its sites, flows and datasources.
    #[arg(long, short)]
    config: PathBuf,
    /// Check only this datasource.
    #[arg(long)]
    datasource: Option<String>,
    /// How far back to compare (default: each flow's drift.window, 24h).
    #[arg(long, value_parser = humantime_duration)]
    since: Option<Duration>,
    /// Bucket of the per-bucket comparison: minute, fifteen_minute, hour or day (default:
    /// each flow's drift.granularity, hour).
    #[arg(long, value_parser = parse_granularity)]
    granularity: Option<lockstep_config::Granularity>,
    /// Most recent data not compared yet, still in flight (default: each flow's
    /// drift.settle, 5m).
    #[arg(long, value_parser = humantime_duration)]
    settle: Option<Duration>,
    /// Tolerated relative difference per bucket, e.g. 0.1% or 0.001 (default: each flow's
    /// drift.max_drift, 0).
    #[arg(long, value_parser = parse_max_drift)]
    max_drift: Option<f64>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

fn parse_granularity(s: &str) -> Result<lockstep_config::Granularity, String> {
    lockstep_config::Granularity::parse(s)
        .ok_or_else(|| format!("\"{s}\": expected minute, fifteen_minute, hour or day"))
}

fn parse_max_drift(s: &str) -> Result<f64, String> {
    lockstep_config::parse_ratio(s)
        .ok_or_else(|| format!("\"{s}\": expected a ratio in 0..1, e.g. 0.1% or 0.001"))
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file: prints OK, or every error with file, line/column or field path.
    /// Exits 0 when valid, 1 when not.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Stop a flow's tasks everywhere until resumed.
    PauseFlow { flow: String },
    /// Resume a paused flow.
    ResumeFlow { flow: String },
    /// Move every task off a worker and keep new ones away (before maintenance).
    DrainWorker { worker: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// A refused gRPC call as an error that names the code (`Unauthenticated: ...`).
fn refused(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the coordinator refused: {:?}: {}", s.code(), s.message())
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 20s, 2m)"))
}

fn init_logging(format: LogFormat, default_level: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // opendal's request signers (reqsign) print whole credential providers, secret keys
    // included, at debug level. Secrets never reach a log, whatever RUST_LOG says: cap them.
    for target in [
        "reqsign",
        "reqsign_core",
        "reqsign_aws_core",
        "reqsign_aws_v4",
        "reqsign_azure_storage",
        "reqsign_google",
        "reqsign_file_read_tokio",
        "reqsign_http_send_reqwest",
        "reqsign_command_execute_tokio",
    ] {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    // Colours only on a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        // One event, one line, whatever a value holds (crate::logging).
        LogFormat::Text => builder
            .with_writer(logging::OneLine::new(std::io::stderr, ansi))
            .init(),
        LogFormat::Json => builder
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .init(),
    }
}

/// A token cancelled on SIGTERM or Ctrl-C.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received");
        t.cancel();
    });
    token
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `config check` prints to stdout and needs no runtime or logging.
    if let Command::Config {
        command: ConfigCommand::Check { file },
    } = &cli.command
    {
        return config_check(file);
    }
    // The demo talks on stdout; its components log warnings and errors only, unless RUST_LOG
    // asks for more.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Every task has stopped by now; a blocking broker call abandoned during a task's
    // start-up must not hold the process for its whole timeout.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_check(file: &std::path::Path) -> ExitCode {
    match lockstep_config::load(file) {
        Ok(config) => {
            let tasks: u32 = config
                .flows
                .iter()
                .map(|f| f.tasks_per_site() * f.sites.len() as u32)
                .sum();
            println!(
                "OK: {} ({} sites, {} sources, {} flows, {} tasks)",
                file.display(),
                config.sites.len(),
                config.sources.len(),
                config.flows.len(),
                tasks
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.lines() {
                println!("error: {line}");
            }
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Config { .. } => unreachable!("handled before the runtime starts"),
        Command::Coordinator {
            config,
            region,
            accept_state_loss,
        } => {
            let mut cfg = lockstep_config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            cfg.select_region(region.as_deref())
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            if accept_state_loss {
                let store = &cfg.coordinator.state;
                let removed = lockstep_coordinator::state::accept_state_loss(store).await?;
                println!(
                    "state loss accepted for {}: {}; the coordinators start afresh within a second and hand out tasks after lease_ttl + handover_margin",
                    store.describe(),
                    match removed {
                        Some(m) => format!("marker of {} (epoch {}, {}) removed", m.leader, m.epoch, m.written_at),
                        None => "there was no marker".to_string(),
                    }
                );
                return Ok(ExitCode::SUCCESS);
            }
            let shutdown = shutdown_on_signals();
            let (_bound, done) = lockstep_coordinator::start(cfg, shutdown).await?;
            done.await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => {
            let shutdown = shutdown_on_signals();
            run_worker(args, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            coordinator,
            format,
            all,
            conn,
        } => {
            let status = conn
                .call(&coordinator, |mut c| async move {
                    c.status(pb::StatusRequest {}).await
                })
                .await?;
            if !all {
                print_status(&status, format);
                return Ok(ExitCode::SUCCESS);
            }
            let regions = conn
                .call(&coordinator, |mut c| async move {
                    c.regions(pb::RegionsRequest {}).await
                })
                .await?;
            match format {
                Format::Json => {
                    let all = serde_json::json!({
                        "status": lockstep_coordinator::views::StatusView::from(status),
                        "regions": lockstep_coordinator::views::RegionsView::from(regions),
                    });
                    println!("{}", serde_json::to_string_pretty(&all)?);
                }
                Format::Table => {
                    print_status(&status, format);
                    print_regions(&regions);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin {
            coordinator,
            conn,
            action,
        } => {
            match action {
                AdminAction::PauseFlow { flow } => {
                    let req = pb::FlowRequest { flow: flow.clone() };
                    let r = conn
                        .call(&coordinator, |mut c| {
                            let req = req.clone();
                            async move { c.pause_flow(req).await }
                        })
                        .await?;
                    println!("paused flow {flow} (generation {})", r.generation);
                }
                AdminAction::ResumeFlow { flow } => {
                    let req = pb::FlowRequest { flow: flow.clone() };
                    let r = conn
                        .call(&coordinator, |mut c| {
                            let req = req.clone();
                            async move { c.resume_flow(req).await }
                        })
                        .await?;
                    println!("resumed flow {flow} (generation {})", r.generation);
                }
                AdminAction::DrainWorker { worker } => {
                    let req = pb::DrainRequest {
                        worker_id: worker.clone(),
                    };
                    let r = conn
                        .call(&coordinator, |mut c| {
                            let req = req.clone();
                            async move { c.drain_worker(req).await }
                        })
                        .await?;
                    println!(
                        "draining worker {worker}: {} task(s) moving (generation {})",
                        r.tasks_moving, r.generation
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DriftCheck(args) => Ok(drift::run(args).await),
        Command::Demo(args) => demo::run(args).await,
        Command::Sync {
            config,
            flow,
            site,
            dry_run,
        } => {
            sync::run(
                &config,
                &flow,
                site.as_deref(),
                dry_run,
                shutdown_on_signals(),
            )
            .await
        }
    }
}

pub(crate) async fn run_worker(args: WorkerArgs, shutdown: CancellationToken) -> Result<()> {
    let metrics = lockstep_workers::metrics::WorkerMetrics::for_region(args.region.as_deref());
    let listener = match args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?,
        ),
        None => None,
    };
    run_worker_with(args, metrics, listener, shutdown).await
}

/// Runs a worker with the given metrics handle, serving them on `metrics_listener` when
/// given (its `metrics_listen` is then ignored), until `shutdown`; the metrics server is
/// stopped and joined before this returns.
pub(crate) async fn run_worker_with(
    args: WorkerArgs,
    metrics: lockstep_workers::metrics::WorkerMetrics,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<()> {
    let hostname = lockstep_coordinator::server::hostname();
    // With mutual TLS the coordinator accepts only the id the certificate names.
    let cert_id = match &args.tls.tls_cert {
        Some(path) => lockstep_coordinator::identity::worker_id_in_pem_file(path)
            .with_context(|| format!("--tls-cert {}", path.display()))?,
        None => None,
    };
    if let (Some(id), Some(cert)) = (&args.id, &cert_id) {
        if id != cert {
            anyhow::bail!(
                "--id {} but the client certificate names worker {cert}: the coordinator refuses any id but the certificate's (leave --id out to use it)",
                lockstep_config::names::printable(id)
            );
        }
    }
    let worker_id = args
        .id
        .or(cert_id)
        .unwrap_or_else(|| format!("{hostname}-{}", std::process::id()));
    // The coordinator refuses any other id; say so here, before the first connection.
    lockstep_config::names::worker_id(&worker_id).map_err(|e| {
        anyhow::anyhow!("--id: {e} (worker ids are what the coordinator persists and logs)")
    })?;
    // Stops with the worker, also when the worker ends with an error.
    let metrics_stop = shutdown.child_token();
    let metrics_server = metrics_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "worker metrics listening");
        }
        let m = metrics.clone();
        let s = metrics_stop.clone();
        tokio::spawn(async move {
            if let Err(e) = lockstep_workers::metrics::serve(listener, m, s).await {
                tracing::error!(error = %e, "worker metrics server failed");
            }
        })
    });
    // Advertise the kinds the product defines; one without a factory in this build shows
    // as a failed task with a clear message rather than staying silently unassigned.
    let capabilities = if args.capabilities.is_empty() {
        vec!["kafka".to_string(), "objects".to_string()]
    } else {
        args.capabilities
    };
    let factories = lockstep_workers::builtin_factories(&metrics);
    let worker = lockstep_workers::Worker::new(
        lockstep_workers::WorkerOptions {
            coordinator: args.coordinator,
            worker_id,
            region: args.region,
            capacity: args.capacity,
            hostname,
            stop_timeout: args.stop_timeout,
            capabilities,
            tls: args.tls.client(),
        },
        factories,
        metrics,
    );
    let result = worker.run(shutdown).await;
    metrics_stop.cancel();
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    result?;
    Ok(())
}

/// The regions table of `status --all`: one line per region, its own first.
fn print_regions(regions: &pb::RegionsResponse) {
    let view = lockstep_coordinator::views::RegionsView::from(regions.clone());
    let shown = lockstep_config::names::printable;
    let num = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    println!(
        "\nREGION           STATE        LEADER                           WORKERS  ASSIGNED/TASKS  UNASSIGNED  MIRROR LAG  OBJECT BACKLOG  AS OF"
    );
    for r in &view.regions {
        let name = if r.is_self {
            format!("{} (this)", shown(&r.region))
        } else {
            shown(&r.region).into_owned()
        };
        match &r.coordinator_id {
            Some(leader) => println!(
                "{:<16} {:<12} {:<32} {:>7}  {:>14}  {:>10}  {:>10}  {:>14}  {}",
                name,
                r.state,
                shown(leader),
                num(r.workers_alive.map(u64::from)),
                format!(
                    "{}/{}",
                    num(r.tasks_assigned.map(u64::from)),
                    num(r.tasks_total.map(u64::from))
                ),
                num(r.tasks_unassigned.map(u64::from)),
                num(r.mirror_lag_records),
                num(r.object_backlog),
                r.checked_at.as_deref().unwrap_or("-")
            ),
            None => {
                let what = match &r.unreachable_since {
                    Some(since) => format!("unreachable since {since}"),
                    None => "not asked yet".to_string(),
                };
                match &r.error {
                    Some(e) => println!("{name:<16} {:<12} {what}: {}", r.state, shown(e)),
                    None => println!("{name:<16} {:<12} {what}", r.state),
                }
            }
        }
    }
}

fn print_status(status: &pb::StatusResponse, format: Format) {
    match format {
        Format::Json => {
            let view = lockstep_coordinator::views::StatusView::from(status.clone());
            match serde_json::to_string_pretty(&view) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("error: cannot encode status: {e}"),
            }
        }
        Format::Table => {
            println!(
                "coordinator {} (region {}), generation {}",
                status.coordinator_id, status.region, status.generation
            );
            println!(
                "\nWORKER                           TASKS  LEASE LEFT  DRAINING  CAPABILITIES"
            );
            // Text a worker sent (ids, capabilities, messages) reaches the terminal with its
            // control characters escaped.
            let shown = lockstep_config::names::printable;
            for w in &status.workers {
                println!(
                    "{:<32} {:>5}  {:>8}ms  {:<8}  {}",
                    shown(&w.worker_id),
                    w.tasks.len(),
                    w.lease_remaining_ms,
                    if w.draining { "yes" } else { "no" },
                    shown(&w.capabilities.join(","))
                );
            }
            println!("\nTASK                             PHASE       WORKER                           FENCING       STATE");
            for t in &status.tasks {
                // UNSPECIFIED: the current owner has not reported yet (only a former owner's
                // duplicates are known).
                let report = t
                    .progress
                    .as_ref()
                    .filter(|p| p.state != pb::TaskState::Unspecified as i32);
                let state = report
                    .map(|p| {
                        let name = pb::TaskState::try_from(p.state)
                            .map(|s| {
                                s.as_str_name()
                                    .trim_start_matches("TASK_STATE_")
                                    .to_lowercase()
                            })
                            .unwrap_or_default();
                        if p.message.is_empty() {
                            name
                        } else {
                            format!("{name}: {}", shown(&p.message))
                        }
                    })
                    .unwrap_or_default();
                let partitions = t
                    .progress
                    .as_ref()
                    .map(|p| p.partitions.as_slice())
                    .unwrap_or_default();
                let fencing = t
                    .progress
                    .as_ref()
                    .and_then(pb::TaskProgress::fencing_modes)
                    .unwrap_or_else(|| "-".to_string());
                println!(
                    "{:<32} {:<11} {:<32} {:<13} {}",
                    t.task_id,
                    t.phase,
                    if t.worker_id.is_empty() {
                        "-".into()
                    } else {
                        shown(&t.worker_id)
                    },
                    shown(&fencing),
                    state
                );
                for q in partitions.iter().filter(|q| q.duplicates > 0) {
                    println!(
                        "    DUPLICATES {}/{}: {} record(s) at the target repeat source offsets already mirrored (a paused former owner wrote after its lease)",
                        shown(&q.topic), q.partition, q.duplicates
                    );
                    // The latest few; `--format json` lists every range kept.
                    const SHOWN: usize = 5;
                    let skip = q.duplicate_ranges.len().saturating_sub(SHOWN);
                    if skip > 0 {
                        println!("      ... {skip} earlier range(s) (--format json lists them)");
                    }
                    for r in q.duplicate_ranges.iter().skip(skip) {
                        println!(
                            "      target {}..{} = source {}..{} ({} record(s))",
                            r.target_from, r.target_to, r.source_from, r.source_to, r.records
                        );
                    }
                }
            }
            if !status.paused_flows.is_empty() {
                println!("\npaused flows: {}", status.paused_flows.join(", "));
            }
        }
    }
}
