//! What the demo reads from a coordinator over HTTP, as any client would: its `/api/v1/drift`
//! report, turned into one compact line per datasource and poll, with the test for "the
//! injected fault is detected"; and its `/api/v1/regions` peer view, with the test for "this
//! region is seen unreachable". Only the fields used are read; the APIs may add more.

use serde::Deserialize;

/// The parts of a drift report the demo shows.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub checked_at: String,
    pub datasources: Vec<Datasource>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Datasource {
    pub datasource: String,
    pub verdict: String,
    pub reason: String,
    pub sites: Vec<Site>,
    #[serde(default)]
    pub divergent_buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Site {
    pub site: String,
    pub rows: Option<i64>,
    pub records_behind: Option<i64>,
    pub mirror_behind: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Bucket {
    pub bucket: String,
    pub rows: std::collections::BTreeMap<String, i64>,
    pub sites: Vec<String>,
}

/// `drift: clicks in_sync | site-a 20000 rows, 0 behind | site-b ... | <reason>`.
pub fn line(ds: &Datasource) -> String {
    let mut out = format!("drift: {} {}", ds.datasource, ds.verdict);
    for s in &ds.sites {
        out.push_str(" | ");
        out.push_str(&s.site);
        match (s.rows, &s.error) {
            (_, Some(e)) => {
                out.push_str(" unreadable: ");
                out.push_str(e);
                continue;
            }
            (Some(r), None) => out.push_str(&format!(" {r} rows")),
            (None, None) => out.push_str(" ? rows"),
        }
        match s.records_behind {
            Some(b) => out.push_str(&format!(", {b} behind")),
            None => out.push_str(", ? behind"),
        }
        if let Some(m) = s.mirror_behind.filter(|m| *m > 0) {
            out.push_str(&format!(" ({m} not mirrored yet)"));
        }
    }
    out.push_str(" | ");
    out.push_str(&ds.reason);
    out
}

/// The first divergent bucket that names `site`, if the datasource diverged there.
pub fn divergence_at<'a>(ds: &'a Datasource, site: &str) -> Option<&'a Bucket> {
    if ds.verdict != "diverged" {
        return None;
    }
    ds.divergent_buckets
        .iter()
        .find(|b| b.sites.iter().any(|s| s == site))
}

/// A coordinator's view of every region (`/api/v1/regions`).
#[derive(Debug, Clone, Deserialize)]
pub struct Regions {
    /// The answering coordinator's own region.
    pub region: String,
    pub regions: Vec<PeerRegion>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeerRegion {
    pub region: String,
    /// `ok`, `unreachable` or `unknown`.
    pub state: String,
    #[serde(default)]
    pub unreachable_since: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl Regions {
    /// `region`'s entry when the view has it unreachable.
    pub fn unreachable(&self, region: &str) -> Option<&PeerRegion> {
        self.regions
            .iter()
            .find(|r| r.region == region && r.state == "unreachable")
    }

    /// Whether the view has `region` answering again.
    pub fn ok(&self, region: &str) -> bool {
        self.regions
            .iter()
            .any(|r| r.region == region && r.state == "ok")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: serde_json::Value) -> Report {
        serde_json::from_value(json).expect("report")
    }

    #[test]
    fn lines_show_verdict_rows_behind_and_reason() {
        let r = report(serde_json::json!({
            "checked_at": "2026-01-01T00:00:00.000Z", "verdict": "lagging",
            "datasources": [{
                "flow": "clicks", "datasource": "clicks", "verdict": "lagging",
                "reason": "site-b is 12 source records behind",
                "sites": [
                    {"site": "site-a", "rows": 100, "records_behind": 0, "mirror_behind": 0, "error": null},
                    {"site": "site-b", "rows": 88, "records_behind": 12, "mirror_behind": 5, "error": null}
                ],
                "divergent_buckets": []
            }]
        }));
        assert_eq!(
            line(&r.datasources[0]),
            "drift: clicks lagging | site-a 100 rows, 0 behind | site-b 88 rows, 12 behind (5 not mirrored yet) | site-b is 12 source records behind"
        );
        assert!(divergence_at(&r.datasources[0], "site-b").is_none());
    }

    #[test]
    fn divergence_names_the_site() {
        let r = report(serde_json::json!({
            "checked_at": "x",
            "datasources": [{
                "datasource": "clicks", "verdict": "diverged",
                "reason": "1 bucket(s) differ, first 2026-01-01T03:00:00.000Z at site-b",
                "sites": [
                    {"site": "site-a", "rows": 100, "records_behind": 0, "mirror_behind": 0, "error": null},
                    {"site": "site-b", "rows": null, "records_behind": null, "mirror_behind": null, "error": "site site-b: Druid unreachable"}
                ],
                "divergent_buckets": [{"bucket": "2026-01-01T03:00:00.000Z", "rows": {"site-a": 40, "site-b": 0}, "sites": ["site-b"]}]
            }]
        }));
        let ds = &r.datasources[0];
        assert_eq!(
            divergence_at(ds, "site-b").map(|b| b.bucket.as_str()),
            Some("2026-01-01T03:00:00.000Z")
        );
        assert!(divergence_at(ds, "site-a").is_none());
        assert!(line(ds).contains("site-b unreadable: site site-b: Druid unreachable"));
    }

    #[test]
    fn regions_view_tells_unreachable_from_ok() {
        let v: Regions = serde_json::from_value(serde_json::json!({
            "region": "eu",
            "regions": [
                {"region": "eu", "state": "ok", "self": true, "unreachable_since": null,
                 "error": null, "workers_alive": 1, "tasks_total": 3},
                {"region": "us", "state": "unreachable", "self": false,
                 "unreachable_since": "2026-01-01T00:00:01.000Z",
                 "error": "connection refused", "workers_alive": null}
            ]
        }))
        .expect("regions");
        assert_eq!(v.region, "eu");
        let us = v.unreachable("us").expect("us unreachable");
        assert_eq!(
            us.unreachable_since.as_deref(),
            Some("2026-01-01T00:00:01.000Z")
        );
        assert_eq!(us.error.as_deref(), Some("connection refused"));
        assert!(v.unreachable("eu").is_none());
        assert!(v.ok("eu") && !v.ok("us"));
        // Fields the demo does not read may be missing.
        let bare: Regions = serde_json::from_value(serde_json::json!({
            "region": "eu", "regions": [{"region": "us", "state": "unknown"}]
        }))
        .expect("bare");
        assert!(bare.unreachable("us").is_none() && !bare.ok("us"));
    }
}
