//! What the end-to-end tests of the binary share: a scenario of unique
//! topics, a migrated schema and an index prefix, the pipeline's worker
//! processes, and reading the sinks back.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use firstmile_testkit::{
    brokers, create_topics, elasticsearch_url, migrated_schema, postgres_url, registry_url, unique,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

// A worker process, SIGKILLed when dropped so a failing test leaves none.
pub use firstmile_testkit::KillOnDrop as Worker;

pub struct Scenario {
    pub source: String,
    pub raw: String,
    pub parsed: String,
    pub events: String,
    pub dlq: String,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub schema: String,
    pub es_url: String,
    pub prefix: String,
}

impl Scenario {
    /// Unique topics (3 partitions each) for source `linux<pid>`, a migrated
    /// schema and an index prefix, all named after `label`.
    pub async fn create(label: &str) -> Scenario {
        let source = format!("linux{}", std::process::id());
        let (raw, parsed, events, dlq) = (
            unique("raw.linux"),
            unique("parsed"),
            unique("events"),
            unique("dlq"),
        );
        create_topics(&[&raw, &parsed, &events, &dlq], 3).await;
        let db_url = postgres_url();
        let (_, schema) = migrated_schema(&db_url, label).await;
        let es_url = elasticsearch_url();
        let prefix = unique(label).replace('.', "-").to_lowercase();
        Scenario {
            source,
            raw,
            parsed,
            events,
            dlq,
            dir: tempfile::tempdir().unwrap(),
            env: vec![
                ("FIRSTMILE_DATABASE__URL".into(), db_url),
                ("FIRSTMILE_DATABASE__SCHEMA".into(), schema.clone()),
                ("FIRSTMILE_ELASTICSEARCH__URL".into(), es_url.clone()),
                (
                    "FIRSTMILE_ELASTICSEARCH__INDEX_PREFIX".into(),
                    prefix.clone(),
                ),
            ],
            schema,
            es_url,
            prefix,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_firstmile"));
        c.current_dir(self.dir.path())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn");
        c
    }

    pub fn spawn(&self, args: &[&str]) -> Worker {
        Worker(
            self.command(args)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    }

    /// The four workers of the pipeline.
    pub fn pipeline(&self) -> Vec<Worker> {
        vec![
            self.spawn(&["process", "--stage", "parse"]),
            self.spawn(&["process", "--stage", "enrich"]),
            self.spawn(&["sink", "timescale"]),
            self.spawn(&["sink", "elasticsearch"]),
        ]
    }

    pub fn configure(&self, timezone: Option<&str>, version: &str) {
        let tz = timezone
            .map(|t| format!("timezone = \"{t}\"\n"))
            .unwrap_or_default();
        let group = |name: &str| format!("{}-{name}", self.raw);
        std::fs::write(
            self.dir.path().join("firstmile.toml"),
            format!(
                "[kafka]\nbrokers = \"{}\"\n[schema_registry]\nurl = \"{}\"\n\
                 [sources.{}]\ntopic = \"{}\"\n[sources.{}.parse]\nformat = \"syslog\"\n{tz}\
                 [stages]\npipeline_version = \"{version}\"\n\
                 [stages.parse]\noutput = \"{}\"\ndlq = \"{}\"\ngroup = \"{}\"\nbatch_ms = 200\n\
                 [stages.enrich]\ninput = [\"{}\"]\noutput = \"{}\"\ndlq = \"{}\"\ngroup = \"{}\"\nbatch_ms = 200\n\
                 [sinks.timescale]\ninput = \"{}\"\ndlq = \"{}\"\ngroup = \"{}\"\nbatch_ms = 200\n\
                 [sinks.elasticsearch]\ninput = \"{}\"\ndlq = \"{}\"\ngroup = \"{}\"\nbatch_ms = 200\n\
                 [metrics]\nlisten = \"\"\n",
                brokers(),
                registry_url(),
                self.source,
                self.raw,
                self.source,
                self.parsed,
                self.dlq,
                group("parse"),
                self.parsed,
                self.events,
                self.dlq,
                group("enrich"),
                self.events,
                self.dlq,
                group("timescale"),
                self.events,
                self.dlq,
                group("elasticsearch"),
            ),
        )
        .unwrap();
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        let db = firstmile_config::Database {
            url: self.env[0].1.clone(),
            schema: self.schema.clone(),
            ..Default::default()
        };
        firstmile_db::connect(&db).await.unwrap()
    }

    /// event_id → (@timestamp as epoch ms, pipeline_version), with a check
    /// that no raw record has two rows.
    pub async fn rows(&self) -> BTreeMap<String, (i64, String)> {
        let client = self.db().await;
        let rows = client
            .query(
                &format!(
                    "SELECT event_id::text, (extract(epoch FROM ts) * 1000)::bigint, pipeline_version, \
                     raw_partition, raw_offset FROM {}.events",
                    self.schema
                ),
                &[],
            )
            .await
            .unwrap();
        let mut origins = BTreeSet::new();
        let mut out = BTreeMap::new();
        for r in rows {
            let origin: (i32, i64) = (r.get(3), r.get(4));
            assert!(origins.insert(origin), "two rows for raw record {origin:?}");
            out.insert(r.get(0), (r.get(1), r.get(2)));
        }
        out
    }

    pub async fn es(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let http = reqwest::Client::new();
        let _ = http
            .post(format!("{}/{}/_refresh", self.es_url, self.prefix))
            .send()
            .await;
        match http
            .post(format!("{}/{}/{path}", self.es_url, self.prefix))
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }

    pub async fn es_count(&self, query: serde_json::Value) -> i64 {
        self.es("_count", serde_json::json!({ "query": query }))
            .await["count"]
            .as_i64()
            .unwrap_or(-1)
    }

    /// Waits until both sinks hold `n` events.
    pub async fn sinks_hold(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let rows = self.rows().await.len();
            let docs = self.es_count(serde_json::json!({"match_all": {}})).await;
            if rows == n && docs == n as i64 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sinks hold {rows} rows and {docs} documents, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub fn replay(&self, args: &[&str]) -> Output {
        let mut all = vec!["replay", "--source", &self.source];
        all.extend_from_slice(args);
        self.command(&all).output().unwrap()
    }
}

pub fn corpus() -> Vec<Vec<u8>> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/loghub/Linux/Linux_2k.log"),
    )
    .unwrap()
    .split(|&b| b == b'\n')
    .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
    .filter(|l| !l.is_empty())
    .collect()
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

pub async fn send(producer: &FutureProducer, topic: &str, source: &str, key: &str, value: &[u8]) {
    let headers = OwnedHeaders::new().insert(Header {
        key: "firstmile.source",
        value: Some(source),
    });
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}
