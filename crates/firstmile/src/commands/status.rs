//! `firstmile status [--json] [--watch]`: the whole pipeline on one screen.
//! Exit status 0 when nothing is flagged, 2 when something is (for scripts
//! and checks), 1 on an error.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use firstmile_observe::status::{self, Options, Status};
use jiff::Timestamp;

use super::parse_span;
use crate::settings::Settings;
use firstmile_config::SinkName;

#[derive(Args)]
pub struct StatusArgs {
    /// Print the snapshot as JSON.
    #[arg(long)]
    json: bool,
    /// Refresh in place until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// Rates, dead-letter counts and recent rows are over this window.
    #[arg(long, default_value = "5m", value_parser = parse_span)]
    window: Duration,
    /// Flag a target whose newest row or document is older than this.
    #[arg(long, default_value = "5m", value_parser = parse_span)]
    stale_after: Duration,
    /// Time between the two samples of group offsets that tell a stalled
    /// group (lag, nothing committed) from a busy one.
    #[arg(long, default_value = "5s", value_parser = parse_span)]
    sample: Duration,
    /// A role's metrics endpoint (`http://host:9464`) to read its counters
    /// and readiness from; repeat for each role, or comma-separate.
    #[arg(
        long = "metrics",
        env = "FIRSTMILE_STATUS_METRICS",
        value_delimiter = ','
    )]
    metrics: Vec<String>,
}

pub async fn run(settings: &Settings, args: StatusArgs) -> Result<()> {
    let options = Options {
        window: args.window,
        stale_after: args.stale_after,
        sample: args.sample,
        metrics: args.metrics,
    };
    loop {
        let snapshot = status::collect(
            &settings.config,
            &settings.topology,
            &super::sink::targets(&settings.config, &SinkName::ALL)?,
            &options,
        )
        .await?;
        let text = if args.json {
            serde_json::to_string_pretty(&snapshot)? + "\n"
        } else {
            render(&snapshot)
        };
        // Targets' and endpoints' errors can quote a URL.
        let text = firstmile_config::redact(&text);
        let mut out = std::io::stdout().lock();
        if args.watch {
            // Home and clear: the snapshot replaces the last one.
            write!(out, "\x1b[H\x1b[2J")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if !args.watch {
            if snapshot.problems() > 0 {
                std::process::exit(2);
            }
            return Ok(());
        }
        tokio::select! {
            _ = super::shutdown_signal() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The snapshot for a terminal.
fn render(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let now = status.taken_at;
    let _ = writeln!(
        out,
        "firstmile status at {}: rates over {}, stale after {}",
        now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        span(status.window_seconds),
        span(status.stale_after_seconds)
    );
    let _ = writeln!(
        out,
        "\nSOURCE{:<18} {:>10} {:>12} {:>12}  NEWEST",
        "", "RECORDS/S", "RECORDS/24H", "BYTES/24H"
    );
    for s in &status.sources {
        let _ = write!(
            out,
            "{:<24} {:>10.1} {:>12} {:>12}  {}",
            s.name,
            s.records_per_second,
            s.records_24h,
            bytes(s.bytes_24h),
            ago(now, s.newest)
        );
        if let Some(e) = &s.error {
            let _ = write!(out, "  error: {e}");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\nWORKER{:<18} {:>8} {:>10} {:>10} {:>10}  DLQ (WINDOW)",
        "", "MEMBERS", "LAG", "LAG Δ", "RECORDS/S"
    );
    for w in &status.workers {
        let dlq: Vec<String> = w.dlq.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>10} {:>+10} {:>10.1}  {}",
            w.name,
            w.members,
            w.lag,
            w.lag - w.lag_before,
            w.records_per_second,
            if dlq.is_empty() {
                "-".into()
            } else {
                dlq.join(", ")
            }
        );
        if let Some(e) = &w.error {
            let _ = writeln!(out, "    error: {e}");
        }
        if w.stalled {
            let growing = if w.lag > w.lag_before {
                ", lag growing"
            } else {
                ""
            };
            let _ = writeln!(out, "    STALLED (nothing committed{growing})");
            for c in &w.causes {
                let _ = writeln!(out, "      - {c}");
            }
        }
    }
    if !status.replays.is_empty() {
        let _ = writeln!(
            out,
            "\nREPLAY{:<18} {:>10} {:>10}  STATE",
            "", "LEFT", "RECORDS/S"
        );
        for r in &status.replays {
            let _ = write!(
                out,
                "{:<24} {:>10} {:>10.1}  {}",
                r.source, r.left, r.records_per_second, r.state
            );
            if r.state == "stopped" {
                let _ = write!(
                    out,
                    " (to go on: firstmile replay --source {} --resume)",
                    r.source
                );
            }
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "\nTARGET{:<18} {:>16} {:>12}",
        "", "NEWEST RECEIVED", "IN WINDOW"
    );
    for t in &status.targets {
        let _ = writeln!(
            out,
            "{:<24} {:>16} {:>12}",
            t.name,
            ago(now, t.newest),
            t.recent
        );
        if t.stopped_updating {
            let _ = writeln!(out, "    STOPPED UPDATING");
            for c in &t.causes {
                let _ = writeln!(out, "      - {c}");
            }
        }
    }
    if !status.endpoints.is_empty() {
        let _ = writeln!(out, "\nENDPOINT");
        for e in &status.endpoints {
            let state = match (e.up, e.ready) {
                (false, _) => format!("down: {}", e.error.as_deref().unwrap_or("")),
                (true, true) => "up, ready".into(),
                (true, false) => format!("up, {}", e.ready_answer),
            };
            let _ = writeln!(out, "{}  {state}", e.url);
            for c in &e.components {
                let errors: u64 = c.errors.values().sum();
                let discarded: u64 = c.discarded.values().sum();
                let _ = writeln!(
                    out,
                    "    {:<8} {:<16} received {:>10}  sent {:>10}  discarded {:>8}  errors {:>6}",
                    c.kind, c.id, c.received, c.sent, discarded, errors
                );
            }
        }
    }
    let problems = status.problems();
    let _ = writeln!(
        out,
        "\n{}",
        if problems == 0 {
            "ok: nothing stalled, every target up to date".to_string()
        } else {
            format!("{problems} problem(s)")
        }
    );
    out
}

fn ago(now: Timestamp, t: Option<Timestamp>) -> String {
    match t {
        None => "never".into(),
        Some(t) => format!("{} ago", span(now.duration_since(t).as_secs_f64().max(0.0))),
    }
}

fn span(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firstmile_observe::status::{ReplayStatus, TargetStatus, WorkerStatus};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_text_shows_flags_causes_and_how_to_resume_a_stopped_replay() {
        let replay = |state: &str| ReplayStatus {
            source: format!("{state}-source"),
            state: state.into(),
            left: 10,
            ..ReplayStatus::default()
        };
        let status = Status {
            taken_at: at("2026-11-23T12:00:00Z"),
            window_seconds: 300.0,
            stale_after_seconds: 300.0,
            sources: Vec::new(),
            workers: vec![WorkerStatus {
                name: "sink:timescale".into(),
                lag_before: 100,
                lag: 160,
                stalled: true,
                causes: vec!["group g has no members: no worker is running".into()],
                ..WorkerStatus::default()
            }],
            replays: vec![replay("stopped"), replay("finished")],
            targets: vec![TargetStatus {
                name: "timescale".into(),
                newest: Some(at("2026-11-23T11:50:00Z")),
                stopped_updating: true,
                ..TargetStatus::default()
            }],
            endpoints: Vec::new(),
        };
        let text = render(&status);
        for line in [
            "    STALLED (nothing committed, lag growing)\n      - group g has no members",
            "10m ago",
            "    STOPPED UPDATING",
            "stopped (to go on: firstmile replay --source stopped-source --resume)",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
        assert_eq!(
            text.matches("--resume").count(),
            1,
            "only the stopped one: {text}"
        );
        assert!(text.ends_with("2 problem(s)\n"), "{text}");
    }
}
