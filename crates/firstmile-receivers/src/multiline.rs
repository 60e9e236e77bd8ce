//! Joining physical lines into one event (stack traces, tracebacks) before
//! Kafka, within one stream. Pure logic: time is passed in.
//!
//! A joined event is exactly the bytes received, from its first line's first
//! byte to its last line's last byte, inner terminators included.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;

#[derive(Debug, Clone)]
enum Rule {
    /// A matching line starts an event; other lines continue the current one.
    Start(Regex),
    /// A matching line continues the current event; other lines start one.
    Continuation(Regex),
}

#[derive(Debug)]
struct Pending {
    bytes: BytesMut,
    lines: usize,
    /// The terminator after the last line, put back if another line joins.
    terminator: &'static [u8],
    last_at: Instant,
}

/// The joiner of one stream.
#[derive(Debug)]
pub struct Multiline {
    rule: Rule,
    max_lines: usize,
    max_bytes: usize,
    flush_timeout: Duration,
    pending: Option<Pending>,
}

impl Multiline {
    /// `max_bytes` is also capped by the receiver's event size limit.
    pub fn new(
        config: &firstmile_config::Multiline,
        max_event_bytes: usize,
    ) -> Result<Self, regex::Error> {
        let rule = match (&config.start, &config.continuation) {
            (Some(p), _) => Rule::Start(Regex::new(p)?),
            (None, Some(p)) => Rule::Continuation(Regex::new(p)?),
            // The configuration check refuses this; a rule that matches
            // nothing as a start keeps every line its own event.
            (None, None) => Rule::Continuation(Regex::new("$^")?),
        };
        Ok(Multiline {
            rule,
            max_lines: config.max_lines.max(1),
            max_bytes: config.max_bytes.min(max_event_bytes).max(1),
            flush_timeout: Duration::from_millis(config.flush_timeout_ms),
            pending: None,
        })
    }

    /// Adds a line (without its terminator); returns the event it completed, if any.
    pub fn push(&mut self, line: &[u8], terminator: &'static [u8], now: Instant) -> Option<Bytes> {
        let continues = match &self.rule {
            Rule::Start(start) => !start.is_match(line),
            Rule::Continuation(cont) => cont.is_match(line),
        };
        if continues {
            if let Some(p) = &mut self.pending {
                let grown = p.bytes.len() + p.terminator.len() + line.len();
                if p.lines < self.max_lines && grown <= self.max_bytes {
                    p.bytes.extend_from_slice(p.terminator);
                    p.bytes.extend_from_slice(line);
                    p.lines += 1;
                    p.terminator = terminator;
                    p.last_at = now;
                    return None;
                }
            }
        }
        let done = self.finish();
        self.pending = (!line.is_empty()).then(|| Pending {
            bytes: BytesMut::from(line),
            lines: 1,
            terminator,
            last_at: now,
        });
        done
    }

    /// When the pending event is due to be flushed, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|p| p.last_at + self.flush_timeout)
    }

    /// Emits the pending event if no line joined it for the flush timeout.
    pub fn flush_stale(&mut self, now: Instant) -> Option<Bytes> {
        match self.deadline() {
            Some(due) if now >= due => self.finish(),
            _ => None,
        }
    }

    /// Ends the stream: emits the pending event.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.pending.take().map(|p| p.bytes.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(start: Option<&str>, continuation: Option<&str>) -> firstmile_config::Multiline {
        firstmile_config::Multiline {
            start: start.map(String::from),
            continuation: continuation.map(String::from),
            ..Default::default()
        }
    }

    fn run(m: &mut Multiline, lines: &[&str], terminator: &'static [u8]) -> Vec<String> {
        let now = Instant::now();
        let mut out: Vec<String> = lines
            .iter()
            .filter_map(|l| m.push(l.as_bytes(), terminator, now))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        out.extend(m.finish().map(|b| String::from_utf8(b.to_vec()).unwrap()));
        out
    }

    const JAVA: &[&str] = &[
        "2026-01-01 10:00:00 ERROR boom",
        "java.lang.IllegalStateException: bad",
        "\tat a.B.c(B.java:1)",
        "\tat a.B.d(B.java:2)",
        "2026-01-01 10:00:01 INFO fine",
    ];

    #[test]
    fn start_pattern_joins_a_stack_trace_keeping_the_original_terminators() {
        let mut m = Multiline::new(&rule(Some(r"^\d{4}-\d{2}-\d{2} "), None), 1 << 20).unwrap();
        let out = run(&mut m, JAVA, b"\r\n");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], JAVA[..4].join("\r\n"));
        assert_eq!(out[1], JAVA[4]);
    }

    #[test]
    fn continuation_pattern_joins_indented_lines() {
        let mut m = Multiline::new(&rule(None, Some(r"^(\s|java\.)")), 1 << 20).unwrap();
        let out = run(&mut m, JAVA, b"\n");
        assert_eq!(out, vec![JAVA[..4].join("\n"), JAVA[4].to_string()]);
    }

    #[test]
    fn limits_cut_an_event_and_the_rest_starts_a_new_one() {
        let mut r = rule(Some("^START"), None);
        r.max_lines = 2;
        let mut m = Multiline::new(&r, 1 << 20).unwrap();
        let out = run(&mut m, &["START", "a", "b", "c"], b"\n");
        assert_eq!(out, vec!["START\na", "b\nc"]);

        let mut r = rule(Some("^START"), None);
        r.max_bytes = 8;
        let mut m = Multiline::new(&r, 1 << 20).unwrap();
        let out = run(&mut m, &["START", "ab", "cd"], b"\n");
        assert_eq!(out, vec!["START\nab", "cd"]);
    }

    #[test]
    fn a_pending_event_is_flushed_after_the_timeout() {
        let mut r = rule(Some("^START"), None);
        r.flush_timeout_ms = 500;
        let mut m = Multiline::new(&r, 1 << 20).unwrap();
        let t0 = Instant::now();
        assert_eq!(m.push(b"START x", b"\n", t0), None);
        assert_eq!(
            m.push(b" more", b"\n", t0 + Duration::from_millis(300)),
            None
        );
        assert_eq!(m.flush_stale(t0 + Duration::from_millis(700)), None);
        assert_eq!(
            m.flush_stale(t0 + Duration::from_millis(800)).as_deref(),
            Some(&b"START x\n more"[..])
        );
        assert_eq!(m.deadline(), None);
    }
}
