//! Task assignment: decides which worker runs which task.
//!
//! This module owns one pure function, [`assign`], that maps the desired task set onto the
//! live worker set, given the assignment as it is now. It balances load evenly, respects
//! per-worker capacity and capabilities, and moves as few tasks as possible.
//!
//! It must never do I/O, read clocks, use randomness, log, or depend on `HashMap` iteration
//! order: the same input always yields the same [`Plan`]. Everything is synchronous and runs
//! in `O((T + W + C) log(T + W))` for `T` tasks, `W` workers and `C` capability entries
//! (no `T * W` loops), so 100,000 tasks over 1,000 workers take a few tens of milliseconds.
//!
//! # Algorithm
//!
//! 1. Workers are sorted and interned by id (duplicate ids: the first one wins); tasks are
//!    sorted by id (duplicate ids: the first one wins). A worker is *active* if it accepts
//!    tasks and is capable of at least one kind present in `tasks`.
//! 2. **Keep**: every task whose current worker exists, accepts tasks and is capable stays
//!    there, up to that worker's capacity (lowest task ids first).
//! 3. **Targets**: the placeable tasks (those with at least one capable active worker) are
//!    water-filled over the active workers: a capped worker whose capacity is below the fair
//!    share gets exactly its capacity, the rest share what is left as `floor` or `floor + 1`.
//!    The `+1` slots go to the workers holding the most tasks (ties: smallest worker id), so
//!    that fewer tasks move.
//! 4. **Place**: tasks without a worker, most constrained kind first (fewest capable
//!    workers, then id), go to the least-loaded capable worker below its target.
//! 5. **Shed**: a worker above its target gives tasks to capable workers below their target;
//!    a task only moves if it has somewhere to go.
//! 6. **Overflow**: tasks still unplaced go to the least-loaded capable worker with spare
//!    capacity, or end up in [`Plan::unassigned`].
//! 7. **Settle**: targets are recomputed from the resulting loads and steps 5-6 repeat until
//!    nothing changes (each round strictly lowers the sum of squared loads or places a task,
//!    so it terminates; in the common case it is a single O(W) check). The result is a fixed
//!    point: feeding a plan back in as `current` moves nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// A worker as the assignment sees it.
#[derive(Debug, Clone)]
pub struct WorkerSlot {
    pub id: String,
    /// Most tasks at once; 0 = unlimited.
    pub capacity: u32,
    /// Task kinds it can run ("kafka", "objects").
    pub capabilities: Vec<String>,
    /// False while draining: it must end with zero tasks.
    pub accepts_tasks: bool,
}

/// A task to place.
#[derive(Debug, Clone)]
pub struct TaskReq {
    pub id: String,
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// task id -> worker id, for every task that could be placed.
    pub assignment: HashMap<String, String>,
    /// Tasks no worker can take (no capable worker, or all capacity used), sorted by id.
    pub unassigned: Vec<String>,
    /// Tasks whose worker differs from `current` (a task in `current` whose worker is gone
    /// counts as moved when placed elsewhere; a task newly placed that had no entry in
    /// `current` does NOT count as moved).
    pub moved: usize,
}

/// Sentinel for "no worker".
const NONE: usize = usize::MAX;

/// Min-heap of `(load, worker index)`; ties break on the smaller index, i.e. the smaller id.
type LoadHeap = BinaryHeap<Reverse<(usize, usize)>>;

/// Computes the next assignment. `current` maps task id -> worker id as it is now (it may name
/// tasks or workers that no longer exist; ignore those entries).
pub fn assign(
    tasks: &[TaskReq],
    workers: &[WorkerSlot],
    current: &HashMap<String, String>,
) -> Plan {
    // --- Intern workers (index = rank by id). ---
    let mut worder: Vec<usize> = (0..workers.len()).collect();
    worder.sort_by(|&a, &b| workers[a].id.cmp(&workers[b].id)); // stable: first duplicate first
    worder.dedup_by(|a, b| workers[*a].id == workers[*b].id);
    let nw = worder.len();
    let widx: HashMap<&str, usize> = worder
        .iter()
        .enumerate()
        .map(|(i, &o)| (workers[o].id.as_str(), i))
        .collect();
    let limit: Vec<usize> = worder
        .iter()
        .map(|&o| match workers[o].capacity {
            0 => usize::MAX,
            c => c as usize,
        })
        .collect();

    // --- Intern tasks (index = rank by id) and kinds. ---
    let mut torder: Vec<usize> = (0..tasks.len()).collect();
    torder.sort_by(|&a, &b| tasks[a].id.cmp(&tasks[b].id));
    torder.dedup_by(|a, b| tasks[*a].id == tasks[*b].id);
    let nt = torder.len();
    let mut kind_idx: HashMap<&str, usize> = HashMap::new();
    let tkind: Vec<usize> = torder
        .iter()
        .map(|&o| {
            let next = kind_idx.len();
            *kind_idx.entry(tasks[o].kind.as_str()).or_insert(next)
        })
        .collect();
    let nk = kind_idx.len();

    // Capable, task-accepting workers per kind (ascending index) and kinds per worker.
    let mut kind_workers: Vec<Vec<usize>> = vec![Vec::new(); nk];
    let mut worker_kinds: Vec<Vec<usize>> = vec![Vec::new(); nw];
    for (w, &o) in worder.iter().enumerate() {
        if !workers[o].accepts_tasks {
            continue;
        }
        for cap in &workers[o].capabilities {
            if let Some(&k) = kind_idx.get(cap.as_str()) {
                if !worker_kinds[w].contains(&k) {
                    worker_kinds[w].push(k);
                    kind_workers[k].push(w);
                }
            }
        }
    }
    let active: Vec<usize> = (0..nw).filter(|&w| !worker_kinds[w].is_empty()).collect();

    // Processing order: most constrained kind first, then task id (stable sort keeps id order).
    let mut ord: Vec<usize> = (0..nt).collect();
    ord.sort_by_key(|&t| kind_workers[tkind[t]].len());
    let placeable = ord
        .iter()
        .filter(|&&t| !kind_workers[tkind[t]].is_empty())
        .count();

    // --- Keep every valid current placement, up to capacity. ---
    let mut owner = vec![NONE; nt];
    let mut loads = vec![0usize; nw];
    let mut prev: Vec<Option<&str>> = Vec::with_capacity(nt);
    for t in 0..nt {
        let cur = current
            .get(tasks[torder[t]].id.as_str())
            .map(String::as_str);
        prev.push(cur);
        if let Some(&w) = cur.and_then(|c| widx.get(c)) {
            if worker_kinds[w].contains(&tkind[t]) && loads[w] < limit[w] {
                owner[t] = w;
                loads[w] += 1;
            }
        }
    }

    let mut target = compute_targets(placeable, &active, &limit, &loads, nw);
    let mut unassigned: Vec<usize> = Vec::new();
    let pool: Vec<usize> = ord.iter().copied().filter(|&t| owner[t] == NONE).collect();

    // --- Place unowned tasks below target, then shed from workers above target. ---
    let mut deferred: Vec<usize> = Vec::new();
    let unbalanced = has_under_and_over(&active, &loads, &target);
    if !pool.is_empty() || unbalanced {
        let mut under = build_heaps(&kind_workers, &loads, &target);
        for &t in &pool {
            if kind_workers[tkind[t]].is_empty() {
                unassigned.push(t);
            } else if let Some(w) = take(&mut under[tkind[t]], &mut loads, &target) {
                owner[t] = w;
            } else {
                deferred.push(t);
            }
        }
        shed(&ord, &tkind, &mut owner, &mut loads, &target, &mut under);
    }

    // --- Overflow: whatever is left goes anywhere with spare capacity. ---
    let mut retry: Vec<usize> = Vec::new();
    if !deferred.is_empty() {
        let mut spare = build_heaps(&kind_workers, &loads, &limit);
        for &t in &deferred {
            match take(&mut spare[tkind[t]], &mut loads, &limit) {
                Some(w) => owner[t] = w,
                None => retry.push(t),
            }
        }
    }

    // --- Settle until the plan is a fixed point of this function. ---
    loop {
        target = compute_targets(placeable, &active, &limit, &loads, nw);
        let mut changed = false;
        if has_under_and_over(&active, &loads, &target) {
            let mut under = build_heaps(&kind_workers, &loads, &target);
            changed |= shed(&ord, &tkind, &mut owner, &mut loads, &target, &mut under);
        }
        if !retry.is_empty() {
            let mut spare = build_heaps(&kind_workers, &loads, &limit);
            retry.retain(|&t| match take(&mut spare[tkind[t]], &mut loads, &limit) {
                Some(w) => {
                    owner[t] = w;
                    changed = true;
                    false
                }
                None => true,
            });
        }
        if !changed {
            break;
        }
    }
    unassigned.extend(retry);
    unassigned.sort_unstable(); // task index order == id order

    // --- Build the plan. ---
    let mut assignment = HashMap::with_capacity(nt - unassigned.len());
    let mut moved = 0;
    for t in 0..nt {
        if owner[t] == NONE {
            continue;
        }
        let wid = &workers[worder[owner[t]]].id;
        if prev[t].is_some_and(|p| p != wid.as_str()) {
            moved += 1;
        }
        assignment.insert(tasks[torder[t]].id.clone(), wid.clone());
    }
    Plan {
        assignment,
        unassigned: unassigned
            .into_iter()
            .map(|t| tasks[torder[t]].id.clone())
            .collect(),
        moved,
    }
}

/// Water-fills `total` tasks over `active` workers. Capped workers whose capacity is at or
/// below the fair share get exactly their capacity; the others get `q` or `q + 1`, the `+1`
/// going to the workers with the highest `rank` (current load), ties to the smallest index.
fn compute_targets(
    total: usize,
    active: &[usize],
    limit: &[usize],
    rank: &[usize],
    nw: usize,
) -> Vec<usize> {
    let mut target = vec![0usize; nw];
    let mut saturated = vec![false; nw];
    let mut capped: Vec<usize> = active
        .iter()
        .copied()
        .filter(|&w| limit[w] != usize::MAX)
        .collect();
    capped.sort_by_key(|&w| (limit[w], w));
    let (mut rem, mut n) = (total, active.len());
    for &w in &capped {
        // Saturated iff capacity <= rem / n (exactly), i.e. capacity * n <= rem.
        if (limit[w] as u128) * (n as u128) > rem as u128 {
            break; // larger capacities are not saturated either
        }
        target[w] = limit[w];
        saturated[w] = true;
        rem -= limit[w];
        n -= 1;
    }
    if let (Some(q), Some(r)) = (rem.checked_div(n), rem.checked_rem(n)) {
        let mut group: Vec<usize> = active.iter().copied().filter(|&w| !saturated[w]).collect();
        for &w in &group {
            target[w] = q;
        }
        if r > 0 {
            group.sort_by_key(|&w| (Reverse(rank[w]), w));
            for &w in &group[..r] {
                target[w] += 1;
            }
        }
    }
    target
}

fn has_under_and_over(active: &[usize], loads: &[usize], target: &[usize]) -> bool {
    active.iter().any(|&w| loads[w] < target[w]) && active.iter().any(|&w| loads[w] > target[w])
}

/// One min-heap per kind holding the capable workers whose load is below `bound`.
fn build_heaps(kind_workers: &[Vec<usize>], loads: &[usize], bound: &[usize]) -> Vec<LoadHeap> {
    kind_workers
        .iter()
        .map(|ws| {
            ws.iter()
                .filter(|&&w| loads[w] < bound[w])
                .map(|&w| Reverse((loads[w], w)))
                .collect()
        })
        .collect()
}

/// Takes one slot on the least-loaded worker in `heap` below `bound`, incrementing its load.
/// Entries are refreshed lazily (loads only grow while a heap is in use), so a worker shared
/// by several kinds stays correct in every kind's heap.
fn take(heap: &mut LoadHeap, loads: &mut [usize], bound: &[usize]) -> Option<usize> {
    while let Some(Reverse((l, w))) = heap.pop() {
        let cur = loads[w];
        if cur >= bound[w] {
            continue;
        }
        if cur != l {
            heap.push(Reverse((cur, w)));
            continue;
        }
        loads[w] += 1;
        if loads[w] < bound[w] {
            heap.push(Reverse((loads[w], w)));
        }
        return Some(w);
    }
    None
}

/// Moves tasks off workers above `target` onto capable workers below it (as recorded in
/// `under`). Only tasks with somewhere to go move. Returns whether anything moved.
fn shed(
    ord: &[usize],
    tkind: &[usize],
    owner: &mut [usize],
    loads: &mut [usize],
    target: &[usize],
    under: &mut [LoadHeap],
) -> bool {
    let mut moved = false;
    for &t in ord {
        let w = owner[t];
        if w == NONE || loads[w] <= target[w] || under[tkind[t]].is_empty() {
            continue;
        }
        if let Some(b) = take(&mut under[tkind[t]], loads, target) {
            loads[w] -= 1;
            owner[t] = b;
            moved = true;
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    const KINDS: [&str; 2] = ["kafka", "objects"];

    fn worker(id: &str, capacity: u32, caps: &[&str]) -> WorkerSlot {
        WorkerSlot {
            id: id.to_string(),
            capacity,
            capabilities: caps.iter().map(|s| s.to_string()).collect(),
            accepts_tasks: true,
        }
    }

    fn workers(n: usize, capacity: u32) -> Vec<WorkerSlot> {
        (0..n)
            .map(|i| worker(&format!("w{i:03}"), capacity, &KINDS))
            .collect()
    }

    fn task(id: &str, kind: &str) -> TaskReq {
        TaskReq {
            id: id.to_string(),
            kind: kind.to_string(),
        }
    }

    fn tasks(n: usize) -> Vec<TaskReq> {
        (0..n)
            .map(|i| task(&format!("t{i:05}"), KINDS[i % 2]))
            .collect()
    }

    fn kind_tasks(prefix: &str, kind: &str, n: usize) -> Vec<TaskReq> {
        (0..n)
            .map(|i| task(&format!("{prefix}{i:04}"), kind))
            .collect()
    }

    /// Per-worker task counts, including workers with zero tasks.
    fn loads(plan: &Plan, workers: &[WorkerSlot]) -> BTreeMap<String, usize> {
        let mut m: BTreeMap<String, usize> = workers.iter().map(|w| (w.id.clone(), 0)).collect();
        for w in plan.assignment.values() {
            *m.entry(w.clone()).or_default() += 1;
        }
        m
    }

    fn spread(plan: &Plan, workers: &[WorkerSlot]) -> (usize, usize) {
        let l = loads(plan, workers);
        (*l.values().min().unwrap(), *l.values().max().unwrap())
    }

    /// Invariants every plan must satisfy (assumes unique ids).
    fn check_invariants(tasks: &[TaskReq], workers: &[WorkerSlot], plan: &Plan) {
        let by_id: HashMap<&str, &WorkerSlot> =
            workers.iter().map(|w| (w.id.as_str(), w)).collect();
        // Every task exactly once, nothing else.
        let mut seen = HashSet::new();
        for id in plan.assignment.keys().chain(plan.unassigned.iter()) {
            assert!(seen.insert(id.as_str()), "task {id} appears twice");
        }
        let all: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            seen, all,
            "placed + unassigned must be exactly the task set"
        );
        let mut sorted = plan.unassigned.clone();
        sorted.sort();
        assert_eq!(sorted, plan.unassigned, "unassigned must be sorted");
        // Capability, acceptance, capacity.
        let l = loads(plan, workers);
        for t in tasks {
            if let Some(w) = plan.assignment.get(&t.id) {
                let w = by_id
                    .get(w.as_str())
                    .expect("assigned to an unknown worker");
                assert!(w.accepts_tasks, "task {} on draining worker {}", t.id, w.id);
                assert!(
                    w.capabilities.contains(&t.kind),
                    "task {} ({}) on incapable worker {}",
                    t.id,
                    t.kind,
                    w.id
                );
            }
        }
        for w in workers {
            if w.capacity > 0 {
                assert!(l[&w.id] <= w.capacity as usize, "{} over capacity", w.id);
            }
            if !w.accepts_tasks {
                assert_eq!(l[&w.id], 0, "draining worker {} still has tasks", w.id);
            }
        }
        // Unassigned only if no capable worker has room.
        for id in &plan.unassigned {
            let t = tasks.iter().find(|t| &t.id == id).unwrap();
            for w in workers {
                let room = w.capacity == 0 || l[&w.id] < w.capacity as usize;
                assert!(
                    !(w.accepts_tasks && w.capabilities.contains(&t.kind) && room),
                    "task {id} unassigned although {} could take it",
                    w.id
                );
            }
        }
    }

    fn check_idempotent(tasks: &[TaskReq], workers: &[WorkerSlot], plan: &Plan) {
        let again = assign(tasks, workers, &plan.assignment);
        assert_eq!(again.moved, 0, "recompute moved tasks");
        assert_eq!(again.assignment, plan.assignment);
        assert_eq!(again.unassigned, plan.unassigned);
    }

    /// Tasks whose worker differs between two plans, as (task, from, to).
    fn diff(before: &Plan, after: &Plan) -> Vec<(String, String, String)> {
        let mut out: Vec<_> = after
            .assignment
            .iter()
            .filter_map(|(t, w)| match before.assignment.get(t) {
                Some(b) if b != w => Some((t.clone(), b.clone(), w.clone())),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn even_with_unlimited_capacity() {
        for (t, w) in [(103, 7), (100, 10), (5, 8), (1, 1), (1000, 33), (7, 7)] {
            let (ts, ws) = (tasks(t), workers(w, 0));
            let plan = assign(&ts, &ws, &HashMap::new());
            check_invariants(&ts, &ws, &plan);
            let (min, max) = spread(&plan, &ws);
            assert_eq!(min, t / w, "T={t} W={w}");
            assert!(max - min <= 1, "T={t} W={w}: min {min} max {max}");
            assert_eq!(plan.moved, 0);
            assert!(plan.unassigned.is_empty());
            check_idempotent(&ts, &ws, &plan);
        }
    }

    #[test]
    fn capacity_smaller_than_fair_share_is_water_filled() {
        let ts = tasks(30);
        let ws = vec![
            worker("a", 3, &KINDS),
            worker("b", 5, &KINDS),
            worker("c", 0, &KINDS),
            worker("d", 0, &KINDS),
        ];
        let plan = assign(&ts, &ws, &HashMap::new());
        check_invariants(&ts, &ws, &plan);
        let l = loads(&plan, &ws);
        assert_eq!((l["a"], l["b"], l["c"], l["d"]), (3, 5, 11, 11));
        check_idempotent(&ts, &ws, &plan);

        // A cap above the fair share does not bind.
        let ws = vec![worker("a", 20, &KINDS), worker("b", 0, &KINDS)];
        let plan = assign(&ts, &ws, &HashMap::new());
        let l = loads(&plan, &ws);
        assert_eq!((l["a"], l["b"]), (15, 15));
    }

    #[test]
    fn tasks_beyond_total_capacity_are_unassigned() {
        let ts = tasks(10);
        let ws = vec![worker("a", 3, &KINDS), worker("b", 4, &KINDS)];
        let plan = assign(&ts, &ws, &HashMap::new());
        check_invariants(&ts, &ws, &plan);
        let l = loads(&plan, &ws);
        assert_eq!((l["a"], l["b"]), (3, 4));
        assert_eq!(plan.unassigned.len(), 3);
        check_idempotent(&ts, &ws, &plan);
    }

    #[test]
    fn capacity_shrink_moves_the_excess() {
        let ts = tasks(20);
        let ws = workers(2, 0);
        let p1 = assign(&ts, &ws, &HashMap::new());
        let mut ws2 = ws.clone();
        ws2[0].capacity = 4;
        let p2 = assign(&ts, &ws2, &p1.assignment);
        check_invariants(&ts, &ws2, &p2);
        let l = loads(&p2, &ws2);
        assert_eq!((l["w000"], l["w001"]), (4, 16));
        assert_eq!(p2.moved, 6);
    }

    #[test]
    fn capabilities_are_respected() {
        let mut ts = kind_tasks("k", "kafka", 6);
        ts.extend(kind_tasks("o", "objects", 4));
        ts.push(task("x0", "logs")); // nobody runs logs
        let ws = vec![worker("a", 0, &["kafka"]), worker("b", 0, &["objects"])];
        let plan = assign(&ts, &ws, &HashMap::new());
        check_invariants(&ts, &ws, &plan);
        assert_eq!(plan.unassigned, vec!["x0".to_string()]);
        let l = loads(&plan, &ws);
        assert_eq!((l["a"], l["b"]), (6, 4));
        check_idempotent(&ts, &ws, &plan);
    }

    #[test]
    fn mixed_capabilities_stay_even() {
        let ws = vec![
            worker("k1", 0, &["kafka"]),
            worker("k2", 0, &["kafka"]),
            worker("o1", 0, &["objects"]),
            worker("both", 0, &["kafka", "objects"]),
        ];
        let mut ts = kind_tasks("k", "kafka", 40);
        ts.extend(kind_tasks("o", "objects", 40));
        let plan = assign(&ts, &ws, &HashMap::new());
        check_invariants(&ts, &ws, &plan);
        let l = loads(&plan, &ws);
        assert!(l.values().all(|&n| n == 20), "{l:?}");
        check_idempotent(&ts, &ws, &plan);

        // Skewed mix: kafka-only workers stay even among themselves, all tasks placed.
        let mut ts = kind_tasks("k", "kafka", 61);
        ts.extend(kind_tasks("o", "objects", 7));
        let plan = assign(&ts, &ws, &HashMap::new());
        check_invariants(&ts, &ws, &plan);
        assert!(plan.unassigned.is_empty());
        let l = loads(&plan, &ws);
        assert!(l["k1"].abs_diff(l["k2"]) <= 1, "{l:?}");
        assert!(l["o1"] >= 1, "{l:?}");
        check_idempotent(&ts, &ws, &plan);
    }

    #[test]
    fn recompute_is_stable() {
        let ts = tasks(997);
        let ws = workers(13, 0);
        let p1 = assign(&ts, &ws, &HashMap::new());
        let p2 = assign(&ts, &ws, &p1.assignment);
        assert_eq!(p2.moved, 0);
        assert_eq!(p1, p2);
    }

    #[test]
    fn valid_current_assignment_is_kept() {
        // A balanced but "unusual" current assignment is left alone.
        let ts = tasks(12);
        let ws = workers(3, 0);
        let current: HashMap<String, String> = ts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), ws[(i * 7 + 1) % 3].id.clone()))
            .collect();
        let plan = assign(&ts, &ws, &current);
        assert_eq!(plan.moved, 0);
        assert_eq!(plan.assignment, current);
    }

    #[test]
    fn adding_a_worker_moves_only_onto_it() {
        for (t, w) in [(1000, 10), (1003, 10), (10, 3), (9, 3), (2, 4)] {
            let ts = tasks(t);
            let mut ws = workers(w, 0);
            let p1 = assign(&ts, &ws, &HashMap::new());
            ws.push(worker("w-new", 0, &KINDS));
            let p2 = assign(&ts, &ws, &p1.assignment);
            check_invariants(&ts, &ws, &p2);
            let d = diff(&p1, &p2);
            assert_eq!(p2.moved, d.len());
            assert!(
                p2.moved <= t.div_ceil(w + 1),
                "T={t} W={w}: moved {}",
                p2.moved
            );
            assert!(d.iter().all(|(_, _, to)| to == "w-new"), "T={t} W={w}");
            let (min, max) = spread(&p2, &ws);
            assert!(max - min <= 1, "T={t} W={w}");
            assert_eq!(loads(&p2, &ws)["w-new"], p2.moved);
        }
    }

    #[test]
    fn removing_a_worker_moves_only_its_tasks() {
        for (t, w, gone) in [
            (1000, 10, 3),
            (1003, 10, 0),
            (10, 4, 1),
            (10, 4, 3),
            (5, 8, 7),
        ] {
            let ts = tasks(t);
            let ws = workers(w, 0);
            let p1 = assign(&ts, &ws, &HashMap::new());
            let gone_id = ws[gone].id.clone();
            let had = loads(&p1, &ws)[&gone_id];
            let ws2: Vec<_> = ws.iter().filter(|x| x.id != gone_id).cloned().collect();
            let p2 = assign(&ts, &ws2, &p1.assignment);
            check_invariants(&ts, &ws2, &p2);
            assert_eq!(p2.moved, had, "T={t} W={w}");
            for (task, wk) in &p1.assignment {
                if *wk != gone_id {
                    assert_eq!(&p2.assignment[task], wk, "{task} moved needlessly");
                }
            }
            let (min, max) = spread(&p2, &ws2);
            assert!(max - min <= 1);
        }
    }

    #[test]
    fn draining_worker_ends_empty_and_only_its_tasks_move() {
        let ts = tasks(500);
        let mut ws = workers(7, 0);
        let p1 = assign(&ts, &ws, &HashMap::new());
        let had = loads(&p1, &ws)["w002"];
        ws[2].accepts_tasks = false;
        let p2 = assign(&ts, &ws, &p1.assignment);
        check_invariants(&ts, &ws, &p2);
        assert_eq!(loads(&p2, &ws)["w002"], 0);
        assert_eq!(p2.moved, had);
        assert!(diff(&p1, &p2).iter().all(|(_, from, _)| from == "w002"));
        check_idempotent(&ts, &ws, &p2);
    }

    #[test]
    fn no_workers_means_everything_unassigned() {
        let ts = vec![task("b", "kafka"), task("a", "objects"), task("c", "kafka")];
        let current: HashMap<String, String> = [("a".to_string(), "gone".to_string())].into();
        let plan = assign(&ts, &[], &current);
        assert!(plan.assignment.is_empty());
        assert_eq!(plan.unassigned, vec!["a", "b", "c"]);
        assert_eq!(plan.moved, 0);
    }

    #[test]
    fn zero_tasks() {
        let current: HashMap<String, String> = [("t".to_string(), "w000".to_string())].into();
        let plan = assign(&[], &workers(3, 0), &current);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn unknown_entries_in_current_are_ignored() {
        let ts = tasks(4);
        let ws = workers(2, 0);
        let current: HashMap<String, String> = [
            ("t00000".to_string(), "ghost".to_string()), // worker gone: counts as moved
            ("t00001".to_string(), "w001".to_string()),  // kept
            ("no-such-task".to_string(), "w000".to_string()), // ignored
        ]
        .into();
        let plan = assign(&ts, &ws, &current);
        check_invariants(&ts, &ws, &plan);
        assert_eq!(plan.assignment.len(), 4);
        assert!(!plan.assignment.contains_key("no-such-task"));
        assert_eq!(plan.assignment["t00001"], "w001");
        assert_eq!(plan.moved, 1);
        let (min, max) = spread(&plan, &ws);
        assert_eq!((min, max), (2, 2));
    }

    #[test]
    fn deterministic_regardless_of_input_order() {
        let ts = tasks(300);
        let ws = vec![
            worker("a", 0, &["kafka"]),
            worker("b", 40, &KINDS),
            worker("c", 0, &["objects"]),
            worker("d", 0, &KINDS),
        ];
        let current: HashMap<String, String> = ts
            .iter()
            .step_by(3)
            .map(|t| (t.id.clone(), "d".to_string()))
            .collect();
        let p1 = assign(&ts, &ws, &current);
        let mut ts_rev = ts.clone();
        ts_rev.reverse();
        let mut ws_rev = ws.clone();
        ws_rev.reverse();
        // A fresh HashMap with the same content iterates in a different order.
        let current2: HashMap<String, String> = current
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for _ in 0..3 {
            assert_eq!(assign(&ts_rev, &ws_rev, &current2), p1);
        }
    }

    /// Tiny xorshift64* PRNG so the property test needs no crates and is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    #[test]
    fn property_random_scenarios() {
        const ALL_KINDS: [&str; 3] = ["kafka", "objects", "logs"];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for scenario in 0..400 {
            let nw = rng.below(9) as usize;
            let nt = rng.below(80) as usize;
            let homogeneous = rng.chance(30);
            let ws: Vec<WorkerSlot> = (0..nw)
                .map(|i| {
                    let caps: Vec<&str> = if homogeneous {
                        KINDS.to_vec()
                    } else {
                        ALL_KINDS
                            .iter()
                            .copied()
                            .filter(|_| rng.chance(60))
                            .collect()
                    };
                    let mut w = worker(&format!("w{i}"), 0, &caps);
                    if !homogeneous {
                        w.capacity = if rng.chance(50) {
                            0
                        } else {
                            rng.below(15) as u32
                        };
                        w.accepts_tasks = rng.chance(85);
                    }
                    w
                })
                .collect();
            let ts: Vec<TaskReq> = (0..nt)
                .map(|i| {
                    let k = if homogeneous {
                        KINDS[i % 2]
                    } else {
                        ALL_KINDS[rng.below(3) as usize]
                    };
                    task(&format!("t{i}"), k)
                })
                .collect();
            let mut current = HashMap::new();
            for t in &ts {
                match rng.below(4) {
                    0 => {}
                    1 => {
                        current.insert(t.id.clone(), "ghost".to_string());
                    }
                    _ if nw > 0 => {
                        let w = &ws[rng.below(nw as u64) as usize];
                        current.insert(t.id.clone(), w.id.clone());
                    }
                    _ => {}
                }
            }

            let plan = assign(&ts, &ws, &current);
            check_invariants(&ts, &ws, &plan);
            check_idempotent(&ts, &ws, &plan);
            // Same input, different order and HashMap instance: same output.
            let mut ts_rev = ts.clone();
            ts_rev.reverse();
            let cur2: HashMap<String, String> = current
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(assign(&ts_rev, &ws, &cur2), plan, "scenario {scenario}");
            // moved == tasks placed on a worker other than their current entry.
            let expect_moved = plan
                .assignment
                .iter()
                .filter(|(t, w)| current.get(*t).is_some_and(|c| c != *w))
                .count();
            assert_eq!(plan.moved, expect_moved, "scenario {scenario}");

            if homogeneous && nw > 0 {
                let (min, max) = spread(&plan, &ws);
                assert!(max - min <= 1, "scenario {scenario}: uneven");
                // Membership changes from a balanced plan move only what they must.
                let mut plus = ws.clone();
                plus.push(worker("zz-new", 0, &KINDS));
                let p_add = assign(&ts, &plus, &plan.assignment);
                assert!(p_add.moved <= nt.div_ceil(nw + 1), "scenario {scenario}");
                assert!(diff(&plan, &p_add).iter().all(|(_, _, to)| to == "zz-new"));
                check_idempotent(&ts, &plus, &p_add);
                let gone = rng.below(nw as u64) as usize;
                let minus: Vec<_> = ws
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != gone)
                    .map(|(_, w)| w.clone())
                    .collect();
                let p_rm = assign(&ts, &minus, &plan.assignment);
                let had = loads(&plan, &ws)[&ws[gone].id];
                if nw > 1 {
                    assert_eq!(p_rm.moved, had, "scenario {scenario}");
                    assert!(diff(&plan, &p_rm)
                        .iter()
                        .all(|(_, from, _)| *from == ws[gone].id));
                } else {
                    assert_eq!(p_rm.unassigned.len(), nt);
                }
            }
        }
    }
}
