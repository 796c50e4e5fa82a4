//! Compare-and-swap on small documents: a write lands only if the document is still the
//! version the writer last read or wrote. Leader election (`leader.json`, [`crate::election`])
//! and the fenced state document ([`crate::state`]) are built on it.
//!
//! - **Object stores** (s3, azblob): the service's own conditional writes through opendal,
//!   `If-None-Match: *` to create and `If-Match: <etag>` to replace; a [`Tag`] is the etag.
//!   Reads are a stat plus a read with `If-Match`, so content and tag belong together.
//! - **fs**: read, compare and rename under an exclusive `flock(2)` of `<name>.lock` beside
//!   the document, plus an in-process mutex (NFS turns `flock` into POSIX locks, which a
//!   process shares among its threads). A tag is the 64-bit FNV-1a hash of the content. The
//!   rename makes a reader see the old or the new document, never half of one.
//!
//! Writers make every content unique (a counter or a stamp inside), so an etag that is the
//! content's MD5 (S3) or a hash (fs) never comes back after a change (no ABA).
//!
//! Also here, for fs only: the [`HolderLock`], a `flock` the leader keeps for as long as it
//! leads. The OS drops it when the process dies, so a standby on the same file system sees a
//! dead leader at once instead of after the lease TTL.
//!
//! This module never retries and never decides anything; callers own the policy.

use lockstep_config::{ObjectStore, StoreService};
use opendal::Operator;
use std::future::IntoFuture;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The version of a document as last read or written: an etag, or a content hash on fs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a conditional write expects to find.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// The document does not exist yet.
    Absent,
    /// The document is still this version.
    Tag(&'a Tag),
}

#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// Someone else wrote the document since the tag was taken: the write did not land.
    #[error("{what}: {name} changed since it was last read (conditional write refused)")]
    Conflict { what: String, name: String },
    #[error("{what}: {name}: {source}")]
    Store {
        what: String,
        name: String,
        #[source]
        source: Box<opendal::Error>,
    },
    #[error("{what}: {name}: {source}")]
    Io {
        what: String,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {name}: no answer within {timeout:?}")]
    Timeout {
        what: String,
        name: String,
        timeout: Duration,
    },
    #[error("{what}: the service cannot {missing}, which coordinator state and leader election need; use \"fs\", \"s3\" or \"azblob\"")]
    Unsupported { what: String, missing: String },
}

impl CasError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, CasError::Conflict { .. })
    }
}

/// Conditional reads and writes of documents in one folder or bucket prefix.
#[derive(Clone)]
pub struct CasStore {
    backend: Backend,
    /// `service://bucket/root`, never a credential: for errors and logs.
    what: String,
    timeout: Duration,
}

#[derive(Clone)]
enum Backend {
    Fs {
        root: PathBuf,
        /// Serialises this process's writers; `flock` serialises processes.
        local: Arc<tokio::sync::Mutex<()>>,
    },
    Object(Operator),
}

impl CasStore {
    /// A store over `config`; each object-store call gives up after `timeout`.
    pub fn new(config: &ObjectStore, timeout: Duration) -> Result<Self, CasError> {
        let what = config.describe();
        let backend = match config.service {
            StoreService::Fs => Backend::Fs {
                root: PathBuf::from(&config.root),
                local: Arc::new(tokio::sync::Mutex::new(())),
            },
            StoreService::S3 | StoreService::Azblob => {
                let op = operator(config).map_err(|source| CasError::Store {
                    what: what.clone(),
                    name: String::new(),
                    source: Box::new(source),
                })?;
                let cap = op.info().capability();
                let missing = [
                    (
                        cap.write_with_if_not_exists,
                        "write if absent (If-None-Match)",
                    ),
                    (cap.write_with_if_match, "write if unchanged (If-Match)"),
                    (cap.read_with_if_match, "read if unchanged (If-Match)"),
                ]
                .into_iter()
                .filter(|(has, _)| !has)
                .map(|(_, name)| name)
                .collect::<Vec<_>>();
                if !missing.is_empty() {
                    return Err(CasError::Unsupported {
                        what,
                        missing: missing.join(", "),
                    });
                }
                Backend::Object(op)
            }
            StoreService::Gcs | StoreService::Webhdfs => {
                return Err(CasError::Unsupported {
                    what,
                    missing: "write if unchanged by etag (If-Match) through opendal".to_string(),
                })
            }
        };
        Ok(CasStore {
            backend,
            what,
            timeout,
        })
    }

    /// `service://bucket/root` of the store, for logs.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// The folder of an fs store (None for object stores).
    pub fn fs_root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Fs { root, .. } => Some(root),
            Backend::Object(_) => None,
        }
    }

    /// The document and its tag, or `None` when it does not exist.
    pub async fn read(&self, name: &str) -> Result<Option<(Vec<u8>, Tag)>, CasError> {
        match &self.backend {
            Backend::Fs { root, .. } => {
                let path = root.join(name);
                match tokio::fs::read(&path).await {
                    Ok(bytes) => {
                        let tag = fs_tag(&bytes);
                        Ok(Some((bytes, tag)))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(self.io(name, source)),
                }
            }
            Backend::Object(op) => {
                // A write between the stat and the read fails the read's If-Match: try again.
                for _ in 0..3 {
                    let meta = match self.bounded(name, op.stat(name)).await? {
                        Ok(m) => m,
                        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
                        Err(source) => return Err(self.store(name, source)),
                    };
                    let Some(etag) = meta.etag().map(str::to_string) else {
                        return Err(CasError::Unsupported {
                            what: self.what.clone(),
                            missing: "report an etag".to_string(),
                        });
                    };
                    match self
                        .bounded(name, op.read_with(name).if_match(&etag).into_future())
                        .await?
                    {
                        Ok(buf) => return Ok(Some((buf.to_vec(), Tag(etag)))),
                        Err(e)
                            if matches!(
                                e.kind(),
                                opendal::ErrorKind::ConditionNotMatch
                                    | opendal::ErrorKind::NotFound
                            ) =>
                        {
                            continue
                        }
                        Err(source) => return Err(self.store(name, source)),
                    }
                }
                Err(self.conflict(name))
            }
        }
    }

    /// Writes `bytes` if the document is as `expect` says; returns the new tag.
    pub async fn write(
        &self,
        name: &str,
        bytes: Vec<u8>,
        expect: Expect<'_>,
    ) -> Result<Tag, CasError> {
        match &self.backend {
            Backend::Fs { root, local } => {
                let _local = local.lock().await;
                let root = root.clone();
                let name_owned = name.to_string();
                let expected = match expect {
                    Expect::Absent => None,
                    Expect::Tag(t) => Some(t.clone()),
                };
                let result = tokio::task::spawn_blocking(move || {
                    fs_write(&root, &name_owned, &bytes, expected.as_ref())
                })
                .await
                .map_err(|e| self.io(name, std::io::Error::other(e.to_string())))?;
                match result {
                    Ok(Some(tag)) => Ok(tag),
                    Ok(None) => Err(self.conflict(name)),
                    Err(source) => Err(self.io(name, source)),
                }
            }
            Backend::Object(op) => {
                let write = op.write_with(name, bytes);
                let write = match expect {
                    Expect::Absent => write.if_not_exists(true),
                    Expect::Tag(t) => write.if_match(t.as_str()),
                };
                match self.bounded(name, write.into_future()).await? {
                    Ok(meta) => match meta.etag() {
                        Some(etag) => Ok(Tag(etag.to_string())),
                        None => Err(CasError::Unsupported {
                            what: self.what.clone(),
                            missing: "report the etag of a write".to_string(),
                        }),
                    },
                    // If-Match on a missing object is a 404 (S3) rather than a 412.
                    Err(e)
                        if e.kind() == opendal::ErrorKind::ConditionNotMatch
                            || (e.kind() == opendal::ErrorKind::NotFound
                                && matches!(expect, Expect::Tag(_))) =>
                    {
                        Err(self.conflict(name))
                    }
                    Err(source) => Err(self.store(name, source)),
                }
            }
        }
    }

    /// Removes a document unconditionally (absent is fine). Only for the state marker, which
    /// an operator removes on purpose ([`crate::state::accept_state_loss`]); never for a
    /// document that others write by compare-and-swap.
    pub async fn remove(&self, name: &str) -> Result<(), CasError> {
        match &self.backend {
            Backend::Fs { root, local } => {
                let _local = local.lock().await;
                match tokio::fs::remove_file(root.join(name)).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(self.io(name, source)),
                }
            }
            Backend::Object(op) => match self.bounded(name, op.delete(name)).await? {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(self.store(name, source)),
            },
        }
    }

    /// The fs holder lock beside the documents (`<root>/<name>`), or `None` for object
    /// stores, which have no such thing.
    pub fn holder_lock(&self, name: &str) -> Result<Option<HolderLock>, CasError> {
        let Backend::Fs { root, .. } = &self.backend else {
            return Ok(None);
        };
        std::fs::create_dir_all(root).map_err(|e| self.io(name, e))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(root.join(name))
            .map_err(|e| self.io(name, e))?;
        Ok(Some(HolderLock { file, held: false }))
    }

    async fn bounded<T>(
        &self,
        name: &str,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, CasError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| CasError::Timeout {
                what: self.what.clone(),
                name: name.to_string(),
                timeout: self.timeout,
            })
    }

    fn conflict(&self, name: &str) -> CasError {
        CasError::Conflict {
            what: self.what.clone(),
            name: name.to_string(),
        }
    }

    fn io(&self, name: &str, source: std::io::Error) -> CasError {
        CasError::Io {
            what: self.what.clone(),
            name: name.to_string(),
            source,
        }
    }

    fn store(&self, name: &str, source: opendal::Error) -> CasError {
        CasError::Store {
            what: self.what.clone(),
            name: name.to_string(),
            source: Box::new(source),
        }
    }
}

/// A `flock(2)` held for as long as this process leads (fs stores only). One per process:
/// it is opened once and locked and unlocked on the same open file.
pub struct HolderLock {
    file: std::fs::File,
    held: bool,
}

impl HolderLock {
    /// Takes the lock if nobody holds it; true when this process holds it afterwards.
    pub fn try_acquire(&mut self) -> std::io::Result<bool> {
        if self.held {
            return Ok(true);
        }
        match rustix::fs::flock(
            &self.file,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => {
                self.held = true;
                Ok(true)
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub fn held(&self) -> bool {
        self.held
    }

    /// Lets go of the lock (a no-op when not held).
    pub fn release(&mut self) {
        if self.held {
            if let Err(e) = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock) {
                tracing::warn!(error = %e, "cannot release the leader lock; it goes when the process exits");
            }
            self.held = false;
        }
    }
}

/// The fs tag: FNV-1a over the content, as 16 hex digits.
fn fs_tag(bytes: &[u8]) -> Tag {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Tag(format!("{h:016x}"))
}

/// The fs compare-and-swap: under `<name>.lock`, compare the current document with
/// `expected`, then write a temp file, sync it and rename it into place. `Ok(None)` when the
/// document is not as expected.
fn fs_write(
    root: &Path,
    name: &str,
    bytes: &[u8],
    expected: Option<&Tag>,
) -> std::io::Result<Option<Tag>> {
    std::fs::create_dir_all(root)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(root.join(format!("{name}.lock")))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let path = root.join(name);
    let current = match std::fs::read(&path) {
        Ok(b) => Some(fs_tag(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if current.as_ref() != expected {
        return Ok(None);
    }
    let tmp_dir = root.join(".tmp");
    std::fs::create_dir_all(&tmp_dir)?;
    let tmp = tmp_dir.join(format!(
        "{name}.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename itself must survive a crash of the machine.
        std::fs::File::open(root)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The lock goes with `lock` when it is dropped here.
    Ok(Some(fs_tag(bytes)))
}

/// An opendal operator for an s3 or azblob state store: typed fields, then `options` passed
/// through. No retry layer: the election and the state writer retry on their own terms.
fn operator(store: &ObjectStore) -> Result<Operator, opendal::Error> {
    // Built without opendal's default features, the reqwest HTTP transport is installed
    // explicitly, once per process.
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(opendal::install_default);
    let m = store.service_options();
    match store.service {
        StoreService::Azblob => Operator::from_iter::<opendal::services::Azblob>(m),
        _ => Operator::from_iter::<opendal::services::S3>(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_store(dir: &Path) -> CasStore {
        CasStore::new(
            &ObjectStore::fs(dir.to_string_lossy()),
            Duration::from_secs(5),
        )
        .expect("fs store")
    }

    #[tokio::test]
    async fn fs_writes_only_over_the_version_last_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = fs_store(dir.path());
        let b = fs_store(dir.path());
        assert!(a.read("doc").await.expect("read").is_none());
        let t1 = a
            .write("doc", b"one".to_vec(), Expect::Absent)
            .await
            .expect("create");
        let err = b
            .write("doc", b"two".to_vec(), Expect::Absent)
            .await
            .expect_err("exists already");
        assert!(err.is_conflict(), "{err}");
        let (bytes, seen) = b.read("doc").await.expect("read").expect("present");
        assert_eq!((bytes.as_slice(), &seen), (b"one".as_slice(), &t1));
        let t2 = b
            .write("doc", b"two".to_vec(), Expect::Tag(&seen))
            .await
            .expect("replace");
        assert_ne!(t1, t2);
        let err = a
            .write("doc", b"three".to_vec(), Expect::Tag(&t1))
            .await
            .expect_err("a's version is gone");
        assert!(err.is_conflict(), "{err}");
        let (bytes, _) = a.read("doc").await.expect("read").expect("present");
        assert_eq!(bytes, b"two");
    }

    #[tokio::test]
    async fn fs_concurrent_writers_over_one_version_one_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = fs_store(dir.path());
        let t0 = store
            .write("doc", b"0".to_vec(), Expect::Absent)
            .await
            .expect("create");
        let mut handles = Vec::new();
        for i in 0..8 {
            // Separate stores: separate in-process mutexes, so only flock orders them.
            let s = fs_store(dir.path());
            let t = t0.clone();
            handles.push(tokio::spawn(async move {
                s.write("doc", format!("w{i}").into_bytes(), Expect::Tag(&t))
                    .await
                    .is_ok()
            }));
        }
        let mut wins = 0;
        for h in handles {
            wins += usize::from(h.await.expect("join"));
        }
        assert_eq!(wins, 1, "exactly one writer over version 0");
    }

    #[test]
    fn holder_lock_excludes_a_second_holder_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = fs_store(dir.path());
        let mut a = store.holder_lock("leader.lock").expect("open").expect("fs");
        let mut b = store.holder_lock("leader.lock").expect("open").expect("fs");
        assert!(a.try_acquire().expect("lock"));
        assert!(!b.try_acquire().expect("lock"), "held by a");
        a.release();
        assert!(b.try_acquire().expect("lock"), "free after release");
        drop(b);
        assert!(
            a.try_acquire().expect("lock"),
            "free once the holder's file closes"
        );
    }

    #[test]
    fn unsupported_services_are_named() {
        let mut gcs = ObjectStore::fs("");
        gcs.service = StoreService::Gcs;
        gcs.bucket = Some("b".into());
        let err = CasStore::new(&gcs, Duration::from_secs(1))
            .err()
            .expect("gcs is refused");
        assert!(err.to_string().contains("gcs://b"), "{err}");
        assert!(err.to_string().contains("use \"fs\""), "{err}");
    }
}
