//! `firstmile replay` end to end against the real broker, registry,
//! PostgreSQL and Elasticsearch: a corpus processed with a wrong parser
//! setting reaches both sinks; the setting is fixed, a dry run reports the
//! change and writes nothing, and a replay (interrupted once and resumed)
//! leaves both sinks with exactly one corrected row/document per raw record,
//! while a live producer keeps sending.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use firstmile_testkit::{
    brokers, create_topics, delete_topics, read_committed, registry_url, unique, watermarks,
    written,
};
use rdkafka::message::Message;

mod common;
use common::{corpus, producer, send, Scenario};

/// The replay of `source` as `firstmile status --json` shows it.
fn replay_in_status(s: &Scenario, source: &str) -> serde_json::Value {
    let out = s
        .command(&["status", "--json", "--sample", "1s"])
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(1),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["replays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == source)
        .cloned()
        .unwrap_or_else(|| panic!("no replay of {source} in {status}"))
}

/// Per raw record (partition, offset) of `topic`: how many committed events
/// in `events` carry `version`.
fn events_by_origin(events: &str, raw: &str, version: &str) -> BTreeMap<(i32, i64), usize> {
    let schema = firstmile_event::event_schema();
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    let field = |record: &Value, name: &str| -> Value {
        match record {
            Value::Record(fields) => fields.iter().find(|(n, _)| n == name).unwrap().1.clone(),
            other => panic!("not a record: {other:?}"),
        }
    };
    let mut out = BTreeMap::new();
    for m in read_committed(events) {
        let (_, datum) = firstmile_schema::confluent_unframe(m.payload().unwrap()).unwrap();
        let value = reader.read_value(&mut &datum[..]).unwrap();
        let origin = field(&value, "origin");
        let (Value::String(topic), Value::Int(p), Value::Long(o), Value::String(v)) = (
            field(&origin, "topic"),
            field(&origin, "partition"),
            field(&origin, "offset"),
            field(&value, "pipeline_version"),
        ) else {
            panic!("origin")
        };
        if topic == raw && v == version {
            *out.entry((p, o)).or_default() += 1;
        }
    }
    out
}

const BAD_EVERY: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_replay_corrects_both_sinks_while_live_traffic_goes_on() {
    let s = Scenario::create("replay").await;
    let (source, raw, events, dlq, schema, es_url, prefix) = (
        s.source.clone(),
        s.raw.clone(),
        s.events.clone(),
        s.dlq.clone(),
        s.schema.clone(),
        s.es_url.clone(),
        s.prefix.clone(),
    );

    // 1. The corpus, parsed with the wrong time zone (Tokyo instead of UTC).
    let lines = corpus();
    let from = jiff::Timestamp::now();
    let corpus_producer = producer();
    let mut bad = 0;
    for (i, line) in lines.iter().enumerate() {
        let value: &[u8] = if i % BAD_EVERY == BAD_EVERY - 1 {
            bad += 1;
            b"\xff\xfe not text"
        } else {
            line
        };
        send(
            &corpus_producer,
            &raw,
            &source,
            &format!("host-{}", i % 7),
            value,
        )
        .await;
    }
    let good = lines.len() - bad;
    // The corpus: every raw offset below these (live records come after).
    let corpus_ends: BTreeMap<i32, i64> = watermarks(&raw)
        .into_iter()
        .map(|(p, (_, high))| (p, high))
        .collect();
    let in_corpus = |(p, o): &(i32, i64)| *o < corpus_ends[p];
    s.configure(Some("Asia/Tokyo"), "1");
    let workers = s.pipeline();
    s.sinks_hold(good).await;
    let before = s.rows().await;
    assert!(before.values().all(|(_, v)| v == "1"));
    drop(workers);

    // 2. The fix, and a dry run: it reports @timestamp changed on every
    //    event, and writes nothing.
    s.configure(None, "2");
    let (events_before, dlq_before) = (written(&events), written(&dlq));
    let dry = s.replay(&["--from", &from.to_string(), "--dry-run"]);
    let report = String::from_utf8_lossy(&dry.stdout);
    eprintln!("{report}\n{}", String::from_utf8_lossy(&dry.stderr));
    assert!(dry.status.success());
    let line_of = |what: &str| {
        report
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` in the report"))
            .to_string()
    };
    let count_in = |line: String| -> usize {
        line.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap()
    };
    assert_eq!(count_in(line_of(" changed events")), good);
    assert_eq!(count_in(line_of("still fail")), bad);
    assert_eq!(count_in(line_of("unchanged events")), 0);
    assert_eq!(count_in(line_of("  @timestamp")), good);
    assert!(line_of("earlier pipeline_version").contains(&format!("1 ({good})")));
    assert!(
        !report.contains("  message "),
        "only the timestamp changed:\n{report}"
    );
    assert_eq!(
        (written(&events), written(&dlq)),
        (events_before, dlq_before),
        "a dry run writes nothing"
    );

    // 3. Live processing with the fix, a live producer, and the replay:
    //    rate-limited, interrupted once, resumed.
    let _workers = s.pipeline();
    let sending = Arc::new(AtomicBool::new(true));
    let live_sent = Arc::new(AtomicUsize::new(0));
    let live = {
        let (raw, source, lines) = (raw.clone(), source.clone(), lines.clone());
        let (sending, live_sent) = (Arc::clone(&sending), Arc::clone(&live_sent));
        tokio::spawn(async move {
            let producer = producer();
            let mut i = 0;
            while sending.load(Ordering::SeqCst) {
                send(&producer, &raw, &source, "live", &lines[i % lines.len()]).await;
                live_sent.fetch_add(1, Ordering::SeqCst);
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = s
        .command(&[
            "replay",
            "--source",
            &source,
            "--from",
            &from.to_string(),
            "--rate",
            "400",
            "--batch-records",
            "100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let interrupted = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap())
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&interrupted.stdout);
    eprintln!("{said}");
    assert_eq!(interrupted.status.code(), Some(130), "interrupted: {said}");
    assert!(said.contains(&format!("firstmile replay --source {source} --resume")));
    let replayed_then = events_by_origin(&events, &raw, "2")
        .keys()
        .filter(|origin| in_corpus(origin))
        .count();
    assert!(
        replayed_then > 0 && replayed_then < good,
        "interrupted mid-way: {replayed_then} of {good} replayed"
    );

    // `firstmile status` shows the interrupted replay, with what is left.
    let stopped = replay_in_status(&s, &source);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(stopped["left"].as_i64().unwrap() > 0, "{stopped}");

    let resumed = s.replay(&["--resume"]);
    eprintln!("{}", String::from_utf8_lossy(&resumed.stdout));
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let again = s.replay(&["--resume"]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("had finished: nothing to resume"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let finished = replay_in_status(&s, &source);
    assert_eq!(
        (&finished["state"], &finished["left"]),
        (&serde_json::json!("finished"), &serde_json::json!(0)),
        "{finished}"
    );
    sending.store(false, Ordering::SeqCst);
    live.await.unwrap();
    let live_sent = live_sent.load(Ordering::SeqCst);
    assert!(live_sent > 100, "live traffic ran during the replay");

    // 4. Both sinks: one corrected row/document per raw record, the live
    //    ones included, none lost or doubled.
    let live_good = live_sent; // the live lines are all good syslog lines
    s.sinks_hold(good + live_good).await;
    let after = s.rows().await;
    for (id, (ts, _)) in &before {
        let (new_ts, new_version) = &after[id];
        assert_eq!(new_version, "2", "event {id}");
        assert_eq!(new_ts - ts, 9 * 3600 * 1000, "event {id}: Tokyo → UTC");
    }
    assert!(after.values().all(|(_, v)| v == "2"));
    assert_eq!(
        s.es_count(serde_json::json!({"term": {"pipeline_version": "1"}}))
            .await,
        0,
        "no document keeps the old version"
    );
    let sample = before.keys().next().unwrap();
    let doc = s
        .es(
            "_search",
            serde_json::json!({"query": {"ids": {"values": [sample]}}}),
        )
        .await;
    let es_ts = doc["hits"]["hits"][0]["_source"]["@timestamp"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    assert_eq!(es_ts.as_millisecond(), after[sample].0);

    // The interrupted and resumed replay wrote each corpus record once.
    let replayed = events_by_origin(&events, &raw, "2");
    let corpus_replays: Vec<usize> = replayed
        .iter()
        .filter(|(origin, _)| in_corpus(origin))
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(corpus_replays.len(), good);
    assert!(
        corpus_replays.iter().all(|n| *n == 1),
        "a record replayed twice"
    );

    let client = s.db().await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let _ = http.delete(format!("{es_url}/{prefix}-*")).send().await;
    let _ = http
        .delete(format!("{es_url}/_index_template/firstmile-{prefix}"))
        .send()
        .await;
    delete_topics(&[&raw, &s.parsed, &events, &dlq]).await;
}

/// Records retention already deleted: the replay refuses, naming the oldest
/// record left, and the start it suggests works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_range_retention_deleted_is_refused_with_the_oldest_record_left() {
    let source = format!("gone{}", std::process::id());
    let (raw, events, dlq) = (unique("raw.gone"), unique("events"), unique("dlq"));
    create_topics(&[&raw, &events, &dlq], 1).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("firstmile.toml"),
        format!(
            "[kafka]\nbrokers = \"{}\"\n[schema_registry]\nurl = \"{}\"\n\
             [sources.{source}]\ntopic = \"{raw}\"\n[sources.{source}.parse]\nformat = \"syslog\"\n\
             [stages.parse]\ndlq = \"{dlq}\"\n[stages.enrich]\noutput = \"{events}\"\n",
            brokers(),
            registry_url()
        ),
    )
    .unwrap();
    let replay = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_firstmile"))
            .current_dir(dir.path())
            .args(["replay", "--source", &source])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let lines = corpus();
    let producer = producer();
    let from = jiff::Timestamp::now();
    for line in &lines[..20] {
        send(&producer, &raw, &source, "k", line).await;
    }
    firstmile_testkit::delete_records(&raw, 0, 12).await;

    let (ok, _, err) = replay(&["--from", &from.to_string(), "--dry-run"]);
    assert!(!ok);
    assert!(
        err.contains("retention has already deleted")
            && err.contains("oldest record left is offset 12"),
        "{err}"
    );
    let suggested = err
        .split("--from ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no suggested start in: {err}"))
        .to_string();
    let (ok, _, err) = replay(&["--offsets", "0:5-", "--dry-run"]);
    assert!(!ok);
    assert!(err.contains("offset 12"), "{err}");

    let (ok, out, err) = replay(&["--from", &suggested, "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("8 records run through the chain"), "{out}");
    delete_topics(&[&raw, &events, &dlq]).await;
}
