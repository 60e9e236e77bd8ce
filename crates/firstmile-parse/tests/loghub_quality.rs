//! Parse quality on the real Loghub files against the authors' ground truth
//! (`*_structured.csv`): lines parsed, and agreement on the fields both have.
//! Run with `--nocapture` to see the table (published in PARSING.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use firstmile_parse::{apache, syslog, Fields, Grok, TimestampParser};

enum Parser {
    Syslog,
    ApacheError,
    Grok(&'static str),
}

struct System {
    name: &'static str,
    parser: Parser,
    /// Ground-truth column → our field. Our `timestamp` is compared with the
    /// listed columns joined by a space.
    columns: &'static [(&'static str, &'static str)],
    timestamp: &'static [&'static str],
    /// Issue 5's bar for this system (parsed and agreement), if any.
    required: bool,
}

const SYSTEMS: &[System] = &[
    System {
        name: "Linux",
        parser: Parser::Syslog,
        // Loghub calls the host column "Level" in this file.
        columns: &[
            ("Level", "host.name"),
            ("Component", "process.name"),
            ("PID", "process.pid"),
            ("Content", "message"),
        ],
        timestamp: &["Month", "Date", "Time"],
        required: true,
    },
    System {
        name: "OpenSSH",
        parser: Parser::Syslog,
        // …and "Component" the host here; the program is always sshd.
        columns: &[
            ("Component", "host.name"),
            ("Pid", "process.pid"),
            ("Content", "message"),
        ],
        timestamp: &["Date", "Day", "Time"],
        required: true,
    },
    System {
        name: "Apache",
        parser: Parser::ApacheError,
        columns: &[("Level", "log.level"), ("Content", "message")],
        timestamp: &["Time"],
        required: true,
    },
    System {
        name: "HDFS",
        parser: Parser::Grok(
            r"%{NONNEGINT:date} %{NONNEGINT:time} %{NONNEGINT:process.pid} %{LOGLEVEL:log.level} %{NOTSPACE:log.logger}: %{GREEDYDATA:message}",
        ),
        columns: &[
            ("Pid", "process.pid"),
            ("Level", "log.level"),
            ("Component", "log.logger"),
            ("Content", "message"),
        ],
        timestamp: &["Date", "Time"],
        required: true,
    },
    System {
        name: "Zookeeper",
        parser: Parser::Grok(
            r"%{TIMESTAMP_ISO8601:timestamp} - %{LOGLEVEL:log.level} +\[%{DATA:zookeeper.node}:%{DATA:log.logger}@%{INT:log.origin.file.line}\] - %{GREEDYDATA:message}",
        ),
        columns: &[
            ("Level", "log.level"),
            ("Node", "zookeeper.node"),
            ("Component", "log.logger"),
            ("Id", "log.origin.file.line"),
            ("Content", "message"),
        ],
        timestamp: &["Date", "Time"],
        required: true,
    },
    System {
        name: "Hadoop",
        parser: Parser::Grok(
            r"%{TIMESTAMP_ISO8601:timestamp} %{LOGLEVEL:log.level} \[%{DATA:process.thread.name}\] %{JAVACLASS:log.logger}: %{GREEDYDATA:message}",
        ),
        columns: &[
            ("Level", "log.level"),
            ("Process", "process.thread.name"),
            ("Component", "log.logger"),
            ("Content", "message"),
        ],
        timestamp: &["Date", "Time"],
        required: true,
    },
    System {
        name: "Spark",
        parser: Parser::Grok(
            r"%{DATA:date} %{TIME:time} %{LOGLEVEL:log.level} %{JAVACLASS:log.logger}: %{GREEDYDATA:message}",
        ),
        columns: &[
            ("Level", "log.level"),
            ("Component", "log.logger"),
            ("Content", "message"),
        ],
        timestamp: &["Date", "Time"],
        required: true,
    },
    System {
        name: "Android",
        parser: Parser::Grok(
            r"%{DATA:date} %{DATA:time} +%{INT:process.pid} +%{INT:process.thread.id} %{WORD:log.level} %{DATA:log.logger}: %{GREEDYDATA:message}",
        ),
        columns: &[
            ("Pid", "process.pid"),
            ("Tid", "process.thread.id"),
            ("Level", "log.level"),
            ("Component", "log.logger"),
            ("Content", "message"),
        ],
        timestamp: &["Date", "Time"],
        required: false,
    },
    System {
        name: "HealthApp",
        parser: Parser::Grok(
            r"%{NOTSPACE:timestamp}\|%{DATA:log.logger}\|%{INT:process.pid}\|%{GREEDYDATA:message}",
        ),
        columns: &[
            ("Component", "log.logger"),
            ("Pid", "process.pid"),
            ("Content", "message"),
        ],
        timestamp: &["Time"],
        required: false,
    },
    System {
        name: "OpenStack",
        parser: Parser::Grok(
            r"%{NOTSPACE:log.file.name} %{DATA:date} %{DATA:time} %{INT:process.pid} %{LOGLEVEL:log.level} %{NOTSPACE:log.logger} \[%{DATA:openstack.request}\] %{GREEDYDATA:message}",
        ),
        columns: &[
            ("Logrecord", "log.file.name"),
            ("Pid", "process.pid"),
            ("Level", "log.level"),
            ("Component", "log.logger"),
            ("ADDR", "openstack.request"),
            ("Content", "message"),
        ],
        timestamp: &["Date", "Time"],
        required: false,
    },
];

fn data(system: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/loghub")
        .join(system)
}

struct Quality {
    lines: usize,
    parsed: usize,
    compared: usize,
    agreed: usize,
    disagreements: BTreeMap<String, usize>,
    /// Lines whose timestamp became an instant.
    timestamps: usize,
    /// A few (column, ours, theirs) to show.
    examples: Vec<(String, String, String)>,
}

fn measure(system: &System) -> Quality {
    let raw = std::fs::read(data(system.name).join(format!("{}_2k.log", system.name))).unwrap();
    let lines: Vec<&[u8]> = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    let mut truth = csv::Reader::from_path(
        data(system.name).join(format!("{}_2k.log_structured.csv", system.name)),
    )
    .unwrap();
    let headers = truth.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = truth.records().map(Result::unwrap).collect();
    assert_eq!(
        rows.len(),
        lines.len(),
        "{}: ground truth rows vs lines",
        system.name
    );
    let grok = match system.parser {
        Parser::Grok(p) => Some(Grok::compile(p, &BTreeMap::new()).unwrap()),
        _ => None,
    };
    let mut q = Quality {
        lines: lines.len(),
        parsed: 0,
        compared: 0,
        agreed: 0,
        timestamps: 0,
        disagreements: BTreeMap::new(),
        examples: Vec::new(),
    };
    let mut clock = TimestampParser::new(None).unwrap();
    let received_at: jiff::Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
    for (line, row) in lines.iter().zip(&rows) {
        let text = String::from_utf8_lossy(line);
        let fields: Option<Fields> = match &system.parser {
            Parser::Syslog => syslog::parse_rfc3164(&text),
            Parser::ApacheError => apache::parse_error_log(&text),
            Parser::Grok(_) => grok.as_ref().unwrap().parse(line),
        };
        let Some(mut fields) = fields else { continue };
        q.parsed += 1;
        // Grok patterns that capture date and time apart: one timestamp.
        let date = fields
            .iter()
            .find(|(k, _)| k == "date")
            .map(|(_, v)| v.clone());
        let time = fields
            .iter()
            .find(|(k, _)| k == "time")
            .map(|(_, v)| v.clone());
        if let (Some(d), Some(t)) = (date, time) {
            fields.push(("timestamp".into(), format!("{d} {t}")));
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_string())
        };
        if let Some(ts) = get("timestamp") {
            q.timestamps += usize::from(clock.parse(&ts, received_at).is_ok());
        }
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .map(|i| row[i].trim().to_string())
        };
        let mut compare = |ours: Option<String>, theirs: Option<String>, what: &str| {
            if let (Some(a), Some(b)) = (ours, theirs) {
                q.compared += 1;
                // Whitespace runs count as one space (padded syslog days).
                let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
                if norm(&a) == norm(&b) {
                    q.agreed += 1;
                } else {
                    *q.disagreements.entry(what.to_string()).or_default() += 1;
                    if q.examples.len() < 3 {
                        q.examples.push((what.to_string(), a, b));
                    }
                }
            }
        };
        for (column, field) in system.columns {
            compare(get(field), col(column), column);
        }
        let ts: Option<Vec<String>> = system.timestamp.iter().map(|c| col(c)).collect();
        compare(
            get("timestamp"),
            ts.map(|parts| parts.join(" ")),
            "timestamp",
        );
    }
    q
}

#[test]
fn loghub_parse_quality() {
    println!(
        "| system | lines | parsed | field agreement | fields compared | timestamps normalized |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut failures = Vec::new();
    for system in SYSTEMS {
        let q = measure(system);
        let parsed = 100.0 * q.parsed as f64 / q.lines as f64;
        let agreement = 100.0 * q.agreed as f64 / q.compared.max(1) as f64;
        let timestamps = 100.0 * q.timestamps as f64 / q.parsed.max(1) as f64;
        println!(
            "| {} | {} | {:.2}% | {:.2}% | {} | {:.2}% |",
            system.name, q.lines, parsed, agreement, q.compared, timestamps
        );
        if !q.disagreements.is_empty() {
            eprintln!(
                "  {}: disagreements by column {:?}",
                system.name, q.disagreements
            );
            for (column, ours, theirs) in &q.examples {
                eprintln!("    {column}: ours {ours:?} / theirs {theirs:?}");
            }
        }
        if system.required && (parsed < 99.0 || agreement < 99.0 || timestamps < 99.0) {
            failures.push(format!(
                "{}: parsed {parsed:.2}%, agreement {agreement:.2}%, timestamps {timestamps:.2}%",
                system.name
            ));
        }
    }
    assert!(failures.is_empty(), "below 99%: {failures:?}");
}
