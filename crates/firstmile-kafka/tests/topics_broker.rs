//! `topics plan/apply` against the real broker of `scripts/stack`.

use std::collections::BTreeSet;
use std::path::Path;

use firstmile_kafka::topics::{load_dir, Change, Refusal, TopicAdmin, TopicsError};
use firstmile_testkit::{kafka, unique};

fn declare(dir: &Path, text: &str) {
    std::fs::write(dir.join("topics.toml"), text).unwrap();
}

fn topic_file(a: &str, b: &str, a_partitions: i32, a_retention: i64, extra: &str) -> String {
    format!(
        r#"
[defaults]
replication_factor = 1
cleanup_policy = "delete"
compression = "zstd"
min_insync_replicas = 1

[topic."{a}"]
partitions = {a_partitions}
retention_ms = {a_retention}
{extra}

[topic."{b}"]
partitions = 1
retention_ms = 86400000
"#
    )
}

/// Plans the declarations in `dir` and applies them.
async fn apply_dir(admin: &TopicAdmin, dir: &Path) {
    let plan = admin
        .plan(&load_dir(dir).unwrap(), &BTreeSet::new())
        .await
        .unwrap();
    admin.apply(&plan).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn apply_creates_then_is_idempotent_then_alters_in_place() {
    let admin = TopicAdmin::new(&kafka()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (unique("a"), unique("b"));
    let none = BTreeSet::new();

    // 1. Create both, with the declared configs.
    declare(dir.path(), &topic_file(&a, &b, 2, 3_600_000, ""));
    let specs = load_dir(dir.path()).unwrap();
    let plan = admin.plan(&specs, &none).await.unwrap();
    let created: BTreeSet<&str> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Create(s) => Some(s.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(created, BTreeSet::from([a.as_str(), b.as_str()]));
    admin.apply(&plan).await.unwrap();

    let state = admin.broker_state().await.unwrap();
    let ta = &state[&a];
    assert_eq!(ta.partitions, 2);
    assert_eq!(ta.replication_factor, 1);
    assert_eq!(ta.configs["retention.ms"].value.as_deref(), Some("3600000"));
    assert_eq!(
        ta.configs["compression.type"].value.as_deref(),
        Some("zstd")
    );
    assert_eq!(
        state[&b].configs["retention.ms"].value.as_deref(),
        Some("86400000")
    );

    // 2. A second apply changes nothing.
    let again = admin.plan(&specs, &none).await.unwrap();
    assert!(again.is_empty(), "second plan not empty:\n{again}");
    assert!(again.unchanged.contains(&a) && again.unchanged.contains(&b));

    // 3. A changed retention is altered in place; an override set on the topic
    //    outside the declarations survives the alter (AlterConfigs replaces the
    //    whole set, so the plan must carry it over).
    declare(
        dir.path(),
        &topic_file(
            &a,
            &b,
            2,
            3_600_000,
            &format!("[topic.\"{a}\".config]\n\"segment.ms\" = \"7200000\""),
        ),
    );
    apply_dir(&admin, dir.path()).await;
    declare(dir.path(), &topic_file(&a, &b, 2, 7_200_000, ""));
    let specs = load_dir(dir.path()).unwrap();
    let plan = admin.plan(&specs, &none).await.unwrap();
    match plan.changes.as_slice() {
        [Change::AlterConfigs { topic, changes, .. }] => {
            assert_eq!(topic, &a);
            assert_eq!(
                changes["retention.ms"],
                (Some("3600000".to_string()), "7200000".to_string())
            );
        }
        other => panic!("expected one config change, got {other:?}"),
    }
    admin.apply(&plan).await.unwrap();
    let state = admin.broker_state().await.unwrap();
    assert_eq!(
        state[&a].configs["retention.ms"].value.as_deref(),
        Some("7200000")
    );
    assert_eq!(
        state[&a].configs["segment.ms"].value.as_deref(),
        Some("7200000")
    );
    assert_eq!(
        state[&a].partitions, 2,
        "altering configs must not touch partitions"
    );

    // 4. More partitions are added.
    declare(dir.path(), &topic_file(&a, &b, 3, 7_200_000, ""));
    apply_dir(&admin, dir.path()).await;
    assert_eq!(admin.broker_state().await.unwrap()[&a].partitions, 3);

    // 5. Fewer partitions are refused with a clear error, and nothing else in
    //    the same plan is applied.
    declare(dir.path(), &topic_file(&a, &b, 1, 1_800_000, ""));
    let plan = admin
        .plan(&load_dir(dir.path()).unwrap(), &none)
        .await
        .unwrap();
    assert_eq!(
        plan.refusals,
        vec![Refusal::FewerPartitions {
            topic: a.clone(),
            declared: 1,
            actual: 3
        }]
    );
    let err = admin.apply(&plan).await.unwrap_err();
    assert!(matches!(err, TopicsError::Refused(_)));
    let message = err.to_string();
    assert!(message.contains("cannot remove partitions"), "{message}");
    let state = admin.broker_state().await.unwrap();
    assert_eq!(state[&a].partitions, 3);
    assert_eq!(
        state[&a].configs["retention.ms"].value.as_deref(),
        Some("7200000")
    );

    // 6. Deleting: refused for a declared topic, done for an undeclared one that
    //    --allow-delete names; other undeclared topics are left alone.
    declare(dir.path(), &topic_file(&a, &b, 3, 7_200_000, ""));
    let specs = load_dir(dir.path()).unwrap();
    let refused = admin
        .plan(&specs, &BTreeSet::from([a.clone()]))
        .await
        .unwrap();
    assert_eq!(
        refused.refusals,
        vec![Refusal::DeleteDeclared { topic: a.clone() }]
    );
    let only_a = dir.path().join("topics.toml");
    let text = std::fs::read_to_string(&only_a).unwrap();
    let cut = text.find(&format!("[topic.\"{b}\"]")).unwrap();
    std::fs::write(&only_a, &text[..cut]).unwrap();
    let specs = load_dir(dir.path()).unwrap();
    let plan = admin.plan(&specs, &none).await.unwrap();
    assert!(plan.is_empty() && plan.undeclared.contains(&b), "{plan}");
    let plan = admin
        .plan(&specs, &BTreeSet::from([b.clone()]))
        .await
        .unwrap();
    assert_eq!(plan.changes, vec![Change::Delete { topic: b.clone() }]);
    admin.apply(&plan).await.unwrap();
    let plan = admin
        .plan(&specs, &BTreeSet::from([a.clone()]))
        .await
        .unwrap();
    assert!(!plan.refusals.is_empty());

    // Clean up the declared one too.
    let plan = admin.plan(&[], &BTreeSet::from([a.clone()])).await.unwrap();
    admin.apply(&plan).await.unwrap();
}

#[test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
fn declarations_are_validated_before_talking_to_kafka() {
    let dir = tempfile::tempdir().unwrap();
    declare(
        dir.path(),
        "[topic.\"bad name\"]\npartitions = 1\nreplication_factor = 1\n",
    );
    assert!(load_dir(dir.path())
        .unwrap_err()
        .to_string()
        .contains("not a valid Kafka topic name"));
    declare(dir.path(), "[topic.x]\nreplication_factor = 1\n");
    assert!(load_dir(dir.path())
        .unwrap_err()
        .to_string()
        .contains("`partitions` is not set"));
    declare(
        dir.path(),
        "[topic.x]\npartitions = 1\nreplication_factor = 1\ncompression = \"brotli\"\n",
    );
    assert!(load_dir(dir.path())
        .unwrap_err()
        .to_string()
        .contains("compression `brotli`"));
    declare(
        dir.path(),
        "[topic.x]\npartitions = 1\nreplication_factor = 1\nretension_ms = 5\n",
    );
    assert!(load_dir(dir.path())
        .unwrap_err()
        .to_string()
        .contains("unknown field `retension_ms`"));
}

#[test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
fn the_shipped_topics_are_valid_and_cover_the_pipeline() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topics");
    let specs = load_dir(&dir).unwrap();
    for name in [
        "raw.syslog",
        "raw.nginx",
        "raw.json",
        "parsed",
        "events",
        "dlq",
    ] {
        assert!(specs.iter().any(|s| s.name == name), "{name} not declared");
    }
    let raw = specs.iter().find(|s| s.name == "raw.syslog").unwrap();
    let events = specs.iter().find(|s| s.name == "events").unwrap();
    let retention = |s: &firstmile_kafka::topics::TopicSpec| -> i64 {
        s.configs["retention.ms"].parse().unwrap()
    };
    assert!(
        retention(raw) > retention(events),
        "raw topics are the replay log: keep them longest"
    );
}
