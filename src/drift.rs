//! `lockstep drift-check`: one drift check of every (or one) datasource, straight against the
//! sites' Druid Routers and Kafka clusters, printed as a table or JSON. Exit codes are the
//! contract scripts rely on: 0 in sync, 1 drift (lagging or diverged), 2 not checkable.

use crate::{DriftCheckArgs, Format};
use lockstep_drift::{
    self as drift, DatasourceReport, DriftEngine, DriftMetrics, DriftReport, Verdict,
};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Exit code for a verdict.
fn exit_code(v: Verdict) -> u8 {
    match v {
        Verdict::InSync => 0,
        Verdict::Lagging | Verdict::Diverged => 1,
        Verdict::Unknown => 2,
    }
}

pub async fn run(args: DriftCheckArgs) -> ExitCode {
    match check(&args).await {
        Ok(report) => {
            match args.format {
                Format::Json => match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot encode the report: {e}");
                        return ExitCode::from(2);
                    }
                },
                Format::Table => print!("{}", table(&report)),
            }
            ExitCode::from(exit_code(report.verdict))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn check(args: &DriftCheckArgs) -> anyhow::Result<DriftReport> {
    let config = lockstep_config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let overrides = drift::Overrides {
        window: args.since,
        granularity: args.granularity,
        max_drift: args.max_drift,
        settle: args.settle,
    };
    let targets = drift::targets(&config, args.datasource.as_deref(), &overrides);
    if targets.is_empty() {
        let known: Vec<&str> = config
            .flows
            .iter()
            .flat_map(|f| f.datasources.iter().map(String::as_str))
            .collect();
        anyhow::bail!(
            "{}: no flow names {} (datasources: {})",
            args.config.display(),
            args.datasource
                .as_deref()
                .map(|d| format!("datasource \"{d}\""))
                .unwrap_or_else(|| "any datasource".to_string()),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    for t in &targets {
        if t.settings.settle >= t.settings.window {
            anyhow::bail!(
                "flow {}: the settling period ({}) is not shorter than the window ({}): nothing to compare",
                t.flow,
                humantime::format_duration(t.settings.settle),
                humantime::format_duration(t.settings.window)
            );
        }
    }
    let engine = DriftEngine::new(&config, DriftMetrics::new())?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(targets.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} checking drift [{bar:30}] {pos}/{len} datasources {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let on_done = |r: &DatasourceReport| {
        if let Some(b) = &bar {
            b.set_message(format!("{}: {}", r.datasource, r.verdict.as_str()));
            b.inc(1);
        }
    };
    let report = engine
        .check_all(&targets, drift::poller::now_ms(), &on_done)
        .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(report)
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_string(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// The readable report: per datasource its verdict and reason, per site rows, freshness,
/// records behind and supervisor state, then the first divergent buckets.
pub fn table(report: &DriftReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for ds in &report.datasources {
        let _ = writeln!(
            out,
            "{} (flow {}): {} - {}",
            ds.datasource,
            ds.flow,
            ds.verdict.as_str().to_uppercase(),
            ds.reason
        );
        let _ = writeln!(
            out,
            "  window {} .. {}, {} buckets, count {} ({}), max drift {}%",
            ds.window_start,
            ds.window_end,
            ds.granularity,
            ds.count,
            ds.count_source,
            ds.max_drift * 100.0
        );
        let _ = writeln!(
            out,
            "  {:<16} {:>12} {:>10} {:>10} {:>15} {:>14}  {:<12} NOTE",
            "SITE", "ROWS", "FRESHNESS", "LAG", "RECORDS BEHIND", "(NOT MIRRORED)", "SUPERVISOR"
        );
        for s in &ds.sites {
            let supervisor = s
                .supervisor
                .as_ref()
                .and_then(|v| v.detailed_state.clone().or(v.state.clone()))
                .unwrap_or_else(|| "-".to_string());
            let note = s
                .error
                .clone()
                .or_else(|| (!s.notes.is_empty()).then(|| s.notes.join("; ")))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<16} {:>12} {:>10} {:>10} {:>15} {:>14}  {:<12} {}",
                s.site,
                s.rows
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "?".to_string()),
                age(s.freshness_seconds),
                age(s.source_lag_seconds),
                or_dash(s.records_behind),
                or_dash(s.mirror_behind),
                supervisor,
                note
            );
        }
        if ds.divergent_bucket_count > 0 {
            let _ = writeln!(
                out,
                "  divergent buckets ({} of {}):",
                ds.divergent_buckets.len(),
                ds.divergent_bucket_count
            );
            for b in &ds.divergent_buckets {
                let rows: Vec<String> = b.rows.iter().map(|(s, r)| format!("{s}={r}")).collect();
                let _ = writeln!(
                    out,
                    "    {}  {}  differs at {} ({:.2}%)",
                    b.bucket,
                    rows.join(" "),
                    b.sites.join(", "),
                    b.difference * 100.0
                );
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "verdict: {} ({} datasource(s), checked at {})",
        report.verdict.as_str(),
        report.datasources.len(),
        report.checked_at
    );
    out
}
