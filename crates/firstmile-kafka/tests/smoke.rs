//! The local stack works end to end for Kafka and the schema registry: a record
//! produced with acks=all is consumed by a consumer group with its key, value and
//! headers, the group's offset is committed; an Avro schema is registered, fetched
//! by id and used for a Confluent-wire-format round trip.

use std::time::Duration;

use apache_avro::types::Value;
use firstmile_kafka::{client_config, ClientKind};
use firstmile_testkit::{kafka, unique};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, post_schema, SrSettings,
};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn produce_and_consume_through_a_consumer_group() {
    let k = kafka();
    let topic = unique("smoke");
    let admin: AdminClient<DefaultClientContext> =
        client_config(&k, ClientKind::Admin).create().unwrap();
    admin
        .create_topics(
            [&NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });

    let producer: FutureProducer = client_config(&k, ClientKind::Producer)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let value: &[u8] = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed \xff raw bytes";
    producer
        .send(
            FutureRecord::to(&topic)
                .key("host-1")
                .payload(value)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "source",
                    value: Some("syslog"),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let group = unique("group");
    let consumer: StreamConsumer = client_config(&k, ClientKind::Consumer)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("no record within 30 s")
        .unwrap();
    assert_eq!(message.payload(), Some(value));
    assert_eq!(message.key(), Some(&b"host-1"[..]));
    let header = message.headers().unwrap().get(0);
    assert_eq!((header.key, header.value), ("source", Some(&b"syslog"[..])));
    consumer.commit_message(&message, CommitMode::Sync).unwrap();

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        committed.find_partition(&topic, 0).unwrap().offset(),
        Offset::Offset(1)
    );
    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .unwrap();
}

fn registry() -> SrSettings {
    let url = std::env::var("FIRSTMILE_SCHEMA_REGISTRY__URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081".into());
    SrSettings::new(url)
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn register_fetch_and_round_trip_an_avro_schema() {
    let sr = registry();
    let topic = unique("avro");
    let schema = r#"{"type":"record","name":"Login","namespace":"test.firstmile",
        "fields":[{"name":"user","type":"string"},{"name":"ok","type":"boolean"}]}"#;
    let supplied = SuppliedSchema::new(
        Some("test.firstmile.Login".into()),
        SchemaType::Avro,
        schema.into(),
    );
    let registered = post_schema(&sr, format!("{topic}-value"), supplied.clone())
        .await
        .unwrap();
    let fetched = get_schema_by_id(registered.id, &sr).await.unwrap();
    let as_json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    assert_eq!(as_json(&fetched.schema), as_json(schema));

    // Registering the same schema again returns the same id.
    let again = post_schema(&sr, format!("{topic}-value"), supplied.clone())
        .await
        .unwrap();
    assert_eq!(again.id, registered.id);

    let encoder = AvroEncoder::new(sr.clone());
    let bytes = encoder
        .encode(
            vec![
                ("user", Value::String("alice".into())),
                ("ok", Value::Boolean(false)),
            ],
            SubjectNameStrategy::TopicNameStrategy(topic.clone(), false),
        )
        .await
        .unwrap();
    // Confluent wire format: magic byte 0, then the schema id big-endian.
    assert_eq!(bytes[0], 0);
    assert_eq!(
        u32::from_be_bytes(bytes[1..5].try_into().unwrap()),
        registered.id
    );
    let decoded = AvroDecoder::new(sr).decode(Some(&bytes)).await.unwrap();
    assert_eq!(
        decoded.value,
        Value::Record(vec![
            ("user".into(), Value::String("alice".into())),
            ("ok".into(), Value::Boolean(false)),
        ])
    );
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn the_registry_refuses_an_incompatible_schema() {
    let sr = registry();
    let subject = format!("{}-value", unique("compat"));
    let v1 = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"}]}"#;
    // A new required field without a default cannot read old data: not BACKWARD.
    let v2 = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"b","type":"long"}]}"#;
    let supplied = |s: &str| SuppliedSchema::new(None, SchemaType::Avro, s.into());
    post_schema(&sr, subject.clone(), supplied(v1))
        .await
        .unwrap();
    let err = post_schema(&sr, subject.clone(), supplied(v2))
        .await
        .unwrap_err();
    assert!(
        err.error.contains("409") || err.error.to_lowercase().contains("incompatible"),
        "{err:?}"
    );
    // With a default it is compatible.
    let v3 = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"b","type":"long","default":0}]}"#;
    post_schema(&sr, subject, supplied(v3)).await.unwrap();
}
