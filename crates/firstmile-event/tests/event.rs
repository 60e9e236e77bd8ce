use firstmile_event::{event_id, from_fields, Event, Origin};

fn origin(offset: i64) -> Origin {
    Origin {
        source: "linux".into(),
        topic: "raw.linux".into(),
        partition: 2,
        offset,
    }
}

#[test]
fn the_same_raw_record_always_gets_the_same_id_and_others_do_not() {
    assert_eq!(event_id("raw.linux", 2, 7), event_id("raw.linux", 2, 7));
    assert_ne!(event_id("raw.linux", 2, 7), event_id("raw.linux", 2, 8));
    assert_ne!(event_id("raw.linux", 2, 7), event_id("raw.linux", 1, 7));
    assert_ne!(event_id("raw.linux", 2, 7), event_id("raw.linu", 2, 7));
    // Fixed for ever: sinks key rows and documents by it.
    assert_eq!(
        event_id("raw.linux", 2, 7).to_string(),
        event_id("raw.linux", 2, 7).hyphenated().to_string()
    );
    assert_eq!(event_id("raw.linux", 2, 7).get_version_num(), 5);
}

#[test]
fn fields_map_to_typed_places_and_the_rest_is_kept() {
    let received = "2026-11-23T12:00:00Z".parse().unwrap();
    let mut e = Event::new(origin(7), received, "0.0.0");
    from_fields(
        &mut e,
        vec![
            ("host.name".into(), "combo".into()),
            ("process.name".into(), "sshd".into()),
            ("process.pid".into(), "19939".into()),
            ("source.ip".into(), "218.188.2.4".into()),
            ("http.response.status_code".into(), "404".into()),
            ("message".into(), "authentication failure".into()),
            ("ruser".into(), "".into()),
            ("timestamp".into(), "Jun 14 15:16:01".into()),
        ],
    )
    .unwrap();
    assert_eq!(e.host.name.as_deref(), Some("combo"));
    assert_eq!(e.process.pid, Some(19939));
    assert_eq!(e.source.ip, Some("218.188.2.4".parse().unwrap()));
    assert_eq!(e.http.response_status_code, Some(404));
    assert_eq!(e.fields.get("ruser").map(String::as_str), Some(""));
    assert!(!e.fields.contains_key("timestamp"));

    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["@timestamp"], "2026-11-23T12:00:00Z");
    assert_eq!(json["process"]["pid"], 19939);
    assert_eq!(json["origin"]["topic"], "raw.linux");
    assert_eq!(json["event_id"], e.event_id.to_string());
    assert!(json["destination"].as_object().unwrap().is_empty());
}

#[test]
fn wrong_types_are_errors_naming_the_field() {
    let received = "2026-11-23T12:00:00Z".parse().unwrap();
    for (field, value, expected) in [
        ("process.pid", "abc", "an integer"),
        ("source.ip", "999.1.1.1", "an IP address"),
        ("source.port", "70000", "a port number"),
        ("http.response.status_code", "2xx", "an HTTP status"),
    ] {
        let mut e = Event::new(origin(1), received, "0.0.0");
        let err = from_fields(&mut e, vec![(field.into(), value.into())]).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.value.as_str(), err.expected),
            (field, value, expected)
        );
        assert_eq!(err.kind(), "invalid_field");
    }
}

#[test]
fn events_are_valid_avro_of_the_shipped_schema_and_round_trip() {
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use firstmile_event::event_schema;

    let schema = event_schema();
    let received = "2026-11-23T12:00:00.123456Z".parse().unwrap();
    let bare = Event::new(origin(3), received, "0.0.0");
    let mut full = full_event();

    for event in [&bare, &full] {
        let value = event.to_avro();
        assert!(
            value.validate(&schema),
            "not valid against events.avsc: {value:?}"
        );
        let writer = GenericDatumWriter::builder(&schema).build().unwrap();
        let bytes = writer.write_value_to_vec(value.clone()).unwrap();
        let reader = GenericDatumReader::builder(&schema).build().unwrap();
        let back = reader.read_value(&mut &bytes[..]).unwrap();
        assert_eq!(back, value);
        assert_eq!(&Event::from_avro(&back).unwrap(), event);
        // The direct writer and reader the stages and sinks use, each against
        // apache_avro's: the direct reader reads apache_avro's bytes, and
        // apache_avro reads the direct writer's bytes, into the same event.
        // Bytes are compared only where no map has two entries: apache_avro
        // writes a map's entries in hash order, which changes run to run.
        let direct = event.to_avro_datum();
        assert_eq!(&Event::from_avro_datum(&bytes).unwrap(), event);
        assert_eq!(reader.read_value(&mut &direct[..]).unwrap(), value);
        if event.labels.len() < 2 && event.fields.len() < 2 {
            assert_eq!(direct, bytes, "the same bytes as apache_avro's writer");
        }
    }
    // The same bytes as apache_avro's writer for an event with every part
    // set and no map of two entries.
    let mut single = full.clone();
    single.fields.retain(|name, _| name == "a");
    let value = single.to_avro();
    let writer = GenericDatumWriter::builder(&schema).build().unwrap();
    assert_eq!(
        single.to_avro_datum(),
        writer.write_value_to_vec(value).unwrap()
    );
    // Maps of several entries (apache_avro writes them in hash order): read
    // back, the direct writer's datum is the same event.
    for i in 0..20 {
        full.labels.insert(format!("label{i}"), format!("v{i}"));
        full.fields.insert(format!("field{i}"), "é ".repeat(i));
    }
    let datum = full.to_avro_datum();
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    let back = reader.read_value(&mut &datum[..]).unwrap();
    assert_eq!(Event::from_avro(&back).unwrap(), full);
    assert_eq!(Event::from_avro_datum(&datum).unwrap(), full);
    assert_eq!(full.to_avro_datum(), datum, "deterministic");
}

/// An event with every optional part set.
fn full_event() -> Event {
    use firstmile_event::{Asset, AutonomousSystem, Geo, GeoPoint, Threat, ThreatIndicator};
    let mut e = Event::new(
        origin(4),
        "2026-11-23T12:00:00.5Z".parse().unwrap(),
        "1.0.0",
    );
    from_fields(
        &mut e,
        vec![
            ("message".into(), "Failed password for root".into()),
            ("source.ip".into(), "81.2.69.142".into()),
            ("source.port".into(), "22".into()),
            ("destination.ip".into(), "2001:db8::1".into()),
            ("process.pid".into(), "7".into()),
            ("event.severity".into(), "-3".into()),
            ("http.response.status_code".into(), "503".into()),
            ("a".into(), "1".into()),
            ("b".into(), "ü".into()),
        ],
    )
    .unwrap();
    e.destination.geo = Some(Geo {
        city_name: None,
        country_iso_code: Some("SE".into()),
        location: Some(GeoPoint { lat: 1.5, lon: 2.0 }),
    });
    e.destination.autonomous_system = Some(AutonomousSystem {
        number: 29518,
        organization_name: Some("Bredband2".into()),
    });
    e.source.asset = Some(Asset {
        owner: "x".into(),
        zone: "y".into(),
    });
    e.threat = Some(Threat {
        indicator: ThreatIndicator {
            kind: "ipv4-addr".into(),
            matched: "81.2.69.142".into(),
            matched_field: "source.ip".into(),
        },
    });
    e.labels.insert("team".into(), "sre".into());
    e
}

/// Damaged data (every truncation, every byte changed in three ways): the
/// direct reader never panics and agrees with apache_avro + `from_avro`,
/// which is what decodes data of other schema versions.
#[test]
fn the_direct_reader_agrees_with_apache_avro_on_damaged_data() {
    use apache_avro::reader::datum::GenericDatumReader;
    let schema = firstmile_event::event_schema();
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    // Compared as bytes: a damaged double can be NaN, which is not equal to itself.
    let generic = |d: &[u8]| -> Option<Vec<u8>> {
        let value = reader.read_value(&mut &d[..]).ok()?;
        Event::from_avro(&value).ok().map(|e| e.to_avro_datum())
    };
    let direct = |d: &[u8]| Event::from_avro_datum(d).ok().map(|e| e.to_avro_datum());
    let datum = full_event().to_avro_datum();
    for len in 0..datum.len() {
        assert_eq!(direct(&datum[..len]), None, "truncated to {len} bytes");
        assert_eq!(generic(&datum[..len]), None, "truncated to {len} bytes");
    }
    let (mut agreed_ok, mut agreed_err) = (0, 0);
    for i in 0..datum.len() {
        for change in [0x01u8, 0x80, 0xff] {
            let mut damaged = datum.clone();
            damaged[i] ^= change;
            let (d, g) = (direct(&damaged), generic(&damaged));
            assert_eq!(d, g, "byte {i} ^ {change:#x}");
            if d.is_some() {
                agreed_ok += 1;
            } else {
                agreed_err += 1;
            }
        }
    }
    // Both outcomes occur, so the comparison above covered each.
    assert!(
        agreed_ok > 0 && agreed_err > 0,
        "{agreed_ok} / {agreed_err}"
    );
}

#[test]
fn an_event_written_with_an_older_schema_reads_with_defaults() {
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::types::Value;
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::Schema;
    use firstmile_event::{event_schema, EVENT_SCHEMA};

    // The shipped schema without `threat`, `labels` and `fields`: an older
    // writer. Schema resolution fills the reader's defaults.
    let mut old: serde_json::Value = serde_json::from_str(EVENT_SCHEMA).unwrap();
    old["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| !["threat", "labels", "fields"].contains(&f["name"].as_str().unwrap()));
    let old = Schema::parse_str(&old.to_string()).unwrap();
    let reader_schema = event_schema();

    let mut event = Event::new(origin(9), "2026-01-01T00:00:00Z".parse().unwrap(), "1");
    event.message = Some("hello".into());
    let Value::Record(mut fields) = event.to_avro() else {
        unreachable!()
    };
    fields.retain(|(n, _)| !["threat", "labels", "fields"].contains(&n.as_str()));
    let bytes = GenericDatumWriter::builder(&old)
        .build()
        .unwrap()
        .write_value_to_vec(Value::Record(fields))
        .unwrap();
    let value = GenericDatumReader::builder(&old)
        .reader_schema(&reader_schema)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap();
    assert_eq!(Event::from_avro(&value).unwrap(), event);
}

#[test]
fn values_of_another_shape_are_errors_not_panics() {
    use apache_avro::types::Value;
    assert!(Event::from_avro(&Value::Null).is_err());
    let mut event = Event::new(origin(1), "2026-01-01T00:00:00Z".parse().unwrap(), "1");
    event.source.port = Some(22);
    let Value::Record(mut fields) = event.to_avro() else {
        unreachable!()
    };
    for (name, value) in fields.iter_mut() {
        if name == "pipeline_version" {
            *value = Value::Long(1);
        }
    }
    let err = Event::from_avro(&Value::Record(fields)).unwrap_err();
    assert!(err.to_string().contains("pipeline_version"), "{err}");
}
