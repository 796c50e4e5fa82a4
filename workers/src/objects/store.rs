//! Builds opendal [`Operator`]s from the config's [`ObjectStore`] sections, with the layers
//! every object-store call in lockstep goes through: retry with exponential backoff and jitter
//! (transient errors only, as opendal classifies them) and per-operation / per-IO timeouts.
//!
//! Credentials are passed to opendal and never logged: only the service, bucket/container,
//! endpoint and root ever appear in errors. For `fs` stores the builder sets opendal's
//! `atomic_write_dir` to `<root>/.lockstep/tmp`, so that a file is written under a temporary
//! name and renamed into place: no partial file is ever visible at its final path.

use lockstep_config::{ObjectStore, StoreService};
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::Operator;
use std::collections::HashMap;
use std::time::Duration;

/// The folder (under a store's root) where lockstep keeps its own files: manifests, and for
/// `fs` stores the temporary files of in-flight writes. Listings skip it.
pub const LOCKSTEP_DIR: &str = ".lockstep/";

/// Timeout for one whole non-IO operation (stat, delete, list page).
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout for one IO step (a read or write of one chunk).
const IO_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
#[error("object store {what}: {source}")]
pub struct StoreError {
    /// `service bucket/root`, never a credential.
    pub what: String,
    #[source]
    pub source: opendal::Error,
}

/// The opendal options for a store ([`ObjectStore::service_options`]); fs writes go through
/// a temp folder under the root unless the options say otherwise.
fn options(store: &ObjectStore) -> HashMap<String, String> {
    let mut m = store.service_options();
    if store.service == StoreService::Fs {
        let tmp = format!("{}/{LOCKSTEP_DIR}tmp", store.root.trim_end_matches('/'));
        m.entry("atomic_write_dir".to_string()).or_insert(tmp);
    }
    m
}

/// An operator for `store`, with retry and timeout layers.
pub fn operator(store: &ObjectStore) -> Result<Operator, StoreError> {
    // Built without opendal's default features, the reqwest HTTP transport is installed
    // explicitly, once per process.
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(opendal::install_default);
    let opts = options(store);
    let op = match store.service {
        StoreService::S3 => Operator::from_iter::<opendal::services::S3>(opts),
        StoreService::Azblob => Operator::from_iter::<opendal::services::Azblob>(opts),
        StoreService::Gcs => Operator::from_iter::<opendal::services::Gcs>(opts),
        StoreService::Webhdfs => Operator::from_iter::<opendal::services::Webhdfs>(opts),
        StoreService::Fs => Operator::from_iter::<opendal::services::Fs>(opts),
    }
    .map_err(|source| StoreError {
        what: store.describe(),
        source,
    })?;
    Ok(op
        .layer(
            TimeoutLayer::new()
                .with_timeout(OP_TIMEOUT)
                .with_io_timeout(IO_TIMEOUT),
        )
        .layer(
            RetryLayer::new()
                .with_jitter()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(5),
        ))
}

/// Normalizes a configured prefix into an opendal directory path: "" stays "" (the whole
/// store), anything else gets no leading and exactly one trailing `/`.
pub fn dir_prefix(prefix: &str) -> String {
    let p = prefix.trim_start_matches('/');
    if p.is_empty() {
        String::new()
    } else if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_config::Secret;

    #[test]
    fn describe_never_shows_secrets() {
        let mut s = ObjectStore::fs("/data");
        s.service = StoreService::S3;
        s.bucket = Some("input".into());
        s.root = "landing".into();
        s.access_key_id = Some("AKIA".into());
        s.secret_access_key = Some(Secret::new("hunter2"));
        s.endpoint = Some("http://127.0.0.1:9000".into());
        let d = s.describe();
        assert_eq!(d, "s3://input/landing at http://127.0.0.1:9000");
        assert!(!d.contains("hunter2"));
        // The secret reaches opendal's options, and only them.
        assert_eq!(options(&s)["secret_access_key"], "hunter2");
    }

    #[test]
    fn fs_writes_go_through_a_temp_dir() {
        let o = options(&ObjectStore::fs("/data/site/"));
        assert_eq!(o["atomic_write_dir"], "/data/site/.lockstep/tmp");
    }

    #[test]
    fn prefixes_become_directories() {
        assert_eq!(dir_prefix(""), "");
        assert_eq!(dir_prefix("/"), "");
        assert_eq!(dir_prefix("a/b"), "a/b/");
        assert_eq!(dir_prefix("/a/b/"), "a/b/");
    }
}
