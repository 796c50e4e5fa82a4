//! [`DruidClient`]: one site's Druid over HTTP(S) (reqwest with rustls), with the site's basic
//! auth, extra CA file and timeout. SQL goes to the Router; the supervisor API to the
//! Overlord and the metadata API to the Coordinator, each through the Router unless the site
//! names their own URLs (a Router proxies them only with `druid.router.managementProxy.enabled`,
//! off by default: docs/design/router.md "Management proxy routing"). Each call is timed and counted in the drift
//! metrics ([`DriftMetrics`], `lockstep_druid_*`) and turns every failure into a [`DruidError`].

use crate::metrics::DriftMetrics;
use lockstep_config::{CountExpr, Druid, Granularity};
use lockstep_druid::*;
use serde::de::DeserializeOwned;
use std::time::Instant;

/// A client for one site's Router. Cheap to clone.
#[derive(Clone)]
pub struct DruidClient {
    site: String,
    base: reqwest::Url,
    /// Where the supervisor API is asked (`overlord_url`, else the Router).
    overlord: reqwest::Url,
    /// Where the Coordinator's metadata API is asked (`coordinator_url`, else the Router).
    coordinator: reqwest::Url,
    http: reqwest::Client,
    auth: Option<(String, lockstep_config::Secret)>,
    metrics: DriftMetrics,
}

impl std::fmt::Debug for DruidClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DruidClient")
            .field("site", &self.site)
            .field("base", &self.base.as_str())
            .field("overlord", &self.overlord.as_str())
            .finish_non_exhaustive()
    }
}

/// Quotes an SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes an SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl DruidClient {
    pub fn new(site: &str, cfg: &Druid, metrics: DriftMetrics) -> Result<Self, DruidError> {
        let setup = |message: String| DruidError::Setup {
            site: site.to_string(),
            message,
        };
        let parse = |field: &str, url: &str| {
            reqwest::Url::parse(url).map_err(|e| setup(format!("{field} \"{url}\": {e}")))
        };
        let base = parse("router_url", &cfg.router_url)?;
        let overlord = match &cfg.overlord_url {
            Some(u) => parse("overlord_url", u)?,
            None => base.clone(),
        };
        let coordinator = match &cfg.coordinator_url {
            Some(u) => parse("coordinator_url", u)?,
            None => base.clone(),
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(std::time::Duration::from_secs(10)))
            .user_agent(concat!("lockstep/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| setup(format!("ca_file \"{path}\": cannot read: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup(format!("ca_file \"{path}\": not PEM certificates: {e}")))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| setup(format!("HTTP client: {e}")))?;
        let auth = cfg.username.clone().map(|u| {
            (
                u,
                cfg.password
                    .clone()
                    .unwrap_or_else(|| lockstep_config::Secret::new("")),
            )
        });
        Ok(DruidClient {
            site: site.to_string(),
            base,
            overlord,
            coordinator,
            http,
            auth,
            metrics,
        })
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    /// Whether the supervisor API goes through the Router (no `overlord_url`).
    pub fn overlord_via_router(&self) -> bool {
        self.overlord == self.base
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        Self::join(&self.base, segments)
    }

    fn join(base: &reqwest::Url, segments: &[&str]) -> reqwest::Url {
        let mut url = base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// Sends a request and decodes a JSON answer; `endpoint` names it in metrics and errors.
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, DruidError> {
        let started = Instant::now();
        let result = self.call_inner(endpoint, request).await;
        self.metrics
            .druid_request_seconds
            .with_label_values(&[&self.site, endpoint])
            .observe(started.elapsed().as_secs_f64());
        // Up unless nothing answered, or a proxy in front answered that Druid behind it is
        // down (a 502/503/504 page). A 404 page from a Router without the management proxy
        // is Druid answering (its Jetty), not an outage.
        let answered = match &result {
            Ok(_) => true,
            Err(DruidError::NotJson { status, .. }) => *status < 502,
            Err(e) => e.druid_answered(),
        };
        self.metrics
            .druid_up
            .with_label_values(&[&self.site])
            .set(i64::from(answered));
        if let Err(e) = &result {
            self.metrics
                .druid_errors
                .with_label_values(&[&self.site, e.kind()])
                .inc();
            tracing::debug!(site = %self.site, endpoint, error = %e, "Druid call failed");
        }
        result
    }

    async fn call_inner<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        mut request: reqwest::RequestBuilder,
    ) -> Result<T, DruidError> {
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error(&self.site, endpoint, e))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&self.site, endpoint, e))?;
        if !(200..300).contains(&status) {
            return Err(DruidError::from_response(
                &self.site, endpoint, status, &body,
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            DruidError::from_decode(&self.site, endpoint, status, &body, &e.to_string())
        })
    }

    /// `POST /druid/v2/sql` with object results, decoded row by row into `T`.
    pub async fn sql<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        query: &str,
    ) -> Result<Vec<T>, DruidError> {
        let body = serde_json::json!({
            "query": query,
            "resultFormat": "object",
            "context": { "sqlTimeZone": "Etc/UTC" },
        });
        let req = self
            .http
            .post(self.url(&["druid", "v2", "sql"]))
            .json(&body);
        self.call(endpoint, req).await
    }

    /// Published, non-overshadowed segments of `datasource` grouped by interval: the coarse
    /// pass of the drift check.
    pub async fn segment_intervals(
        &self,
        datasource: &str,
    ) -> Result<Vec<SegmentInterval>, DruidError> {
        let q = format!(
            "SELECT \"start\", \"end\", SUM(\"num_rows\") AS \"rows\", COUNT(*) AS \"segments\", \
             SUM(\"is_available\") AS \"available\" FROM sys.segments WHERE \"datasource\" = {} AND is_published = 1 AND is_overshadowed = 0 \
             GROUP BY 1, 2 ORDER BY 1",
            literal(datasource)
        );
        self.sql("sys.segments", &q).await
    }

    /// Rows per bucket of `granularity` over `[from_ms, to_ms)`, counted with `count`.
    pub async fn bucket_counts(
        &self,
        datasource: &str,
        count: &CountExpr,
        granularity: Granularity,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, i64)>, DruidError> {
        let q = format!(
            "SELECT TIME_FLOOR(__time, '{}') AS \"bucket\", {} AS \"rows\" FROM {} \
             WHERE __time >= {} AND __time < {} GROUP BY 1 ORDER BY 1",
            granularity.iso_period(),
            count.sql(),
            ident(datasource),
            sql_timestamp(from_ms),
            sql_timestamp(to_ms)
        );
        let rows: Vec<BucketRow> = self.sql("sql.buckets", &q).await?;
        rows.into_iter()
            .map(|r| {
                parse_time(&r.bucket)
                    .map(|t| (t, r.rows))
                    .ok_or_else(|| DruidError::Decode {
                        site: self.site.clone(),
                        endpoint: "sql.buckets".to_string(),
                        status: 200,
                        message: format!("bucket {:?} is not an ISO-8601 instant", r.bucket),
                    })
            })
            .collect()
    }

    /// `MAX(__time)` of the datasource, epoch ms; None when it is empty.
    pub async fn latest(&self, datasource: &str) -> Result<Option<i64>, DruidError> {
        let q = format!(
            "SELECT MAX(__time) AS \"latest\" FROM {}",
            ident(datasource)
        );
        let rows: Vec<LatestRow> = self.sql("sql.latest", &q).await?;
        match rows.into_iter().next().and_then(|r| r.latest) {
            None => Ok(None),
            Some(text) => match parse_time(&text) {
                // An empty datasource may answer the epoch or a sentinel; treat both as none.
                Some(t) if t > 0 => Ok(Some(t)),
                Some(_) => Ok(None),
                None => Err(DruidError::Decode {
                    site: self.site.clone(),
                    endpoint: "sql.latest".to_string(),
                    status: 200,
                    message: format!("latest {text:?} is not an ISO-8601 instant"),
                }),
            },
        }
    }

    /// `GET /druid/indexer/v1/supervisor?state=true`, at the Overlord.
    pub async fn supervisors(&self) -> Result<Vec<SupervisorState>, DruidError> {
        let mut url = Self::join(&self.overlord, &["druid", "indexer", "v1", "supervisor"]);
        url.set_query(Some("state=true"));
        self.call("supervisor.list", self.http.get(url)).await
    }

    /// `GET /druid/indexer/v1/supervisor/{id}/status`, at the Overlord.
    pub async fn supervisor_status(&self, id: &str) -> Result<SupervisorStatus, DruidError> {
        let url = Self::join(
            &self.overlord,
            &["druid", "indexer", "v1", "supervisor", id, "status"],
        );
        self.call("supervisor.status", self.http.get(url)).await
    }

    /// `GET /druid/indexer/v1/supervisor/{id}`, at the Overlord: the spec as Druid keeps it,
    /// read for what drift needs (rollup, count metric, topic).
    pub async fn supervisor_spec(&self, id: &str) -> Result<SpecSummary, DruidError> {
        let url = Self::join(
            &self.overlord,
            &["druid", "indexer", "v1", "supervisor", id],
        );
        let raw: serde_json::Value = self.call("supervisor.spec", self.http.get(url)).await?;
        SpecSummary::from_json(&raw).map_err(|e| DruidError::Decode {
            site: self.site.clone(),
            endpoint: "supervisor.spec".to_string(),
            status: 200,
            message: e.to_string(),
        })
    }

    /// How many used segments the Coordinator's metadata store lists for `datasource`
    /// (`GET /druid/coordinator/v1/metadata/datasources/{ds}/segments`,
    /// docs/api-reference/legacy-metadata-api.md): the second opinion when SQL does not know
    /// a datasource and `sys.segments` lists nothing (a Broker whose metadata view is stale).
    pub async fn used_segments(&self, datasource: &str) -> Result<usize, DruidError> {
        let url = Self::join(
            &self.coordinator,
            &[
                "druid",
                "coordinator",
                "v1",
                "metadata",
                "datasources",
                datasource,
                "segments",
            ],
        );
        let ids: Vec<serde_json::Value> =
            self.call("metadata.segments", self.http.get(url)).await?;
        Ok(ids.len())
    }
}

/// A transport failure (no HTTP answer): a timeout, or unreachable with the causes (the URL is
/// left out: it is the site's, already named).
fn transport_error(site: &str, endpoint: &str, e: reqwest::Error) -> DruidError {
    if e.is_timeout() {
        DruidError::timeout(site, endpoint)
    } else {
        DruidError::unreachable(site, endpoint, e.without_url())
    }
}
