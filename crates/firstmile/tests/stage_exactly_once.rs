//! The parse stage against the real broker and registry: SIGKILL the worker
//! several times mid-stream and restart it; `parsed`, read with
//! read_committed, holds every good input record exactly once, and `dlq`
//! every bad one, with its reason.

use std::collections::BTreeSet;

use firstmile_testkit::{
    brokers, create_topics, delete_topics, group_state, read_committed, registry_url, unique,
    written,
};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

// A worker process, killed when dropped so a failing test leaves none behind.
use firstmile_testkit::KillOnDrop as Worker;

fn spawn_worker(dir: &Path, instance: &str) -> Worker {
    spawn_worker_with(dir, instance, &[])
}

fn spawn_worker_with(dir: &Path, instance: &str, env: &[(&str, &str)]) -> Worker {
    let child = Command::new(env!("CARGO_BIN_EXE_firstmile"))
        .current_dir(dir)
        .args(["process", "--stage", "parse"])
        .env("FIRSTMILE_KAFKA__BROKERS", brokers())
        .env("FIRSTMILE_SCHEMA_REGISTRY__URL", registry_url())
        .env("FIRSTMILE_STAGES__PARSE__INSTANCE_ID", instance)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Worker(child)
}

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    match record {
        Value::Record(fields) => &fields.iter().find(|(n, _)| n == name).unwrap().1,
        other => panic!("not a record: {other:?}"),
    }
}

const N: usize = 50_000;

/// Unique topics for N raw records (real Linux syslog lines, every 500th
/// bad) and a configuration directory for the workers.
struct Fixture {
    raw: String,
    parsed: String,
    dlq: String,
    bad: usize,
    group: String,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let f = fixture_without_records().await;
    f.produce_records().await;
    f
}

/// The topics and configuration, with nothing in the raw topic yet: for a
/// test that must arrange its group before the stream starts.
async fn fixture_without_records() -> Fixture {
    let (raw, parsed, dlq) = (unique("raw.linux"), unique("parsed"), unique("dlq"));
    create_topics(&[&raw], 3).await;
    create_topics(&[&parsed, &dlq], 3).await;
    let dir = tempfile::tempdir().unwrap();
    let group = unique("group");
    std::fs::write(
        dir.path().join("firstmile.toml"),
        format!(
            "[sources.linux]\ntopic = \"{raw}\"\n[sources.linux.parse]\nformat = \"syslog\"\n\
             [stages.parse]\noutput = \"{parsed}\"\ndlq = \"{dlq}\"\ngroup = \"{}\"\nbatch_records = 500\n\
             [metrics]\nlisten = \"\"\n",
            group
        ),
    )
    .unwrap();
    Fixture {
        raw,
        parsed,
        dlq,
        bad: (0..N).filter(|&i| is_bad(i)).count(),
        group,
        dir,
    }
}

/// Every 500th record is not UTF-8 and must land in dlq.
fn is_bad(i: usize) -> bool {
    i % 500 == 499
}

impl Fixture {
    /// Produces the N raw records: real Linux syslog lines, keyed by host.
    async fn produce_records(&self) {
        let lines: Vec<Vec<u8>> = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/data/loghub/Linux/Linux_2k.log"),
        )
        .unwrap()
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .filter(|l| !l.is_empty())
        .collect();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("linger.ms", "20")
            .create()
            .unwrap();
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                let value = if is_bad(i) {
                    b"\xff\xfe not text".to_vec()
                } else {
                    lines[i % lines.len()].clone()
                };
                (format!("linux/host-{}", i % 7), value)
            })
            .collect();
        let sends: Vec<_> = records
            .iter()
            .map(|(key, value)| {
                let headers = OwnedHeaders::new().insert(Header {
                    key: "firstmile.source",
                    value: Some("linux"),
                });
                producer.send(
                    FutureRecord::to(&self.raw)
                        .key(key)
                        .payload(value)
                        .headers(headers),
                    Duration::from_secs(30),
                )
            })
            .collect();
        for s in futures::future::join_all(sends).await {
            s.map_err(|(e, _)| e).unwrap();
        }
    }

    fn written(&self) -> i64 {
        written(&self.parsed) + written(&self.dlq)
    }

    /// Waits until the output topics' high watermarks (records written,
    /// committed or not, plus transaction markers) reach `offsets`.
    async fn wait_until_written(&self, offsets: i64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let written = self.written();
            if written >= offsets {
                eprintln!("{written} offsets written (waited for {offsets})");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {written} of {offsets} offsets written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn committed(&self) -> usize {
        read_committed(&self.parsed).len() + read_committed(&self.dlq).len()
    }

    /// Waits for every record, stops the workers with SIGTERM, checks the
    /// output: every good record exactly once, every bad one in dlq.
    async fn finish_and_verify(self, workers: Vec<Worker>) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let done = self.committed();
            if done >= N {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {done} of {N} records processed"
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        for mut worker in workers {
            sigterm(&worker.0);
            assert!(
                worker.0.wait().unwrap().success(),
                "a worker stops cleanly on SIGTERM"
            );
        }
        let schema = firstmile_event::event_schema();
        let reader = GenericDatumReader::builder(&schema).build().unwrap();
        let events = read_committed(&self.parsed);
        assert_eq!(events.len(), N - self.bad, "every good record exactly once");
        let mut ids = BTreeSet::new();
        let mut origins = BTreeSet::new();
        for m in &events {
            let (_, datum) = firstmile_schema::confluent_unframe(m.payload().unwrap()).unwrap();
            let value = reader.read_value(&mut &datum[..]).unwrap();
            let Value::Uuid(id) = field(&value, "event_id") else {
                panic!("event_id")
            };
            assert!(ids.insert(*id), "duplicate event_id {id}");
            let origin = field(&value, "origin");
            let (Value::Int(p), Value::Long(o)) =
                (field(origin, "partition"), field(origin, "offset"))
            else {
                panic!("origin")
            };
            assert!(origins.insert((*p, *o)));
        }
        let dead = read_committed(&self.dlq);
        assert_eq!(dead.len(), self.bad);
        for m in &dead {
            assert_eq!(
                m.payload(),
                Some(&b"\xff\xfe not text"[..]),
                "the original bytes"
            );
            let header = |name: &str| {
                m.headers()
                    .unwrap()
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
            };
            assert_eq!(
                header("firstmile.dlq.error_kind"),
                Some(&b"invalid_utf8"[..])
            );
            assert_eq!(
                header("firstmile.source"),
                Some(&b"linux"[..]),
                "the original headers are kept"
            );
        }
        delete_topics(&[&self.raw, &self.parsed, &self.dlq]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn sigkilled_parse_workers_lose_and_duplicate_nothing() {
    let f = fixture().await;
    // Kill the worker three times mid-stream, then let a fresh one finish.
    // Each kill waits for the worker's own progress, not a fixed time: how
    // fast a worker gets through the stream depends on the build and the
    // machine, and a kill after the end would test nothing.
    for round in 1..=3 {
        let worker = spawn_worker(f.dir.path(), "w1");
        f.wait_until_written(round * N as i64 / 8).await;
        drop(worker); // SIGKILL
    }
    // The kills must have landed mid-stream: some work done, not all.
    let after_kills = f.committed();
    eprintln!("after three SIGKILLs: {after_kills} of {N} records committed");
    assert!(
        after_kills > 0 && after_kills < N,
        "{after_kills} of {N}: the kills did not interrupt the stream"
    );
    let worker = spawn_worker(f.dir.path(), "w1");
    f.finish_and_verify(vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn workers_joining_and_leaving_the_group_lose_and_duplicate_nothing() {
    // The group is formed before the stream starts: a worker that joined
    // first could otherwise take every partition and finish the stream
    // before the second one is in (it did, on a fast machine).
    let f = fixture_without_records().await;
    let w1 = spawn_worker(f.dir.path(), "w1");
    let w2 = spawn_worker(f.dir.path(), "w2");
    wait_for_members(&f.group, 2).await;
    f.produce_records().await;
    // Two workers split the partitions; one is killed mid-stream, a third joins.
    f.wait_until_written(N as i64 / 8).await;
    // Measured just before the kill (w1 keeps working after it): the stream
    // must still be unfinished, so the kill interrupts it.
    let before_kill = f.written();
    drop(w2); // SIGKILL
    eprintln!("killed one of two workers with {before_kill} of {N} records written");
    assert!(
        before_kill < N as i64,
        "the kill came after the stream had ended"
    );
    let w3 = spawn_worker(f.dir.path(), "w3");
    f.finish_and_verify(vec![w1, w3]).await;
}

/// A member joining while another is filling a batch: the rebalance takes
/// the filling member's partitions away and hands them back from their
/// committed offsets. Records polled before it must not be written (their
/// new owner, or the same member re-reading, writes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_rebalance_in_the_middle_of_a_batch_duplicates_nothing() {
    let f = fixture().await;
    // Batches that last 15 s, so the second member's join lands inside w1's
    // first; such a batch (every record, in a debug build) needs a longer
    // transaction timeout than the 15 s default.
    let env = [
        ("FIRSTMILE_STAGES__PARSE__BATCH_RECORDS", "1000000"),
        ("FIRSTMILE_STAGES__PARSE__BATCH_MS", "15000"),
        ("FIRSTMILE_STAGES__PARSE__BATCH_IDLE_MS", "0"),
        (
            "FIRSTMILE_KAFKA__PRODUCER__TRANSACTION_TIMEOUT_MS",
            "120000",
        ),
    ];
    let w1 = spawn_worker_with(f.dir.path(), "w1", &env);
    wait_for_members(&f.group, 1).await;
    let w2 = spawn_worker_with(f.dir.path(), "w2", &env);
    wait_for_members(&f.group, 2).await;
    assert_eq!(
        f.written(),
        0,
        "the group rebalanced before w1 finished its first batch"
    );
    f.finish_and_verify(vec![w1, w2]).await;
}

async fn wait_for_members(group: &str, members: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (state, n) = group_state(group);
        if state == "Stable" && n == members {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group}: {state} with {n} members, not Stable with {members}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `delivery = "at_least_once"` (brokers without transactions): after
/// SIGKILLs, every input is there at least once; duplicates are allowed and
/// carry the same event_id, which is what the idempotent sinks key on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn at_least_once_workers_lose_nothing_when_killed() {
    let f = fixture().await;
    let env = [("FIRSTMILE_STAGES__PARSE__DELIVERY", "at_least_once")];
    for round in 1..=2 {
        let worker = spawn_worker_with(f.dir.path(), "w1", &env);
        f.wait_until_written(round * N as i64 / 8).await;
        drop(worker); // SIGKILL
    }
    let after_kills = f.written();
    assert!(
        after_kills < N as i64,
        "{after_kills} of {N}: the kills did not interrupt the stream"
    );
    let mut worker = spawn_worker_with(f.dir.path(), "w1", &env);
    let good = N - f.bad;
    let deadline = Instant::now() + Duration::from_secs(180);
    let schema = firstmile_event::event_schema();
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    let unique_origins = |topic: &str| -> (usize, BTreeSet<(i32, i64)>) {
        let records = read_committed(topic);
        let origins = records
            .iter()
            .map(|m| {
                let header = |name: &str| -> String {
                    let h = m.headers().unwrap();
                    let v = h.iter().find(|h| h.key == name).unwrap().value.unwrap();
                    String::from_utf8(v.to_vec()).unwrap()
                };
                if topic == f.dlq {
                    (
                        header("firstmile.dlq.partition").parse().unwrap(),
                        header("firstmile.dlq.offset").parse().unwrap(),
                    )
                } else {
                    let (_, datum) =
                        firstmile_schema::confluent_unframe(m.payload().unwrap()).unwrap();
                    let value = reader.read_value(&mut &datum[..]).unwrap();
                    let origin = field(&value, "origin");
                    let (Value::Int(p), Value::Long(o)) =
                        (field(origin, "partition"), field(origin, "offset"))
                    else {
                        panic!("origin")
                    };
                    (*p, *o)
                }
            })
            .collect();
        (records.len(), origins)
    };
    loop {
        // Reading and decoding everything is slow: only once enough is written.
        if written(&f.parsed) + written(&f.dlq) < N as i64 {
            assert!(Instant::now() < deadline, "not every input arrived");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let (total, events) = unique_origins(&f.parsed);
        let (_, dead) = unique_origins(&f.dlq);
        if events.len() == good && dead.len() == f.bad {
            eprintln!("at least once: {total} records for {good} inputs");
            assert!(total >= good);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {good} good and {} of {} bad inputs arrived",
            events.len(),
            dead.len(),
            f.bad
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    sigterm(&worker.0);
    assert!(worker.0.wait().unwrap().success());
    delete_topics(&[&f.raw, &f.parsed, &f.dlq]).await;
}

fn sigterm(child: &Child) {
    // `kill -TERM`: a clean stop, as an orchestrator sends it.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
