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
