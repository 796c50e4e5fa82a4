//! `lockstep sync`: one cycle of an objects flow, run here and now with the same code a
//! worker runs (every shard of every selected site, one after the other), with a progress
//! bar when stderr is a terminal. `--dry-run` prints the plan and writes nothing.

use anyhow::{bail, Context, Result};
use lockstep_workers::objects::{SyncSpec, Syncer};
use lockstep_workers::{LeaseGuard, Progress};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(
    config: &Path,
    flow: &str,
    site: Option<&str>,
    dry_run: bool,
    shutdown: CancellationToken,
) -> Result<ExitCode> {
    let cfg = lockstep_config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let f = cfg
        .flow(flow)
        .with_context(|| format!("{}: no flow named \"{flow}\"", config.display()))?;
    if f.kind_name() != "objects" {
        bail!(
            "flow {flow} is a {} flow; `lockstep sync` runs objects flows",
            f.kind_name()
        );
    }
    let sites: Vec<String> = match site {
        Some(s) if f.sites.iter().any(|x| x == s) => vec![s.to_string()],
        Some(s) => bail!(
            "flow {flow} does not feed site \"{s}\" (it feeds: {})",
            f.sites.join(", ")
        ),
        None => f.sites.clone(),
    };
    let metrics = lockstep_workers::metrics::WorkerMetrics::new();
    let mut failures = 0u64;
    for site in &sites {
        for shard in 0..f.tasks_per_site() {
            let spec =
                SyncSpec::from_config(&cfg, flow, site, shard).map_err(anyhow::Error::msg)?;
            let label = format!("{flow} -> {site} (shard {}/{})", shard + 1, spec.shards);
            let progress = Progress::new(&spec.task_id);
            let mut syncer = Syncer::new(spec, metrics.clone(), progress.clone())
                .with_context(|| format!("{label}: cannot open the stores"))?;
            let bar = std::io::stderr().is_terminal().then(|| {
                let pb = indicatif::ProgressBar::new_spinner();
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {prefix} [{elapsed_precise}] {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                pb.set_prefix(label.clone());
                pb.enable_steady_tick(Duration::from_millis(120));
                pb
            });
            let ticker = bar.clone().map(|pb| {
                let p = progress.clone();
                tokio::spawn(async move {
                    loop {
                        let s = p.snapshot();
                        let o = s.objects.unwrap_or_default();
                        pb.set_message(format!(
                            "{} | copied {} ({}), pending {} ({}), up to date {}, failed {}",
                            s.message,
                            o.objects_copied,
                            bytesize::ByteSize(o.bytes_copied),
                            o.objects_pending,
                            bytesize::ByteSize(o.bytes_pending),
                            o.objects_skipped,
                            o.failures
                        ));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
            });
            let result = syncer
                .cycle(dry_run, &shutdown, &LeaseGuard::unbounded())
                .await;
            if let Some(t) = ticker {
                t.abort();
            }
            if let Some(pb) = bar {
                pb.finish_and_clear();
            }
            let r = result.with_context(|| format!("{label}: sync failed"))?;
            if dry_run {
                let p = &r.plan;
                println!(
                    "{label}: plan: copy {} objects ({}), adopt {}, verify {}, delete {}, up to date {} ({})",
                    p.copy_objects,
                    bytesize::ByteSize(p.copy_bytes),
                    p.adopt_objects,
                    p.verify_objects,
                    p.delete_objects,
                    p.skip_objects,
                    bytesize::ByteSize(p.skip_bytes)
                );
                for (key, what) in &p.sample {
                    println!("  {what:<15} {key}");
                }
                let shown = p.sample.len() as u64;
                let total = p.copy_objects + p.adopt_objects + p.verify_objects + p.delete_objects;
                if total > shown {
                    println!("  ... and {} more", total - shown);
                }
            } else {
                println!(
                    "{label}: copied {} objects ({}), up to date {}, adopted {}, deleted {}, verify mismatches {}, failures {}, in {:.1?}",
                    r.copied,
                    bytesize::ByteSize(r.copied_bytes),
                    r.skipped,
                    r.adopted,
                    r.deleted,
                    r.verify_mismatches,
                    r.failures,
                    r.elapsed
                );
            }
            failures += r.failures;
        }
    }
    if failures > 0 {
        eprintln!("error: {failures} object operation(s) failed (see the log); they are retried on the next run");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
