use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse_ok(text: &str) -> Config {
    match parse(text, "t.toml", None, &no_env) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}"),
    }
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text, "t.toml", None, &no_env) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

const MINIMAL: &str = r#"
[[sites]]
name = "a"
druid.router_url = "http://a:8888"
kafka.bootstrap_servers = "a:9092"

[[sites]]
name = "b"
druid.router_url = "http://b:8888"
kafka.bootstrap_servers = "b:9092"

[[sources]]
name = "up"
kind = "kafka"
kafka.bootstrap_servers = "up:9092"

[[flows]]
name = "f"
kind = "kafka"
source = "up"
topics = ["t"]
"#;

#[test]
fn examples_are_valid() {
    for name in ["two-sites.toml", "three-sites.toml", "two-regions.toml"] {
        let path = examples_dir().join(name);
        if let Err(e) = load(&path) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn defaults_are_applied() {
    let c = parse_ok(MINIMAL);
    assert_eq!(c.coordinator.lease_ttl, std::time::Duration::from_secs(10));
    assert_eq!(c.coordinator.state.service, StoreService::Fs);
    let f = &c.flows[0];
    assert_eq!(
        f.sites,
        vec!["a", "b"],
        "a flow without sites goes to every site"
    );
    match &f.kind {
        FlowKind::Kafka(k) => {
            assert_eq!(k.mode, MirrorMode::ExactlyOnce);
            assert_eq!(k.tasks, 1);
            assert_eq!(k.target_topic, "{topic}");
        }
        other => panic!("expected kafka, got {other:?}"),
    }
}

#[test]
fn syntax_error_names_line_and_column() {
    let text = "[coordinator]\nregion = \"eu\"\nlease_ttl = 10s\n";
    match parse_err(text) {
        ConfigError::Syntax { line, column, .. } => {
            assert_eq!(line, 3);
            assert_eq!(column, 13);
        }
        other => panic!("expected a syntax error, got {other}"),
    }
}

#[test]
fn unknown_key_names_line_and_path() {
    let text = MINIMAL.replace("topics = [\"t\"]", "topics = [\"t\"]\ntopicz = 1");
    let e = parse_err(&text);
    let shown = e.to_string();
    match e {
        ConfigError::Syntax { line, path, .. } => {
            assert_eq!(line, 22, "{shown}");
            assert!(path.unwrap_or_default().starts_with("flows"), "{shown}");
        }
        other => panic!("expected a syntax error, got {other}"),
    }
    assert!(shown.contains("topicz"), "{shown}");
}

#[test]
fn wrong_enum_value_names_the_field() {
    let text = MINIMAL.replace(
        "topics = [\"t\"]",
        "topics = [\"t\"]\nmode = \"exactly-once\"",
    );
    let shown = parse_err(&text).to_string();
    assert!(shown.contains("flows[0].mode"), "{shown}");
    assert!(
        shown.contains("exactly_once"),
        "lists the valid values: {shown}"
    );
}

#[test]
fn unknown_site_names_the_field_path() {
    let text = MINIMAL.replace(
        "topics = [\"t\"]",
        "topics = [\"t\"]\nsites = [\"a\", \"bb\"]",
    );
    let e = parse_err(&text);
    match &e {
        ConfigError::Invalid { errors, .. } => {
            assert_eq!(errors.len(), 1, "{e}");
            assert_eq!(errors[0].path, "flows[0].sites[1]");
            assert!(errors[0].message.contains("unknown site \"bb\""));
            assert!(errors[0].message.contains("known: a, b"));
        }
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn every_semantic_error_is_reported_at_once() {
    let text = r#"
[coordinator]
lease_ttl = "2s"
heartbeat_interval = "5s"

[[sites]]
name = "a"
druid.router_url = "ftp://a"

[[sites]]
name = "a"
druid.router_url = "http://a2:8888"

[[sources]]
name = "up"
kind = "kafka"
kafka.bootstrap_servers = "up:9092"

[[flows]]
name = "f"
kind = "kafka"
source = "nope"
topic_regex = "(unclosed"
prefix = "x/"

[[flows]]
name = "g"
kind = "objects"
source = "up"
"#;
    let e = parse_err(text);
    let ConfigError::Invalid { errors, .. } = &e else {
        panic!("expected Invalid, got {e}");
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "coordinator.heartbeat_interval",
        "sites[0].druid.router_url",
        "sites[1].name",
        "flows[0].source",
        "flows[0].topic_regex",
        "flows[0].prefix",
        "flows[0].sites[0]",
        "flows[1].source",
        "flows[1].prefix",
    ] {
        assert!(
            paths.contains(&expected),
            "missing {expected} in {paths:?}\n{e}"
        );
    }
    assert!(e.to_string().contains("does not compile"));
}

#[test]
fn missing_secret_names_the_field_and_never_a_value() {
    let text = MINIMAL.replace(
        "druid.router_url = \"http://a:8888\"",
        "druid.router_url = \"http://a:8888\"\ndruid.username = \"u\"\ndruid.password = \"${DRUID_PW}\"",
    );
    let e = parse_err(&text);
    let shown = e.to_string();
    assert!(shown.contains("sites[0].druid.password"), "{shown}");
    assert!(
        shown.contains("`${NAME}` reference #1: the environment variable is not set"),
        "{shown}"
    );
    // The reference's text may be part of the secret (a stray `${` in a password).
    assert!(!shown.contains("DRUID_PW"), "{shown}");

    let env = |n: &str| (n == "DRUID_PW").then(|| "hunter2".to_string());
    let c = parse(&text, "t.toml", None, &env).expect("valid with the variable set");
    let pw = c.sites[0].druid.password.as_ref().expect("password");
    assert_eq!(pw.expose(), "hunter2");
    assert!(
        !format!("{c:?}").contains("hunter2"),
        "Debug must redact secrets"
    );
}

#[test]
fn kafka_properties_are_secrets() {
    let text = MINIMAL.replace(
        "kafka.bootstrap_servers = \"a:9092\"",
        "kafka.bootstrap_servers = \"a:9092\"\nkafka.properties = { \"sasl.password\" = \"pw-123\" }",
    );
    let c = parse_ok(&text);
    let props = &c.sites[0].kafka.as_ref().expect("kafka").properties;
    assert_eq!(props["sasl.password"].expose(), "pw-123");
    assert!(!format!("{c:?}").contains("pw-123"));
}

#[test]
fn store_requirements_per_service() {
    let text = MINIMAL.to_string()
        + r#"
[[sources]]
name = "bucket"
kind = "objects"
store.service = "azblob"
"#;
    let e = parse_err(&text);
    let ConfigError::Invalid { errors, .. } = &e else {
        panic!("expected Invalid, got {e}");
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "sources[1].store.container",
            "sources[1].store.account_name"
        ]
    );
}

#[test]
fn objects_flow_needs_sites_with_stores() {
    let text = MINIMAL.to_string()
        + r#"
[[sources]]
name = "bucket"
kind = "objects"
store = { service = "fs", root = "/tmp/in" }

[[flows]]
name = "files"
kind = "objects"
source = "bucket"
prefix = ""
"#;
    let e = parse_err(&text);
    let shown = e.to_string();
    assert!(shown.contains("flows[1].sites[0]"), "{shown}");
    assert!(shown.contains("no [sites.store] table"), "{shown}");
}

#[test]
fn task_config_roundtrips_through_json() {
    let c = parse_ok(MINIMAL);
    let json = serde_json::to_string(&c.flows[0]).expect("serialize");
    let back: Flow = from_json(&json).expect("deserialize");
    assert_eq!(back.name, "f");
    assert_eq!(back.tasks_per_site(), 1);
}

#[test]
fn unicode_before_an_error_counts_columns_in_characters() {
    let text = "[coordinator]\nregion = \"é\" x\n";
    match parse_err(text) {
        ConfigError::Syntax { line, column, .. } => assert_eq!((line, column), (2, 14)),
        other => panic!("expected a syntax error, got {other}"),
    }
}

#[test]
fn drift_settings_default_and_parse() {
    let c = parse_ok(MINIMAL);
    assert_eq!(c.flows[0].drift, DriftSettings::default());
    assert_eq!(
        c.coordinator.drift_interval,
        std::time::Duration::from_secs(60)
    );
    let text = MINIMAL.to_string()
        + r#"
[flows.drift]
window = "48h"
settle = "10m"
granularity = "day"
count = 'SUM("count")'
max_drift = "0.1%"
lag_tolerance = "0s"
"#;
    let d = parse_ok(&text).flows[0].drift.clone();
    assert_eq!(d.window, std::time::Duration::from_secs(48 * 3600));
    assert_eq!(d.settle, std::time::Duration::from_secs(600));
    assert_eq!(d.granularity, Granularity::Day);
    assert_eq!(d.count, Some(CountExpr::Sum("count".to_string())));
    assert_eq!(d.lag_tolerance, std::time::Duration::ZERO);
    let auto = parse_ok(MINIMAL);
    assert_eq!(auto.flows[0].drift.count, None, "auto by default");
    assert_eq!(
        auto.flows[0].drift.lag_tolerance,
        std::time::Duration::from_secs(30)
    );
    assert!((d.max_drift - 0.001).abs() < 1e-12);
}

#[test]
fn drift_settings_errors_name_their_fields() {
    let text = MINIMAL.to_string()
        + r#"
[flows.drift]
window = "1h"
settle = "2h"
granularity = "fortnight"
count = "SUM(a; DROP)"
max_drift = "150%"
"#;
    let shown = parse_err(&text).to_string();
    for needle in [
        "flows[0].drift.settle: 2h must be shorter than window (1h)",
        "flows[0].drift.granularity: unknown granularity \"fortnight\"",
        "flows[0].drift.count: \"SUM(a; DROP)\" is not \"auto\", COUNT(*)",
        "flows[0].drift.max_drift: \"150%\" is not a ratio",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
    }
}

#[test]
fn ratios_and_count_expressions() {
    assert_eq!(parse_ratio("0"), Some(0.0));
    assert_eq!(parse_ratio("1%"), Some(0.01));
    assert_eq!(parse_ratio("0.25"), Some(0.25));
    assert_eq!(parse_ratio("-1%"), None);
    assert_eq!(parse_ratio("abc"), None);
    assert_eq!(CountExpr::parse("count(*)"), Some(CountExpr::Rows));
    assert_eq!(
        CountExpr::parse("SUM(events)"),
        Some(CountExpr::Sum("events".into()))
    );
    assert_eq!(CountExpr::parse("SUM(\"a\\\"b\")"), None);
    assert_eq!(CountExpr::parse("MAX(x)"), None);
}

fn invalid_paths(e: &ConfigError) -> Vec<(String, String)> {
    match e {
        ConfigError::Invalid { errors, .. } => errors
            .iter()
            .map(|e| (e.path.clone(), e.message.clone()))
            .collect(),
        other => panic!("expected semantic errors, got {other}"),
    }
}

#[test]
fn security_defaults_are_applied() {
    let c = parse_ok(MINIMAL);
    assert!(c.coordinator.tls.is_none());
    assert!(c.coordinator.auth.token.is_none());
    assert!(!c.coordinator.auth.open_read_only);
    assert_eq!(c.coordinator.limits, Limits::default());
    assert_eq!(
        c.coordinator.limits.max_message_bytes,
        DEFAULT_MAX_MESSAGE_BYTES
    );
}

#[test]
fn security_settings_parse_and_tls_paths_resolve_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["c.pem", "k.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let text = format!(
        r#"
[coordinator.tls]
cert_file = "c.pem"
key_file = "k.pem"
client_ca_file = "ca.pem"
[coordinator.auth]
token = "${{ADMIN_TOKEN}}"
open_read_only = true
[coordinator.limits]
max_message_bytes = "64KiB"
request_timeout = "5s"
heartbeat_queue = 8
{MINIMAL}"#
    );
    let env = |name: &str| (name == "ADMIN_TOKEN").then(|| "0123456789abcdef-token".to_string());
    let c = parse(&text, "t.toml", Some(dir.path()), &env).unwrap();
    let tls = c.coordinator.tls.unwrap();
    assert_eq!(tls.cert_file, dir.path().join("c.pem"));
    assert_eq!(tls.client_ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(
        c.coordinator.auth.token.as_ref().map(|t| t.expose()),
        Some("0123456789abcdef-token")
    );
    assert!(c.coordinator.auth.open_read_only);
    assert_eq!(c.coordinator.limits.max_message_bytes, 64 * 1024);
    assert_eq!(
        c.coordinator.limits.request_timeout,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(c.coordinator.limits.heartbeat_queue, 8);
    assert!(!format!("{:?}", c.coordinator.auth).contains("0123456789abcdef"));
}

#[test]
fn security_errors_name_the_field() {
    let text = format!(
        r#"
[coordinator.tls]
cert_file = "c.pem"
client_ca_file = ""
[coordinator.auth]
token = "short-secret"
[coordinator.limits]
max_message_bytes = "12"
request_timeout = "0s"
heartbeat_queue = 0
{MINIMAL}"#
    );
    let errors = invalid_paths(&parse_err(&text));
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "coordinator.tls.key_file",
            "coordinator.tls.client_ca_file",
            "coordinator.auth.token",
            "coordinator.limits.max_message_bytes",
            "coordinator.limits.request_timeout",
            "coordinator.limits.heartbeat_queue",
        ],
        "{errors:?}"
    );
    // The token's value is never quoted, only its length.
    assert!(errors.iter().all(|(_, m)| !m.contains("short-secret")));
    assert!(
        errors[2].1.contains("too short (12 characters"),
        "{errors:?}"
    );
}

#[test]
fn missing_tls_files_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[coordinator.tls]\ncert_file = \"nope.pem\"\nkey_file = \"/definitely/not/here.pem\"\n{MINIMAL}"
    );
    let e = parse(&text, "t.toml", Some(dir.path()), &no_env).unwrap_err();
    let errors = invalid_paths(&e);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, "coordinator.tls.cert_file");
    assert!(errors[0].1.contains("nope.pem"), "{errors:?}");
    assert_eq!(errors[1].0, "coordinator.tls.key_file");
}

#[test]
fn unknown_security_keys_are_syntax_errors() {
    let text = format!("[coordinator.auth]\ntokn = \"x\"\n{MINIMAL}");
    match parse_err(&text) {
        ConfigError::Syntax { path, line, .. } => {
            assert_eq!(path.as_deref(), Some("coordinator.auth.tokn"));
            assert_eq!(line, 2);
        }
        other => panic!("expected a syntax error, got {other}"),
    }
}

#[test]
fn a_mistyped_secret_is_not_quoted_in_the_error() {
    let text = MINIMAL.replace(
        "druid.router_url = \"http://a:8888\"",
        "druid.router_url = \"http://a:8888\"\ndruid.username = \"u\"\ndruid.password = 987654321",
    );
    let e = parse_err(&text);
    let shown = e.to_string();
    assert!(shown.contains("sites[0].druid.password"), "{shown}");
    assert!(!shown.contains("987654321"), "{shown}");
    let text = MINIMAL.replace(
        "kafka.bootstrap_servers = \"a:9092\"",
        "kafka.bootstrap_servers = \"a:9092\"\nkafka.properties = { \"sasl.password\" = 13572468 }",
    );
    let shown = parse_err(&text).to_string();
    assert!(!shown.contains("13572468"), "{shown}");
    // Other fields keep serde's precise message.
    let shown = parse_err(&MINIMAL.replace("name = \"f\"", "name = 42")).to_string();
    assert!(shown.contains("42") || shown.contains("string"), "{shown}");
}

#[test]
fn election_defaults_and_advertised_addresses() {
    let c = parse_ok(MINIMAL);
    assert_eq!(c.coordinator.election, ElectionConfig::default());
    assert_eq!(c.coordinator.advertise_grpc, None);
    let text = r#"
[coordinator]
advertise_grpc = "https://coordinator-0.lockstep:7400"
advertise_http = "http://10.0.0.5:7401"
[coordinator.election]
lease_ttl = "1500ms"
"#
    .to_string()
        + MINIMAL;
    let c = parse_ok(&text);
    assert_eq!(
        c.coordinator.advertise_grpc.as_deref(),
        Some("https://coordinator-0.lockstep:7400")
    );
    let e = c.coordinator.election;
    assert_eq!(e.lease_ttl, std::time::Duration::from_millis(1500));
    assert_eq!(
        e.renew_interval,
        std::time::Duration::from_millis(300),
        "renewal defaults to a fifth of a short lease"
    );
}

#[test]
fn election_errors_name_their_fields() {
    let text = r#"
[coordinator]
advertise_grpc = "10.0.0.5:7400"
advertise_http = "http://host:7401/status"
[coordinator.election]
lease_ttl = "3s"
renew_interval = "2s"
"#
    .to_string()
        + MINIMAL;
    let shown = parse_err(&text).to_string();
    for needle in [
        "coordinator.advertise_grpc: \"10.0.0.5:7400\" must be http://HOST:PORT",
        "coordinator.advertise_http: \"http://host:7401/status\" must be http://HOST:PORT",
        "coordinator.election.renew_interval: 2s is more than a third of lease_ttl (3s)",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
    }
    let typo = "[coordinator.election]\nttl = \"5s\"\n".to_string() + MINIMAL;
    let shown = parse_err(&typo).to_string();
    assert!(shown.contains("ttl"), "{shown}");
}

// ---------------------------------------------------------------------------------------
// What errors show once interpolation has run (issue 22).
// ---------------------------------------------------------------------------------------

fn parse_env_err(text: &str, base: Option<&std::path::Path>, vars: &[(&str, &str)]) -> String {
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    match parse(text, "t.toml", base, &env) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_invalid_value_from_a_file_names_the_field_and_the_kind_never_the_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ttl"), "hunter2 from a file\n").unwrap();
    let text = format!("[coordinator]\nlease_ttl = \"${{file:ttl}}\"\n{MINIMAL}");
    let shown = parse_env_err(&text, Some(dir.path()), &[]);
    assert!(
        shown.contains(
            "coordinator.lease_ttl: the value from a reference `${file:PATH}` is not valid here"
        ),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    // The same from the environment, and in a value that is only partly a reference.
    let text = format!("[coordinator]\nlease_ttl = \"1${{TTL}}\"\n{MINIMAL}");
    let shown = parse_env_err(&text, None, &[("TTL", "0 hunter2-units")]);
    assert!(
        shown.contains("coordinator.lease_ttl: the value from a reference `${NAME}`"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn the_process_environment_cannot_be_read_as_a_value() {
    let text = format!("[coordinator]\nlease_ttl = \"${{file:/proc/self/environ}}\"\n{MINIMAL}");
    let shown = parse_env_err(&text, None, &[]);
    assert!(
        shown.contains("coordinator.lease_ttl: `${file:PATH}` reference #1"),
        "{shown}"
    );
    assert!(shown.contains("pseudo-file"), "{shown}");
    assert!(!shown.contains("/proc/self/environ"), "{shown}");
    if let Ok(path) = std::env::var("PATH") {
        assert!(!shown.contains(&path), "{shown}");
    }
}

#[test]
fn file_references_read_regular_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let text = MINIMAL.replace(
        "druid.router_url = \"http://a:8888\"",
        "druid.router_url = \"http://a:8888\"\ndruid.username = \"u\"\ndruid.password = \"${file:fifo}\"",
    );
    let shown = parse_env_err(&text, Some(dir.path()), &[]);
    assert!(
        shown.contains(
            "sites[0].druid.password: `${file:PATH}` reference #1: not a regular file (a FIFO)"
        ),
        "{shown}"
    );
    let text = text.replace("${file:fifo}", "${file:.}");
    let shown = parse_env_err(&text, Some(dir.path()), &[]);
    assert!(
        shown.contains("not a regular file (a directory)"),
        "{shown}"
    );
}

#[test]
fn a_malformed_reference_in_a_password_is_not_quoted() {
    let text = MINIMAL.replace(
        "druid.router_url = \"http://a:8888\"",
        "druid.router_url = \"http://a:8888\"\ndruid.username = \"u\"\ndruid.password = \"pa${ss-w0rd}x\"",
    );
    let shown = parse_env_err(&text, None, &[]);
    assert!(
        shown.contains("sites[0].druid.password: reference #1 is malformed"),
        "{shown}"
    );
    assert!(
        !shown.contains("ss-w0rd") && !shown.contains("pa$"),
        "{shown}"
    );
    let unclosed = text.replace("pa${ss-w0rd}x", "pa${ss-w0rd");
    let shown = parse_env_err(&unclosed, None, &[]);
    assert!(shown.contains("is not closed"), "{shown}");
    assert!(!shown.contains("ss-w0rd"), "{shown}");
}

#[test]
fn another_fields_produced_value_is_named_by_its_path() {
    // Site a's name comes from the environment; the flow names an unknown site.
    let text = MINIMAL
        .replace("name = \"a\"", "name = \"${SITE_A}\"")
        .replace(
            "topics = [\"t\"]",
            "topics = [\"t\"]\nsites = [\"b\", \"nope\"]",
        );
    let shown = parse_env_err(&text, None, &[("SITE_A", "a-secret-site")]);
    assert!(
        shown.contains(
            "flows[0].sites[1]: unknown site \"nope\" (known: <the value of sites[0].name>, b)"
        ),
        "{shown}"
    );
    assert!(!shown.contains("a-secret-site"), "{shown}");
    // A duplicate of a produced name says which field it repeats, not the name.
    let text = MINIMAL.replace("name = \"a\"", "name = \"${SITE_A}\"");
    let shown = parse_env_err(&text, None, &[("SITE_A", "b")]);
    assert!(
        shown.contains(
            "sites[1].name: duplicate name <the value of sites[0].name> (also sites[0].name)"
        ),
        "{shown}"
    );
    // Without `sites = [...]` a flow's sites are the sites' names, named by their fields.
    let text = MINIMAL
        .replace("name = \"a\"", "name = \"${SITE_A}\"")
        .replace("kafka.bootstrap_servers = \"a:9092\"\n", "");
    let shown = parse_env_err(&text, None, &[("SITE_A", "x")]);
    assert!(
        shown.contains(
            "flows[0].sites[0]: site <the value of sites[0].name> has no [sites.kafka] table"
        ),
        "{shown}"
    );
}

#[test]
fn a_produced_value_is_redacted_wherever_it_appears() {
    // The second belt: a literal elsewhere that repeats a produced value is not shown either.
    let text = format!(
        "[coordinator]\nadvertise_grpc = \"secret-host:7400\"\n{}",
        MINIMAL.replace("\"up:9092\"", "\"${UP}:9092\"")
    );
    let shown = parse_env_err(&text, None, &[("UP", "secret-host")]);
    assert!(
        shown.contains("coordinator.advertise_grpc: \"***:7400\""),
        "{shown}"
    );
    assert!(!shown.contains("secret-host"), "{shown}");
}

#[test]
fn names_and_values_have_length_limits() {
    let long_name = "n".repeat(MAX_NAME_BYTES + 1);
    let text = MINIMAL.replace("name = \"f\"", &format!("name = \"{long_name}\""));
    let shown = parse_err(&text).to_string();
    assert!(
        shown.contains("flows[0].name: too long (129 bytes; at most 128; the value is not shown)"),
        "{shown}"
    );
    assert!(!shown.contains(&long_name), "{shown}");

    // A value from the environment is held to the cap too.
    let text = MINIMAL.replace("\"up:9092\"", "\"${UP}\"");
    let huge = "u".repeat(MAX_VALUE_BYTES + 1);
    let shown = parse_env_err(&text, None, &[("UP", &huge)]);
    assert!(
        shown.contains("sources[0].kafka.bootstrap_servers: too long (65537 bytes; at most 65536"),
        "{shown}"
    );
    assert!(shown.len() < 1000, "{shown}");

    let long_topic = "t".repeat(300);
    let text = MINIMAL.replace("topics = [\"t\"]", &format!("topics = [\"{long_topic}\"]"));
    let shown = parse_err(&text).to_string();
    assert!(
        shown.contains(
            "flows[0].topics[0]: too long for a Kafka topic name (300 bytes; at most 249"
        ),
        "{shown}"
    );
    assert!(!shown.contains(&long_topic), "{shown}");

    let text = MINIMAL.replace(
        "topics = [\"t\"]",
        &format!("topics = [\"t\"]\nsites = [\"{long_name}\"]"),
    );
    let shown = parse_err(&text).to_string();
    assert!(
        shown.contains("flows[0].sites[0]: unknown site, longer than any name (129 bytes)"),
        "{shown}"
    );

    let text = format!("[coordinator]\nid = \"{long_name}\"\n{MINIMAL}");
    let shown = parse_err(&text).to_string();
    assert!(
        shown.contains("coordinator.id: too long (129 bytes"),
        "{shown}"
    );
}

/// MINIMAL with two regions: site a in "eu", site b in "us".
fn two_regions() -> String {
    MINIMAL
        .replace("name = \"a\"\n", "name = \"a\"\nregion = \"eu\"\n")
        .replace("name = \"b\"\n", "name = \"b\"\nregion = \"us\"\n")
        + r#"
[[regions]]
name = "eu"
coordinators = ["http://coord-eu-1:7400", "http://coord-eu-2:7400"]
state = { service = "fs", root = "/var/lib/lockstep/eu" }

[[regions]]
name = "us"
state = { service = "fs", root = "/var/lib/lockstep/us" }
"#
}

#[test]
fn regions_each_hold_their_sites_and_state() {
    let mut c = parse_ok(&two_regions());
    assert_eq!(c.regions.len(), 2);
    assert_eq!(c.site("a").map(|s| s.region.as_str()), Some("eu"));
    assert_eq!(c.site("b").map(|s| s.region.as_str()), Some("us"));
    assert_eq!(c.regions[0].coordinators.len(), 2);
    c.select_region(Some("us")).expect("us is listed");
    assert_eq!(c.coordinator.region, "us");
    assert_eq!(c.coordinator.state.root, "/var/lib/lockstep/us");
    assert!(c.in_own_region(c.site("b").expect("b")));
    assert!(!c.in_own_region(c.site("a").expect("a")));
    let e = c.select_region(Some("ap")).unwrap_err();
    assert!(
        e.contains("region \"ap\" is not in the config's regions (eu, us)"),
        "{e}"
    );
}

#[test]
fn without_regions_one_region_holds_every_site() {
    let mut c = parse_ok(&("[coordinator]\nregion = \"eu\"\n".to_string() + MINIMAL));
    assert_eq!(c.regions.len(), 1);
    assert_eq!(c.regions[0].name, "eu");
    assert!(c.sites.iter().all(|s| s.region == "eu"));
    let state = c.coordinator.state.clone();
    c.select_region(None).expect("the implicit region");
    assert_eq!(
        c.coordinator.state.root, state.root,
        "the existing state store is kept"
    );
}

#[test]
fn region_errors_name_their_fields() {
    let missing = two_regions().replace("region = \"us\"\n", "");
    let shown = parse_err(&missing).to_string();
    assert!(
        shown.contains("sites[1].region: required with [[regions]]"),
        "{shown}"
    );
    let unknown = two_regions().replace("region = \"us\"\n", "region = \"ap\"\n");
    let shown = parse_err(&unknown).to_string();
    assert!(
        shown.contains(
            "sites[1].region: \"ap\" is not a region of this config ([[regions]]: eu, us)"
        ),
        "{shown}"
    );
    let shown = parse_err(
        &("[coordinator.state]\nservice = \"fs\"\nroot = \"x\"\n".to_string() + &two_regions()),
    )
    .to_string();
    assert!(
        shown.contains("coordinator.state: with [[regions]] each region names its own state store"),
        "{shown}"
    );
    let shown =
        parse_err(&("[coordinator]\nregion = \"ap\"\n".to_string() + &two_regions())).to_string();
    assert!(
        shown.contains("coordinator.region: \"ap\" is not in [[regions]] (eu, us)"),
        "{shown}"
    );
    let shown = parse_err(&MINIMAL.replace("name = \"a\"\n", "name = \"a\"\nregion = \"eu\"\n"))
        .to_string();
    assert!(
        shown.contains("no [[regions]]: the one region is [coordinator] region \"default\""),
        "{shown}"
    );
}

#[test]
fn peer_timing_defaults_and_limits() {
    let c = parse_ok(&two_regions());
    assert_eq!(
        (c.coordinator.peer_interval, c.coordinator.peer_timeout),
        (
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(3)
        )
    );
    let c = parse_ok(&("[coordinator]\npeer_interval = \"4s\"\n".to_string() + &two_regions()));
    assert_eq!(
        c.coordinator.peer_timeout,
        std::time::Duration::from_secs(2),
        "the default timeout stays below a short interval"
    );
    let shown = parse_err(
        &("[coordinator]\npeer_interval = \"5s\"\npeer_timeout = \"5s\"\n".to_string()
            + &two_regions()),
    )
    .to_string();
    assert!(
        shown.contains("coordinator.peer_timeout: 5s is not less than peer_interval (5s)"),
        "{shown}"
    );
    let shown =
        parse_err(&("[coordinator]\npeer_interval = \"0s\"\n".to_string() + &two_regions()))
            .to_string();
    assert!(
        shown.contains("coordinator.peer_interval: must be greater than zero"),
        "{shown}"
    );
}

#[test]
fn peer_tls_comes_from_its_table_or_from_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["c.pem", "k.pem", "ca.pem", "peers-ca.pem"] {
        std::fs::write(dir.path().join(f), "x").expect("write");
    }
    let parse_in = |text: &str| parse(text, "t.toml", Some(dir.path()), &no_env);
    let https = two_regions().replace("http://coord-eu", "https://coord-eu");
    let shown = parse_err(&https).to_string();
    assert!(
        shown.contains("coordinator.peer_tls: regions[0] (eu) lists https:// coordinators"),
        "{shown}"
    );
    // Mutual TLS on its own port: the client CA verifies peers, its certificate is its client
    // certificate.
    let mutual = "[coordinator.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_ca_file = \"ca.pem\"\n";
    let c = parse_in(&(mutual.to_string() + &https)).expect("valid");
    let files = c
        .coordinator
        .peer_tls_files()
        .expect("from [coordinator.tls]");
    assert_eq!(
        (files.ca_file, files.cert_file, files.key_file),
        (
            dir.path().join("ca.pem"),
            Some(dir.path().join("c.pem")),
            Some(dir.path().join("k.pem"))
        )
    );
    // TLS without client certificates names no CA for peers: peer_tls does.
    let server_only = "[coordinator.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
    let shown = parse_in(&(server_only.to_string() + &https))
        .expect_err("no CA")
        .to_string();
    assert!(
        shown.contains("coordinator.peer_tls: regions[0]"),
        "{shown}"
    );
    let c = parse_in(
        &(server_only.to_string()
            + "[coordinator.peer_tls]\nca_file = \"peers-ca.pem\"\n"
            + &https),
    )
    .expect("valid");
    let files = c
        .coordinator
        .peer_tls_files()
        .expect("[coordinator.peer_tls]");
    assert_eq!(files.ca_file, dir.path().join("peers-ca.pem"));
    assert_eq!(files.cert_file, None);
    // Its own errors: fields, and files that cannot be read.
    let shown = parse_err(
        &("[coordinator.peer_tls]\ncert_file = \"c.pem\"\n".to_string() + &two_regions()),
    )
    .to_string();
    assert!(
        shown.contains("coordinator.peer_tls.ca_file: required")
            && shown.contains("coordinator.peer_tls.key_file: cert_file and key_file go together"),
        "{shown}"
    );
    let shown = parse_in(
        &("[coordinator.peer_tls]\nca_file = \"nope.pem\"\n".to_string() + &two_regions()),
    )
    .expect_err("missing file")
    .to_string();
    assert!(
        shown.contains("coordinator.peer_tls.ca_file: cannot read"),
        "{shown}"
    );
    // Without any: only http:// peers, which need nothing.
    assert!(parse_ok(&two_regions())
        .coordinator
        .peer_tls_files()
        .is_none());
}
