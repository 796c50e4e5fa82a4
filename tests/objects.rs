//! Object sync end to end against real servers: moto_server (S3), azurite (Azure Blob) and
//! local folders, through the `lockstep sync` binary and, for the crash test, a real
//! coordinator and worker that get SIGKILLed.

mod common;

use common::*;
use lockstep_config::{ObjectStore, Secret, StoreService};
use lockstep_workers::objects::{manifest, store};
use opendal::Operator;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIG: usize = 64 << 20;

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

fn az(endpoint: &str, container: &str) -> ObjectStore {
    let mut s = ObjectStore::fs("unused");
    s.service = StoreService::Azblob;
    s.root = String::new();
    s.container = Some(container.into());
    s.endpoint = Some(endpoint.into());
    s.account_name = Some(AZURITE_ACCOUNT.into());
    s.account_key = Some(Secret::new(AZURITE_KEY));
    s
}

fn toml_s3(endpoint: &str, bucket: &str) -> String {
    format!(
        "service = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n"
    )
}

fn toml_az(endpoint: &str, container: &str) -> String {
    format!(
        "service = \"azblob\"\ncontainer = \"{container}\"\nendpoint = \"{endpoint}\"\naccount_name = \"{AZURITE_ACCOUNT}\"\naccount_key = \"{AZURITE_KEY}\"\n"
    )
}

fn op(s: &ObjectStore) -> Operator {
    store::operator(s).expect("operator")
}

/// Deterministic bytes (an LCG), so a one-byte change is detectable.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 33) as u8
        })
        .collect()
}

/// Nested prefixes, a 0-byte object, unicode keys and one 64 MiB object.
fn tree() -> BTreeMap<String, Vec<u8>> {
    let mut t = BTreeMap::new();
    t.insert("a/b/c/deep.json".to_string(), bytes(1, 200));
    t.insert("a/b/one.json".to_string(), bytes(2, 3000));
    t.insert("a/two.json".to_string(), bytes(3, 1500));
    t.insert("top.txt".to_string(), bytes(4, 10));
    t.insert("empty.dat".to_string(), Vec::new());
    t.insert("données/été ☃.txt".to_string(), bytes(5, 777));
    t.insert("日本/データ.csv".to_string(), bytes(6, 4096));
    for i in 0..10 {
        t.insert(
            format!("many/part-{i:03}.json"),
            bytes(100 + i, 1024 + 97 * i as usize),
        );
    }
    t.insert("big/blob.bin".to_string(), bytes(7, BIG));
    t
}

async fn put_all(op: &Operator, prefix: &str, t: &BTreeMap<String, Vec<u8>>) {
    for (k, v) in t {
        let mut w = op
            .writer_with(&format!("{prefix}{k}"))
            .chunk(8 << 20)
            .await
            .expect("writer");
        w.write(v.clone()).await.expect("write");
        w.close().await.expect("close");
    }
}

/// Every object under `prefix` (lockstep's own folder excepted), read back.
async fn read_all(op: &Operator, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in op.list_with(prefix).recursive(true).await.expect("list") {
        if !e.metadata().is_file() || e.path().starts_with(".lockstep/") {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(prefix)
            .expect("under prefix")
            .to_string();
        out.insert(rel, op.read(e.path()).await.expect("read").to_vec());
    }
    out
}

fn assert_same(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>, what: &str) {
    let gk: Vec<&String> = got.keys().collect();
    let wk: Vec<&String> = want.keys().collect();
    assert_eq!(gk, wk, "{what}: keys differ");
    for (k, v) in want {
        assert!(
            got[k] == *v,
            "{what}: {k} differs ({} vs {} bytes)",
            got[k].len(),
            v.len()
        );
    }
}

/// Every record of a shard's manifest carries the CRC-32 of the object's bytes.
async fn assert_checksums(target: &Operator, flow: &str, want: &BTreeMap<String, Vec<u8>>) {
    let (_, recs) = manifest::Manifest::load(target, &manifest::dir(flow, 0, 1))
        .await
        .expect("manifest");
    assert_eq!(recs.len(), want.len(), "{flow}: manifest records");
    for (k, v) in want {
        assert_eq!(
            recs[k].crc32,
            Some(crc32fast::hash(v)),
            "{flow}: checksum of {k}"
        );
    }
}

struct Run {
    ok: bool,
    out: String,
}

impl Run {
    /// A figure from the summary line of `site`: `copied 5 objects` -> field("copied ").
    fn field(&self, site: &str, name: &str) -> u64 {
        let line = self
            .out
            .lines()
            .find(|l| l.contains(&format!("-> {site} ")))
            .unwrap_or_else(|| panic!("no line for site {site} in:\n{}", self.out));
        let rest = &line[line
            .find(name)
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            + name.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number after {name} in {line}"))
    }
}

fn sync(config: &Path, flow: &str, site: Option<&str>, extra: &[&str]) -> Run {
    let mut args = vec!["sync", "--config", config.to_str().unwrap(), "--flow", flow];
    if let Some(s) = site {
        args.extend(["--site", s]);
    }
    args.extend(extra);
    let out = Command::new(BIN)
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lockstep sync");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        eprintln!("lockstep sync failed:\n{text}\n{err}");
    }
    Run {
        ok: out.status.success(),
        out: text,
    }
}

struct Env {
    dir: tempfile::TempDir,
    moto: Moto,
    azurite: Azurite,
    fs_src: std::path::PathBuf,
}

fn config_text(env: &Env, f1_extra: &str) -> String {
    format!(
        r#"
[[sites]]
name = "s3site"
druid.router_url = "http://127.0.0.1:1"
[sites.store]
{s3dst}
[[sites]]
name = "azsite"
druid.router_url = "http://127.0.0.1:2"
[sites.store]
{azdst}
[[sources]]
name = "s3src"
kind = "objects"
[sources.store]
{s3src}
[[sources]]
name = "fssrc"
kind = "objects"
[sources.store]
service = "fs"
root = "{fsroot}"

[[flows]]
name = "f1"
kind = "objects"
source = "s3src"
sites = ["s3site", "azsite"]
prefix = "in/"
concurrency = 8
{f1_extra}

[[flows]]
name = "f2"
kind = "objects"
source = "fssrc"
sites = ["s3site"]
prefix = ""
target_prefix = "fromfs/"
"#,
        s3dst = toml_s3(&env.moto.endpoint, "dst"),
        azdst = toml_az(&env.azurite.endpoint, "site"),
        s3src = toml_s3(&env.moto.endpoint, "src"),
        fsroot = env.fs_src.display(),
    )
}

fn write_config(env: &Env, f1_extra: &str) -> std::path::PathBuf {
    let p = env.dir.path().join("lockstep.toml");
    std::fs::write(&p, config_text(env, f1_extra)).expect("config");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_azure_and_fs_syncs_are_identical_incremental_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start("src", dir.path());
    moto.create_bucket("dst");
    let azurite = Azurite::start("site", dir.path());
    let fs_src = dir.path().join("fs-src");
    std::fs::create_dir_all(&fs_src).unwrap();
    let env = Env {
        dir,
        moto,
        azurite,
        fs_src,
    };
    let src = op(&s3(&env.moto.endpoint, "src"));
    let dst = op(&s3(&env.moto.endpoint, "dst"));
    let azo = op(&az(&env.azurite.endpoint, "site"));
    let fso = op(&ObjectStore::fs(env.fs_src.display().to_string()));
    let mut want = tree();
    put_all(&src, "in/", &want).await;
    put_all(&fso, "", &want).await;
    let config = write_config(&env, "");

    // Dry run: the plan, and nothing written.
    let r = sync(&config, "f1", Some("s3site"), &["--dry-run"]);
    assert!(
        r.ok && r.out.contains(&format!("copy {} objects", want.len())),
        "{}",
        r.out
    );
    assert!(read_all(&dst, "in/").await.is_empty());

    // S3 -> S3 and S3 -> Azure Blob.
    let r = sync(&config, "f1", None, &[]);
    assert!(r.ok, "{}", r.out);
    assert_eq!(r.field("s3site", "copied "), want.len() as u64);
    assert_eq!(r.field("azsite", "copied "), want.len() as u64);
    assert_same(&read_all(&dst, "in/").await, &want, "s3 -> s3");
    assert_same(&read_all(&azo, "in/").await, &want, "s3 -> azblob");
    assert_checksums(&dst, "f1", &want).await;
    assert_checksums(&azo, "f1", &want).await;
    // Objects written in one request carry their checksum in user metadata (opendal's S3
    // stat does not return user metadata, so S3 is asked with a signed HEAD).
    let crc = format!("{:08x}", crc32fast::hash(&want["a/two.json"]));
    let m = azo.stat("in/a/two.json").await.unwrap();
    let got = m
        .user_metadata()
        .and_then(|u| u.get("lockstepcrc32").map(str::to_string));
    assert_eq!(got, Some(crc.clone()));
    let head = Command::new("curl")
        .args([
            "-sI",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            "test:test",
            &format!("{}/dst/in/a/two.json", env.moto.endpoint),
        ])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert!(
        head.contains(&format!("x-amz-meta-lockstepcrc32: {crc}")),
        "{head}"
    );

    // fs -> S3.
    let r = sync(&config, "f2", None, &[]);
    assert!(r.ok, "{}", r.out);
    assert_eq!(r.field("s3site", "copied "), want.len() as u64);
    assert_same(&read_all(&dst, "fromfs/").await, &want, "fs -> s3");
    assert_checksums(&dst, "f2", &want).await;

    // Incremental: change 3 (one of them with the same size), add 2: exactly 5 copies.
    want.insert("a/two.json".into(), bytes(33, 1500));
    want.insert("top.txt".into(), bytes(44, 20));
    want.insert("many/part-003.json".into(), bytes(55, 5000));
    want.insert("new/one.json".into(), bytes(66, 100));
    want.insert("new/two.json".into(), bytes(77, 0));
    for k in [
        "a/two.json",
        "top.txt",
        "many/part-003.json",
        "new/one.json",
        "new/two.json",
    ] {
        src.write(&format!("in/{k}"), want[k].clone())
            .await
            .unwrap();
    }
    let r = sync(&config, "f1", Some("s3site"), &[]);
    assert!(r.ok, "{}", r.out);
    assert_eq!(r.field("s3site", "copied "), 5, "{}", r.out);
    assert_same(&read_all(&dst, "in/").await, &want, "incremental");
    // A no-op cycle copies nothing.
    let r = sync(&config, "f1", Some("s3site"), &[]);
    assert_eq!(r.field("s3site", "copied "), 0, "{}", r.out);
    assert_eq!(r.field("s3site", "up to date "), want.len() as u64);

    // Deletes propagate only when enabled.
    src.delete("in/many/part-007.json").await.unwrap();
    let r = sync(&config, "f1", Some("s3site"), &[]);
    assert_eq!(r.field("s3site", "deleted "), 0);
    assert!(dst.exists("in/many/part-007.json").await.unwrap());
    want.remove("many/part-007.json");
    let config = write_config(&env, "delete = true\nverify = \"checksum\"");
    let r = sync(&config, "f1", Some("s3site"), &[]);
    assert!(r.ok, "{}", r.out);
    assert_eq!(r.field("s3site", "deleted "), 1, "{}", r.out);
    assert_eq!(r.field("s3site", "copied "), 0, "{}", r.out);
    assert_same(&read_all(&dst, "in/").await, &want, "after delete");

    // Bytes changed behind lockstep's back (same size): found by verify = "checksum" and
    // copied again.
    let mut bad = want["a/b/one.json"].clone();
    bad[100] ^= 0xff;
    dst.write("in/a/b/one.json", bad).await.unwrap();
    let r = sync(&config, "f1", Some("s3site"), &[]);
    assert!(r.ok, "{}", r.out);
    assert_eq!(r.field("s3site", "verify mismatches "), 1, "{}", r.out);
    assert_eq!(r.field("s3site", "copied "), 1, "{}", r.out);
    assert_same(&read_all(&dst, "in/").await, &want, "after repair");
    // And then it is quiet again.
    let r = sync(&config, "f1", Some("s3site"), &[]);
    assert_eq!(r.field("s3site", "copied "), 0, "{}", r.out);
    assert_eq!(r.field("s3site", "verify mismatches "), 0, "{}", r.out);
}

/// Fetches the one objects task's progress from the coordinator.
async fn objects_progress(cluster: &Cluster) -> Option<lockstep_proto::ObjectProgress> {
    cluster
        .status()
        .await
        .tasks
        .into_iter()
        .find_map(|t| t.progress.and_then(|p| p.objects))
}

/// Checks every object visible at the target is complete; returns how many are visible.
/// With `stop_at`, returns before reading anything once that many are visible (so that the
/// kill lands early; what is visible then is checked right after the kill).
async fn check_visible(
    dst: &Operator,
    want: &BTreeMap<String, Vec<u8>>,
    verified: &mut std::collections::BTreeSet<String>,
    stop_at: Option<usize>,
) -> usize {
    let entries: Vec<_> = dst
        .list_with("crash/")
        .recursive(true)
        .await
        .expect("list")
        .into_iter()
        .filter(|e| e.metadata().is_file())
        .collect();
    let n = entries.len();
    if stop_at.is_some_and(|s| n >= s) {
        return n;
    }
    for e in entries {
        let rel = e.path().strip_prefix("crash/").unwrap().to_string();
        if verified.contains(&rel) {
            continue;
        }
        let got = dst.read(e.path()).await.expect("read").to_vec();
        assert!(
            got == want[&rel],
            "partial or wrong object visible: {rel} ({} of {} bytes)",
            got.len(),
            want[&rel].len()
        );
        verified.insert(rel);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_resumes_without_recopying_and_never_shows_a_partial_object() {
    let logs = tempfile::tempdir().unwrap();
    let moto = Moto::start("dst", logs.path());
    let fs_src = logs.path().join("src");
    let fso = op(&ObjectStore::fs(fs_src.display().to_string()));
    let mut want = BTreeMap::new();
    for i in 0..300u64 {
        want.insert(format!("d{}/obj-{i:04}.json", i % 7), bytes(i, 16 << 10));
    }
    // Two multipart objects, so that a kill can land in the middle of one.
    want.insert("big/a.bin".to_string(), bytes(1000, 12 << 20));
    want.insert("big/b.bin".to_string(), bytes(1001, 12 << 20));
    put_all(&fso, "", &want).await;
    let body = format!(
        r#"
[[sites]]
name = "s3site"
druid.router_url = "http://127.0.0.1:1"
[sites.store]
{dst}
[[sources]]
name = "fssrc"
kind = "objects"
[sources.store]
service = "fs"
root = "{root}"
[[flows]]
name = "crashflow"
kind = "objects"
source = "fssrc"
prefix = ""
target_prefix = "crash/"
concurrency = 4
bandwidth_limit = "3MiB"
interval = "1h"
"#,
        dst = toml_s3(&moto.endpoint, "dst"),
        root = fs_src.display()
    );
    let mut cluster = Cluster::start(&body, 3000, 300, 500);
    cluster.start_worker("w1");
    let dst = op(&s3(&moto.endpoint, "dst"));
    let mut verified = std::collections::BTreeSet::new();

    // Let it copy part of the prefix, checking what is visible all along.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = check_visible(&dst, &want, &mut verified, Some(60)).await;
        if n >= 60 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker copied only {n} objects in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.workers.get_mut("w1").unwrap().kill();
    let visible = check_visible(&dst, &want, &mut verified, None).await;
    let (_, recorded) = manifest::Manifest::load(&dst, &manifest::dir("crashflow", 0, 1))
        .await
        .expect("manifest");
    let recorded = recorded.len() as u64;
    assert!(recorded > 0, "nothing was recorded before the kill");
    assert!(
        recorded as usize <= visible,
        "{recorded} recorded, {visible} visible"
    );
    assert!(
        (visible as u64) < want.len() as u64,
        "the sync finished before the kill"
    );

    // Restart: the finished objects are skipped, the rest is copied.
    cluster.start_worker("w1");
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        check_visible(&dst, &want, &mut verified, None).await;
        if let Some(p) = objects_progress(&cluster).await {
            if p.cycles >= 1 {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete cycle after the restart; worker log:\n{}",
            cluster.workers["w1"].log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_same(&read_all(&dst, "crash/").await, &want, "after resume");
    eprintln!(
        "killed with {visible} objects visible and {recorded} recorded; after restart: {} skipped, {} copied",
        done.objects_skipped, done.objects_copied
    );
    assert_eq!(done.failures, 0);
    // The same figures in the coordinator's HTTP status.
    let (code, body) = http_get(&cluster.http, "/api/v1/status").expect("status");
    assert_eq!(code, 200);
    assert!(
        body.contains(&format!("\"objects_skipped\":{recorded}")),
        "{body}"
    );
    assert_eq!(
        done.objects_skipped, recorded,
        "skipped = recorded before the kill"
    );
    assert_eq!(
        done.objects_copied,
        want.len() as u64 - recorded,
        "only what was not recorded is copied again"
    );
}
