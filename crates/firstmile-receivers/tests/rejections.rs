//! What the receivers refuse, and that they stay healthy afterwards.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use firstmile_config::SyslogProtocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn http_refuses_unknown_sources_bad_tokens_oversize_and_bad_encodings() {
    let mut config = base_config();
    let topic = add_source(&mut config, "secure", 1).await;
    config.sources.get_mut("secure").unwrap().token = Some("s3cret".into());
    config.ingest.http.max_body_bytes = 64 << 10;
    config.ingest.http.max_decompressed_bytes = 256 << 10;
    config.ingest.max_event_bytes = 1000;
    let (receivers, metrics) = start(&config).await;
    let base = format!("http://{}", receivers.http.unwrap());
    let url = |source: &str| format!("{base}/v1/sources/{source}/events");
    let client = reqwest::Client::new();
    let post = |source: &str, token: Option<&str>, body: Vec<u8>| {
        let mut r = client.post(url(source)).body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };

    let r = post("nope", None, b"x\n".to_vec()).await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("unknown source `nope`"));

    assert_eq!(
        post("secure", None, b"x\n".to_vec())
            .await
            .unwrap()
            .status(),
        401
    );
    let r = post("secure", Some("wrong"), b"x\n".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");

    let r = post("secure", Some("s3cret"), vec![b'a'; 100 << 10])
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "body over max_body_bytes");

    // A small gzip body that inflates past the limit: refused, not buffered.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..1024 {
        gz.write_all(&[b'z'; 1024]).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 64 << 10);
    let r = client
        .post(url("secure"))
        .bearer_auth("s3cret")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("decompresses to more than"));

    let r = post(
        "secure",
        Some("s3cret"),
        format!("ok\n{}\n", "y".repeat(1001)).into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        413,
        "one event over max_event_bytes refuses the request"
    );
    assert!(r.text().await.unwrap().contains("event 2 is 1001 bytes"));

    let r = client
        .post(url("secure"))
        .bearer_auth("s3cret")
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = client
        .post(url("secure"))
        .bearer_auth("s3cret")
        .header("content-encoding", "gzip")
        .body("not gzip at all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Nothing refused reached Kafka; a good request still works afterwards.
    let r = post("secure", Some("s3cret"), b"fine 1\r\n\r\nfine 2".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"accepted":2}"#);
    assert_eq!(
        values(&read_topic(&topic)),
        vec![b"fine 1".to_vec(), b"fine 2".to_vec()]
    );

    let text = metrics.encode();
    let rejected = |reason| rejected(&text, reason);
    assert_eq!(rejected("unknown_source"), 1);
    assert_eq!(rejected("unauthorized"), 2);
    assert_eq!(rejected("too_large"), 2);
    assert_eq!(rejected("event_too_large"), 1);
    assert_eq!(rejected("unsupported_encoding"), 1);
    assert_eq!(rejected("bad_encoding"), 1);
    assert_eq!(
        sample(
            &text,
            "firstmile_component_discarded_events_total",
            &[("reason", "empty_line")]
        ),
        1
    );
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn garbage_tcp_framing_closes_that_connection_only() {
    let mut config = base_config();
    let topic = add_source(&mut config, "syslog", 1).await;
    add_syslog(&mut config, "tcp", SyslogProtocol::Tcp, "syslog");
    let (receivers, metrics) = start(&config).await;
    let addr = receivers.syslog["tcp"];

    // Octet counting detected (first byte a digit), then a frame whose length
    // is not a number: the good frame before it lands, the connection closes.
    let mut bad = tokio::net::TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"5 good!12x <34>garbage").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the server closes the connection"
    );

    // A connection with an absurd length is closed as well.
    let mut bad = tokio::net::TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"99999999999999 x").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))));

    // Other connections are unaffected.
    let mut good = tokio::net::TcpStream::connect(addr).await.unwrap();
    good.write_all(b"<13>Nov 23 10:00:00 host app: after\n")
        .await
        .unwrap();
    good.shutdown().await.unwrap();
    for _ in 0..100 {
        if read_topic(&topic).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        values(&read_topic(&topic)),
        vec![
            b"good!".to_vec(),
            b"<13>Nov 23 10:00:00 host app: after".to_vec()
        ]
    );
    assert_eq!(
        sample(
            &metrics.encode(),
            "firstmile_component_rejected_total",
            &[("reason", "framing")]
        ),
        2
    );
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn every_udp_datagram_is_either_stored_or_counted_as_dropped() {
    let mut config = base_config();
    let topic = add_source(&mut config, "flood", 3).await;
    add_syslog(&mut config, "udp", SyslogProtocol::Udp, "flood");
    let (receivers, metrics) = start(&config).await;
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sent = 30_000u64;
    let line = format!("<14>Nov 23 10:00:00 host flood: {}", "x".repeat(400));
    for _ in 0..sent {
        // As fast as the loopback takes them: some may be dropped.
        let _ = sender
            .send_to(line.as_bytes(), receivers.syslog["udp"])
            .await;
    }
    let received = |text: &str| {
        sample(
            text,
            "firstmile_component_received_events_total",
            &[("source", "flood")],
        )
    };
    let settled = |text: &str| {
        sample(
            text,
            "firstmile_component_sent_events_total",
            &[("source", "flood")],
        ) + sample(
            text,
            "firstmile_component_discarded_events_total",
            &[("source", "flood")],
        )
    };
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = metrics.encode();
        let dropped_by_kernel = sample(
            &text,
            "firstmile_component_discarded_events_total",
            &[("reason", "kernel_buffer")],
        );
        if received(&text) + dropped_by_kernel >= sent && settled(&text) >= sent {
            break;
        }
    }
    // Shutdown records the kernel's last drop count: read the metrics after it.
    receivers.shutdown(Duration::from_secs(5)).await;
    let text = metrics.encode();
    let stored = read_topic(&topic).len() as u64;
    let discarded = sample(
        &text,
        "firstmile_component_discarded_events_total",
        &[("source", "flood")],
    );
    assert_eq!(
        stored + discarded,
        sent,
        "stored {stored} + counted drops {discarded}"
    );
    assert_eq!(
        stored,
        sample(
            &text,
            "firstmile_component_sent_events_total",
            &[("source", "flood")]
        )
    );
    delete_topics(&config).await;
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn requests_beyond_the_concurrency_limit_wait_then_get_503() {
    let mut config = base_config();
    add_source(&mut config, "slow", 1).await;
    config.ingest.http.max_concurrent_requests = 1;
    config.ingest.delivery_timeout_ms = 1000;
    let (receivers, metrics) = start(&config).await;
    let addr = receivers.http.unwrap();

    // A sender that announces 100 bytes and sends 10 holds the only slot.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        b"POST /v1/sources/slow/events HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let url = format!("http://{addr}/v1/sources/slow/events");
    let r = reqwest::Client::new()
        .post(&url)
        .body("x\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        sample(
            &metrics.encode(),
            "firstmile_component_rejected_total",
            &[("reason", "busy")]
        ),
        1
    );

    // Once the slow sender goes, the slot is free again.
    drop(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = reqwest::Client::new()
        .post(&url)
        .body("x\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn slow_clients_of_one_source_do_not_stop_the_others() {
    let mut config = base_config();
    add_source(&mut config, "slow", 1).await;
    add_source(&mut config, "steady", 1).await;
    config.ingest.http.max_concurrent_requests = 4;
    config.ingest.http.body_timeout_ms = 3000;
    config.ingest.http.header_timeout_ms = 3000;
    config.ingest.delivery_timeout_ms = 1000;
    let (receivers, metrics) = start(&config).await;
    let addr = receivers.http.unwrap();

    // 20 clients that announce 100 KB and send one byte, and 20 that never
    // finish their headers.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /v1/sources/slow/events HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n0",
        )
        .await
        .unwrap();
        slow.push(s);
    }
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /v1/sources/slow/events HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // Another source's sender is served meanwhile.
    let url = format!("http://{addr}/v1/sources/steady/events");
    let http = reqwest::Client::new();
    for i in 0..5 {
        let r = http
            .post(&url)
            .body(format!("line {i}\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    // Every slow client is answered or cut off within the timeouts.
    for mut s in slow {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer))
            .await
            .expect("a slow client is cut off")
            .ok();
    }
    let text = metrics.encode();
    let rejected = |reason| rejected(&text, reason);
    assert!(rejected("body_timeout") >= 2, "{text}");
    assert_eq!(rejected("body_timeout") + rejected("busy"), 20, "{text}");
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}
