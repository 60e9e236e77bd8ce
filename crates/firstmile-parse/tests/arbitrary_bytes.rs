//! Property: no input makes a parser panic. Random bytes, and real Loghub lines
//! with random bytes (including pieces of multi-byte UTF-8) spliced in, go
//! through every parser; a deterministic generator keeps failures reproducible.

use std::collections::BTreeMap;
use std::path::PathBuf;

use firstmile_parse::{access, apache, cef, json, kv, rfc5424, syslog, Grok, TimestampParser};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Samples of the other formats, to mutate like the real lines.
const SAMPLES: &[&str] = &[
    r#"<165>1 2003-10-11T22:14:15.003Z host app - ID47 [id@1 a="x"y" b="2"] message"#,
    r#"203.0.113.9 - alice [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.1" 200 2326 "-" "curl/8""#,
    r#"{"a":{"b":[1,2,{"c":null}]},"d":"eé"}"#,
    r#"level=info msg="a "b" c" n=3"#,
    r"CEF:0|V|P\|x|1|100|name|5|src=10.0.0.1 msg=a\=b c suser=x",
];

fn real_lines() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/loghub");
    ["Linux", "OpenSSH", "Apache", "Zookeeper", "Hadoop"]
        .iter()
        .flat_map(|s| {
            let raw = std::fs::read(dir.join(s).join(format!("{s}_2k.log"))).unwrap();
            raw.split(|&b| b == b'\n')
                .take(200)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .chain(
            SAMPLES
                .iter()
                .flat_map(|s| std::iter::repeat_n(s.as_bytes().to_vec(), 200)),
        )
        .collect()
}

#[test]
fn parsers_never_panic_on_arbitrary_bytes() {
    let grok = Grok::compile(
        r"%{TIMESTAMP_ISO8601:timestamp} %{LOGLEVEL:log.level} \[%{DATA:t}\] %{JAVACLASS:c}: %{GREEDYDATA:message}",
        &BTreeMap::new(),
    )
    .unwrap();
    let pieces: [&[u8]; 8] = [
        b"<",
        b">",
        b":",
        b"[",
        b"]",
        b" ",
        "é".as_bytes(),
        "日本".as_bytes(),
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let lines = real_lines();
    let mut parsed = 0;
    let mut clock = TimestampParser::new(Some("Europe/Berlin")).unwrap();
    let received_at: jiff::Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
    for i in 0..50_000 {
        let input: Vec<u8> = if i % 2 == 0 {
            let len = rng.below(120);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut line = lines[rng.below(lines.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(line.len() + 1);
                if rng.below(2) == 0 {
                    let piece = pieces[rng.below(pieces.len())];
                    line.splice(at..at, piece.iter().copied());
                } else if at < line.len() {
                    line[at] = rng.next() as u8;
                }
            }
            line
        };
        let text = String::from_utf8_lossy(&input);
        // Timestamps: the whole input, and its first 30 characters.
        let _ = clock.parse(&text, received_at);
        let _ = clock.parse(&text.chars().take(30).collect::<String>(), received_at);
        parsed += usize::from(syslog::parse_rfc3164(&text).is_some());
        parsed += usize::from(apache::parse_error_log(&text).is_some());
        parsed += usize::from(grok.parse(&input).is_some());
        for parse in [
            rfc5424::parse_rfc5424,
            access::parse_access_log,
            json::parse_json,
            kv::parse_kv,
            cef::parse_cef,
        ] {
            parsed += usize::from(parse(&text).is_some());
        }
    }
    // The mutated real lines mostly still parse: the test exercises the
    // parsers' inner paths, not only their first check.
    assert!(parsed > 5_000, "only {parsed} inputs parsed");
}
