//! The `firstmile` binary's admin commands, as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

fn firstmile(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_firstmile"));
    cmd.current_dir(dir).args(args);
    // The test's own environment may carry FIRSTMILE_* from `scripts/stack env`.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FIRSTMILE_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn project(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("firstmile.toml"), config).unwrap();
    std::fs::create_dir(dir.path().join("topics")).unwrap();
    std::fs::write(
        dir.path().join("topics/t.toml"),
        "[defaults]\npartitions = 1\nreplication_factor = 1\n\
         [defaults.config]\n\"max.message.bytes\" = \"4194304\"\n\
         [topic.\"raw.web\"]\n[topic.parsed]\n[topic.events]\n[topic.dlq]\n",
    )
    .unwrap();
    dir
}

#[test]
fn check_accepts_the_shipped_configuration() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = firstmile(&root, &["check"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("ok: firstmile.toml: 13 sources"),
        "{stdout}"
    );
    // The topology: one line per source and role, with its names.
    let missing: Vec<&str> = [
        "source openssh        raw raw.openssh  replay group firstmile-replay-openssh",
        "dlq dlq  group firstmile-parse  member/transactional id firstmile-parse-",
        "stage  enrich         parsed -> events",
        "sink   elasticsearch  events  dlq dlq  group firstmile-sink-elasticsearch",
    ]
    .into_iter()
    .filter(|line| !stdout.contains(line))
    .collect();
    assert!(missing.is_empty(), "{missing:?} not in:\n{stdout}");
}

#[test]
fn check_reports_every_error_with_file_line_and_fails() {
    let dir = project("[kafka]\nbrokrs = \"x\"\n\n[sources.web]\ntopik = \"raw.web\"\n");
    let out = firstmile(dir.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("2 configuration errors"), "{err}");
    assert!(
        err.contains("firstmile.toml:2:1: kafka.brokrs: unknown field `brokrs`"),
        "{err}"
    );
    assert!(
        err.contains("firstmile.toml:5:1: sources.web.topik: unknown field `topik`"),
        "{err}"
    );
}

#[test]
fn check_names_the_environment_variable_at_fault() {
    let dir = project("[sources.web]\n");
    let out = firstmile(
        dir.path(),
        &["check"],
        &[("FIRSTMILE_KAFKA__REQUEST_TIMEOUT_MS", "soon")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("FIRSTMILE_KAFKA__REQUEST_TIMEOUT_MS (environment): kafka.request_timeout_ms"),
        "{err}"
    );
}

#[test]
fn check_finds_a_source_whose_raw_topic_is_not_declared() {
    let dir = project("[sources.web]\n[sources.app]\n");
    let out = firstmile(dir.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("sources.app: its raw topic `raw.app` is not declared"),
        "{err}"
    );
    assert!(!err.contains("sources.web"), "{err}");
    // Mapping the source to a declared raw topic fixes it.
    let out = firstmile(
        dir.path(),
        &["check"],
        &[("FIRSTMILE_SOURCES__APP__TOPIC", "raw.web")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_refuses_topics_too_small_for_the_largest_event() {
    let dir = project("[sources.web]\n");
    std::fs::write(
        dir.path().join("topics/t.toml"),
        "[defaults]\npartitions = 1\nreplication_factor = 1\n\
         [defaults.config]\n\"max.message.bytes\" = \"4194304\"\n\
         [topic.\"raw.web\"]\n[topic.parsed]\n[topic.events]\n\
         [topic.dlq]\nconfig = { \"max.message.bytes\" = \"1000000\" }\n",
    )
    .unwrap();
    let out = firstmile(dir.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("topic `dlq` takes records of at most 1000000 bytes (max.message.bytes), less than a raw topic (4194304)"),
        "{err}"
    );
    assert!(!err.contains("`parsed`"), "{err}");
    // A raw topic smaller than what receivers write is refused too.
    let out = firstmile(
        dir.path(),
        &["check"],
        &[("FIRSTMILE_INGEST__MAX_EVENT_BYTES", "8388608")],
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("topic `raw.web` takes records of at most 4194304 bytes (max.message.bytes); ingest.max_event_bytes lets receivers write 8454144"),
        "{err}"
    );
}

/// A listener that drops every connection, as a SASL or TLS listener drops
/// a plaintext Kafka client: `topics plan` says so instead of hanging.
#[test]
fn topics_plan_against_a_listener_that_drops_it_says_what_to_check() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            drop(connection);
        }
    });
    let dir = project("[sources.web]\n");
    let out = firstmile(
        dir.path(),
        &["topics", "plan"],
        &[
            ("FIRSTMILE_KAFKA__BROKERS", addr.as_str()),
            ("FIRSTMILE_KAFKA__REQUEST_TIMEOUT_MS", "2000"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot talk to the brokers at {addr} within 2 s"))
            && err.contains("security.protocol"),
        "{err}"
    );
}

#[test]
fn a_missing_config_file_named_explicitly_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = firstmile(dir.path(), &["--config", "nope.toml", "check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the configuration nope.toml"));
}

#[test]
fn parse_runs_the_shipped_parsers_on_the_loghub_samples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for system in [
        "Linux",
        "OpenSSH",
        "Apache",
        "HDFS",
        "Zookeeper",
        "Hadoop",
        "Spark",
    ] {
        let file = format!("tests/data/loghub/{system}/{system}_2k.log");
        let source = system.to_lowercase();
        let out = firstmile(&root, &["parse", "--source", &source, &file], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let events: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2000, "{system}");
        let failures: Vec<_> = events.iter().filter(|e| e.get("dlq").is_some()).collect();
        assert!(failures.is_empty(), "{system}: {:?}", failures.first());
        assert!(
            events.iter().all(|e| e["event"]["dataset"].is_string()),
            "{system}: dataset"
        );
        assert!(
            events.iter().all(|e| e["message"].is_string()),
            "{system}: every event has a message"
        );
    }
}

#[test]
fn parse_reports_failures_as_dlq_lines_and_check_refuses_bad_patterns() {
    let dir = project(
        "[sources.web]\n[sources.web.parse]\nformat = \"grok\"\npatterns = ['%{INT:n} (?=x)']\n",
    );
    let out = firstmile(dir.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("sources.web.parse: patterns[0]"), "{err}");
    assert!(err.contains("backtracking"), "{err}");

    let input = dir.path().join("in.log");
    std::fs::write(
        &input,
        "{\"msg\":\"ok\"}\n[1,2]\n{\"process\":{\"pid\":\"x\"}}\n",
    )
    .unwrap();
    let out = firstmile(dir.path(), &["parse", "--format", "json", "in.log"], &[]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["fields"]["msg"], "ok");
    assert_eq!(lines[1]["dlq"]["error_kind"], "no_match");
    assert_eq!(lines[2]["dlq"]["error_kind"], "invalid_field");
    assert_eq!(lines[2]["dlq"]["line"], 3);
    assert!(text(&out.stderr).contains("1 parsed, 2 to dlq"));
}

#[test]
fn parse_enriches_with_the_shipped_indicator_list() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = "tests/data/loghub/OpenSSH/OpenSSH_2k.log";
    let out = firstmile(&root, &["parse", "--source", "openssh", file], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let raw = std::fs::read_to_string(root.join(file)).unwrap();
    let raw_lines: Vec<&str> = raw.lines().filter(|l| !l.trim().is_empty()).collect();
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), raw_lines.len());
    // tests/data/enrich/indicators.txt lists 173.234.31.186: exactly the
    // events whose line mentions it are marked, through source.ip.
    let mut marked = 0;
    for (line, event) in raw_lines.iter().zip(&events) {
        let listed = line.contains("173.234.31.186");
        assert_eq!(event.get("threat").is_some(), listed, "{line}");
        if listed {
            marked += 1;
            assert_eq!(event["threat"]["indicator"]["matched"], "173.234.31.186");
            assert_eq!(event["threat"]["indicator"]["matched_field"], "source.ip");
            assert_eq!(event["labels"]["service"], "ssh");
        }
    }
    assert_eq!(marked, 10);
}

#[test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
fn schemas_register_then_check_refuses_an_incompatible_change() {
    let registry = std::env::var("FIRSTMILE_SCHEMA_REGISTRY__URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081".into());
    let env = [("FIRSTMILE_SCHEMA_REGISTRY__URL", registry.as_str())];
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("topics")).unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("test.cli.schemas.{}.{nanos}", std::process::id());
    std::fs::write(
        dir.path().join("topics/t.toml"),
        format!("[topic.\"{topic}\"]\npartitions = 1\nreplication_factor = 1\nvalue_schema = \"v.avsc\"\n"),
    )
    .unwrap();
    let schema = |fields: &str| format!(r#"{{"type":"record","name":"V","fields":[{fields}]}}"#);
    std::fs::write(
        dir.path().join("topics/v.avsc"),
        schema(r#"{"name":"a","type":"string"}"#),
    )
    .unwrap();

    let out = firstmile(dir.path(), &["schemas", "register"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("{topic}-value: registered as id")));

    std::fs::write(
        dir.path().join("topics/v.avsc"),
        schema(r#"{"name":"a","type":"string"},{"name":"b","type":"long"}"#),
    )
    .unwrap();
    let out = firstmile(dir.path(), &["schemas", "check"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("INCOMPATIBLE with version 1"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("1 schema(s) incompatible"));
}

/// A password in the database URL, as userinfo and as `?password=`; the
/// same secret as the Elasticsearch password and in its URL.
const SECRET: &str = "hunter2-secret";

fn secret_env(database_scheme: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "FIRSTMILE_DATABASE__URL",
            format!("{database_scheme}://fm:{SECRET}@127.0.0.1:1/events?password={SECRET}&sslmode=disable"),
        ),
        ("FIRSTMILE_ELASTICSEARCH__URL", format!("http://fm:{SECRET}@127.0.0.1:1")),
        ("FIRSTMILE_ELASTICSEARCH__PASSWORD", SECRET.to_string()),
        ("FIRSTMILE_SCHEMA_REGISTRY__PASSWORD", SECRET.to_string()),
        ("FIRSTMILE_KAFKA__BROKERS", "127.0.0.1:1".to_string()),
    ]
}

#[test]
fn check_names_a_mistyped_url_without_its_password() {
    let dir = project("");
    let env = secret_env("postgress");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = firstmile(dir.path(), &["check"], &env);
    assert!(!out.status.success());
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("database.url"), "{all}");
    assert!(all.contains("postgress://fm:***@"), "{all}");
    assert!(!all.contains(SECRET), "a secret printed: {all}");
}

/// A sink whose brokers and targets are unreachable answers `/health/ready`
/// with every failure, and neither that answer nor its logs hold a secret.
#[test]
fn a_workers_health_answer_and_logs_hold_no_secret() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_firstmile"));
    cmd.current_dir(dir.path())
        .args(["sink", "timescale"])
        .env("FIRSTMILE_METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FIRSTMILE_")) {
        cmd.env_remove(k);
    }
    for (k, v) in secret_env("postgresql") {
        cmd.env(k, v);
    }
    let mut worker = firstmile_testkit::KillOnDrop(cmd.spawn().unwrap());
    // Drained as it comes, so the worker never blocks on a full pipe.
    let mut stderr = worker.0.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Until the endpoint answers, and its answer names both failures.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let answer = loop {
        let answer = std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                s.write_all(b"GET /health/ready HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok(answer)
            })
            .unwrap_or_default();
        if answer.contains("kafka") && answer.contains("cannot connect to postgresql://") {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer naming both: {answer:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(answer.starts_with("HTTP/1.0 503"), "{answer}");
    assert!(
        !answer.contains(SECRET),
        "a secret in the health answer: {answer}"
    );
    // SIGTERM stops it within the grace though nothing answers.
    terminated_within_grace(&mut worker.0);
    let logs = logs.join().unwrap();
    assert!(logs.contains("WARN"), "the outage is logged: {logs}");
    assert!(!logs.contains(SECRET), "a secret in the logs: {logs}");
}

/// Sends SIGTERM, as an orchestrator does, and waits for the process to end
/// within the stop grace (8 s) plus room, before docker's SIGKILL at 10 s.
fn terminated_within_grace(child: &mut std::process::Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The secret in every place the configuration takes one (the database URL
/// as userinfo and `?password=`, Elasticsearch's URL and password, the
/// registry's URL and password, Kafka's `sasl.password`), with nothing
/// reachable: no command prints it, whatever it reports.
#[test]
fn no_command_prints_a_secret_from_any_place_it_is_set() {
    let dir = project(&format!(
        "[sources.web]\n[kafka.properties]\n\"sasl.password\" = \"{SECRET}\"\n\
         [schema_registry]\nurl = \"http://fm:{SECRET}@127.0.0.1:1\"\n"
    ));
    // A topic with a value schema, so `schemas check` asks the registry.
    std::fs::write(
        dir.path().join("topics/schema.toml"),
        "[topic.extra]\npartitions = 1\nreplication_factor = 1\nvalue_schema = \"s.avsc\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("topics/s.avsc"), "{\"type\": \"string\"}").unwrap();
    let mut env = secret_env("postgresql");
    env.push(("FIRSTMILE_KAFKA__REQUEST_TIMEOUT_MS", "2000".into()));
    env.push(("FIRSTMILE_METRICS__LISTEN", String::new()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for args in [
        &["check"][..],
        &["topics", "plan"],
        &["status", "--window", "1m"],
        &["status", "--json", "--window", "1m"],
        &["audit", "--from", "1h", "--to", "now"],
        &["audit", "--from", "1h", "--to", "now", "--json"],
        &["schemas", "check"],
        &["migrate"],
    ] {
        let out = firstmile(dir.path(), args, &env);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!all.is_empty(), "{args:?} printed nothing");
        assert!(
            !all.contains("is not set"),
            "the test's topics are valid: {all}"
        );
        assert!(!all.contains(SECRET), "{args:?} printed a secret: {all}");
    }
}

/// A stage starting while its registry and brokers are unreachable (it waits
/// to register its schema) stops on SIGTERM.
#[test]
fn a_stage_waiting_for_its_registry_stops_on_sigterm() {
    use std::io::Read;
    let dir = project("[sources.web]\n");
    let mut worker = firstmile_testkit::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_firstmile"))
            .current_dir(dir.path())
            .args(["process", "--stage", "parse"])
            .env("FIRSTMILE_KAFKA__BROKERS", "127.0.0.1:1")
            .env("FIRSTMILE_SCHEMA_REGISTRY__URL", "http://127.0.0.1:1")
            .env("FIRSTMILE_METRICS__LISTEN", "")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = worker.0.stderr.take().unwrap();
    // Until it says it waits for the registry.
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("schema registry unavailable") {
        let n = stderr.read(&mut chunk).unwrap();
        assert!(n > 0, "ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    let logs = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    terminated_within_grace(&mut worker.0);
    let rest = logs.join().unwrap();
    assert!(rest.contains("stopped while starting"), "{rest}");
}
