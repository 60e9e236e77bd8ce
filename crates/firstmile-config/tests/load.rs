use std::path::Path;

use firstmile_config::{load, ConfigErrors, ConfigFile, Location};

fn from_text(text: &str, env: &[(&str, &str)]) -> Result<firstmile_config::Config, ConfigErrors> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load(
        Some(ConfigFile {
            path: Path::new("firstmile.toml"),
            text,
        }),
        env,
    )
}

fn file_line(loc: &Location) -> usize {
    match loc {
        Location::File { line, .. } => *line,
        other => panic!("expected a file location, got {other:?}"),
    }
}

#[test]
fn empty_file_gives_the_local_stack_defaults() {
    let c = from_text("", &[]).unwrap();
    assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(c.schema_registry.url, "http://127.0.0.1:8081");
    assert_eq!(c.elasticsearch.url, "http://127.0.0.1:9200");
    assert!(c.sources.is_empty());
}

#[test]
fn unknown_key_is_an_error_with_its_path_and_line() {
    let text =
        "[kafka]\nbrokers = \"b:9092\"\n\n[database]\nurl = \"postgresql://x/y\"\npoolsize = 4\n";
    let errors = from_text(text, &[]).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "database.poolsize");
    assert_eq!(file_line(&errors[0].location), 6);
    assert!(
        errors[0].message.contains("unknown field `poolsize`"),
        "{}",
        errors[0].message
    );
}

#[test]
fn every_bad_section_and_entry_is_reported_not_just_the_first() {
    let text = r#"
[kafka]
request_timeout_ms = "soon"

[nonsense]
x = 1

[sources.web]
topic = "raw.web"

[sources.app]
topc = "raw.app"
"#;
    let errors = from_text(text, &[]).unwrap_err().0;
    let keys: Vec<(&str, usize)> = errors
        .iter()
        .map(|e| (e.key.as_str(), file_line(&e.location)))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("kafka.request_timeout_ms", 3),
            ("nonsense", 5),
            ("sources.app.topc", 12),
        ]
    );
}

#[test]
fn syntax_errors_carry_line_numbers() {
    let errors = from_text("[kafka]\nbrokers = \"unterminated\n", &[])
        .unwrap_err()
        .0;
    assert!(!errors.is_empty());
    assert_eq!(file_line(&errors[0].location), 2);
}

#[test]
fn environment_overrides_every_key_with_types_inferred() {
    let c = from_text(
        "[kafka]\nbrokers = \"file:9092\"\n",
        &[
            ("FIRSTMILE_KAFKA__BROKERS", "env:9092"),
            ("FIRSTMILE_KAFKA__REQUEST_TIMEOUT_MS", "1500"),
            // Looks like a number, but the key is a string: kept as the string.
            ("FIRSTMILE_ELASTICSEARCH__PASSWORD", "123456"),
            ("FIRSTMILE_KAFKA__PROPERTIES__SECURITY_PROTOCOL", "SASL_SSL"),
            ("FIRSTMILE_KAFKA__PRODUCER__LINGER_MS", "20"),
            ("FIRSTMILE_SOURCES__WEB__TOPIC", "raw.shared"),
            // Not overrides: no `__`, or another prefix.
            ("FIRSTMILE_CONFIG", "/etc/firstmile.toml"),
            ("FIRSTMILE_STACK_POSTGRES_URL", "postgresql://x"),
            ("HOME", "/root"),
        ],
    )
    .unwrap();
    assert_eq!(c.kafka.brokers, "env:9092");
    assert_eq!(c.kafka.request_timeout_ms, 1500);
    assert_eq!(c.elasticsearch.password.as_deref(), Some("123456"));
    assert_eq!(
        c.kafka
            .properties
            .get("security.protocol")
            .map(String::as_str),
        Some("SASL_SSL")
    );
    assert_eq!(
        c.kafka.producer.get("linger.ms").map(String::as_str),
        Some("20")
    );
    assert_eq!(c.raw_topic("web").as_deref(), Some("raw.shared"));
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let errors = from_text("", &[("FIRSTMILE_KAFKA__REQUEST_TIMEOUT_MS", "soon")])
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "kafka.request_timeout_ms");
    assert_eq!(
        errors[0].location,
        Location::Env {
            var: "FIRSTMILE_KAFKA__REQUEST_TIMEOUT_MS".into()
        }
    );
    let errors = from_text("", &[("FIRSTMILE_KAFAK__BROKERS", "x:1")])
        .unwrap_err()
        .0;
    assert_eq!(errors[0].key, "kafak");
    assert!(matches!(errors[0].location, Location::Env { .. }));
}

#[test]
fn properties_firstmile_manages_are_refused() {
    let text =
        "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"enable.auto.commit\" = true\n";
    let errors = from_text(text, &[]).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "kafka.properties.enable.auto.commit");
    assert_eq!(file_line(&errors[0].location), 3);
}

#[test]
fn invalid_source_topic_names_are_refused() {
    let errors = from_text("[sources.web]\ntopic = \"raw web\"\n", &[])
        .unwrap_err()
        .0;
    assert_eq!(errors[0].key, "sources.web.topic");
    assert_eq!(file_line(&errors[0].location), 2);
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firstmile.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = load(
        Some(ConfigFile {
            path: &path,
            text: &text,
        }),
        Vec::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.sources.contains_key("syslog"));
}

#[test]
fn a_stage_input_is_one_topic_or_a_list_in_the_file_and_the_environment() {
    let c = from_text("", &[("FIRSTMILE_STAGES__ENRICH__INPUT", "my.topic")]).unwrap();
    assert_eq!(c.stages.enrich.input, ["my.topic"]);
    let c = from_text("[stages.enrich]\ninput = \"a\"\n", &[]).unwrap();
    assert_eq!(c.stages.enrich.input, ["a"]);
    let c = from_text("[stages.enrich]\ninput = [\"a\", \"b\"]\n", &[]).unwrap();
    assert_eq!(c.stages.enrich.input, ["a", "b"]);
    let errors = from_text("[stages.enrich]\ninput = 3\n", &[]).unwrap_err();
    assert_eq!(errors.0[0].key, "stages.enrich.input", "{errors}");
}
