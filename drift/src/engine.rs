//! The drift engine's pure comparison logic: no I/O, no clock. Given what every site's Druid
//! reported, it decides which time ranges need the fine pass, which buckets diverge (and at
//! which sites), which differences lag explains, and the verdict. `check.rs` gathers the
//! inputs; everything that decides lives here, unit-tested.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A datasource's verdict, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    InSync,
    Lagging,
    Diverged,
    Unknown,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::InSync,
        Verdict::Lagging,
        Verdict::Diverged,
        Verdict::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::InSync => "in_sync",
            Verdict::Lagging => "lagging",
            Verdict::Diverged => "diverged",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Epoch-millisecond interval `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

/// The compared window: `[floor(now - window), floor(now - settle))`, both on bucket bounds.
pub fn window(now_ms: i64, window_ms: i64, settle_ms: i64, bucket_ms: i64) -> Span {
    let floor = |t: i64| t.div_euclid(bucket_ms) * bucket_ms;
    Span {
        start: floor(now_ms - window_ms),
        end: floor(now_ms - settle_ms),
    }
}

/// The coarse pass's outcome for one datasource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coarse {
    /// Segment intervals inside the window on which every site agrees: same interval, same
    /// row count. Their rows count once per site.
    pub agreed: Vec<(Span, i64)>,
    /// The rest of the window, merged: ranges the fine per-bucket pass must query.
    pub fine: Vec<Span>,
}

/// Splits the window into intervals every site agrees on (from `sys.segments`: identical
/// `[start, end)` with identical, non-zero row counts, fully inside the window) and ranges
/// left to the fine pass: intervals that differ or are missing somewhere, intervals crossing
/// the window's edges, and time no published segment covers (realtime data). With
/// `coarse_usable = false` (a count that `num_rows` does not measure, such as `SUM("count")`
/// over rolled-up rows) the whole window goes to the fine pass.
pub fn coarse(window: Span, sites: &[Vec<(Span, i64)>], coarse_usable: bool) -> Coarse {
    if window.end <= window.start {
        return Coarse::default();
    }
    let mut agreed = Vec::new();
    if coarse_usable && !sites.is_empty() {
        let maps: Vec<BTreeMap<Span, i64>> = sites
            .iter()
            .map(|s| {
                let mut m = BTreeMap::new();
                for (span, rows) in s {
                    *m.entry(*span).or_insert(0) += rows;
                }
                m
            })
            .collect();
        for (span, rows) in &maps[0] {
            let inside = span.start >= window.start && span.end <= window.end;
            if inside && *rows > 0 && maps[1..].iter().all(|m| m.get(span) == Some(rows)) {
                agreed.push((*span, *rows));
            }
        }
    }
    // Agreed intervals of one site never overlap each other (one row per interval), but
    // guard against overlapping input by merging before subtracting.
    let mut covered: Vec<Span> = agreed.iter().map(|(s, _)| *s).collect();
    covered.sort();
    let mut fine = Vec::new();
    let mut cursor = window.start;
    for span in covered {
        if span.start > cursor {
            fine.push(Span {
                start: cursor,
                end: span.start,
            });
        }
        cursor = cursor.max(span.end);
    }
    if cursor < window.end {
        fine.push(Span {
            start: cursor,
            end: window.end,
        });
    }
    Coarse { agreed, fine }
}

/// One bucket that differs beyond the tolerance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketDiff {
    /// Bucket start, epoch ms.
    pub bucket: i64,
    /// Rows per site (0 where a site has none).
    pub rows: BTreeMap<String, i64>,
    /// The sites that disagree with the reference count (the most common count; on a tie,
    /// the largest: a site missing rows is named, not the one that has them).
    pub sites: Vec<String>,
    /// (max - min) / max over the compared sites.
    pub difference: f64,
}

/// The fine pass's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Buckets that differ and that lag does not explain, in time order.
    pub divergent: Vec<BucketDiff>,
    /// Buckets that differ only at sites still catching up.
    pub lag_explained: usize,
}

/// How far a site is known to be catching up, for [`compare`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// From this bucket on, the site's counts are left out (its newest row's bucket, while
    /// it is behind).
    pub from_bucket: Option<i64>,
    /// Rows the site may still be missing anywhere in the window: its records behind, when
    /// known and rows are counted one per record (`COUNT(*)`). A deficit within it is lag.
    pub budget: Option<i64>,
}

/// Compares per-bucket counts. `counts[i]` is site `names[i]`'s bucket -> rows over the fine
/// ranges; `lag[i]` says how far site `i` is known to be catching up. A difference that only
/// a catching-up site makes, by having fewer rows (from its newest bucket on, or in total no
/// more than the records it has yet to ingest), is lag; any other difference diverges.
pub fn compare(
    names: &[String],
    counts: &[BTreeMap<i64, i64>],
    lag: &[Lag],
    max_drift: f64,
) -> Comparison {
    let buckets: BTreeSet<i64> = counts.iter().flat_map(|c| c.keys().copied()).collect();
    let value = |i: usize, b: i64| counts[i].get(&b).copied().unwrap_or(0);
    let lagging = |i: usize| {
        lag.get(i)
            .is_some_and(|l| l.from_bucket.is_some() || l.budget.is_some_and(|b| b > 0))
    };
    let differing: Vec<i64> = buckets
        .into_iter()
        .filter(|&b| {
            differs(
                &(0..names.len()).map(|i| value(i, b)).collect::<Vec<_>>(),
                max_drift,
            )
        })
        .collect();
    // The expected count of a bucket: the most any caught-up site has (or any site, when
    // every site is catching up).
    let expected = |b: i64| {
        let steady = (0..names.len())
            .filter(|&i| !lagging(i))
            .map(|i| value(i, b))
            .max();
        steady
            .or_else(|| (0..names.len()).map(|i| value(i, b)).max())
            .unwrap_or(0)
    };
    // A site whose whole deficit fits in its budget is explained by lag wherever it has
    // fewer rows.
    let within_budget: Vec<bool> = (0..names.len())
        .map(|i| match lag.get(i).and_then(|l| l.budget) {
            Some(budget) if budget > 0 => {
                let deficit: i64 = differing
                    .iter()
                    .map(|&b| (expected(b) - value(i, b)).max(0))
                    .sum();
                deficit <= budget
            }
            _ => false,
        })
        .collect();
    let mut out = Comparison::default();
    for bucket in differing {
        let all: Vec<i64> = (0..names.len()).map(|i| value(i, bucket)).collect();
        let exp = expected(bucket);
        let compared: Vec<usize> = (0..names.len())
            .filter(|&i| {
                let l = lag.get(i).copied().unwrap_or_default();
                let by_time = l.from_bucket.is_some_and(|f| bucket >= f);
                let by_budget = within_budget[i] && all[i] < exp;
                !(by_time || by_budget)
            })
            .collect();
        let values: Vec<i64> = compared.iter().map(|&i| all[i]).collect();
        if !differs(&values, max_drift) {
            out.lag_explained += 1;
            continue;
        }
        let reference = reference(&values);
        let max = values.iter().copied().max().unwrap_or(0);
        let min = values.iter().copied().min().unwrap_or(0);
        out.divergent.push(BucketDiff {
            bucket,
            rows: names.iter().cloned().zip(all.iter().copied()).collect(),
            sites: compared
                .iter()
                .filter(|&&i| all[i] != reference)
                .map(|&i| names[i].clone())
                .collect(),
            difference: if max > 0 {
                (max - min) as f64 / max as f64
            } else {
                0.0
            },
        });
    }
    out
}

/// Whether counts differ by more than `max_drift` relative to the largest.
fn differs(values: &[i64], max_drift: f64) -> bool {
    let (Some(max), Some(min)) = (values.iter().max(), values.iter().min()) else {
        return false;
    };
    if max == min {
        return false;
    }
    if *max <= 0 {
        return true;
    }
    (max - min) as f64 / *max as f64 > max_drift
}

/// The most common value; on a tie, the largest of them.
///
/// The tie rule does not look at which sites are catching up. It once preferred the
/// caught-up sites' count, but that made the name flip with lag: with two sites, a site that
/// lost an hour of rows was named while both were caught up, and the healthy site was named
/// instead in any poll where the healthy one was a few records behind (seen in
/// `lockstep demo`). Counts alone cannot tell a loss at one site from an excess at the
/// other; naming the site with fewer rows, in every poll, is the stable answer, and a loss
/// is the likelier fault.
fn reference(values: &[i64]) -> i64 {
    let mut freq: BTreeMap<i64, usize> = BTreeMap::new();
    for v in values {
        *freq.entry(*v).or_insert(0) += 1;
    }
    let top = freq.values().copied().max().unwrap_or(0);
    let tied: Vec<i64> = freq
        .iter()
        .filter(|(_, n)| **n == top)
        .map(|(v, _)| *v)
        .collect();
    tied.last().copied().unwrap_or(0)
}

/// What the verdict is decided from, per site.
#[derive(Debug, Clone, Default)]
pub struct SiteFacts {
    /// The site could not be read (a typed error's text).
    pub error: Option<String>,
    /// Source records not yet in the site's Druid; None when unknown.
    pub records_behind: Option<i64>,
    /// Newest row, epoch ms; None for an empty datasource.
    pub latest: Option<i64>,
    /// How long the oldest record not yet ingested has waited, ms; None when unknown.
    pub waiting_ms: Option<i64>,
    /// Behind, but within the lag tolerance ([`is_lagging`] said no): records in flight in a
    /// steady pipeline. Such a site's deficits are still excused as lag by [`compare`], but
    /// it does not make the datasource `lagging`.
    pub in_flight: bool,
}

/// Whether a site with `records_behind` counts as lagging, with hysteresis: it starts
/// lagging once its oldest record not yet ingested has waited longer than `tolerance_ms`,
/// and stays lagging until that wait falls to half of it, so a steady site whose wait
/// hovers around the tolerance does not flap between `in_sync` and `lagging`. A site behind
/// whose wait is unknown is lagging (no evidence that it is only in flight); a site not
/// behind never is.
pub fn is_lagging(
    records_behind: Option<i64>,
    waiting_ms: Option<i64>,
    tolerance_ms: i64,
    was_lagging: bool,
) -> bool {
    match (records_behind, waiting_ms) {
        (Some(r), _) if r <= 0 => false,
        (None, _) => false,
        (Some(_), None) => true,
        (Some(_), Some(w)) => {
            let threshold = if was_lagging {
                tolerance_ms / 2
            } else {
                tolerance_ms
            };
            w > threshold || (tolerance_ms == 0)
        }
    }
}

/// How far each site is catching up. A site with records behind (known) gets a budget of
/// that many rows when `rows_per_record` (each record is one counted row), and is left out
/// from its newest row's bucket on; with records behind unknown, a site whose newest row is
/// older than another site's by more than `slack_ms` is left out from its newest bucket on.
pub fn lags(facts: &[SiteFacts], bucket_ms: i64, slack_ms: i64, rows_per_record: bool) -> Vec<Lag> {
    let newest = facts.iter().filter_map(|f| f.latest).max();
    let floor = |l: Option<i64>| {
        l.map(|l| l.div_euclid(bucket_ms) * bucket_ms)
            .unwrap_or(i64::MIN)
    };
    facts
        .iter()
        .map(|f| match f.records_behind {
            Some(n) if n > 0 => Lag {
                from_bucket: Some(floor(f.latest)),
                budget: rows_per_record.then_some(n),
            },
            Some(_) => Lag::default(),
            None => {
                let behind = match (f.latest, newest) {
                    (Some(l), Some(n)) => n - l > slack_ms,
                    (None, Some(_)) => true,
                    _ => false,
                };
                Lag {
                    from_bucket: behind.then(|| floor(f.latest)),
                    budget: None,
                }
            }
        })
        .collect()
}

/// The verdict and a one-line reason.
pub fn verdict(
    names: &[String],
    facts: &[SiteFacts],
    comparison: &Comparison,
    slack_ms: i64,
) -> (Verdict, String) {
    // Errors name their site already (`site X: ...`).
    let errors: Vec<String> = facts.iter().filter_map(|f| f.error.clone()).collect();
    if !errors.is_empty() {
        return (
            Verdict::Unknown,
            format!("could not check: {}", errors.join("; ")),
        );
    }
    if let Some(first) = comparison.divergent.first() {
        let sites: BTreeSet<&String> = comparison
            .divergent
            .iter()
            .flat_map(|d| d.sites.iter())
            .collect();
        return (
            Verdict::Diverged,
            format!(
                "{} bucket(s) differ, first {} at {}",
                comparison.divergent.len(),
                crate::druid::format_time(first.bucket),
                sites.into_iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let newest = facts.iter().filter_map(|f| f.latest).max();
    let mut behind = Vec::new();
    let mut in_flight = Vec::new();
    for (n, f) in names.iter().zip(facts) {
        let waited = f
            .waiting_ms
            .map(|w| format!(", the oldest waiting {:.1}s", w as f64 / 1000.0))
            .unwrap_or_default();
        match f.records_behind {
            Some(r) if r > 0 && f.in_flight => {
                in_flight.push(format!("{n}: {r} records in flight{waited}"))
            }
            Some(r) if r > 0 => behind.push(format!("{n} is {r} source records behind{waited}")),
            _ => {
                if let (Some(l), Some(m)) = (f.latest, newest) {
                    if m - l > slack_ms {
                        behind.push(format!("{n}'s newest row is {}s older", (m - l) / 1000));
                    }
                }
            }
        }
    }
    if !behind.is_empty() || (comparison.lag_explained > 0 && in_flight.is_empty()) {
        if behind.is_empty() {
            behind.push(format!(
                "{} bucket(s) still catching up",
                comparison.lag_explained
            ));
        }
        return (Verdict::Lagging, behind.join("; "));
    }
    if !in_flight.is_empty() {
        return (
            Verdict::InSync,
            format!(
                "every site holds the same rows ({}; within the lag tolerance)",
                in_flight.join("; ")
            ),
        );
    }
    (
        Verdict::InSync,
        "every site holds the same rows".to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn span(a: i64, b: i64) -> Span {
        Span {
            start: a * H,
            end: b * H,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn counts(pairs: &[(i64, i64)]) -> BTreeMap<i64, i64> {
        pairs.iter().map(|(b, r)| (b * H, *r)).collect()
    }

    #[test]
    fn window_is_bucket_aligned_and_excludes_settling() {
        let now = 100 * H + 20 * 60_000; // 100h20m
        let w = window(now, 24 * H, 30 * 60_000, H);
        assert_eq!(w, span(76, 99));
    }

    #[test]
    fn coarse_agrees_on_identical_intervals_and_refines_the_rest() {
        let a = vec![(span(0, 1), 10), (span(1, 2), 10), (span(2, 3), 7)];
        let b = vec![(span(0, 1), 10), (span(1, 2), 9), (span(2, 3), 7)];
        let c = coarse(span(0, 4), &[a, b], true);
        assert_eq!(c.agreed, vec![(span(0, 1), 10), (span(2, 3), 7)]);
        // 1-2 differs; 3-4 has no published segment (realtime).
        assert_eq!(c.fine, vec![span(1, 2), span(3, 4)]);
    }

    #[test]
    fn coarse_missing_interval_and_edge_crossing_go_fine() {
        let a = vec![(span(0, 24), 100), (span(24, 48), 50)];
        let b = vec![(span(24, 48), 50)];
        // Window 10h..30h: the day 0-24 crosses the start edge; 24-48 crosses the end.
        let c = coarse(span(10, 30), &[a.clone(), b.clone()], true);
        assert!(c.agreed.is_empty());
        assert_eq!(c.fine, vec![span(10, 30)]);
        let c = coarse(span(0, 48), &[a, b], true);
        assert_eq!(c.agreed, vec![(span(24, 48), 50)]);
        assert_eq!(c.fine, vec![span(0, 24)]);
    }

    #[test]
    fn coarse_unusable_means_whole_window_fine() {
        let a = vec![(span(0, 1), 10)];
        let c = coarse(span(0, 2), &[a.clone(), a], false);
        assert!(c.agreed.is_empty());
        assert_eq!(c.fine, vec![span(0, 2)]);
    }

    #[test]
    fn coarse_zero_rows_is_not_agreement() {
        // num_rows null/0: not loaded yet, proves nothing.
        let a = vec![(span(0, 1), 0)];
        let c = coarse(span(0, 1), &[a.clone(), a], true);
        assert_eq!(c.fine, vec![span(0, 1)]);
    }

    #[test]
    fn empty_window_has_nothing_to_do() {
        let c = coarse(span(5, 5), &[vec![], vec![]], true);
        assert_eq!(c, Coarse::default());
    }

    #[test]
    fn dropped_hour_names_the_site_with_fewer_rows() {
        let n = names(&["a", "b"]);
        let c = compare(
            &n,
            &[
                counts(&[(1, 100), (2, 100), (3, 100)]),
                counts(&[(1, 100), (3, 100)]),
            ],
            &[Lag::default(); 2],
            0.0,
        );
        assert_eq!(c.divergent.len(), 1);
        let d = &c.divergent[0];
        assert_eq!(d.bucket, 2 * H);
        assert_eq!(d.sites, vec!["b"]);
        assert_eq!(d.rows["b"], 0);
        assert_eq!(d.difference, 1.0);
    }

    #[test]
    fn majority_decides_which_site_differs() {
        let n = names(&["a", "b", "c"]);
        let c = compare(
            &n,
            &[
                counts(&[(1, 100)]),
                counts(&[(1, 120)]),
                counts(&[(1, 100)]),
            ],
            &[Lag::default(); 3],
            0.0,
        );
        assert_eq!(c.divergent[0].sites, vec!["b"], "the extra rows are b's");
    }

    #[test]
    fn tolerance_is_relative() {
        let n = names(&["a", "b"]);
        let within = compare(
            &n,
            &[counts(&[(1, 10_000)]), counts(&[(1, 9_995)])],
            &[Lag::default(); 2],
            0.001,
        );
        assert!(within.divergent.is_empty());
        let beyond = compare(
            &n,
            &[counts(&[(1, 10_000)]), counts(&[(1, 9_989)])],
            &[Lag::default(); 2],
            0.001,
        );
        assert_eq!(beyond.divergent.len(), 1);
    }

    #[test]
    fn lag_explains_only_buckets_from_the_sites_newest_row() {
        let n = names(&["a", "b"]);
        let a = counts(&[(1, 10), (2, 10), (3, 10), (4, 10)]);
        let b = counts(&[(1, 10), (2, 10), (3, 4)]);
        let facts = vec![
            SiteFacts {
                records_behind: Some(0),
                latest: Some(4 * H + 1),
                ..Default::default()
            },
            SiteFacts {
                records_behind: Some(26),
                latest: Some(3 * H + 5),
                ..Default::default()
            },
        ];
        let ex = lags(&facts, H, 0, false);
        assert_eq!(
            ex,
            vec![
                Lag::default(),
                Lag {
                    from_bucket: Some(3 * H),
                    budget: None
                }
            ]
        );
        let c = compare(&n, &[a, b], &ex, 0.0);
        assert!(c.divergent.is_empty(), "{:?}", c.divergent);
        assert_eq!(c.lag_explained, 2);
        let (v, why) = verdict(&n, &facts, &c, 0);
        assert_eq!(v, Verdict::Lagging);
        assert!(why.contains("b is 26 source records behind"), "{why}");
    }

    #[test]
    fn a_hole_before_the_lag_is_still_divergence() {
        let n = names(&["a", "b"]);
        let a = counts(&[(1, 10), (2, 10), (3, 10), (4, 10)]);
        let b = counts(&[(1, 10), (3, 10)]);
        let facts = vec![
            SiteFacts {
                records_behind: Some(0),
                latest: Some(4 * H),
                ..Default::default()
            },
            SiteFacts {
                records_behind: Some(10),
                latest: Some(3 * H + 1),
                ..Default::default()
            },
        ];
        let ex = lags(&facts, H, 0, true);
        let c = compare(&n, &[a.clone(), b.clone()], &ex, 0.0);
        assert_eq!(c.divergent.len(), 1);
        assert_eq!(c.divergent[0].bucket, 2 * H);
        assert_eq!(verdict(&n, &facts, &c, 0).0, Verdict::Diverged);
    }

    #[test]
    fn a_deficit_within_records_behind_is_lag_anywhere_in_the_window() {
        // b is paused; the 30 records it has yet to ingest are late data for hours 1 and 2.
        let n = names(&["a", "b"]);
        let a = counts(&[(1, 20), (2, 20), (3, 10)]);
        let b = counts(&[(1, 5), (2, 5), (3, 10)]);
        let facts = vec![
            SiteFacts {
                records_behind: Some(0),
                latest: Some(3 * H + 9),
                ..Default::default()
            },
            SiteFacts {
                records_behind: Some(30),
                latest: Some(3 * H + 9),
                ..Default::default()
            },
        ];
        let c = compare(&n, &[a.clone(), b.clone()], &lags(&facts, H, 0, true), 0.0);
        assert!(c.divergent.is_empty(), "{:?}", c.divergent);
        assert_eq!(c.lag_explained, 2);
        assert_eq!(verdict(&n, &facts, &c, 0).0, Verdict::Lagging);
        // 30 behind cannot explain 31 missing rows.
        let b = counts(&[(1, 4), (2, 5), (3, 10)]);
        let c = compare(&n, &[a.clone(), b], &lags(&facts, H, 0, true), 0.0);
        assert_eq!(c.divergent.len(), 2);
        // Nor can lag explain rows a catching-up site has in excess. With two sites the
        // counts cannot tell b's excess from a's loss; the site with fewer rows is named, as
        // it is once b has caught up: the name does not flip with lag.
        let b = counts(&[(1, 25), (2, 20), (3, 10)]);
        let c = compare(&n, &[a.clone(), b.clone()], &lags(&facts, H, 0, true), 0.0);
        assert_eq!(c.divergent.len(), 1);
        assert_eq!(c.divergent[0].sites, vec!["a"]);
        let caught_up = vec![facts[0].clone(), facts[0].clone()];
        let c = compare(&n, &[a, b], &lags(&caught_up, H, 0, true), 0.0);
        assert_eq!(c.divergent[0].sites, vec!["a"]);
    }

    #[test]
    fn the_site_that_lost_rows_is_named_while_the_other_catches_up() {
        // As in `lockstep demo`: b lost hour 1; a is a few records behind on newer data.
        let n = names(&["a", "b"]);
        let a = counts(&[(1, 4091), (2, 100)]);
        let b = counts(&[(1, 0), (2, 115)]);
        let mut facts = vec![
            SiteFacts {
                records_behind: Some(15),
                latest: Some(2 * H + 9),
                ..Default::default()
            },
            SiteFacts {
                records_behind: Some(0),
                latest: Some(2 * H + 9),
                ..Default::default()
            },
        ];
        let c = compare(&n, &[a.clone(), b.clone()], &lags(&facts, H, 0, true), 0.0);
        assert_eq!(c.divergent.len(), 1, "{:?}", c.divergent);
        assert_eq!(c.divergent[0].sites, vec!["b"]);
        facts[0].records_behind = Some(0);
        let c = compare(&n, &[a, b], &lags(&facts, H, 0, true), 0.0);
        assert_eq!(c.divergent[0].sites, vec!["b"]);
    }

    #[test]
    fn a_caught_up_site_is_never_excused() {
        let facts = vec![
            SiteFacts {
                records_behind: Some(0),
                latest: Some(4 * H),
                ..Default::default()
            },
            SiteFacts {
                records_behind: Some(0),
                latest: Some(2 * H),
                ..Default::default()
            },
        ];
        assert_eq!(lags(&facts, H, 0, true), vec![Lag::default(); 2]);
    }

    #[test]
    fn unknown_offsets_fall_back_to_freshness() {
        let facts = vec![
            SiteFacts {
                latest: Some(4 * H),
                ..Default::default()
            },
            SiteFacts {
                latest: Some(2 * H + 10),
                ..Default::default()
            },
            SiteFacts::default(),
        ];
        let from: Vec<Option<i64>> = lags(&facts, H, 60_000, true)
            .iter()
            .map(|l| l.from_bucket)
            .collect();
        assert_eq!(from, vec![None, Some(2 * H), Some(i64::MIN)]);
    }

    #[test]
    fn an_unreachable_site_is_unknown_never_zero() {
        let n = names(&["a", "b"]);
        let facts = vec![
            SiteFacts::default(),
            SiteFacts {
                error: Some("site b: Druid unreachable".into()),
                ..Default::default()
            },
        ];
        let (v, why) = verdict(&n, &facts, &Comparison::default(), 0);
        assert_eq!(v, Verdict::Unknown);
        assert!(
            why.contains("could not check: site b: Druid unreachable"),
            "{why}"
        );
    }

    #[test]
    fn in_sync_when_equal_and_caught_up() {
        let n = names(&["a", "b"]);
        let facts = vec![
            SiteFacts {
                records_behind: Some(0),
                latest: Some(H),
                ..Default::default()
            };
            2
        ];
        let c = compare(
            &n,
            &[counts(&[(1, 5)]), counts(&[(1, 5)])],
            &[Lag::default(); 2],
            0.0,
        );
        assert_eq!(verdict(&n, &facts, &c, 0).0, Verdict::InSync);
    }

    #[test]
    fn lag_has_a_tolerance_and_hysteresis() {
        // Caught up or unknown: never lagging.
        assert!(!is_lagging(Some(0), Some(90_000), 30_000, true));
        assert!(!is_lagging(None, None, 30_000, false));
        // Behind with no wait known: lagging.
        assert!(is_lagging(Some(5), None, 30_000, false));
        // Enters above the tolerance, leaves below half of it.
        assert!(!is_lagging(Some(5), Some(29_000), 30_000, false));
        assert!(is_lagging(Some(5), Some(31_000), 30_000, false));
        assert!(is_lagging(Some(5), Some(20_000), 30_000, true));
        assert!(!is_lagging(Some(5), Some(14_000), 30_000, true));
        // A steady site hovering around the tolerance does not flap once lagging.
        let mut was = false;
        let mut changes = 0;
        for w in [
            25_000, 31_000, 28_000, 32_000, 27_000, 29_500, 31_000, 26_000,
        ] {
            let now = is_lagging(Some(3), Some(w), 30_000, was);
            changes += usize::from(now != was);
            was = now;
        }
        assert_eq!(changes, 1, "entered once, never left");
        // Zero tolerance: any record behind is lag.
        assert!(is_lagging(Some(1), Some(0), 0, false));
    }

    #[test]
    fn records_in_flight_keep_a_site_in_sync() {
        let n = names(&["a", "b"]);
        let facts = vec![
            SiteFacts {
                records_behind: Some(0),
                latest: Some(H),
                ..Default::default()
            },
            SiteFacts {
                records_behind: Some(7),
                latest: Some(H),
                waiting_ms: Some(1_200),
                in_flight: true,
                ..Default::default()
            },
        ];
        let c = compare(
            &n,
            &[counts(&[(1, 5)]), counts(&[(1, 5)])],
            &lags(&facts, H, 0, true),
            0.0,
        );
        let (v, why) = verdict(&n, &facts, &c, 0);
        assert_eq!(v, Verdict::InSync, "{why}");
        assert!(
            why.contains("b: 7 records in flight, the oldest waiting 1.2s"),
            "{why}"
        );
    }

    #[test]
    fn verdicts_order_worst_last() {
        assert!(Verdict::Unknown > Verdict::Diverged);
        assert!(Verdict::Diverged > Verdict::Lagging);
        assert!(Verdict::Lagging > Verdict::InSync);
    }
}
