//! Object sync wall times against `rclone copy`, same endpoints, same data, one run.
//!
//! ```text
//! cargo bench -p lockstep-workers --bench objects
//! OBJECTS_BENCH_SMALL=2000 cargo bench -p lockstep-workers --bench objects
//! ```
//!
//! Starts its own `moto_server` (S3) on loopback with three buckets: `src`, `dst-lockstep`,
//! `dst-rclone`. Uploads N small objects of 16 KiB (`OBJECTS_BENCH_SMALL`, default 10,000) and
//! 8 objects of 64 MiB, then times, for lockstep (one shard, the library's real sync cycle)
//! and for `rclone copy` (Debian's rclone, configured through `RCLONE_CONFIG_*` variables, no
//! config file):
//! 1. the N small objects into an empty bucket;
//! 2. the 8 large objects into an empty bucket;
//! 3. a no-op resync of the N small objects.
//!
//! A further row times rclone on the large objects with `--s3-upload-cutoff 8M
//! --s3-chunk-size 8M` (multipart in 8 MiB parts, as lockstep writes anything above one chunk;
//! by default rclone sends objects below 200 MiB in one PUT), against the same lockstep time.
//!
//! rclone gets two remotes (`src:`, `dst:`) on the same endpoint so that it streams the bytes
//! itself, as lockstep does, rather than asking for a server-side copy.
//! First, without any server: the memory a cycle holds per object of a shard, measured as the
//! RSS growth while loading a synthetic manifest of `OBJECTS_BENCH_MANIFEST` records (default
//! 500,000; 60-byte keys, MD5 etags at source and target), the way a cycle loads it.
//!
//! Both run 16 transfers at once (lockstep `concurrency = 16`; rclone `--transfers 16
//! --checkers 16`), everything else at its defaults. rclone is skipped (shown as "-") when it
//! is not on PATH. Under `cargo test --all-targets` (no `--bench` argument) it returns at once.

use lockstep_config::{ObjectStore, ObjectsFlow, Secret, StoreService, VerifyMode};
use lockstep_workers::metrics::WorkerMetrics;
use lockstep_workers::objects::sync::load_state;
use lockstep_workers::objects::{manifest, store, SyncSpec, Syncer};
use lockstep_workers::{LeaseGuard, Progress};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SMALL: usize = 16 << 10;
const LARGE: usize = 64 << 20;
const LARGE_COUNT: usize = 8;
const CONCURRENCY: u32 = 16;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn s3(endpoint: &str, bucket: &str) -> ObjectStore {
    let mut s = ObjectStore::fs("unused");
    s.service = StoreService::S3;
    s.root = String::new();
    s.bucket = Some(bucket.into());
    s.endpoint = Some(endpoint.into());
    s.region = Some("us-east-1".into());
    s.access_key_id = Some("test".into());
    s.secret_access_key = Some(Secret::new("test"));
    s
}

fn spec(endpoint: &str, prefix: &str) -> SyncSpec {
    SyncSpec {
        task_id: format!("bench/{prefix}"),
        flow_name: format!("bench-{}", prefix.trim_end_matches('/')),
        site_name: "dst".into(),
        flow: ObjectsFlow {
            prefix: prefix.into(),
            target_prefix: prefix.into(),
            delete: false,
            verify: VerifyMode::Etag,
            shards: 1,
            concurrency: CONCURRENCY,
            bandwidth_limit: None,
            interval: Duration::from_secs(60),
        },
        source: s3(endpoint, "src"),
        target: s3(endpoint, "dst-lockstep"),
        shard: 0,
        shards: 1,
    }
}

async fn lockstep(endpoint: &str, prefix: &str) -> (Duration, u64) {
    let mut s = Syncer::new(
        spec(endpoint, prefix),
        WorkerMetrics::new(),
        Progress::new("bench"),
    )
    .expect("syncer");
    let t = Instant::now();
    let r = s
        .cycle(false, &CancellationToken::new(), &LeaseGuard::unbounded())
        .await
        .expect("cycle");
    assert_eq!(r.failures, 0, "lockstep failures");
    (t.elapsed(), r.copied)
}

fn rclone(endpoint: &str, prefix: &str, dst_prefix: &str, extra: &[&str]) -> Option<Duration> {
    if Command::new("rclone")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return None;
    }
    let t = Instant::now();
    let status = Command::new("rclone")
        .args([
            "copy",
            &format!("src:src/{prefix}"),
            &format!("dst:dst-rclone/{dst_prefix}"),
            "--transfers",
            &CONCURRENCY.to_string(),
            "--checkers",
            &CONCURRENCY.to_string(),
        ])
        .args(extra)
        // Two remotes on the same endpoint, so that rclone streams the bytes through itself
        // as lockstep does, instead of a server-side copy within one remote.
        .envs(["SRC", "DST"].iter().flat_map(|r| {
            [
                (format!("RCLONE_CONFIG_{r}_TYPE"), "s3".to_string()),
                (format!("RCLONE_CONFIG_{r}_PROVIDER"), "Other".to_string()),
                (format!("RCLONE_CONFIG_{r}_ENDPOINT"), endpoint.to_string()),
                (
                    format!("RCLONE_CONFIG_{r}_ACCESS_KEY_ID"),
                    "test".to_string(),
                ),
                (
                    format!("RCLONE_CONFIG_{r}_SECRET_ACCESS_KEY"),
                    "test".to_string(),
                ),
                (format!("RCLONE_CONFIG_{r}_REGION"), "us-east-1".to_string()),
                (
                    format!("RCLONE_CONFIG_{r}_FORCE_PATH_STYLE"),
                    "true".to_string(),
                ),
            ]
        }))
        // rclone 1.60's AWS SDK fails on a custom CA bundle ("unsupported transport"); plain
        // http on loopback needs none.
        .env_remove("AWS_CA_BUNDLE")
        .status()
        .expect("rclone");
    assert!(status.success(), "rclone copy {prefix} failed");
    Some(t.elapsed())
}

async fn upload(endpoint: &str, small: usize) {
    use futures::StreamExt;
    let op = store::operator(&s3(endpoint, "src")).expect("operator");
    let body = vec![7u8; SMALL];
    futures::stream::iter(0..small)
        .map(|i| {
            let (op, body) = (op.clone(), body.clone());
            async move {
                op.write(&format!("small/{:02}/obj-{i:06}.json", i % 100), body)
                    .await
                    .expect("upload small");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for i in 0..LARGE_COUNT {
        let mut w = op
            .writer_with(&format!("large/blob-{i}.bin"))
            .chunk(8 << 20)
            .concurrent(4)
            .await
            .expect("writer");
        w.write(vec![i as u8; LARGE]).await.expect("upload large");
        w.close().await.expect("close");
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Bytes of memory per object while a cycle holds a shard's state.
async fn memory_per_object(records: usize) -> f64 {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let mdir = manifest::dir("mem", 0, 1);
    let folder = dir.path().join(&mdir);
    std::fs::create_dir_all(&folder).expect("manifest folder");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(folder.join("base.jsonl")).expect("manifest file"),
    );
    for i in 0..records {
        // 60-byte keys, like `events/2026/11/25/13/part-00042-....json`.
        writeln!(
            f,
            r#"{{"k":"events/2026/11/25/{:02}/part-{i:08}-7f3c9a1e2b4d5f60.json.gz","s":16384,"e":"\"{i:032x}\"","t":1764000000000,"c":{i},"te":"\"{:032x}\""}}"#,
            i % 24,
            i + 1
        )
        .expect("write manifest");
    }
    f.flush().expect("flush manifest");
    drop(f);
    let op = store::operator(&ObjectStore::fs(dir.path().display().to_string())).expect("fs");
    let before = rss_bytes();
    let (_m, state) = load_state(&op, &mdir).await.expect("load manifest");
    let after = rss_bytes();
    assert_eq!(state.len(), records);
    (after.saturating_sub(before)) as f64 / records as f64
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let manifest_records: usize = std::env::var("OBJECTS_BENCH_MANIFEST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let rt0 = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let per = rt0.block_on(memory_per_object(manifest_records));
    drop(rt0);
    println!(
        "memory: {per:.0} bytes per object held by a cycle ({manifest_records} records): about {:.1} million objects per GiB",
        (1u64 << 30) as f64 / per / 1e6
    );
    let small: usize = std::env::var("OBJECTS_BENCH_SMALL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server on PATH (tests/run.sh installs it)");
    let _moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    for b in ["src", "dst-lockstep", "dst-rclone"] {
        let ok = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{endpoint}/{b}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "create bucket {b}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t = Instant::now();
    rt.block_on(upload(&endpoint, small));
    println!(
        "uploaded {small} x 16 KiB + {LARGE_COUNT} x 64 MiB to moto in {:.1?}",
        t.elapsed()
    );

    let mut rows = Vec::new();
    let (d, n) = rt.block_on(lockstep(&endpoint, "small/"));
    assert_eq!(n as usize, small);
    rows.push((
        format!("{small} x 16 KiB"),
        d,
        rclone(&endpoint, "small/", "small/", &[]),
    ));
    let (d, n) = rt.block_on(lockstep(&endpoint, "large/"));
    assert_eq!(n as usize, LARGE_COUNT);
    rows.push((
        format!("{LARGE_COUNT} x 64 MiB"),
        d,
        rclone(&endpoint, "large/", "large/", &[]),
    ));
    // rclone uploads objects below 200 MiB in one PUT; the same objects in 8 MiB multipart
    // parts, as lockstep writes them, compare the copy paths like for like.
    rows.push((
        format!("{LARGE_COUNT} x 64 MiB, rclone in 8 MiB parts"),
        d,
        rclone(
            &endpoint,
            "large/",
            "large-multipart/",
            &["--s3-upload-cutoff", "8M", "--s3-chunk-size", "8M"],
        ),
    ));
    let (d, n) = rt.block_on(lockstep(&endpoint, "small/"));
    assert_eq!(n, 0, "the resync must copy nothing");
    rows.push((
        format!("no-op resync of {small}"),
        d,
        rclone(&endpoint, "small/", "small/", &[]),
    ));

    println!("\n| case | lockstep | rclone copy | lockstep / rclone |");
    println!("|---|---:|---:|---:|");
    for (case, l, r) in rows {
        let (rs, ratio) = match r {
            Some(r) => (
                format!("{:.2} s", r.as_secs_f64()),
                format!("{:.2}", l.as_secs_f64() / r.as_secs_f64()),
            ),
            None => ("-".into(), "-".into()),
        };
        println!("| {case} | {:.2} s | {rs} | {ratio} |", l.as_secs_f64());
    }
}
