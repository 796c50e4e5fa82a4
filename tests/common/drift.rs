//! `lockstep drift-check` as a script runs it: the real binary, in table and in JSON form,
//! for the drift suites.

use super::BIN;

pub struct Run {
    pub code: i32,
    pub out: String,
    pub json: serde_json::Value,
}

/// Runs `lockstep drift-check` twice (table, then JSON) and returns both.
pub async fn drift_check(config: &std::path::Path) -> Run {
    let run = |format: &'static str| {
        let config = config.to_path_buf();
        async move {
            tokio::process::Command::new(BIN)
                .arg("drift-check")
                .arg("--config")
                .arg(&config)
                .args(["--format", format])
                .env("RUST_LOG", "warn")
                .output()
                .await
                .expect("run drift-check")
        }
    };
    let table = run("table").await;
    let json = run("json").await;
    let out = String::from_utf8_lossy(&table.stdout).to_string()
        + &String::from_utf8_lossy(&table.stderr);
    let code = table.status.code().unwrap_or(-1);
    assert_eq!(
        json.status.code().unwrap_or(-1),
        code,
        "table and json agree on the exit code"
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "drift-check json: {e}: {}",
            String::from_utf8_lossy(&json.stdout)
        )
    });
    Run { code, out, json }
}

pub fn site<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["datasources"][0]["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["site"] == name))
        .unwrap_or_else(|| panic!("no site {name} in {json}"))
}

/// The config body (without `[coordinator]`) of the drift suites: sites `a` and `b`, each a
/// Druid Router URL and a Kafka cluster, and the Kafka flow `clicks` from the source `up`
/// feeding the datasource `clicks`; `drift` holds the lines of its `[flows.drift]` table.
pub fn two_sites(a: (&str, &str), b: (&str, &str), source: &str, drift: &str) -> String {
    format!(
        r#"
[[sites]]
name = "a"
druid.router_url = "{}"
druid.timeout = "5s"
kafka.bootstrap_servers = "{}"

[[sites]]
name = "b"
druid.router_url = "{}"
druid.timeout = "5s"
kafka.bootstrap_servers = "{}"

[[sources]]
name = "up"
kind = "kafka"
kafka.bootstrap_servers = "{source}"

[[flows]]
name = "clicks"
kind = "kafka"
source = "up"
topics = ["clicks"]
datasources = ["clicks"]
[flows.drift]
{drift}
"#,
        a.0, a.1, b.0, b.1
    )
}
