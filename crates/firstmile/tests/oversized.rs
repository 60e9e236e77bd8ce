//! No record, however large, stops the parse stage: an event too large for
//! its output topic is one `too_large` dead letter, a dead letter too large
//! for `dlq` keeps a prefix of the input with its size, and the stage goes on
//! with the records after it.

mod common;

use std::time::{Duration, Instant};

use firstmile_testkit::{
    brokers, committed_records, create_topics_taking, free_port, registry_url, unique,
};
use rdkafka::message::{Headers, Message, OwnedMessage};

use common::{send, Worker};

fn header(record: &OwnedMessage, name: &str) -> Option<String> {
    let h = record.headers()?.iter().find(|h| h.key == name)?;
    Some(String::from_utf8_lossy(h.value?).into_owned())
}

/// A JSON line of about `bytes` bytes.
fn json_line(bytes: usize) -> Vec<u8> {
    format!(r#"{{"message":"{}"}}"#, "x".repeat(bytes)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn oversized_records_become_too_large_dead_letters_and_parsing_goes_on() {
    const LIMIT: usize = 1 << 20;
    let source = format!("big{}", std::process::id());
    let (raw, parsed, dlq) = (unique("raw.big"), unique("parsed"), unique("dlq"));
    // The raw topic takes what a foreign producer may write; the stage's
    // output and dead-letter topics take Kafka's default, 1 MiB.
    create_topics_taking(&[&raw], 1, 8 << 20).await;
    create_topics_taking(&[&parsed, &dlq], 1, LIMIT).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    std::fs::write(
        dir.path().join("firstmile.toml"),
        format!(
            "[kafka]\nbrokers = \"{}\"\n[schema_registry]\nurl = \"{}\"\n\
             [ingest.http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [sources.{source}]\ntopic = \"{raw}\"\n\
             [sources.{source}.parse]\nformat = \"json\"\nmax_bytes = 6291456\n\
             [stages.parse]\noutput = \"{parsed}\"\ndlq = \"{dlq}\"\ngroup = \"{raw}-parse\"\nbatch_ms = 200\n\
             [metrics]\nlisten = \"\"\n",
            brokers(),
            registry_url(),
        ),
    )
    .unwrap();
    let spawn = |args: &[&str]| {
        Worker(
            std::process::Command::new(env!("CARGO_BIN_EXE_firstmile"))
                .current_dir(dir.path())
                .args(args)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _ingest = spawn(&["ingest"]);
    let mut parse = spawn(&["process", "--stage", "parse"]);

    // 1. A 1.5 MB line through HTTP: its event does not fit `parsed`, nor
    //    its dead letter `dlq`.
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{http_port}/v1/sources/{source}/events");
    let deadline = Instant::now() + Duration::from_secs(60);
    let posted = loop {
        match http.post(&url).body(json_line(1_500_000)).send().await {
            Ok(answer) if answer.status().is_success() => break answer.status(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(300)).await,
            other => panic!("the receiver did not take the line: {other:?}"),
        }
    };
    assert!(posted.is_success());
    // 2. A 4 MB record from another producer, straight into the raw topic.
    let kafka: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", (8 << 20).to_string())
        .create()
        .unwrap();
    send(&kafka, &raw, &source, "foreign", &json_line(4_000_000)).await;
    // 3. A 200 KB line that flattens to about 200 MB (a 100 KB name over
    //    2,000 leaves): refused while flattening, its dead letter whole.
    let name = "n".repeat(100_000);
    let leaves: Vec<String> = (0..2_000).map(|i| format!(r#""{i}":1"#)).collect();
    let amplifying = format!(r#"{{"{name}":{{{}}}}}"#, leaves.join(","));
    send(&kafka, &raw, &source, "amplifying", amplifying.as_bytes()).await;
    // Then ordinary records: the stage must still be there for them.
    for i in 0..3 {
        let line = format!(r#"{{"message":"ordinary {i}"}}"#);
        send(&kafka, &raw, &source, "ordinary", line.as_bytes()).await;
    }

    let outputs = committed_records(&parsed, 3);
    assert_eq!(outputs.len(), 3, "the ordinary records were parsed");
    let letters = committed_records(&dlq, 3);
    assert!(
        parse.0.try_wait().unwrap().is_none(),
        "the stage is running"
    );
    let found: Vec<(String, Option<String>)> = letters
        .iter()
        .map(|r| {
            let size = r.payload().map_or(0, <[u8]>::len);
            assert!(size <= LIMIT, "a dead letter of {size} bytes");
            (
                header(r, "firstmile.dlq.error_kind").unwrap_or_default(),
                header(r, "firstmile.dlq.original_bytes"),
            )
        })
        .collect();
    let kinds: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["too_large", "too_large", "too_large"], "{found:?}");
    let mut sizes: Vec<Option<String>> = found.into_iter().map(|(_, s)| s).collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [
            None,
            Some(json_line(1_500_000).len().to_string()),
            Some(json_line(4_000_000).len().to_string())
        ],
        "the cut dead letters say how large their input was; the amplifying one is whole"
    );
    let amplified = letters
        .iter()
        .find(|r| r.key() == Some(b"amplifying".as_slice()))
        .expect("the amplifying record's dead letter");
    assert_eq!(amplified.payload(), Some(amplifying.as_bytes()));
    let message = header(amplified, "firstmile.dlq.error_message").unwrap_or_default();
    assert!(message.contains("flattened"), "{message}");
}
