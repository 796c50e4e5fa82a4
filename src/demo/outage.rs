//! The region outage the demo injects once the drift fault has been detected: region `us`'s
//! control plane (its coordinator and its worker) stops while the load keeps producing, as
//! when a datacenter goes dark; region `eu` keeps mirroring into its site, eu's coordinator
//! reports us unreachable (its `/api/v1/regions` peer view), and us, started again on the same
//! addresses and state store, resumes and mirrors into its site everything produced meanwhile.
//!
//! [`Outage::step`] runs on every tick of the demo's watch loop and prints each step once:
//! `region outage: ...`, `region <eu> keeps flowing: ...`, `region outage reported: ...` (or a
//! `note: region outage not reported: ...` when the coordinator has no peer view),
//! `region back: ...`, `region back reported: ...`, `region caught up: ...`; and
//! [`Outage::summary`] the `summary:` line. It decides when, never blocks on the stopped
//! region (its stop runs in a task of its own), and never outlasts `--duration`: with too
//! little time left it is skipped, and the region comes back early enough to catch up.

use super::load::Counters;
use super::region::RegionPlane;
use super::view;
use anyhow::Result;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// The region that goes dark, and the one that keeps running (indexes into the demo's
/// regions).
pub const DOWN: usize = 1;
pub const UP: usize = 0;
/// The region stays down at least this long (when everything it has to show has been shown)
/// and at most this long.
const MIN_DOWN: Duration = Duration::from_secs(6);
const MAX_DOWN: Duration = Duration::from_secs(15);
/// The other region's site is shown growing this long (a burst of the load lasts 2 s) before
/// the region returns.
const FLOWING: Duration = Duration::from_secs(3);
/// Time kept before `--duration` ends for the region to come back and catch up: the outage
/// is skipped when less than `MIN_DOWN` plus this is left, and the region returns this long
/// before the end at the latest.
const CATCH_UP_ROOM: Duration = Duration::from_secs(10);

/// What the outage has shown so far.
pub struct Outage {
    phase: Phase,
}

enum Phase {
    /// For the fault's detection.
    Waiting,
    Skipped(String),
    Down(Down),
    Back(Back),
}

struct Down {
    since: Instant,
    /// Since the demo's start.
    at: Duration,
    /// At the outage: records produced, and mirrored into each region's site.
    produced: u64,
    up_mirrored: u64,
    down_mirrored: u64,
    /// When the running region's site was first seen growing since the outage.
    flowing: Option<Instant>,
    reported: Reported,
}

#[derive(Clone)]
enum Reported {
    Pending,
    /// Seen this long after the outage.
    Seen(Duration),
    /// The coordinator has no peer view (or did not report in time): why.
    Not(String),
}

struct Back {
    since: Instant,
    down_at: Duration,
    down_for: Duration,
    /// Records mirrored into the running region's site during the outage (0: none).
    flowing: u64,
    reported: Reported,
    /// Records the returning region's site lacked at the return.
    behind: u64,
    seen_ok: bool,
    /// How long after the return, and the records produced by then.
    caught_up: Option<(Duration, u64)>,
}

/// What a step reads: the regions, the load's counters, the HTTP client, the demo's clock.
pub struct Cx<'a> {
    pub planes: &'a mut [RegionPlane],
    pub counters: &'a Counters,
    pub http: &'a reqwest::Client,
    pub started: Instant,
    pub deadline: Instant,
    pub fault_detected: bool,
}

impl Cx<'_> {
    fn mirrored(&self, region: usize) -> u64 {
        super::mirrored(self.planes, self.planes[region].site)
    }

    fn produced(&self) -> u64 {
        self.counters.produced.load(Ordering::Relaxed)
    }

    fn stamp(&self) -> String {
        format!("[{:.1}s]", self.started.elapsed().as_secs_f64())
    }

    /// The running region's peer view: Ok(None) while it cannot be read (tried again next
    /// tick), Err(why) when its coordinator has none.
    async fn peer_view(&self) -> Result<Option<view::Regions>, String> {
        let url = format!("http://{}/api/v1/regions", self.planes[UP].bound.http);
        let Ok(response) = self.http.get(&url).send().await else {
            return Ok(None);
        };
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(format!(
                "region {}'s coordinator answers 404 to /api/v1/regions (this build has no cross-region peer view)",
                self.planes[UP].name
            ));
        }
        if !response.status().is_success() {
            return Ok(None);
        }
        match response.json::<view::Regions>().await {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the regions view");
                Ok(None)
            }
        }
    }
}

impl Outage {
    pub fn new() -> Outage {
        Outage {
            phase: Phase::Waiting,
        }
    }

    /// One tick: takes the next step when it is due. An error (the region cannot start
    /// again) ends the demo.
    pub async fn step(&mut self, mut cx: Cx<'_>) -> Result<()> {
        match &mut self.phase {
            Phase::Waiting => {
                if cx.fault_detected {
                    self.phase = start(&mut cx);
                }
            }
            Phase::Skipped(_) => {}
            Phase::Down(d) => {
                watch_down(d, &cx).await;
                if let Some(back) = come_back(d, cx).await? {
                    self.phase = Phase::Back(back);
                }
            }
            Phase::Back(b) => watch_back(b, &cx).await,
        }
        Ok(())
    }

    /// `summary: ...`: what the outage showed.
    pub fn summary(&self, planes: &[RegionPlane]) -> String {
        let (down, up) = (planes[DOWN].name, planes[UP].name);
        let (down_site, up_site) = (planes[DOWN].site, planes[UP].site);
        match &self.phase {
            Phase::Waiting => {
                "summary: no region outage (it follows the fault's detection)".to_string()
            }
            Phase::Skipped(why) => format!("summary: no region outage ({why})"),
            Phase::Down(d) => format!(
                "summary: region {down} went down at {:.1}s and was still down at the end",
                d.at.as_secs_f64()
            ),
            Phase::Back(b) => {
                let flowing = match b.flowing {
                    0 => format!("{up} mirrored nothing new into {up_site} meanwhile"),
                    n => format!("{up} kept flowing ({up_site} +{n} records meanwhile)"),
                };
                let reported = match &b.reported {
                    Reported::Seen(after) => {
                        format!("reported by {up} {:.1}s in", after.as_secs_f64())
                    }
                    Reported::Not(why) => format!("not reported ({why})"),
                    Reported::Pending => "not reported".to_string(),
                };
                let caught_up = match b.caught_up {
                    Some((after, _)) => format!("caught up {:.1}s after", after.as_secs_f64()),
                    None => "not caught up before the end".to_string(),
                };
                format!(
                    "summary: region {down} down at {:.1}s for {:.1}s: {flowing}, {reported}; back with {down_site} {} records behind, {caught_up}",
                    b.down_at.as_secs_f64(),
                    b.down_for.as_secs_f64(),
                    b.behind
                )
            }
        }
    }
}

/// The fault has been detected: the region goes dark, or the outage is skipped for lack of
/// time.
fn start(cx: &mut Cx<'_>) -> Phase {
    let left = cx.deadline.saturating_duration_since(Instant::now());
    let needed = MIN_DOWN + CATCH_UP_ROOM;
    if left < needed {
        let why = format!(
            "only {:.0}s of --duration left, it needs {}s",
            left.as_secs_f64(),
            needed.as_secs()
        );
        println!("note: region outage skipped: {why}");
        return Phase::Skipped(why);
    }
    let d = Down {
        since: Instant::now(),
        at: cx.started.elapsed(),
        produced: cx.produced(),
        up_mirrored: cx.mirrored(UP),
        down_mirrored: cx.mirrored(DOWN),
        flowing: None,
        reported: Reported::Pending,
    };
    cx.planes[DOWN].go_dark();
    println!(
        "region outage: {} (coordinator and workers stopped)  {}",
        cx.planes[DOWN].name,
        cx.stamp()
    );
    Phase::Down(d)
}

/// While down: the other region's site grows, the other region's coordinator reports it.
async fn watch_down(d: &mut Down, cx: &Cx<'_>) {
    let (down, up) = (&cx.planes[DOWN], &cx.planes[UP]);
    if d.flowing.is_none() {
        let now = cx.mirrored(UP);
        if now > d.up_mirrored {
            let n = now - d.up_mirrored;
            d.flowing = Some(Instant::now());
            println!(
                "region {} keeps flowing: {} +{n} records mirrored since the outage (source +{}, {} +{})  {}",
                up.name,
                up.site,
                cx.produced().saturating_sub(d.produced),
                down.site,
                cx.mirrored(DOWN).saturating_sub(d.down_mirrored),
                cx.stamp()
            );
        }
    }
    if matches!(d.reported, Reported::Pending) {
        match cx.peer_view().await {
            Ok(Some(v)) => {
                if let Some(r) = v.unreachable(down.name) {
                    let after = d.since.elapsed();
                    d.reported = Reported::Seen(after);
                    println!(
                        "region outage reported: {} sees {} unreachable since {}, {:.1}s after the outage{}  {}",
                        v.region,
                        down.name,
                        r.unreachable_since.as_deref().unwrap_or("(not given)"),
                        after.as_secs_f64(),
                        r.error
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default(),
                        cx.stamp()
                    );
                }
            }
            Ok(None) => {}
            Err(why) => {
                println!("note: region outage not reported: {why}");
                d.reported = Reported::Not(why);
            }
        }
    }
}

/// The region returns once everything has been shown (the other region's site growing for
/// `FLOWING` at least, the report) and `MIN_DOWN` has passed, at `MAX_DOWN`, or when the end
/// is near.
async fn come_back(d: &mut Down, cx: Cx<'_>) -> Result<Option<Back>> {
    let down_for = d.since.elapsed();
    let shown = d.flowing.is_some_and(|t| t.elapsed() >= FLOWING)
        && !matches!(d.reported, Reported::Pending);
    let due = down_for >= MAX_DOWN || Instant::now() + CATCH_UP_ROOM >= cx.deadline;
    if !(due || shown && down_for >= MIN_DOWN) {
        return Ok(None);
    }
    let (down, up) = (cx.planes[DOWN].name, cx.planes[UP].name);
    if d.flowing.is_none() {
        println!(
            "note: region {up} mirrored nothing new into {} during the outage",
            cx.planes[UP].site
        );
    }
    if matches!(d.reported, Reported::Pending) {
        let why = format!(
            "{up} did not report {down} unreachable within {:.0}s",
            down_for.as_secs_f64()
        );
        println!("note: region outage not reported: {why}");
        d.reported = Reported::Not(why);
    }
    let up_grew = cx.mirrored(UP).saturating_sub(d.up_mirrored);
    let behind = cx.produced().saturating_sub(cx.mirrored(DOWN));
    cx.planes[DOWN].restart().await?;
    println!(
        "region back: {down} (coordinator and workers started again, same addresses and state store; {:.1}s down, {} {behind} records behind)  {}",
        down_for.as_secs_f64(),
        cx.planes[DOWN].site,
        cx.stamp()
    );
    Ok(Some(Back {
        since: Instant::now(),
        down_at: d.at,
        down_for,
        flowing: up_grew,
        reported: d.reported.clone(),
        behind,
        seen_ok: false,
        caught_up: None,
    }))
}

/// After the return: the region's site catches up, its peer sees it again.
async fn watch_back(b: &mut Back, cx: &Cx<'_>) {
    let down = &cx.planes[DOWN];
    if b.caught_up.is_none() {
        let produced = cx.produced();
        if cx.mirrored(DOWN) >= produced {
            let after = b.since.elapsed();
            b.caught_up = Some((after, produced));
            println!(
                "region caught up: {}, {} mirrored everything produced ({produced} records) {:.1}s after its return  {}",
                down.name,
                down.site,
                after.as_secs_f64(),
                cx.stamp()
            );
        }
    }
    if !b.seen_ok && matches!(b.reported, Reported::Seen(_)) {
        if let Ok(Some(v)) = cx.peer_view().await {
            if v.ok(down.name) {
                b.seen_ok = true;
                println!(
                    "region back reported: {} sees {} ok again, {:.1}s after its return  {}",
                    v.region,
                    down.name,
                    b.since.elapsed().as_secs_f64(),
                    cx.stamp()
                );
            }
        }
    }
}
