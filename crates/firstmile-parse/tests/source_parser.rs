//! A source's parser from raw bytes to events, and the `dlq` kind of every
//! kind of bad input.

use firstmile_config::{Parse, ParseFormat};
use firstmile_event::Origin;
use firstmile_parse::{ParserConfigError, SourceParser};

fn origin() -> Origin {
    Origin {
        source: "s".into(),
        topic: "raw.s".into(),
        partition: 0,
        offset: 42,
    }
}

fn received() -> jiff::Timestamp {
    "2026-11-23T12:00:00Z".parse().unwrap()
}

fn parser(format: ParseFormat, tweak: impl FnOnce(&mut Parse)) -> SourceParser {
    let mut config = Parse {
        format,
        ..Default::default()
    };
    tweak(&mut config);
    SourceParser::new(&config).unwrap()
}

fn kind(p: &mut SourceParser, raw: &[u8]) -> &'static str {
    p.parse(raw, origin(), received(), "test")
        .unwrap_err()
        .kind
        .as_str()
}

#[test]
fn syslog_in_a_named_zone_with_a_dataset() {
    let mut p = parser(ParseFormat::Syslog, |c| {
        c.timezone = Some("Europe/Berlin".into());
        c.dataset = Some("linux.auth".into());
    });
    let e = p
        .parse(b"Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; rhost=218.188.2.4", origin(), received(), "1.2.3")
        .unwrap();
    // 15:16:01 CEST is 13:16:01 UTC; the year is inferred from receipt.
    assert_eq!(e.timestamp.to_string(), "2026-06-14T13:16:01Z");
    assert_eq!(e.received_at, received());
    assert_eq!(e.event.dataset.as_deref(), Some("linux.auth"));
    assert_eq!(e.process.pid, Some(19939));
    assert_eq!(e.pipeline_version, "1.2.3");
    assert_eq!(e.event_id, firstmile_event::event_id("raw.s", 0, 42));
}

#[test]
fn json_with_renamed_fields_and_grok_with_definitions() {
    let mut p = parser(ParseFormat::Json, |c| {
        c.rename.insert("msg".into(), "message".into());
        c.rename.insert("ts".into(), "timestamp".into());
    });
    let e = p
        .parse(
            br#"{"ts":"2026-11-20T08:00:00+01:00","msg":"hi","user":{"id":7}}"#,
            origin(),
            received(),
            "v",
        )
        .unwrap();
    assert_eq!(e.message.as_deref(), Some("hi"));
    assert_eq!(e.timestamp.to_string(), "2026-11-20T07:00:00Z");
    assert_eq!(e.fields.get("user.id").map(String::as_str), Some("7"));

    let mut p = parser(ParseFormat::Grok, |c| {
        c.pattern_definitions
            .insert("BLOCK".into(), "blk_-?[0-9]+".into());
        c.patterns = vec![
            "%{NONNEGINT:date} %{NONNEGINT:time} %{INT:process.pid} %{LOGLEVEL:log.level} %{NOTSPACE:log.logger}: %{GREEDYDATA:message}".into(),
            "%{BLOCK:block} %{GREEDYDATA:message}".into(),
        ];
    });
    let e = p
        .parse(
            b"081109 203615 148 INFO dfs.DataNode: ok",
            origin(),
            received(),
            "v",
        )
        .unwrap();
    assert_eq!(e.timestamp.to_string(), "2008-11-09T20:36:15Z");
    assert_eq!(e.log.logger.as_deref(), Some("dfs.DataNode"));
    let e = p
        .parse(b"blk_-12 replicated", origin(), received(), "v")
        .unwrap();
    assert_eq!(e.fields.get("block").map(String::as_str), Some("blk_-12"));
}

#[test]
fn message_patterns_pull_fields_out_of_the_message() {
    let mut p = parser(ParseFormat::Syslog, |c| {
        c.message_patterns = vec![
            "%{DATA:event.action} for (?:invalid user )?%{USERNAME:user.name} from %{IP:source.ip} port %{INT:source.port} ssh2".into(),
        ];
    });
    let e = p
        .parse(b"Dec 10 07:07:38 LabSZ sshd[24206]: Failed password for invalid user test9 from 52.80.34.196 port 36060 ssh2", origin(), received(), "v")
        .unwrap();
    assert_eq!(e.event.action.as_deref(), Some("Failed password"));
    assert_eq!(e.user.name.as_deref(), Some("test9"));
    assert_eq!(e.source.ip, Some("52.80.34.196".parse().unwrap()));
    assert_eq!(e.source.port, Some(36060));
    // The message itself stays; a message no pattern matches is not an error.
    assert!(e.message.unwrap().starts_with("Failed password"));
    let e = p
        .parse(
            b"Dec 10 07:07:38 LabSZ sshd[24206]: Connection closed",
            origin(),
            received(),
            "v",
        )
        .unwrap();
    assert_eq!(e.source.ip, None);
}

#[test]
fn bad_input_gets_the_right_dlq_kind() {
    let mut syslog = parser(ParseFormat::Syslog, |_| {});
    assert_eq!(kind(&mut syslog, b""), "empty");
    assert_eq!(kind(&mut syslog, b"   \t"), "empty");
    assert_eq!(
        kind(&mut syslog, b"Jun 14 15:1"),
        "no_match",
        "a truncated line"
    );
    assert_eq!(
        kind(&mut syslog, b"Jun 14 15:16:01 host app: caf\xe9"),
        "invalid_utf8"
    );
    let mut line = b"Jun 14 15:16:01 host app: ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 1 << 20));
    assert_eq!(kind(&mut syslog, &line), "too_large", "a 1 MB line");

    let mut json = parser(ParseFormat::Json, |_| {});
    assert_eq!(
        kind(&mut json, br#"{"process":{"pid":"twelve"}}"#),
        "invalid_field"
    );
    assert_eq!(
        kind(&mut json, br#"{"source":{"port":99999}}"#),
        "invalid_field"
    );
    assert_eq!(
        kind(&mut json, br#"{"timestamp":"last tuesday"}"#),
        "invalid_timestamp"
    );
    assert_eq!(kind(&mut json, br#"["not","an","object"]"#), "no_match");
    let failure = json
        .parse(
            br#"{"process":{"pid":"twelve"}}"#,
            origin(),
            received(),
            "v",
        )
        .unwrap_err();
    assert!(failure.message.contains("process.pid"), "{failure}");
}

#[test]
fn configuration_errors_are_refused_up_front() {
    let grok = |patterns: &[&str]| Parse {
        format: ParseFormat::Grok,
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    };
    assert!(matches!(
        SourceParser::new(&grok(&[])),
        Err(ParserConfigError::NoPatterns)
    ));
    let err = SourceParser::new(&grok(&["%{INT:a}", "(?=x)x"])).unwrap_err();
    assert!(
        matches!(err, ParserConfigError::Pattern { index: 1, .. }),
        "{err}"
    );
    let zone = Parse {
        timezone: Some("Nowhere/Land".into()),
        ..Default::default()
    };
    assert!(matches!(
        SourceParser::new(&zone),
        Err(ParserConfigError::Zone(_))
    ));
}
