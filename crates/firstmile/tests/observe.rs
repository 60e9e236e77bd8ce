//! The pipeline observing itself, against the real broker, registry,
//! PostgreSQL, Elasticsearch and Prometheus: exact counters on every role's
//! `/metrics` for a known input, Prometheus scraping every role (and every
//! panel query of the pipeline-health dashboard answering), `status` telling
//! a stopped sink (stalled, lag growing, its table not updating) and clearing
//! once it is back, and `audit` naming exactly the rows deleted from
//! PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{corpus, producer, send, Scenario, Worker};
use firstmile_observe::prom;
use firstmile_testkit::free_port;
use serde_json::Value;

const BAD_EVERY: usize = 400;

/// A role with its metrics endpoint on a port of its own.
struct Role {
    name: &'static str,
    metrics: String,
    worker: Worker,
}

fn start(s: &Scenario, name: &'static str, args: &[&str], env: &[(&str, String)]) -> Role {
    let port = free_port();
    let mut c = s.command(args);
    c.env("FIRSTMILE_METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    Role {
        name,
        metrics: format!("http://127.0.0.1:{port}"),
        worker: Worker(c.spawn().unwrap()),
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let answer = reqwest::get(url).await.ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.text().await.ok()?))
}

/// The sum of the samples of `name` whose labels include `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    prom::parse(text)
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.value)
        .sum()
}

async fn wait_for<F: FnMut() -> Fut, Fut: std::future::Future<Output = Option<T>>, T>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn status(s: &Scenario, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let out = s.command(&all).output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

fn worker<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {status}"))
}

fn target<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {status}"))
}

fn audit(s: &Scenario, from: jiff::Timestamp, to: jiff::Timestamp) -> (Output, Value) {
    let out = s
        .command(&[
            "audit",
            "--json",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn the_pipeline_reports_on_itself() {
    let s = Scenario::create("observe").await;
    s.configure(None, "1");
    let http_port = free_port();
    let from = jiff::Timestamp::now();
    let roles = vec![
        start(
            &s,
            "ingest",
            &["ingest"],
            &[(
                "FIRSTMILE_INGEST__HTTP__LISTEN",
                format!("127.0.0.1:{http_port}"),
            )],
        ),
        start(&s, "parse", &["process", "--stage", "parse"], &[]),
        start(&s, "enrich", &["process", "--stage", "enrich"], &[]),
        start(&s, "timescale", &["sink", "timescale"], &[]),
        start(&s, "elasticsearch", &["sink", "elasticsearch"], &[]),
    ];
    let metrics_urls: Vec<String> = roles.iter().map(|r| r.metrics.clone()).collect();

    // Every role is ready once it reaches the broker (and its target).
    for r in &roles {
        let url = format!("{}/health/ready", r.metrics);
        wait_for(
            &format!("{} ready", r.name),
            Duration::from_secs(60),
            || {
                let url = url.clone();
                async move { get(&url).await.filter(|(code, _)| *code == 200) }
            },
        )
        .await;
    }

    // 1. A known input through the HTTP receiver: the Linux corpus with
    // every 400th line not UTF-8 (a parse dead letter).
    let lines = corpus();
    let mut body = Vec::new();
    let mut bad = 0;
    for (i, line) in lines.iter().enumerate() {
        if i % BAD_EVERY == BAD_EVERY - 1 {
            bad += 1;
            body.extend_from_slice(b"\xff\xfe not text");
        } else {
            body.extend_from_slice(line);
        }
        body.push(b'\n');
    }
    let total = lines.len();
    let good = total - bad;
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{http_port}/v1/sources/{}/events",
            s.source
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200, "{:?}", answer.text().await);
    s.sinks_hold(good).await;

    // 2. Exact counters on every role.
    let source = s.source.as_str();
    let scrape = |role: &str| {
        let url = format!(
            "{}/metrics",
            roles.iter().find(|r| r.name == role).unwrap().metrics
        );
        async move { get(&url).await.unwrap().1 }
    };
    let expect = [
        ("ingest", "receiver", "http", total, total, 0),
        ("parse", "stage", "parse", total, good, bad),
        ("enrich", "stage", "enrich", good, good, 0),
        ("timescale", "sink", "timescale", good, good, 0),
        ("elasticsearch", "sink", "elasticsearch", good, good, 0),
    ];
    for (role, kind, id, received, sent, dead) in expect {
        // The sinks report after their commit: wait for the last batch.
        let text = wait_for(&format!("{role} counters"), Duration::from_secs(30), || {
            let text = scrape(role);
            async move {
                let text = text.await;
                let labels = [
                    ("component_kind", kind),
                    ("component_id", id),
                    ("source", source),
                ];
                (metric(&text, "firstmile_component_sent_events_total", &labels) == sent as f64)
                    .then_some(text)
            }
        })
        .await;
        let labels = [
            ("component_kind", kind),
            ("component_id", id),
            ("source", source),
        ];
        assert_eq!(
            metric(&text, "firstmile_component_received_events_total", &labels),
            received as f64,
            "{role} received"
        );
        assert_eq!(
            metric(&text, "firstmile_component_sent_events_total", &labels),
            sent as f64,
            "{role} sent"
        );
        let discarded = |reason: &str| {
            let mut l = labels.to_vec();
            l.push(("reason", reason));
            metric(&text, "firstmile_component_discarded_events_total", &l)
        };
        let all_discarded = metric(&text, "firstmile_component_discarded_events_total", &labels);
        assert_eq!(all_discarded, dead as f64, "{role} discarded");
        if dead > 0 {
            assert_eq!(discarded("dlq_invalid_utf8"), dead as f64, "{role} dlq");
        }
        if kind == "stage" {
            let txn = |outcome| {
                metric(
                    &text,
                    "firstmile_component_transactions_total",
                    &[("component_id", id), ("outcome", outcome)],
                )
            };
            assert!(txn("committed") >= 1.0, "{role}: no committed transaction");
            assert_eq!(txn("aborted"), 0.0, "{role}: aborted transactions");
        }
        if kind == "sink" {
            // One end-to-end observation per written event.
            assert_eq!(
                metric(
                    &text,
                    "firstmile_component_end_to_end_latency_seconds_count",
                    &[("component_id", id)]
                ),
                good as f64,
                "{role} end-to-end latency count"
            );
            assert_eq!(
                metric(
                    &text,
                    "firstmile_component_batch_events_sum",
                    &[("component_id", id)]
                ),
                good as f64,
                "{role} batch sizes"
            );
        }
    }
    // The consumer lag gauges (librdkafka statistics, every 5 s) of the
    // input partitions, down to 0.
    for (role, topic) in [("parse", &s.raw), ("timescale", &s.events)] {
        wait_for(&format!("{role} lag 0"), Duration::from_secs(30), || {
            let text = scrape(role);
            let topic = topic.clone();
            async move {
                let text = text.await;
                let lags: Vec<f64> = prom::parse(&text)
                    .into_iter()
                    .filter(|x| {
                        x.name == "firstmile_component_consumer_lag_records"
                            && x.label("topic") == topic
                    })
                    .map(|x| x.value)
                    .collect();
                let caught_up = lags.len() == 3 && lags.iter().all(|l| *l == 0.0);
                if !caught_up {
                    eprintln!("{role}: lag of {topic}: {lags:?}");
                }
                caught_up.then_some(())
            }
        })
        .await;
    }

    // 3. Prometheus scrapes every role, and every panel query of the
    // pipeline dashboard answers.
    prometheus_scrapes(&roles).await;

    // 4. Status: nothing flagged, the parse stage's dead letters by kind.
    let (out, st) = status(
        &s,
        &[
            "--sample",
            "2s",
            "--stale-after",
            "2m",
            "--metrics",
            &metrics_urls.join(","),
        ],
    );
    assert!(
        out.status.success(),
        "status flagged something: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        st
    );
    assert_eq!(worker(&st, "parse")["dlq"]["invalid_utf8"], bad);
    for w in ["parse", "enrich", "sink:timescale", "sink:elasticsearch"] {
        assert_eq!(worker(&st, w)["lag"], 0, "{w}: {st}");
        assert_eq!(worker(&st, w)["members"], 1, "{w}: {st}");
    }
    let src = st["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == s.source)
        .unwrap();
    assert_eq!(src["records_24h"], total);
    assert!(src["bytes_24h"].as_u64().unwrap() > 0);
    assert_eq!(target(&st, "timescale")["recent"], good);
    let endpoints = st["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), roles.len());
    assert!(endpoints
        .iter()
        .all(|e| e["up"] == true && e["ready"] == true));

    // 5. Audit: complete, then exactly the rows deleted from PostgreSQL.
    let to = jiff::Timestamp::now();
    let (out, report) = audit(&s, from, to);
    assert!(out.status.success(), "{report}");
    let linux = &report["sources"][0];
    assert_eq!(linux["raw"], total);
    assert_eq!(linux["events"], good);
    assert_eq!(linux["dlq"], bad);
    assert_eq!(linux["unaccounted"], 0);
    let db = s.db().await;
    let deleted: Vec<String> = db
        .query(
            &format!(
                "DELETE FROM {}.events WHERE event_id IN \
                 (SELECT event_id FROM {}.events ORDER BY raw_offset, raw_partition LIMIT 3) \
                 RETURNING event_id::text",
                s.schema, s.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(deleted.len(), 3);
    let (out, report) = audit(&s, from, to);
    assert_eq!(out.status.code(), Some(2), "{report}");
    let sinks = report["sources"][0]["sinks"].as_array().unwrap();
    let missing = |sink: &str| -> BTreeSet<String> {
        let k = sinks.iter().find(|k| k["sink"] == sink).unwrap();
        k["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(missing("timescale"), deleted.into_iter().collect());
    assert!(missing("elasticsearch").is_empty(), "{report}");
    let ts = sinks.iter().find(|k| k["sink"] == "timescale").unwrap();
    assert_eq!(ts["missing_count"], 3);
    assert_eq!(ts["present"], good - 3);

    // 6. A sink stops while records keep coming: status flags it stalled
    // with its lag growing, then its table as not updating; a restart
    // clears both.
    let live = Arc::new(AtomicBool::new(true));
    let sender = {
        let (live, raw, source) = (Arc::clone(&live), s.raw.clone(), s.source.clone());
        tokio::spawn(async move {
            let p = producer();
            let line = b"Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure";
            let mut i = 0;
            while live.load(Ordering::SeqCst) {
                send(&p, &raw, &source, &format!("live-{i}"), line).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut roles = roles;
    let timescale = roles.iter().position(|r| r.name == "timescale").unwrap();
    let stopped = roles.remove(timescale);
    drop(stopped.worker);
    let stale = "6s";
    let killed = Instant::now();
    let st = wait_for("sink:timescale stalled", Duration::from_secs(60), || {
        let (_, st) = status(&s, &["--sample", "3s", "--stale-after", stale]);
        async move {
            let w = worker(&st, "sink:timescale");
            (w["stalled"] == true && w["lag"].as_i64() > w["lag_before"].as_i64()).then_some(st)
        }
    })
    .await;
    assert_eq!(worker(&st, "sink:elasticsearch")["stalled"], false, "{st}");
    let st = wait_for("timescale not updating", Duration::from_secs(60), || {
        let (out, st) = status(&s, &["--sample", "2s", "--stale-after", stale]);
        async move { (target(&st, "timescale")["stopped_updating"] == true).then_some((out, st)) }
    })
    .await;
    let (out, st) = st;
    assert!(killed.elapsed() >= Duration::from_secs(6));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        target(&st, "elasticsearch")["stopped_updating"],
        false,
        "{st}"
    );
    let causes = target(&st, "timescale")["causes"].to_string();
    assert!(causes.contains("stalled"), "{causes}");
    // Once its session expired, the stalled group has no member left.
    let st = wait_for(
        "sink:timescale without members",
        Duration::from_secs(60),
        || {
            let (_, st) = status(&s, &["--sample", "1s", "--stale-after", stale]);
            async move { (worker(&st, "sink:timescale")["members"] == 0).then_some(st) }
        },
    )
    .await;
    let causes = worker(&st, "sink:timescale")["causes"].to_string();
    assert!(causes.contains("no members"), "{causes}");

    roles.push(start(&s, "timescale", &["sink", "timescale"], &[]));
    wait_for("status clear", Duration::from_secs(90), || {
        let (out, st) = status(&s, &["--sample", "2s", "--stale-after", stale]);
        async move {
            let clear = worker(&st, "sink:timescale")["stalled"] == false
                && target(&st, "timescale")["stopped_updating"] == false;
            (clear && out.status.success()).then_some(())
        }
    })
    .await;
    live.store(false, Ordering::SeqCst);
    sender.await.unwrap();
    drop(roles);
}

/// The Elasticsearch sink writes its dead letters to a topic of its own:
/// `status` counts them under the sink and `audit` accounts for the events
/// it refused, instead of calling them missing. The refusal is real: the
/// day's index exists with `message` mapped as a number, so Elasticsearch
/// answers 400 for each document, while TimescaleDB takes every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_sinks_own_dead_letter_topic_is_read_by_status_and_audit() {
    const N: usize = 30;
    let mut s = Scenario::create("esdlq").await;
    s.configure(None, "1");
    let es_dlq = firstmile_testkit::unique("dlq.es");
    firstmile_testkit::create_topics(&[&es_dlq], 1).await;
    s.env
        .push(("FIRSTMILE_SINKS__ELASTICSEARCH__DLQ".into(), es_dlq.clone()));
    // Today's and tomorrow's index (a run across midnight UTC), made before
    // the sink puts its template in place.
    let http = reqwest::Client::new();
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    for day in [today, today.tomorrow().unwrap()] {
        let index = format!("{}-{}", s.prefix, day.strftime("%Y.%m.%d"));
        let answer = http
            .put(format!("{}/{index}", s.es_url))
            .json(&serde_json::json!({
                "settings": {"index.mapping.ignore_malformed": false, "number_of_replicas": 0},
                "mappings": {"properties": {"message": {"type": "long"}}},
            }))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }
    let from = jiff::Timestamp::now();
    let _workers = s.pipeline();
    let p = producer();
    for (i, line) in corpus().iter().take(N).enumerate() {
        send(&p, &s.raw, &s.source, &format!("k{i}"), line).await;
    }
    wait_for(
        "every row and every dead letter",
        Duration::from_secs(120),
        || {
            let rows = s.rows();
            let es_dlq = es_dlq.clone();
            async move {
                let rows = rows.await.len();
                let dead = firstmile_testkit::dead_letters(&es_dlq).len();
                (rows == N && dead == N).then_some(())
            }
        },
    )
    .await;
    assert!(
        firstmile_testkit::dead_letters(&es_dlq)
            .iter()
            .all(|(kind, _)| kind == "rejected_by_elasticsearch"),
        "{:?}",
        firstmile_testkit::dead_letters(&es_dlq)
    );
    assert!(
        firstmile_testkit::read_topic(&s.dlq).is_empty(),
        "the shared dead-letter topic got nothing"
    );

    let (_, st) = status(&s, &["--sample", "1s", "--stale-after", "1h"]);
    assert_eq!(
        worker(&st, "sink:elasticsearch")["dlq"]["rejected_by_elasticsearch"],
        N,
        "{st}"
    );

    let (out, report) = audit(&s, from, jiff::Timestamp::now());
    assert!(out.status.success(), "{report}");
    let source = &report["sources"][0];
    assert_eq!(source["events"], N, "{report}");
    let sink = |name: &str| {
        source["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["sink"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(sink("elasticsearch")["dead_lettered"], N, "{report}");
    assert_eq!(sink("elasticsearch")["missing_count"], 0, "{report}");
    assert_eq!(sink("timescale")["present"], N, "{report}");
}

/// Two sinks given the same instance id: the second fences the first, which
/// ends non-zero saying why (it cannot consume again) instead of staying up
/// and silent; the second keeps the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_worker_fenced_by_a_duplicate_instance_id_ends_and_says_why() {
    let mut s = Scenario::create("dupid").await;
    s.configure(None, "1");
    s.env.push((
        "FIRSTMILE_SINKS__TIMESCALE__INSTANCE_ID".into(),
        "dup".into(),
    ));
    let group = format!("{}-timescale", s.raw);
    let mut first = s.command(&["sink", "timescale"]);
    first.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut first = Worker(first.spawn().unwrap());
    let mut stderr = first.0.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    one_stable_member(&group, "the first sink").await;
    let mut second = s.spawn(&["sink", "timescale"]);
    let status = wait_for("the fenced sink to end", Duration::from_secs(60), || {
        let ended = first.0.try_wait().unwrap();
        async move { ended }
    })
    .await;
    assert!(
        !status.success(),
        "a fenced worker must not end as if all were well"
    );
    let logs = logs.join().unwrap();
    assert!(
        logs.contains("give each worker its own instance_id"),
        "{logs}"
    );
    assert!(logs.contains(&format!("`{group}-dup`")), "{logs}");
    assert!(
        second.0.try_wait().unwrap().is_none(),
        "the second keeps running"
    );
    one_stable_member(&group, "the second sink").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn two_workers_on_one_host_with_default_instance_ids_share_their_group() {
    let s = Scenario::create("twoids").await;
    s.configure(None, "1");
    let group = format!("{}-timescale", s.raw);
    let mut sinks = vec![
        start(&s, "timescale", &["sink", "timescale"], &[]),
        start(&s, "timescale", &["sink", "timescale"], &[]),
    ];
    wait_for(
        &format!("two members in {group}"),
        Duration::from_secs(90),
        || {
            let (state, members) = firstmile_testkit::group_state(&group);
            async move { (state == "Stable" && members == 2).then_some(()) }
        },
    )
    .await;
    for sink in &mut sinks {
        assert!(sink.worker.0.try_wait().unwrap().is_none(), "fenced");
        let url = format!("{}/health/ready", sink.metrics);
        wait_for("each sink ready", Duration::from_secs(60), || {
            let url = url.clone();
            async move { get(&url).await.filter(|(code, _)| *code == 200) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_parse_stage_waiting_for_its_registry_is_not_ready_until_it_answers() {
    let s = Scenario::create("noregistry").await;
    s.configure(None, "1");
    // The registry behind a port nothing listens on yet.
    let port = free_port();
    let registry = format!("http://127.0.0.1:{port}");
    let stage = start(
        &s,
        "parse",
        &["process", "--stage", "parse"],
        &[("FIRSTMILE_SCHEMA_REGISTRY__URL", registry)],
    );
    let url = format!("{}/health/ready", stage.metrics);
    let (code, body) = wait_for("a readiness answer", Duration::from_secs(60), || {
        let url = url.clone();
        async move { get(&url).await }
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("stage parse is starting"), "{body}");
    let target = firstmile_testkit::registry_url()
        .trim_start_matches("http://")
        .to_string();
    let _registry = firstmile_testkit::TcpProxy::start_on(port, &target).await;
    wait_for(
        "ready once the registry answers",
        Duration::from_secs(90),
        || {
            let url = url.clone();
            async move { get(&url).await.filter(|(code, _)| *code == 200) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_role_of_run_that_ends_takes_the_whole_process_down_with_it() {
    let mut s = Scenario::create("runend").await;
    s.configure(None, "1");
    s.env.push((
        "FIRSTMILE_SINKS__TIMESCALE__INSTANCE_ID".into(),
        "dup".into(),
    ));
    let group = format!("{}-timescale", s.raw);
    let http_port = free_port();
    let mut run = s.command(&["run"]);
    run.env(
        "FIRSTMILE_INGEST__HTTP__LISTEN",
        format!("127.0.0.1:{http_port}"),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    let mut run = Worker(run.spawn().unwrap());
    one_stable_member(&group, "run's timescale sink").await;
    let url = format!(
        "http://127.0.0.1:{http_port}/v1/sources/{}/events",
        s.source
    );
    let http = reqwest::Client::new();
    wait_for("run's receiver to answer", Duration::from_secs(60), || {
        let request = http.post(&url).body("a line\n").send();
        async move { request.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    // A second sink with the same instance id fences run's.
    let _second = s.spawn(&["sink", "timescale"]);
    let status = wait_for("run to end", Duration::from_secs(60), || {
        let ended = run.0.try_wait().unwrap();
        async move { ended }
    })
    .await;
    assert!(!status.success(), "run ends non-zero when a role ends");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err(),
        "run takes no more input"
    );
}

/// Waits until `group` is stable with one member (`who`).
async fn one_stable_member(group: &str, who: &str) {
    wait_for(
        &format!("{who} alone in {group}"),
        Duration::from_secs(60),
        || {
            let (state, members) = firstmile_testkit::group_state(group);
            async move { (state == "Stable" && members == 1).then_some(()) }
        },
    )
    .await;
}

/// Starts Debian's Prometheus on the roles' endpoints; waits until its
/// targets page shows every role up, then runs every Prometheus query of
/// the pipeline-health dashboard.
async fn prometheus_scrapes(roles: &[Role]) {
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> = roles
        .iter()
        .map(|r| format!("'{}'", r.metrics.trim_start_matches("http://")))
        .collect();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: firstmile\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    let binary = std::env::var("FIRSTMILE_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let _prometheus = Worker(
        Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} (scripts/stack up installs Debian's prometheus): {e}")
            }),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    wait_for(
        "every role up in Prometheus",
        Duration::from_secs(60),
        || {
            let url = format!("{api}/targets");
            async move {
                let (_, text) = get(&url).await?;
                let answer: Value = serde_json::from_str(&text).ok()?;
                let active = answer["data"]["activeTargets"].as_array()?.clone();
                (active.len() == 5 && active.iter().all(|t| t["health"] == "up")).then_some(())
            }
        },
    )
    .await;
    // A few scrapes, so rates have two points.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../grafana/dashboards/pipeline-health.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$job", ".*");
            let answer: Value = reqwest::Client::new()
                .get(format!("{api}/query"))
                .query(&[("query", expr.as_str())])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                answer["status"], "success",
                "{}: {expr}: {answer}",
                panel["title"]
            );
            let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
            assert!(series > 0, "{}: {expr} answered no series", panel["title"]);
            queries += 1;
        }
    }
    assert!(queries >= 6, "the dashboard has {queries} queries");
}
