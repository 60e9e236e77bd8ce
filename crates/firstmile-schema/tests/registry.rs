//! The registry client against the registry of `scripts/stack`.

use firstmile_schema::{value_subject, Compatibility, Registry, RegistryError};

fn registry(url: Option<&str>) -> Registry {
    let mut config = firstmile_config::SchemaRegistry::default();
    if let Ok(u) = std::env::var("FIRSTMILE_SCHEMA_REGISTRY__URL") {
        config.url = u;
    }
    if let Some(u) = url {
        config.url = u.into();
    }
    Registry::new(&config).unwrap()
}

const SHIPPED: &str = include_str!("../../../topics/events.avsc");

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn check_then_register_then_evolve_the_event_schema() {
    let r = registry(None);
    let subject = value_subject(&firstmile_testkit::unique("schemas"));
    assert_eq!(
        r.check(&subject, SHIPPED).await.unwrap(),
        Compatibility::NotRegistered
    );
    let id = r.register(&subject, SHIPPED).await.unwrap();
    assert_eq!(
        r.register(&subject, SHIPPED).await.unwrap(),
        id,
        "registering again is idempotent"
    );
    assert_eq!(
        r.check(&subject, SHIPPED).await.unwrap(),
        Compatibility::Registered { id, version: 1 }
    );

    // A new optional field with a default: compatible (BACKWARD).
    let mut evolved: serde_json::Value = serde_json::from_str(SHIPPED).unwrap();
    evolved["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "tenant", "type": ["null", "string"], "default": null}));
    let evolved = evolved.to_string();
    assert_eq!(
        r.check(&subject, &evolved).await.unwrap(),
        Compatibility::Compatible { latest_version: 1 }
    );

    // A new required field: readers of the new schema cannot read old events.
    let mut breaking: serde_json::Value = serde_json::from_str(SHIPPED).unwrap();
    breaking["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "tenant", "type": "string"}));
    match r.check(&subject, &breaking.to_string()).await.unwrap() {
        Compatibility::Incompatible {
            latest_version: 1,
            messages,
        } => {
            assert!(messages.join(" ").contains("tenant"), "{messages:?}");
        }
        other => panic!("expected incompatible, got {other:?}"),
    }
    assert!(matches!(
        r.register(&subject, &breaking.to_string()).await,
        Err(RegistryError::Rejected { status: 409, .. })
    ));
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn invalid_schemas_and_outages_are_told_apart() {
    let r = registry(None);
    let err = r
        .check(
            "x-value",
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"nope"}]}"#,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::InvalidSchema(_)), "{err}");
    // Nothing listens on port 9: an outage, to be retried, not bad data.
    let down = registry(Some("http://127.0.0.1:9"));
    let err = down.check("x-value", SHIPPED).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
}

/// A port nothing listens on: the registry is down.
fn down() -> Registry {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    registry(Some(&format!("http://127.0.0.1:{port}")))
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn decoder_fetches_writer_schemas_by_id_and_sorts_bad_values_by_kind() {
    use apache_avro::types::Value;
    use apache_avro::writer::datum::GenericDatumWriter;
    use firstmile_schema::{confluent_frame, Decoder};

    let r = registry(None);
    let subject = value_subject(&firstmile_testkit::unique("decoder"));
    let writer_text = r#"{"type":"record","name":"Beat","fields":[{"name":"n","type":"long"}]}"#;
    let id = r.register(&subject, writer_text).await.unwrap();
    // The reader has a field the writer lacks, with a default.
    let reader = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"Beat","fields":[{"name":"n","type":"long"},
            {"name":"tag","type":"string","default":"none"}]}"#,
    )
    .unwrap();
    let writer = apache_avro::Schema::parse_str(writer_text).unwrap();
    let datum = GenericDatumWriter::builder(&writer)
        .build()
        .unwrap()
        .write_value_to_vec(Value::Record(vec![("n".into(), Value::Long(7))]))
        .unwrap();
    let good = confluent_frame(id, &datum);
    let unknown_id = id + 1_000_000;
    let unknown = confluent_frame(unknown_id, &datum);

    // The registry is down: fetching fails, and nothing is remembered.
    let mut decoder = Decoder::new(down(), reader.clone());
    assert_eq!(decoder.missing([&good[..]]), vec![id]);
    assert!(matches!(
        decoder.fetch(id).await,
        Err(RegistryError::Unavailable(_))
    ));
    assert_eq!(decoder.missing([&good[..]]), vec![id]);

    let mut decoder = Decoder::new(registry(None), reader);
    let mut ids = decoder.missing([&good[..], &unknown[..], &good[..], b"plain text"]);
    ids.sort();
    assert_eq!(ids, vec![id, unknown_id]);
    for id in ids {
        decoder.fetch(id).await.unwrap();
    }
    assert!(decoder.missing([&good[..], &unknown[..]]).is_empty());
    assert_eq!(
        decoder.decode(&good).unwrap(),
        Value::Record(vec![
            ("n".into(), Value::Long(7)),
            ("tag".into(), Value::String("none".into()))
        ])
    );
    assert_eq!(decoder.decode(&unknown).unwrap_err().kind, "unknown_schema");
    assert_eq!(decoder.decode(b"plain text").unwrap_err().kind, "not_avro");
    let truncated = &good[..good.len() - 1];
    assert_eq!(decoder.decode(truncated).unwrap_err().kind, "avro_decode");
}

/// Events written with exactly the event schema are read directly, other
/// versions through resolution; both give the same event, and bad data keeps
/// its dead-letter kind (the bytes: `avro_decode`; the value: `invalid_event`).
#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn decode_event_gives_the_same_event_from_the_exact_schema_and_an_older_one() {
    use apache_avro::types::Value;
    use apache_avro::writer::datum::GenericDatumWriter;
    use firstmile_event::{event_schema, Event, Origin, EVENT_SCHEMA};
    use firstmile_schema::{confluent_frame, Decoder};

    let r = registry(None);
    let subject = value_subject(&firstmile_testkit::unique("events"));
    let exact_id = r.register(&subject, EVENT_SCHEMA).await.unwrap();
    // An older writer: no `threat`, `labels`, `fields`.
    let mut older: serde_json::Value = serde_json::from_str(EVENT_SCHEMA).unwrap();
    older["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| !["threat", "labels", "fields"].contains(&f["name"].as_str().unwrap()));
    let older_text = older.to_string();
    let older_subject = value_subject(&firstmile_testkit::unique("events-older"));
    let older_id = r.register(&older_subject, &older_text).await.unwrap();
    assert_ne!(exact_id, older_id);

    let origin = Origin {
        source: "linux".into(),
        topic: "raw.linux".into(),
        partition: 1,
        offset: 42,
    };
    let mut event = Event::new(origin, "2026-11-23T12:00:00Z".parse().unwrap(), "1");
    event.message = Some("hello".into());
    event.source.ip = Some("10.0.0.1".parse().unwrap());
    let exact = confluent_frame(exact_id, &event.to_avro_datum());
    let Value::Record(mut fields) = event.to_avro() else {
        unreachable!()
    };
    fields.retain(|(n, _)| !["threat", "labels", "fields"].contains(&n.as_str()));
    let older_schema = apache_avro::Schema::parse_str(&older_text).unwrap();
    let older_datum = GenericDatumWriter::builder(&older_schema)
        .build()
        .unwrap()
        .write_value_to_vec(Value::Record(fields))
        .unwrap();
    let resolved = confluent_frame(older_id, &older_datum);
    // An IP that is not one: valid Avro, not a valid event.
    let mut bad_ip = event.clone();
    bad_ip.source.ip = None;
    let Value::Record(mut bad_fields) = bad_ip.to_avro() else {
        unreachable!()
    };
    for (name, value) in bad_fields.iter_mut() {
        if name == "source" {
            let Value::Record(source) = value else {
                unreachable!()
            };
            source[0].1 = Value::Union(1, Box::new(Value::String("not-an-ip".into())));
        }
    }
    let schema = event_schema();
    let bad_value = confluent_frame(
        exact_id,
        &GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(Value::Record(bad_fields))
            .unwrap(),
    );

    let mut decoder = Decoder::new(registry(None), event_schema());
    for id in decoder.missing([&exact[..], &resolved[..]]) {
        decoder.fetch(id).await.unwrap();
    }
    assert_eq!(decoder.decode_event(&exact).unwrap(), event);
    assert_eq!(decoder.decode_event(&resolved).unwrap(), event);
    let truncated = &exact[..exact.len() - 3];
    assert_eq!(
        decoder.decode_event(truncated).unwrap_err().kind,
        "avro_decode"
    );
    let err = decoder.decode_event(&bad_value).unwrap_err();
    assert_eq!(err.kind, "invalid_event");
    assert!(err.message.contains("not-an-ip"), "{}", err.message);
    assert_eq!(decoder.decode_event(b"text").unwrap_err().kind, "not_avro");
}
