//! Benchmark for `lockstep_coordinator::assign` (std only, no criterion).
//!
//! Run with `cargo bench -p lockstep-coordinator --bench assign`.
//!
//! Scenario: `TASKS` tasks with ids `flow-{f}/site-{s}/{slot}` (10 slots per site, 100 sites
//! per flow), kinds mixed kafka/objects, over `WORKERS` workers `worker-{i:05}`, all capable of
//! both kinds, capacity 0 (unlimited). Each figure is the median wall time of 5 runs of
//! `assign` alone (building inputs is not timed). Defaults: 100,000 tasks, 1,000 workers.
//!
//! Sizes can be changed with positional arguments or environment variables:
//!
//! ```text
//! cargo bench -p lockstep-coordinator --bench assign -- 200000 2000
//! ASSIGN_BENCH_TASKS=200000 ASSIGN_BENCH_WORKERS=2000 cargo bench -p lockstep-coordinator --bench assign
//! ```
//!
//! Arguments take precedence over the environment; flags such as cargo's `--bench` are ignored.
//! Under `cargo test` it runs once as a smoke test: 1,000 tasks over 10 workers, arguments ignored.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use lockstep_coordinator::assign::{assign, Plan, TaskReq, WorkerSlot};

const RUNS: usize = 5;

fn sizes() -> (usize, usize) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Under `cargo test` (no `--bench`) the arguments are libtest's (`--test-threads 2`,
    // `--skip NAME`), not sizes: a smoke run of 1,000 tasks over 10 workers.
    if !args.iter().any(|a| a == "--bench") {
        return (1_000, 10);
    }
    let positional: Vec<usize> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.parse().unwrap_or_else(|_| panic!("not a size: {a}")))
        .collect();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}: not a size: {v}"))
            })
            .unwrap_or(default)
    };
    let tasks = positional
        .first()
        .copied()
        .unwrap_or_else(|| env("ASSIGN_BENCH_TASKS", 100_000));
    let workers = positional
        .get(1)
        .copied()
        .unwrap_or_else(|| env("ASSIGN_BENCH_WORKERS", 1_000));
    (tasks, workers)
}

fn make_tasks(n: usize) -> Vec<TaskReq> {
    (0..n)
        .map(|i| {
            let (f, s, slot) = (i / 1000, (i / 10) % 100, i % 10);
            TaskReq {
                id: format!("flow-{f}/site-{s}/{slot}"),
                kind: if (f + s) % 3 == 0 { "objects" } else { "kafka" }.to_string(),
            }
        })
        .collect()
}

fn make_worker(id: String) -> WorkerSlot {
    WorkerSlot {
        id,
        capacity: 0,
        capabilities: vec!["kafka".to_string(), "objects".to_string()],
        accepts_tasks: true,
    }
}

fn make_workers(n: usize) -> Vec<WorkerSlot> {
    (0..n)
        .map(|i| make_worker(format!("worker-{i:05}")))
        .collect()
}

/// Median of `RUNS` timed calls; returns it with the plan from the last run.
fn measure(
    tasks: &[TaskReq],
    workers: &[WorkerSlot],
    current: &HashMap<String, String>,
) -> (Duration, Plan) {
    let mut times = Vec::with_capacity(RUNS);
    let mut plan = Plan::default();
    for _ in 0..RUNS {
        let start = Instant::now();
        let p = black_box(assign(
            black_box(tasks),
            black_box(workers),
            black_box(current),
        ));
        times.push(start.elapsed());
        plan = p; // the previous plan is dropped outside the timed region
    }
    times.sort();
    (times[RUNS / 2], plan)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let (nt, nw) = sizes();
    let tasks = make_tasks(nt);
    let workers = make_workers(nw);
    println!(
        "assign: median of {RUNS} runs each, {nt} tasks, {nw} workers (all capable, capacity 0)"
    );

    let (t, initial) = measure(&tasks, &workers, &HashMap::new());
    println!(
        "assign: initial {nt} tasks over {nw} workers: {} (moved {}, unassigned {})",
        ms(t),
        initial.moved,
        initial.unassigned.len()
    );
    let current = initial.assignment;

    let (t, plan) = measure(&tasks, &workers, &current);
    println!(
        "assign: steady recompute (no change): {} (moved {})",
        ms(t),
        plan.moved
    );

    if nw == 0 {
        return;
    }
    let victim = workers[nw / 2].id.clone();

    let fewer: Vec<WorkerSlot> = workers.iter().filter(|w| w.id != victim).cloned().collect();
    let (t, plan) = measure(&tasks, &fewer, &current);
    println!(
        "assign: one worker leaves: {} (moved {})",
        ms(t),
        plan.moved
    );

    let mut more = workers.clone();
    more.push(make_worker("worker-new".to_string()));
    let (t, plan) = measure(&tasks, &more, &current);
    println!("assign: one worker joins: {} (moved {})", ms(t), plan.moved);

    let mut draining = workers.clone();
    draining[nw / 2].accepts_tasks = false;
    let (t, plan) = measure(&tasks, &draining, &current);
    println!("assign: drain one worker: {} (moved {})", ms(t), plan.moved);
}
