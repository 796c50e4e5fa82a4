//! One object's copy: stream it from the source store to the target store with bounded
//! memory, compute its checksum on the way, and make it visible only when complete.
//!
//! - Objects up to one chunk are read whole, checksummed, then written in one request, with
//!   the checksum in the object's user metadata where the service supports it.
//! - Larger objects stream chunk by chunk into a multipart / block-list writer (memory: one
//!   streaming GET's buffers plus `WRITE_CONCURRENCY` write chunks). Their user metadata carries the source
//!   etag only: metadata must be sent before the first part, when the checksum is not known
//!   yet, so their checksum lives in the manifest.
//! - The object appears at its final key only when the write completes (S3
//!   CompleteMultipartUpload, Azure Put Block List, fs rename from opendal's atomic write
//!   dir). On any error, a size mismatch (the source changed under us) or cancellation the
//!   writer is aborted, which also aborts the multipart upload.
//!
//! The checksum is CRC-32 (IEEE) from `crc32fast`: SIMD-accelerated (several GB/s, far above
//! any network link here) and well kept, and it is one of the checksums S3 itself offers
//! (`x-amz-checksum-crc32`), so the recorded value means the same thing there. It guards
//! against accidental corruption, not against a deliberate collision.

use super::plan::ObjMeta;
use futures::TryStreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use opendal::{Metadata, Operator};
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Read and write chunk size. S3 needs parts of at least 5 MiB.
pub const CHUNK: usize = 8 << 20;
/// Parts uploaded in parallel for one large object.
pub const WRITE_CONCURRENCY: usize = 2;
/// User-metadata keys: letters and digits only, valid as S3 `x-amz-meta-*` headers (some
/// WSGI-based servers drop header names with `_`) and as Azure names (C# identifiers).
pub const META_CRC32: &str = "lockstepcrc32";
pub const META_SOURCE_ETAG: &str = "lockstepsourceetag";

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: opendal::Error,
    },
    #[error("read {path}: {source}")]
    ReadStream {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: opendal::Error,
    },
    #[error("{path}: the source changed while it was copied ({got} bytes read, {want} listed)")]
    SourceChanged { path: String, got: u64, want: u64 },
    #[error("cancelled")]
    Cancelled,
}

/// A per-flow bandwidth limit, shared by every copy of a task. Hand-written on top of
/// governor's rate limiter only to count in KiB cells and split requests larger than the
/// burst, which governor refuses.
#[derive(Clone, Default)]
pub struct Limiter {
    inner: Option<(Arc<DefaultDirectRateLimiter>, u32)>,
}

impl Limiter {
    pub fn new(bytes_per_second: Option<u64>) -> Self {
        let Some(bps) = bytes_per_second else {
            return Limiter::default();
        };
        let kib = u32::try_from((bps / 1024).max(1)).unwrap_or(u32::MAX);
        let burst = NonZeroU32::new(kib).unwrap_or(NonZeroU32::MIN);
        Limiter {
            inner: Some((Arc::new(RateLimiter::direct(Quota::per_second(burst))), kib)),
        }
    }

    /// Waits until `bytes` may pass.
    pub async fn take(&self, bytes: usize) {
        let Some((limiter, burst)) = &self.inner else {
            return;
        };
        let mut cells = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        while cells > 0 {
            let n = cells.min(*burst);
            if let Some(n) = NonZeroU32::new(n) {
                // n <= burst, so capacity is always sufficient.
                let _ = limiter.until_n_ready(n).await;
            }
            cells -= n;
        }
    }
}

/// How to copy.
#[derive(Clone)]
pub struct CopyOptions {
    pub chunk: usize,
    pub limiter: Limiter,
    /// Does the target take user metadata on writes?
    pub user_metadata: bool,
}

/// A finished copy.
#[derive(Debug, Clone)]
pub struct Copied {
    pub crc32: u32,
    pub bytes: u64,
    /// The target object right after the write (etag, or mtime where there is no etag).
    pub target: ObjMeta,
}

pub fn meta_of(m: &Metadata) -> ObjMeta {
    ObjMeta {
        size: m.content_length(),
        etag: m.etag().map(str::to_string),
        md5: m.content_md5().map(str::to_string),
        mtime_ms: m.last_modified().map(|t| {
            let t: std::time::SystemTime = t.into();
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        }),
    }
}

/// Copies `from` (source store) to `to` (target store); `src` is what the listing said.
pub async fn copy_object(
    source: &Operator,
    target: &Operator,
    from: &str,
    to: &str,
    src: &ObjMeta,
    opts: &CopyOptions,
    cancel: &CancellationToken,
) -> Result<Copied, CopyError> {
    let read_err = |source| CopyError::Read {
        path: from.to_string(),
        source,
    };
    let write_err = |source| CopyError::Write {
        path: to.to_string(),
        source,
    };
    let mut meta: Vec<(String, String)> = Vec::new();
    if let Some(e) = &src.etag {
        meta.push((
            META_SOURCE_ETAG.to_string(),
            e.trim_matches('"').to_string(),
        ));
    }
    let written = if src.size as usize <= opts.chunk {
        let bytes = tokio::select! {
            r = source.read(from) => r.map_err(read_err)?.to_bytes(),
            _ = cancel.cancelled() => return Err(CopyError::Cancelled),
        };
        if bytes.len() as u64 != src.size {
            return Err(CopyError::SourceChanged {
                path: from.to_string(),
                got: bytes.len() as u64,
                want: src.size,
            });
        }
        let crc = crc32fast::hash(&bytes);
        meta.push((META_CRC32.to_string(), format!("{crc:08x}")));
        opts.limiter.take(bytes.len()).await;
        let mut w = target.write_with(to, bytes);
        if opts.user_metadata {
            w = w.user_metadata(meta);
        }
        let m = tokio::select! {
            r = w => r.map_err(write_err)?,
            _ = cancel.cancelled() => return Err(CopyError::Cancelled),
        };
        (crc, src.size, m)
    } else {
        // No `chunk` on the reader: one streaming GET, not a series of range requests (which
        // some servers, moto among them, serve by loading the whole object each time).
        let reader = source.reader(from).await.map_err(read_err)?;
        let mut stream = reader.into_bytes_stream(..).await.map_err(read_err)?;
        let mut wb = target
            .writer_with(to)
            .chunk(opts.chunk)
            .concurrent(WRITE_CONCURRENCY);
        if opts.user_metadata {
            wb = wb.user_metadata(meta);
        }
        let mut w = wb.await.map_err(write_err)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut n = 0u64;
        let streamed: Result<(), CopyError> = async {
            loop {
                let next = tokio::select! {
                    r = stream.try_next() => r.map_err(|source| CopyError::ReadStream { path: from.to_string(), source })?,
                    _ = cancel.cancelled() => return Err(CopyError::Cancelled),
                };
                let Some(bytes) = next else { break };
                hasher.update(&bytes);
                n += bytes.len() as u64;
                opts.limiter.take(bytes.len()).await;
                tokio::select! {
                    r = w.write(bytes) => r.map_err(write_err)?,
                    _ = cancel.cancelled() => return Err(CopyError::Cancelled),
                }
            }
            if n != src.size {
                return Err(CopyError::SourceChanged {
                    path: from.to_string(),
                    got: n,
                    want: src.size,
                });
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            // Nothing becomes visible: the multipart upload / temp file is dropped.
            if let Err(ae) = w.abort().await {
                tracing::warn!(path = to, error = %ae, "cannot abort an unfinished write");
            }
            return Err(e);
        }
        let m = match w.close().await {
            Ok(m) => m,
            Err(e) => {
                let _ = w.abort().await;
                return Err(write_err(e));
            }
        };
        (hasher.finalize(), n, m)
    };
    let (crc32, bytes, m) = written;
    let mut t = meta_of(&m);
    if t.etag.is_none() && t.mtime_ms.is_none() {
        // fs and a few others return nothing from a write: ask.
        t = meta_of(&target.stat(to).await.map_err(write_err)?);
    }
    t.size = bytes;
    Ok(Copied {
        crc32,
        bytes,
        target: t,
    })
}

/// The CRC-32 of an object as it is now, streamed.
pub async fn checksum(
    op: &Operator,
    path: &str,
    cancel: &CancellationToken,
) -> Result<(u32, u64), CopyError> {
    let read_err = |source| CopyError::Read {
        path: path.to_string(),
        source,
    };
    let reader = op.reader(path).await.map_err(read_err)?;
    let mut stream = reader.into_bytes_stream(..).await.map_err(read_err)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut n = 0u64;
    loop {
        let next = tokio::select! {
            r = stream.try_next() => r.map_err(|source| CopyError::ReadStream { path: path.to_string(), source })?,
            _ = cancel.cancelled() => return Err(CopyError::Cancelled),
        };
        let Some(b) = next else { break };
        hasher.update(&b);
        n += b.len() as u64;
    }
    Ok((hasher.finalize(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(dir: &std::path::Path) -> Operator {
        super::super::store::operator(&lockstep_config::ObjectStore::fs(dir.display().to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn small_and_chunked_copies_are_identical_and_checksummed() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (src, dst) = (fs(a.path()), fs(b.path()));
        let opts = CopyOptions {
            chunk: 64 << 10,
            limiter: Limiter::default(),
            user_metadata: false,
        };
        let cancel = CancellationToken::new();
        for (name, len) in [("empty", 0usize), ("small", 1000), ("big/x", 300_000)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            src.write(name, data.clone()).await.unwrap();
            let m = meta_of(&src.stat(name).await.unwrap());
            let c = copy_object(&src, &dst, name, name, &m, &opts, &cancel)
                .await
                .unwrap();
            assert_eq!(c.crc32, crc32fast::hash(&data));
            assert_eq!(dst.read(name).await.unwrap().to_vec(), data);
            assert!(c.target.mtime_ms.is_some());
            let (crc, n) = checksum(&dst, name, &cancel).await.unwrap();
            assert_eq!((crc, n), (c.crc32, len as u64));
        }
        // No temp files left behind.
        let tmp = b.path().join(".lockstep/tmp");
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_source_that_changed_size_is_not_written() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (src, dst) = (fs(a.path()), fs(b.path()));
        src.write("x", vec![1u8; 200_000]).await.unwrap();
        let mut m = meta_of(&src.stat("x").await.unwrap());
        m.size = 100_000;
        let opts = CopyOptions {
            chunk: 64 << 10,
            limiter: Limiter::default(),
            user_metadata: false,
        };
        let e = copy_object(&src, &dst, "x", "x", &m, &opts, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(e, CopyError::SourceChanged { .. }), "{e}");
        assert!(!dst.exists("x").await.unwrap());
    }
}
