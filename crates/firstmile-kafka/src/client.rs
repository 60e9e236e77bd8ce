//! Librdkafka client settings built from `[kafka]`.

use firstmile_config::Kafka;
use rdkafka::ClientConfig;

/// The kind of client, for the per-kind property maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Producer,
    Consumer,
    Admin,
}

/// Settings for one client: brokers and client id, then `kafka.properties`,
/// then the kind's own map (`kafka.producer`, …), later keys winning.
pub fn client_config(kafka: &Kafka, kind: ClientKind) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", &kafka.client_id);
    let per_kind = match kind {
        ClientKind::Producer => &kafka.producer,
        ClientKind::Consumer => &kafka.consumer,
        ClientKind::Admin => &kafka.admin,
    };
    if kind == ClientKind::Consumer {
        for (key, value) in CONSUMER_DEFAULTS {
            config.set(*key, *value);
        }
    }
    for (key, value) in kafka.properties.iter().chain(per_kind) {
        config.set(key, value);
    }
    config
}

/// A member of the consumer group `group`, known to it as `member_id`
/// (static membership: a restarted worker takes its partitions back at once
/// instead of waiting out its old session), reading `read_committed` from
/// the earliest offset where the group has none, committing its offsets
/// itself (after the batch is durable), with librdkafka's statistics on
/// (consumer lag). Stages and sinks build their consumers from this.
pub fn group_member_config(kafka: &Kafka, group: &str, member_id: &str) -> ClientConfig {
    let mut config = committed_reader(kafka, group);
    config
        .set("group.instance.id", member_id)
        .set("auto.offset.reset", "earliest");
    if config.get("session.timeout.ms").is_none() {
        config.set("session.timeout.ms", "10000");
    }
    crate::lag::enable_statistics(&mut config);
    config
}

/// A consumer that is assigned partitions and never joins a group:
/// `read_committed`, no automatic commits. `group` names whose committed
/// offsets it reads or commits (librdkafka wants one even to assign).
/// Replay, its dry run, `status` and `audit` read with this.
pub fn assigned_reader_config(kafka: &Kafka, group: &str) -> ClientConfig {
    committed_reader(kafka, group)
}

fn committed_reader(kafka: &Kafka, group: &str) -> ClientConfig {
    let mut config = client_config(kafka, ClientKind::Consumer);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    config
}

/// What every consumer is given unless `[kafka.consumer]` or
/// `[kafka.properties]` say otherwise: a prefetch bounded in memory.
///
/// librdkafka checks its prefetch limits only before a fetch, and counts
/// them in decompressed payload bytes and records; one fetch then brings up
/// to `max.partition.fetch.bytes` *compressed* per partition (1 MB by
/// default), which zstd-compressed log lines turn into 20+ MB each. With the
/// defaults, a parse worker on a backlog held every fetched record at once
/// (heaptrack: 152 MB of decompressed batches at 500,000 records) and
/// peaked at 266 MB; with these, at 129 MB, at the same rate (BENCHMARKS.md).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    // Fetches of at most 256 KB compressed per partition (a larger first
    // batch still comes whole, so no record is ever too large to read).
    ("max.partition.fetch.bytes", "262144"),
    // Stop fetching once this many records wait, or these kilobytes of
    // payload (fetch.max.bytes follows the latter): several batches of a
    // stage or sink, not the whole backlog.
    ("queued.min.messages", "20000"),
    ("queued.max.messages.kbytes", "16384"),
    // With limits this close to what one batch takes, librdkafka's default
    // 1 s pause after reaching them starved the worker between fetches.
    ("fetch.queue.backoff.ms", "20"),
];

/// Answers whether the brokers can be reached, for `/health/ready`: one
/// metadata request on a client of its own (the workers' clients are busy
/// in their loops).
#[derive(Clone)]
pub struct BrokerProbe(std::sync::Arc<rdkafka::consumer::BaseConsumer>);

impl BrokerProbe {
    pub fn new(kafka: &Kafka) -> Result<BrokerProbe, rdkafka::error::KafkaError> {
        let client = client_config(kafka, ClientKind::Admin).create()?;
        Ok(BrokerProbe(std::sync::Arc::new(client)))
    }

    pub async fn check(&self, timeout: std::time::Duration) -> Result<(), String> {
        let client = std::sync::Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            rdkafka::consumer::Consumer::fetch_metadata(&*client, None, timeout).map(|_| ())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("kafka: {e}"))
    }
}

/// The group list for `group`, asked again while its coordinator cannot
/// answer yet: after a broker starts, the coordinator loads its partition
/// of `__consumer_offsets` (`CoordinatorLoadInProgress`) or the group moves
/// to another broker (`NotCoordinator`, `CoordinatorNotAvailable`), for a
/// few seconds. Any other error, or one still there at `within`, is the
/// answer.
pub fn fetch_group_list<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    group: &str,
    within: std::time::Duration,
) -> rdkafka::error::KafkaResult<rdkafka::groups::GroupList> {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as Code;
    let deadline = std::time::Instant::now() + within;
    let mut backoff = crate::Backoff::default();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rdkafka::consumer::Consumer::fetch_group_list(consumer, Some(group), left) {
            Err(KafkaError::GroupListFetch(
                Code::CoordinatorLoadInProgress
                | Code::NotCoordinator
                | Code::CoordinatorNotAvailable,
            )) if std::time::Instant::now() + backoff.current() < deadline => {
                std::thread::sleep(backoff.next_wait());
            }
            answer => return answer,
        }
    }
}

/// Why a consumer cannot go on after `error`, with what to do; `None` for
/// the errors it recovers from itself (a broker restarting, say). A
/// consumer that meets one must end (its process exits non-zero for its
/// orchestrator): librdkafka will not consume again.
pub fn fatal_consumer_error(error: &rdkafka::error::KafkaError, member_id: &str) -> Option<String> {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    match error {
        KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::FencedInstanceId) => Some(format!(
            "another worker joined the group with this worker's instance id (member id \
             `{member_id}`) and fenced it: give each worker its own instance_id"
        )),
        KafkaError::MessageConsumptionFatal(_) => Some(format!("fatal consumer error: {error}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_get_a_bounded_prefetch_that_the_configuration_overrides() {
        let mut kafka = Kafka::default();
        let consumer = client_config(&kafka, ClientKind::Consumer);
        for (key, value) in CONSUMER_DEFAULTS {
            assert_eq!(consumer.get(key), Some(*value), "{key}");
        }
        assert_eq!(
            client_config(&kafka, ClientKind::Producer).get("queued.min.messages"),
            None,
            "consumer settings stay off producers"
        );
        kafka
            .properties
            .insert("fetch.queue.backoff.ms".into(), "100".into());
        kafka
            .consumer
            .insert("max.partition.fetch.bytes".into(), "1048576".into());
        let consumer = client_config(&kafka, ClientKind::Consumer);
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("100"));
        assert_eq!(consumer.get("max.partition.fetch.bytes"), Some("1048576"));
        assert_eq!(consumer.get("queued.min.messages"), Some("20000"));
    }

    #[test]
    fn group_members_and_assigned_readers_read_committed_and_commit_by_hand() {
        let mut kafka = Kafka::default();
        kafka
            .consumer
            .insert("session.timeout.ms".into(), "30000".into());
        let member = group_member_config(&kafka, "g", "g-host");
        let reader = assigned_reader_config(&kafka, "r");
        for c in [&member, &reader] {
            assert_eq!(c.get("isolation.level"), Some("read_committed"));
            assert_eq!(c.get("enable.auto.commit"), Some("false"));
            assert_eq!(c.get("max.partition.fetch.bytes"), Some("262144"));
        }
        assert_eq!(member.get("group.id"), Some("g"));
        assert_eq!(member.get("group.instance.id"), Some("g-host"));
        assert_eq!(
            member.get("session.timeout.ms"),
            Some("30000"),
            "configured wins"
        );
        assert!(member.get("statistics.interval.ms").is_some());
        assert_eq!(reader.get("group.id"), Some("r"));
        assert_eq!(reader.get("group.instance.id"), None);
    }

    #[test]
    fn a_fenced_instance_id_is_fatal_and_says_what_to_do() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        let fenced = KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::FencedInstanceId);
        let why = fatal_consumer_error(&fenced, "g-host").unwrap();
        assert!(
            why.contains("`g-host`") && why.contains("its own instance_id"),
            "{why}"
        );
        let transient = KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(fatal_consumer_error(&transient, "g-host"), None);
    }
}
