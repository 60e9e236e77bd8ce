//! Real log files through every receiver into the real broker, read back:
//! byte-identical records, one per line, in order, with their headers.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use firstmile_config::SyslogProtocol;
use firstmile_kafka::raw::headers;
use firstmile_metrics::Kind;
use rdkafka::message::Message;
use tokio::io::AsyncWriteExt;

fn assert_same_events(system: &str, got: &[rdkafka::message::OwnedMessage]) {
    let expected = expected_lines(&std::fs::read(loghub(system)).unwrap());
    let values = values(got);
    assert_eq!(values.len(), expected.len(), "{system}: record count");
    for (i, (v, e)) in values.iter().zip(&expected).enumerate() {
        assert_eq!(v, e, "{system}: record {i} differs");
    }
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn http_lands_each_line_unmodified_plain_gzip_and_zstd() {
    let mut config = base_config();
    let linux = add_source(&mut config, "linux", 3).await;
    let openssh = add_source(&mut config, "openssh", 3).await;
    let apache = add_source(&mut config, "apache", 3).await;
    let (receivers, _metrics) = start(&config).await;
    let url = |source: &str| {
        format!(
            "http://{}/v1/sources/{source}/events",
            receivers.http.unwrap()
        )
    };
    let client = reqwest::Client::new();

    let body = std::fs::read(loghub("Linux")).unwrap();
    let r = client
        .post(url("linux"))
        .header("content-type", "text/plain")
        .query(&[("host", "server-7")])
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"accepted":2000}"#);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&std::fs::read(loghub("OpenSSH")).unwrap())
        .unwrap();
    let r = client
        .post(url("openssh"))
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Apache_2k.log ends without a final line terminator: the last line counts.
    let zst = zstd::encode_all(&std::fs::read(loghub("Apache")).unwrap()[..], 3).unwrap();
    let r = client
        .post(url("apache"))
        .header("content-encoding", "zstd")
        .body(zst)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let got = read_topic(&linux);
    assert_same_events("Linux", &got);
    // One stream, one key: every record in one partition, so in order.
    let first = &got[0];
    assert!(got.iter().all(|m| m.partition() == first.partition()));
    assert_eq!(first.key(), Some(&b"linux/server-7"[..]));
    assert_eq!(header(first, headers::SOURCE), Some(&b"linux"[..]));
    assert_eq!(header(first, headers::RECEIVER), Some(&b"http"[..]));
    assert_eq!(
        header(first, headers::CONTENT_TYPE),
        Some(&b"text/plain"[..])
    );
    assert!(header(first, headers::REMOTE_ADDR)
        .unwrap()
        .starts_with(b"127.0.0.1:"));
    let received_at = std::str::from_utf8(header(first, headers::RECEIVED_AT).unwrap()).unwrap();
    let t = humantime::parse_rfc3339(received_at).unwrap();
    let ts = first.timestamp().to_millis().unwrap();
    let t_ms = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert_eq!(ts, t_ms, "record timestamp is the received_at instant");

    assert_same_events("OpenSSH", &read_topic(&openssh));
    assert_same_events("Apache", &read_topic(&apache));
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn syslog_tcp_newline_and_octet_counting_and_udp() {
    let mut config = base_config();
    let hdfs = add_source(&mut config, "hdfs", 3).await;
    let zookeeper = add_source(&mut config, "zookeeper", 3).await;
    let spark = add_source(&mut config, "spark", 3).await;
    add_syslog(&mut config, "tcp-lines", SyslogProtocol::Tcp, "hdfs");
    add_syslog(&mut config, "tcp-octets", SyslogProtocol::Tcp, "zookeeper");
    add_syslog(&mut config, "udp", SyslogProtocol::Udp, "spark");
    let (receivers, metrics) = start(&config).await;

    // Newline framing, the whole file in odd-sized writes.
    let mut tcp = tokio::net::TcpStream::connect(receivers.syslog["tcp-lines"])
        .await
        .unwrap();
    for chunk in std::fs::read(loghub("HDFS")).unwrap().chunks(777) {
        tcp.write_all(chunk).await.unwrap();
    }
    tcp.shutdown().await.unwrap();

    // Octet counting: `len SP msg`; a message may hold any bytes, even LF.
    let zk_lines = expected_lines(&std::fs::read(loghub("Zookeeper")).unwrap());
    let mut framed = Vec::new();
    for line in &zk_lines {
        framed.extend_from_slice(format!("{} ", line.len()).as_bytes());
        framed.extend_from_slice(line);
    }
    let mut tcp = tokio::net::TcpStream::connect(receivers.syslog["tcp-octets"])
        .await
        .unwrap();
    tcp.write_all(&framed).await.unwrap();
    tcp.shutdown().await.unwrap();

    // UDP: one datagram per event, paced so the kernel's buffer keeps up.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let spark_lines = expected_lines(&std::fs::read(loghub("Spark")).unwrap());
    for (i, line) in spark_lines.iter().enumerate() {
        udp.send_to(line, receivers.syslog["udp"]).await.unwrap();
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    // Syslog has no acknowledgment: wait until the metrics say all were sent.
    let want = [("syslog-tcp", 4000u64), ("syslog-udp", 2000)];
    for _ in 0..200 {
        let text = metrics.encode();
        if want.iter().all(|(id, n)| {
            sample(
                &text,
                "firstmile_component_sent_events_total",
                &[("component_id", id)],
            ) >= *n
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_same_events("HDFS", &read_topic(&hdfs));
    assert_same_events("Zookeeper", &read_topic(&zookeeper));
    let got = read_topic(&spark);
    assert_same_events("Spark", &got);
    assert_eq!(header(&got[0], headers::RECEIVER), Some(&b"syslog-udp"[..]));
    assert_eq!(got[0].key(), Some(&b"spark/127.0.0.1"[..]));
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}

/// More small events in one request than the in-flight budget holds: the
/// request settles its own older deliveries and succeeds (it was refused
/// with 503 although Kafka kept up).
#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn an_http_request_larger_than_the_in_flight_budget_is_accepted() {
    let mut config = base_config();
    config.ingest.max_in_flight_bytes = 64 << 10; // 64 events of up to 1 KiB
    let topic = add_source(&mut config, "linux", 1).await;
    let (receivers, _metrics) = start(&config).await;
    let lines: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/sources/linux/events",
            receivers.http.unwrap()
        ))
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"accepted":5000}"#);
    assert_eq!(read_topic(&topic).len(), 5000);
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}

/// More small events than the in-flight budget holds: produce settles
/// deliveries while it waits for budget (it once waited forever).
#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn produce_outlasts_a_full_in_flight_budget() {
    let mut config = base_config();
    config.ingest.max_in_flight_bytes = 64 << 10; // 64 events of up to 1 KiB
    let topic = add_source(&mut config, "linux", 1).await;
    let shared = firstmile_receivers::Shared::new(&config).unwrap();
    let metrics = firstmile_metrics::Metrics::new().component(Kind::Receiver, "file");
    let lines: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        firstmile_receivers::produce(
            shared,
            metrics,
            "linux",
            "h",
            "stdin",
            lines.as_bytes(),
            |_| {},
        ),
    )
    .await
    .expect("produce finished: no deadlock on a full budget")
    .unwrap();
    assert_eq!((report.events, report.stored), (5000, 5000));
    assert_eq!(read_topic(&topic).len(), 5000);
    delete_topics(&config).await;
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn produce_sends_a_file_with_multiline_joining() {
    let mut config = base_config();
    let android = add_source(&mut config, "android", 3).await;
    let java = add_source(&mut config, "java", 1).await;
    config.sources.get_mut("java").unwrap().multiline = Some(firstmile_config::Multiline {
        start: Some(r"^\d{4}-\d{2}-\d{2} ".into()),
        ..Default::default()
    });
    let shared = firstmile_receivers::Shared::new(&config).unwrap();
    let metrics = firstmile_metrics::Metrics::new().component(Kind::Receiver, "file");

    let file = tokio::fs::File::open(loghub("Android")).await.unwrap();
    let report = firstmile_receivers::produce(
        shared.clone(),
        metrics.clone(),
        "android",
        "laptop",
        "file:Android_2k.log",
        file,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((report.events, report.stored), (2000, 2000));
    let got = read_topic(&android);
    assert_same_events("Android", &got);
    assert_eq!(got[0].key(), Some(&b"android/laptop"[..]));
    assert_eq!(header(&got[0], headers::RECEIVER), Some(&b"file"[..]));

    let trace = "2026-01-01 10:00:00 ERROR failed\r\njava.lang.RuntimeException: x\r\n\tat a.B(B.java:1)\r\n2026-01-01 10:00:01 INFO ok\r\n";
    let report = firstmile_receivers::produce(
        shared,
        metrics,
        "java",
        "h",
        "stdin",
        trace.as_bytes(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.stored, 2);
    assert_eq!(
        values(&read_topic(&java)),
        vec![
            b"2026-01-01 10:00:00 ERROR failed\r\njava.lang.RuntimeException: x\r\n\tat a.B(B.java:1)".to_vec(),
            b"2026-01-01 10:00:01 INFO ok".to_vec(),
        ]
    );

    let err = firstmile_receivers::produce(
        firstmile_receivers::Shared::new(&config).unwrap(),
        firstmile_metrics::Metrics::new().component(Kind::Receiver, "file"),
        "nope",
        "h",
        "stdin",
        &b"x\n"[..],
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("unknown source `nope`"));
    delete_topics(&config).await;
}
