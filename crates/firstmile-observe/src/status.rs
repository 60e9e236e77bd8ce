//! `firstmile status`: one snapshot of the whole pipeline, taken from
//! Kafka, the sinks' targets and (optionally) the roles' `/metrics`, and
//! judged: which worker group is stalled, which target stopped updating,
//! and what it can see as the likely cause.
//!
//! Group offsets are sampled twice, `sample` apart: a group is stalled
//! when it has lag and its committed offsets did not move in between.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use firstmile_config::{Config, SourceTopology, Topology};
use firstmile_kafka::dlq::names as dlq_headers;
use firstmile_kafka::header_str;
use firstmile_sink::{Freshness, Sink};
use jiff::{SignedDuration, Timestamp};
use rdkafka::consumer::BaseConsumer;
use rdkafka::Message;
use serde::Serialize;

use crate::kafka::{self, consumer};
use crate::{prom, ObserveError};

/// Dead letters read per status (the count says so when there were more).
const DLQ_SCAN_LIMIT: u64 = 100_000;
/// Records read from the end of each raw partition to estimate sizes.
const TAIL_PER_PARTITION: i64 = 20;
/// Kafka clients status opens at once for per-source reads.
const PARALLEL_READS: usize = 8;

#[derive(Debug, Clone)]
pub struct Options {
    /// Rates, dead-letter counts and recent rows are over this window.
    pub window: Duration,
    /// A target whose newest row is older than this has stopped updating.
    pub stale_after: Duration,
    /// Time between the two samples of group offsets.
    pub sample: Duration,
    /// Base URLs of the roles' metrics endpoints (`http://host:9464`).
    pub metrics: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            window: Duration::from_secs(300),
            stale_after: Duration::from_secs(300),
            sample: Duration::from_secs(5),
            metrics: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub taken_at: Timestamp,
    pub window_seconds: f64,
    pub stale_after_seconds: f64,
    pub sources: Vec<SourceStatus>,
    pub workers: Vec<WorkerStatus>,
    /// Replays started on a source (`firstmile replay`), from their groups.
    pub replays: Vec<ReplayStatus>,
    pub targets: Vec<TargetStatus>,
    pub endpoints: Vec<EndpointStatus>,
}

impl Status {
    /// Flags raised: stalled workers and targets that stopped updating.
    pub fn problems(&self) -> usize {
        self.workers.iter().filter(|w| w.stalled).count()
            + self.targets.iter().filter(|t| t.stopped_updating).count()
    }

    pub fn worker(&self, name: &str) -> Option<&WorkerStatus> {
        self.workers.iter().find(|w| w.name == name)
    }

    pub fn target(&self, name: &str) -> Option<&TargetStatus> {
        self.targets.iter().find(|t| t.name == name)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub topic: String,
    /// Records received per second over the window.
    pub records_per_second: f64,
    pub records_24h: u64,
    /// `records_24h` times the mean size of the newest records.
    pub bytes_24h: u64,
    pub newest: Option<Timestamp>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerStatus {
    /// `parse`, `enrich`, `sink:timescale`, `sink:elasticsearch`: as dead
    /// letters name them.
    pub name: String,
    pub group: String,
    pub inputs: Vec<String>,
    pub state: String,
    pub members: usize,
    /// Records after the committed offsets, at the first and second sample.
    pub lag_before: i64,
    pub lag: i64,
    /// Committed records per second between the samples.
    pub records_per_second: f64,
    /// Dead letters this worker wrote in the window, by error kind.
    pub dlq: BTreeMap<String, u64>,
    pub stalled: bool,
    pub causes: Vec<String>,
    pub error: Option<String>,
    /// Whether the committed offsets moved between the samples.
    #[serde(skip)]
    pub committed_moved: bool,
}

/// A replay of one source, from the offsets its group
/// `firstmile-replay-<source>` committed (a replay reads outside any live
/// group, so it has no members to show).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReplayStatus {
    pub source: String,
    pub group: String,
    pub topic: String,
    /// Records between the committed offsets and the ends fixed when the
    /// replay started.
    pub left: i64,
    /// Records replayed per second between the samples.
    pub records_per_second: f64,
    /// `running` (it committed between the samples), `finished` (nothing
    /// left) or `stopped` (records left: `firstmile replay --resume` goes on).
    pub state: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetStatus {
    /// `timescale`, `elasticsearch`.
    pub name: String,
    pub reachable: bool,
    pub newest: Option<Timestamp>,
    /// Rows or documents received within the window.
    pub recent: u64,
    pub stopped_updating: bool,
    pub causes: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointStatus {
    pub url: String,
    pub up: bool,
    pub ready: bool,
    pub ready_answer: String,
    pub components: Vec<ComponentTotals>,
    pub error: Option<String>,
}

/// One component's counters since its role started.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ComponentTotals {
    pub kind: String,
    pub id: String,
    pub received: u64,
    pub sent: u64,
    pub errors: BTreeMap<String, u64>,
    pub discarded: BTreeMap<String, u64>,
}

/// Takes a snapshot and judges it.
/// `sinks`: each sink's target, read for its freshness.
pub async fn collect(
    config: &Config,
    topology: &Topology,
    sinks: &[Box<dyn Sink>],
    options: &Options,
) -> Result<Status, ObserveError> {
    crate::brokers_answer(&config.kafka).await?;
    let taken_at = Timestamp::now();
    let workers = workers(topology);
    let observer = topology.observer_group.as_str();
    // One client lists the groups for both samples: a fresh client's first
    // group listing waits about a second for the brokers (measured).
    let lister = Arc::new(consumer(&config.kafka, observer)?);
    let first = sample_groups(config, &workers, &lister).await?;
    let first_replays = sample_replays(config, topology).await?;
    let since = taken_at - signed(options.window);
    let (sources, dlq, targets, endpoints) = tokio::join!(
        blocking({
            let (config, topology) = (config.clone(), topology.clone());
            move || sources(&config, &topology, taken_at, since)
        }),
        blocking({
            let (config, topology) = (config.clone(), topology.clone());
            move || dead_letters(&config, &topology, since)
        }),
        targets(sinks, since),
        endpoints(&options.metrics),
    );
    let elapsed = Timestamp::now().duration_since(taken_at);
    if let Some(rest) = signed(options.sample).checked_sub(elapsed) {
        if rest.is_positive() {
            tokio::time::sleep(rest.unsigned_abs()).await;
        }
    }
    let second = sample_groups(config, &workers, &lister).await?;
    let second_replays = sample_replays(config, topology).await?;
    let seconds = Timestamp::now()
        .duration_since(taken_at)
        .as_secs_f64()
        .max(0.001);
    let replays = second_replays
        .into_iter()
        .map(|(key, after)| {
            let before = first_replays.get(&key).copied();
            replay_status(key, before, after, seconds)
        })
        .collect();
    let dlq = dlq?;
    let workers = workers
        .into_iter()
        .zip(first.into_iter().zip(second))
        .map(|((name, group, inputs), (a, b))| {
            let mut w = WorkerStatus {
                name,
                group,
                inputs,
                ..WorkerStatus::default()
            };
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    w.lag_before = a.lag;
                    w.lag = b.lag;
                    w.committed_moved = b.committed != a.committed;
                    w.records_per_second = (b.committed - a.committed).max(0) as f64 / seconds;
                    w.state = b.state;
                    w.members = b.members;
                }
                (Err(e), _) | (_, Err(e)) => w.error = Some(e.to_string()),
            }
            w.dlq = dlq.get(&w.name).cloned().unwrap_or_default();
            w
        })
        .collect();
    let mut status = Status {
        taken_at,
        window_seconds: options.window.as_secs_f64(),
        stale_after_seconds: options.stale_after.as_secs_f64(),
        sources: sources?,
        workers,
        replays,
        targets,
        endpoints,
    };
    judge(&mut status, options.stale_after);
    Ok(status)
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObserveError> + Send + 'static,
) -> Result<T, ObserveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ObserveError::Reader(e.to_string()))?
}

/// The worker groups: name, group, input topics.
fn workers(topology: &Topology) -> Vec<(String, String, Vec<String>)> {
    let stages = topology
        .stages()
        .map(|s| (s.name.to_string(), s.group.clone(), s.inputs.clone()));
    let sinks = topology
        .sinks()
        .map(|s| (s.name.worker(), s.group.clone(), vec![s.input.clone()]));
    stages.chain(sinks).collect()
}

/// One sample of a group: its lag, the sum of its committed offsets (to
/// see whether it moves), its state and members.
struct GroupSample {
    lag: i64,
    committed: i64,
    state: String,
    members: usize,
}

async fn sample_groups(
    config: &Config,
    workers: &[(String, String, Vec<String>)],
    lister: &Arc<BaseConsumer>,
) -> Result<Vec<Result<GroupSample, ObserveError>>, ObserveError> {
    let kafka = config.kafka.clone();
    let lister = Arc::clone(lister);
    let groups: Vec<(String, Vec<String>)> = workers
        .iter()
        .map(|(_, g, inputs)| (g.clone(), inputs.clone()))
        .collect();
    blocking(move || {
        Ok(groups
            .iter()
            .map(|(group, inputs)| sample_group(&kafka, &lister, group, inputs))
            .collect())
    })
    .await
}

fn sample_group(
    kafka: &firstmile_config::Kafka,
    lister: &BaseConsumer,
    group: &str,
    inputs: &[String],
) -> Result<GroupSample, ObserveError> {
    let (state, members) = kafka::group_members(lister, group)?;
    let c = consumer(kafka, group)?;
    let mut sample = GroupSample {
        lag: 0,
        committed: 0,
        state,
        members,
    };
    for topic in inputs {
        let marks = kafka::watermarks(&c, topic)?;
        let committed = kafka::committed(&c, topic, marks.keys().copied())?;
        let mut behind = BTreeMap::new();
        for (p, (low, high)) in &marks {
            let position = committed
                .get(p)
                .copied()
                .flatten()
                .unwrap_or(*low)
                .max(*low);
            sample.committed += position;
            if high > &position {
                behind.insert(*p, (position, high - position));
            }
        }
        // A group that read everything can still be behind the high
        // watermark by the transaction markers after its last record.
        let positions = behind.iter().map(|(p, (pos, _))| (*p, *pos)).collect();
        let caught_up = kafka::caught_up(kafka, group, topic, &positions)?;
        sample.lag += behind
            .iter()
            .filter(|(p, _)| !caught_up.contains(p))
            .map(|(_, (_, lag))| lag)
            .sum::<i64>();
    }
    Ok(sample)
}

/// Where a replay stood at one sample: records left, and the sum of its
/// committed offsets (to see whether it moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySample {
    pub left: i64,
    pub committed: i64,
}

/// Source, replay group, raw topic.
type ReplayKey = (String, String, String);

/// Every configured source's replay progress, where a replay was started.
/// A source whose progress cannot be read is left out (its row under
/// SOURCE already shows what is wrong with its topic).
async fn sample_replays(
    config: &Config,
    topology: &Topology,
) -> Result<BTreeMap<ReplayKey, ReplaySample>, ObserveError> {
    let (kafka, topology) = (config.kafka.clone(), topology.clone());
    blocking(move || {
        let sources: Vec<(&String, &SourceTopology)> = topology.sources.iter().collect();
        let mut out = BTreeMap::new();
        // Each source needs a client of its own (the group is the
        // source's); a few at a time, not one after the other (about
        // 0.1 s each) nor all at once.
        for chunk in sources.chunks(PARALLEL_READS) {
            let samples: Vec<_> = std::thread::scope(|scope| {
                let reads: Vec<_> = chunk
                    .iter()
                    .map(|(source, names)| scope.spawn(|| replay_sample(&kafka, source, names)))
                    .collect();
                reads.into_iter().filter_map(|r| r.join().ok()).collect()
            });
            out.extend(samples.into_iter().flatten());
        }
        Ok(out)
    })
    .await
}

fn replay_sample(
    kafka: &firstmile_config::Kafka,
    source: &str,
    names: &SourceTopology,
) -> Option<(ReplayKey, ReplaySample)> {
    let topic = names.raw_topic.clone();
    let ranges = consumer(kafka, &names.replay_group).and_then(|c| {
        firstmile_kafka::range::committed_progress(&c, &topic).map_err(ObserveError::from)
    });
    match ranges {
        Ok(ranges) if !ranges.is_empty() => {
            let sample = ReplaySample {
                left: ranges.iter().map(|r| r.len() as i64).sum(),
                committed: ranges.iter().map(|r| r.start).sum(),
            };
            Some((
                (source.to_string(), names.replay_group.clone(), topic),
                sample,
            ))
        }
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(%source, error = %e, "replay progress not read");
            None
        }
    }
}

/// A replay judged from two samples (`before` is missing when it started
/// in between).
pub fn replay_status(
    (source, group, topic): ReplayKey,
    before: Option<ReplaySample>,
    after: ReplaySample,
    seconds: f64,
) -> ReplayStatus {
    let moved = before.map_or(0, |b| (after.committed - b.committed).max(0));
    let state = if after.left == 0 {
        "finished"
    } else if before.is_none() || moved > 0 {
        "running"
    } else {
        "stopped"
    };
    ReplayStatus {
        source,
        group,
        topic,
        left: after.left,
        records_per_second: moved as f64 / seconds,
        state: state.to_string(),
    }
}

fn sources(
    config: &Config,
    topology: &Topology,
    now: Timestamp,
    since: Timestamp,
) -> Result<Vec<SourceStatus>, ObserveError> {
    let c = consumer(&config.kafka, &topology.observer_group)?;
    let window = now.duration_since(since).as_secs_f64().max(0.001);
    let mut out = Vec::new();
    for (name, names) in &topology.sources {
        let mut s = SourceStatus {
            name: name.clone(),
            topic: names.raw_topic.clone(),
            ..SourceStatus::default()
        };
        if let Err(e) = source(&c, &mut s, now, since, window) {
            s.error = Some(e.to_string());
        }
        out.push(s);
    }
    Ok(out)
}

fn source(
    c: &rdkafka::consumer::BaseConsumer,
    s: &mut SourceStatus,
    now: Timestamp,
    since: Timestamp,
    window: f64,
) -> Result<(), ObserveError> {
    let marks = kafka::watermarks(c, &s.topic)?;
    s.records_per_second = kafka::records_since(c, &s.topic, &marks, since)? as f64 / window;
    s.records_24h =
        kafka::records_since(c, &s.topic, &marks, now - SignedDuration::from_hours(24))?;
    let tail = kafka::tail(c, &s.topic, &marks, TAIL_PER_PARTITION)?;
    if !tail.is_empty() {
        let bytes: usize = tail
            .iter()
            .map(|m| m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len))
            .sum();
        s.bytes_24h = (bytes as f64 / tail.len() as f64 * s.records_24h as f64) as u64;
    }
    s.newest = tail
        .iter()
        .filter_map(|m| m.timestamp().to_millis())
        .max()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok());
    Ok(())
}

/// Dead letters since `since` in every dead-letter topic, per stage
/// (`firstmile.dlq.stage`) and kind.
fn dead_letters(
    config: &Config,
    topology: &Topology,
    since: Timestamp,
) -> Result<BTreeMap<String, BTreeMap<String, u64>>, ObserveError> {
    let c = consumer(&config.kafka, &topology.observer_group)?;
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for topic in topology.dlq_topics() {
        let ranges = firstmile_kafka::range::since_if_any(&c, topic, since)?;
        let complete = kafka::read_from(&c, topic, &ranges, DLQ_SCAN_LIMIT, |m| {
            let stage = header_str(m, dlq_headers::STAGE).unwrap_or("unknown");
            let kind = header_str(m, dlq_headers::ERROR_KIND).unwrap_or("unknown");
            *counts
                .entry(stage.to_string())
                .or_default()
                .entry(kind.to_string())
                .or_default() += 1;
        })?;
        if !complete {
            tracing::warn!(
                topic,
                limit = DLQ_SCAN_LIMIT,
                "more dead letters in the window than status reads; counts are partial"
            );
        }
    }
    Ok(counts)
}

async fn targets(sinks: &[Box<dyn Sink>], since: Timestamp) -> Vec<TargetStatus> {
    let answers = futures::future::join_all(sinks.iter().map(|s| s.freshness(since))).await;
    sinks
        .iter()
        .map(|s| s.name().to_string())
        .zip(answers)
        .map(|(name, answer)| {
            let (reachable, freshness, error) = match answer {
                Ok(f) => (true, f, None),
                Err(e) => (false, Freshness::default(), Some(e)),
            };
            TargetStatus {
                name,
                reachable,
                newest: freshness.newest,
                recent: freshness.recent,
                error,
                ..TargetStatus::default()
            }
        })
        .collect()
}

async fn endpoints(urls: &[String]) -> Vec<EndpointStatus> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap_or_default();
    futures::future::join_all(urls.iter().map(|url| endpoint(&client, url))).await
}

async fn endpoint(client: &reqwest::Client, url: &str) -> EndpointStatus {
    let base = url.trim_end_matches('/');
    let mut e = EndpointStatus {
        url: base.to_string(),
        ..EndpointStatus::default()
    };
    let text = match client.get(format!("{base}/metrics")).send().await {
        Ok(answer) => answer.text().await,
        Err(err) => Err(err),
    };
    match text {
        Ok(text) => {
            e.up = true;
            e.components = totals(&prom::parse(&text));
        }
        Err(err) => {
            e.error = Some(err.to_string());
            return e;
        }
    }
    if let Ok(answer) = client.get(format!("{base}/health/ready")).send().await {
        e.ready = answer.status().is_success();
        e.ready_answer = answer.text().await.unwrap_or_default().trim().to_string();
    }
    e
}

/// Sums a role's `firstmile_component_*` counters per component.
pub fn totals(samples: &[prom::Sample]) -> Vec<ComponentTotals> {
    let mut by: BTreeMap<(String, String), ComponentTotals> = BTreeMap::new();
    for s in samples {
        let field = match s.name.as_str() {
            "firstmile_component_received_events_total" => 0,
            "firstmile_component_sent_events_total" => 1,
            "firstmile_component_errors_total" => 2,
            "firstmile_component_discarded_events_total" => 3,
            _ => continue,
        };
        let key = (
            s.label("component_kind").to_string(),
            s.label("component_id").to_string(),
        );
        let t = by.entry(key.clone()).or_insert_with(|| ComponentTotals {
            kind: key.0,
            id: key.1,
            ..ComponentTotals::default()
        });
        let n = s.value.max(0.0) as u64;
        match field {
            0 => t.received += n,
            1 => t.sent += n,
            2 => {
                *t.errors
                    .entry(s.label("error_type").to_string())
                    .or_default() += n
            }
            _ => {
                *t.discarded
                    .entry(s.label("reason").to_string())
                    .or_default() += n
            }
        }
    }
    by.into_values().collect()
}

/// Raises the flags and names the causes it can see. Pure: everything it
/// judges is in the snapshot.
pub fn judge(status: &mut Status, stale_after: Duration) {
    let targets_down: BTreeMap<String, String> = status
        .targets
        .iter()
        .filter(|t| !t.reachable)
        .map(|t| {
            (
                format!("sink:{}", t.name),
                t.error.clone().unwrap_or_default(),
            )
        })
        .collect();
    let component_errors = |worker: &str| -> Vec<String> {
        let (kind, id) = match worker.strip_prefix("sink:") {
            Some(id) => ("sink", id),
            None => ("stage", worker),
        };
        status
            .endpoints
            .iter()
            .flat_map(|e| &e.components)
            .filter(|c| c.kind == kind && c.id == id)
            .flat_map(|c| c.errors.iter().map(|(t, n)| format!("{t} ({n})")))
            .collect()
    };
    for w in &mut status.workers {
        w.causes.clear();
        w.stalled = w.error.is_none() && w.lag > 0 && !w.committed_moved;
        if !w.stalled {
            continue;
        }
        if w.members == 0 {
            // A group between generations lists no members for a moment,
            // and a member whose session expired is not listed though its
            // process runs.
            w.causes.push(match w.state.as_str() {
                "PreparingRebalance" | "CompletingRebalance" => format!(
                    "group {} is rebalancing ({}): no member holds its partitions yet",
                    w.group, w.state
                ),
                _ => format!(
                    "group {} has no members: no worker is running, or its workers lost their membership (see their logs and /health/ready)",
                    w.group
                ),
            });
        }
        if let Some(why) = targets_down.get(&w.name) {
            w.causes.push(format!("its target is unreachable: {why}"));
        }
        if w.members > 0 && !targets_down.contains_key(&w.name) {
            let errors = component_errors(&w.name);
            if errors.is_empty() {
                w.causes.push(
                    "its members commit nothing: see their logs and firstmile_component_errors_total"
                        .into(),
                );
            } else {
                w.causes
                    .push(format!("its members report errors: {}", errors.join(", ")));
            }
        }
    }
    let stale = signed(stale_after);
    let all_quiet = status.sources.iter().all(|s| s.records_per_second == 0.0);
    let upstream: Vec<(String, i64)> = status
        .workers
        .iter()
        .filter(|w| w.stalled && !w.name.starts_with("sink:"))
        .map(|w| (w.name.clone(), w.lag))
        .collect();
    // What a target missed went to the dead-letter topic upstream (the
    // stages, for every target) or from its own sink; another sink's dead
    // letters are no cause.
    let dead_before = |target: &str| -> BTreeMap<String, u64> {
        let own = format!("sink:{target}");
        status
            .workers
            .iter()
            .filter(|w| !w.name.starts_with("sink:") || w.name == own)
            .flat_map(|w| w.dlq.iter())
            .fold(BTreeMap::new(), |mut acc, (k, n)| {
                *acc.entry(k.clone()).or_default() += n;
                acc
            })
    };
    let dead: BTreeMap<String, BTreeMap<String, u64>> = status
        .targets
        .iter()
        .map(|t| (t.name.clone(), dead_before(&t.name)))
        .collect();
    for t in &mut status.targets {
        let dead = &dead[&t.name];
        t.causes.clear();
        t.stopped_updating = match t.newest {
            Some(newest) => status.taken_at.duration_since(newest) > stale,
            None => true,
        };
        if !t.stopped_updating {
            continue;
        }
        if let Some(e) = &t.error {
            t.causes.push(format!("unreachable: {e}"));
        }
        let sink = format!("sink:{}", t.name);
        if let Some(w) = status.workers.iter().find(|w| w.name == sink) {
            if w.stalled {
                t.causes.push(format!(
                    "its sink ({}) is stalled with lag {}",
                    w.group, w.lag
                ));
            }
        }
        for (stage, lag) in &upstream {
            t.causes
                .push(format!("stage {stage} upstream is stalled with lag {lag}"));
        }
        if t.recent == 0 && !dead.is_empty() {
            let kinds: Vec<String> = dead.iter().map(|(k, n)| format!("{k} ({n})")).collect();
            t.causes.push(format!(
                "what arrived in the window went to the dead-letter topic: {}",
                kinds.join(", ")
            ));
        }
        if all_quiet {
            t.causes
                .push("no source received anything in the window: nothing new to write".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn snapshot() -> Status {
        let worker = |name: &str, lag_before, lag, moved, members| WorkerStatus {
            name: name.into(),
            group: format!("firstmile-{name}"),
            lag_before,
            lag,
            committed_moved: moved,
            members,
            ..WorkerStatus::default()
        };
        Status {
            taken_at: at("2026-11-23T12:00:00Z"),
            window_seconds: 300.0,
            stale_after_seconds: 300.0,
            sources: vec![SourceStatus {
                name: "linux".into(),
                records_per_second: 10.0,
                ..SourceStatus::default()
            }],
            workers: vec![
                worker("parse", 0, 0, true, 1),
                worker("enrich", 0, 0, true, 1),
                worker("sink:timescale", 100, 160, false, 0),
                worker("sink:elasticsearch", 5, 3, true, 1),
            ],
            targets: vec![
                TargetStatus {
                    name: "timescale".into(),
                    reachable: true,
                    newest: Some(at("2026-11-23T11:50:00Z")),
                    ..TargetStatus::default()
                },
                TargetStatus {
                    name: "elasticsearch".into(),
                    reachable: true,
                    newest: Some(at("2026-11-23T11:59:58Z")),
                    recent: 900,
                    ..TargetStatus::default()
                },
            ],
            replays: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn a_replay_is_running_while_it_commits_finished_at_its_end_and_stopped_otherwise() {
        let key = || {
            (
                "linux".to_string(),
                "firstmile-replay-linux".to_string(),
                "raw.linux".to_string(),
            )
        };
        let sample = |left, committed| ReplaySample { left, committed };
        let running = replay_status(key(), Some(sample(900, 100)), sample(500, 500), 4.0);
        assert_eq!((running.state.as_str(), running.left), ("running", 500));
        assert_eq!(running.records_per_second, 100.0);
        let started_between = replay_status(key(), None, sample(800, 200), 4.0);
        assert_eq!(started_between.state, "running");
        assert_eq!(started_between.records_per_second, 0.0);
        let stopped = replay_status(key(), Some(sample(500, 500)), sample(500, 500), 4.0);
        assert_eq!(stopped.state, "stopped");
        let finished = replay_status(key(), Some(sample(0, 1000)), sample(0, 1000), 4.0);
        assert_eq!(finished.state, "finished");

        let mut plain = snapshot();
        judge(&mut plain, Duration::from_secs(300));
        let mut status = snapshot();
        status.replays = vec![stopped, finished];
        judge(&mut status, Duration::from_secs(300));
        assert!(plain.problems() > 0);
        assert_eq!(
            status.problems(),
            plain.problems(),
            "a stopped replay is not a problem of the live pipeline"
        );
    }

    #[test]
    fn a_group_with_lag_that_commits_nothing_is_stalled_and_its_table_stale() {
        let mut s = snapshot();
        judge(&mut s, Duration::from_secs(300));
        let ts = s.worker("sink:timescale").unwrap();
        assert!(ts.stalled);
        assert_eq!(
            ts.causes,
            ["group firstmile-sink:timescale has no members: no worker is running, or its workers lost their membership (see their logs and /health/ready)"]
        );
        // Lag but committing: busy, not stalled.
        assert!(!s.worker("sink:elasticsearch").unwrap().stalled);
        assert!(!s.worker("parse").unwrap().stalled);
        let table = s.target("timescale").unwrap();
        assert!(table.stopped_updating);
        assert_eq!(
            table.causes,
            ["its sink (firstmile-sink:timescale) is stalled with lag 160"]
        );
        assert!(!s.target("elasticsearch").unwrap().stopped_updating);
        assert_eq!(s.problems(), 2);
    }

    #[test]
    fn causes_name_an_unreachable_target_errors_dead_letters_and_quiet_sources() {
        let mut s = snapshot();
        s.workers[2].members = 1;
        s.targets[0].reachable = false;
        s.targets[0].error = Some("database: connection refused".into());
        judge(&mut s, Duration::from_secs(300));
        assert_eq!(
            s.worker("sink:timescale").unwrap().causes,
            ["its target is unreachable: database: connection refused"]
        );
        assert_eq!(
            s.target("timescale").unwrap().causes[0],
            "unreachable: database: connection refused"
        );

        // Members present, target up, errors reported on /metrics.
        let mut s = snapshot();
        s.workers[2].members = 1;
        s.endpoints.push(EndpointStatus {
            components: vec![ComponentTotals {
                kind: "sink".into(),
                id: "timescale".into(),
                errors: [("database_unavailable".to_string(), 7)].into(),
                ..ComponentTotals::default()
            }],
            ..EndpointStatus::default()
        });
        judge(&mut s, Duration::from_secs(300));
        assert_eq!(
            s.worker("sink:timescale").unwrap().causes,
            ["its members report errors: database_unavailable (7)"]
        );

        // Nothing stalled, but everything went to the dead-letter topic and
        // then the sources went quiet.
        let mut s = snapshot();
        s.workers[2] = WorkerStatus {
            name: "sink:timescale".into(),
            ..WorkerStatus::default()
        };
        s.workers[0].dlq = [("invalid_utf8".to_string(), 40)].into();
        s.sources[0].records_per_second = 0.0;
        judge(&mut s, Duration::from_secs(300));
        assert_eq!(
            s.target("timescale").unwrap().causes,
            [
                "what arrived in the window went to the dead-letter topic: invalid_utf8 (40)",
                "no source received anything in the window: nothing new to write"
            ]
        );
        // A target that never received anything is stale too.
        s.targets[1].newest = None;
        judge(&mut s, Duration::from_secs(300));
        assert!(s.target("elasticsearch").unwrap().stopped_updating);
    }

    #[test]
    fn another_sinks_dead_letters_are_no_cause_and_a_rebalance_is_named() {
        let mut s = snapshot();
        s.workers[2] = WorkerStatus {
            name: "sink:timescale".into(),
            ..WorkerStatus::default()
        };
        s.workers[3].dlq = [("rejected_by_elasticsearch".to_string(), 9)].into();
        s.sources[0].records_per_second = 0.0;
        judge(&mut s, Duration::from_secs(300));
        assert_eq!(
            s.target("timescale").unwrap().causes,
            ["no source received anything in the window: nothing new to write"]
        );
        let mut s = snapshot();
        s.workers[2].state = "PreparingRebalance".into();
        judge(&mut s, Duration::from_secs(300));
        assert_eq!(
            s.worker("sink:timescale").unwrap().causes,
            ["group firstmile-sink:timescale is rebalancing (PreparingRebalance): no member holds its partitions yet"]
        );
    }

    #[test]
    fn a_roles_counters_are_summed_per_component() {
        let text = "\
firstmile_component_received_events_total{component_id=\"parse\",component_kind=\"stage\",source=\"a\"} 10
firstmile_component_received_events_total{component_id=\"parse\",component_kind=\"stage\",source=\"b\"} 5
firstmile_component_sent_events_total{component_id=\"parse\",component_kind=\"stage\",source=\"a\"} 9
firstmile_component_discarded_events_total{component_id=\"parse\",component_kind=\"stage\",reason=\"dlq_x\",source=\"a\"} 1
firstmile_component_errors_total{component_id=\"timescale\",component_kind=\"sink\",error_type=\"database_unavailable\"} 3
firstmile_component_in_flight_bytes{component_id=\"http\",component_kind=\"receiver\"} 100
";
        let totals = totals(&prom::parse(text));
        assert_eq!(totals.len(), 2, "{totals:?}");
        let parse = totals.iter().find(|t| t.id == "parse").unwrap();
        assert_eq!((parse.received, parse.sent), (15, 9));
        assert_eq!(parse.discarded["dlq_x"], 1);
        let ts = totals.iter().find(|t| t.id == "timescale").unwrap();
        assert_eq!(ts.errors["database_unavailable"], 3);
    }
}
