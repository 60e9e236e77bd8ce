//! Timestamps as logs write them, to instants.
//!
//! Formats: RFC 3339 / ISO 8601 with `Z` or an offset (`+01:00` or `+0100`),
//! ISO 8601 without a zone (`T` or space, `.` or `,` before fractions),
//! BSD syslog `Mmm d hh:mm:ss` (no year), Apache `Sun Dec 04 04:47:44 2005`,
//! HTTP/access `10/Oct/2000:13:55:36 -0700`, epoch seconds/milliseconds/
//! microseconds, and the compact Loghub forms (`081109 203615`,
//! `17/06/09 20:10:40`, `20171223-22:15:29:606`, `03-17 16:13:38.811`).
//!
//! Rules, documented for users:
//! - **No zone** in the text: the source's IANA time zone (default UTC).
//! - **Ambiguous** local time (clocks set back, the hour happens twice): the
//!   earlier instant. **Non-existent** local time (clocks set forward): moved
//!   forward by the length of the gap (02:30 in a 02:00→03:00 gap is 03:30).
//!   This is the "compatible" rule of RFC 5545 and JavaScript Temporal.
//! - **No year**: the most recent year that does not put the event more than a
//!   day after the moment it was received (a day allows for clock skew): so
//!   `Dec 31 23:59:59` received on 1 January is last year's, and `Jan 1
//!   00:00:01` received a few seconds before midnight on 31 December is next year's.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("unrecognized timestamp `{0}`")]
    Unrecognized(String),
    #[error("unknown time zone `{0}`")]
    UnknownZone(String),
}

/// Parses the timestamps of one source; remembers the format that matched last
/// and tries it first (a source rarely changes its format).
#[derive(Debug, Clone)]
pub struct TimestampParser {
    zone: TimeZone,
    last: usize,
}

type Attempt = fn(&str, &TimeZone, Timestamp) -> Option<Timestamp>;

const ATTEMPTS: &[Attempt] = &[
    with_offset,
    iso_local,
    bsd_syslog,
    apache_error,
    http_date,
    epoch,
    hdfs,
    spark,
    healthapp,
    android,
];

impl TimestampParser {
    /// `zone`: an IANA name (`Europe/Berlin`) for times written without one.
    pub fn new(zone: Option<&str>) -> Result<Self, TimestampError> {
        let zone = match zone {
            None | Some("UTC") => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|_| TimestampError::UnknownZone(name.into()))?
            }
        };
        Ok(TimestampParser { zone, last: 0 })
    }

    pub fn parse(
        &mut self,
        text: &str,
        received_at: Timestamp,
    ) -> Result<Timestamp, TimestampError> {
        let text = text.trim();
        if let Some(t) = ATTEMPTS[self.last](text, &self.zone, received_at) {
            return Ok(t);
        }
        for (i, attempt) in ATTEMPTS.iter().enumerate() {
            if let Some(t) = attempt(text, &self.zone, received_at) {
                self.last = i;
                return Ok(t);
            }
        }
        Err(TimestampError::Unrecognized(text.to_string()))
    }
}

/// A zone-less civil time in `zone`, by the compatible rule.
fn local(dt: DateTime, zone: &TimeZone) -> Option<Timestamp> {
    zone.to_ambiguous_timestamp(dt).compatible().ok()
}

/// Picks the most recent year (received year −4 to +1; Feb 29 needs a leap
/// year) that puts month/day/time at most a day after `received_at`.
fn infer_year(
    month: i8,
    day: i8,
    time: Time,
    zone: &TimeZone,
    received_at: Timestamp,
) -> Option<Timestamp> {
    let year = received_at.to_zoned(zone.clone()).year();
    let latest = received_at.as_second() + 86_400;
    (year - 4..=year + 1)
        .filter_map(|y| Date::new(y, month, day).ok())
        .filter_map(|d| local(d.to_datetime(time), zone))
        .filter(|t| t.as_second() <= latest)
        .max()
}

fn with_offset(text: &str, _: &TimeZone, _: Timestamp) -> Option<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Some(t);
    }
    // `+0100` → `+01:00`, and a space before the offset or a `,` fraction.
    let normalized = text.replacen(' ', "T", 1).replacen(',', ".", 1);
    let bytes = normalized.as_bytes();
    let n = bytes.len();
    if n > 5 && matches!(bytes[n - 5], b'+' | b'-') && bytes[n - 4..].iter().all(u8::is_ascii_digit)
    {
        let with_colon = format!("{}:{}", &normalized[..n - 2], &normalized[n - 2..]);
        return with_colon.parse().ok();
    }
    normalized.parse().ok()
}

fn iso_local(text: &str, zone: &TimeZone, _: Timestamp) -> Option<Timestamp> {
    let normalized = text.replacen(',', ".", 1);
    let dt: DateTime = normalized.parse().ok()?;
    local(dt, zone)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn month_number(name: &str) -> Option<i8> {
    MONTHS.iter().position(|m| *m == name).map(|i| i as i8 + 1)
}

/// `hh:mm:ss` with an optional `.fff` / `,fff` fraction.
fn clock(text: &str) -> Option<Time> {
    text.replacen(',', ".", 1).parse().ok()
}

fn bsd_syslog(text: &str, zone: &TimeZone, received_at: Timestamp) -> Option<Timestamp> {
    let mut parts = text.split_whitespace();
    let month = month_number(parts.next()?)?;
    let day: i8 = parts.next()?.parse().ok()?;
    let time = clock(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    infer_year(month, day, time, zone, received_at)
}

fn apache_error(text: &str, zone: &TimeZone, _: Timestamp) -> Option<Timestamp> {
    let mut parts = text.split_whitespace();
    parts.next()?; // weekday
    let month = month_number(parts.next()?)?;
    let day: i8 = parts.next()?.parse().ok()?;
    let time = clock(parts.next()?)?;
    let year: i16 = parts.next()?.parse().ok()?;
    local(Date::new(year, month, day).ok()?.to_datetime(time), zone)
}

fn http_date(text: &str, _: &TimeZone, _: Timestamp) -> Option<Timestamp> {
    let (date, rest) = text.split_once(':')?;
    let mut d = date.split('/');
    let day: i8 = d.next()?.parse().ok()?;
    let month = month_number(d.next()?)?;
    let year: i16 = d.next()?.parse().ok()?;
    let (time, offset) = rest.split_once(' ')?;
    let iso = format!("{year:04}-{month:02}-{day:02}T{time}{offset}");
    with_offset(&iso, &TimeZone::UTC, Timestamp::UNIX_EPOCH)
}

fn epoch(text: &str, _: &TimeZone, _: Timestamp) -> Option<Timestamp> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: i64 = int.parse().ok()?;
    match int.len() {
        9 | 10 => {
            let nanos: i64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
            Timestamp::new(n, nanos as i32).ok()
        }
        13 if frac.is_empty() => Timestamp::from_millisecond(n).ok(),
        16 if frac.is_empty() => Timestamp::from_microsecond(n).ok(),
        _ => None,
    }
}

/// Two-digit years: 70–99 are 19xx, else 20xx.
fn century(yy: i16) -> i16 {
    if yy >= 70 {
        1900 + yy
    } else {
        2000 + yy
    }
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn is_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

/// HDFS `081109 203615`.
fn hdfs(text: &str, zone: &TimeZone, _: Timestamp) -> Option<Timestamp> {
    let (d, t) = text.split_once(' ')?;
    // All ASCII digits before slicing by byte index.
    if !is_digits(d, 6) || !is_digits(t, 6) {
        return None;
    }
    let date = Date::new(
        century(digits(&d[..2])?),
        digits(&d[2..4])?,
        digits(&d[4..])?,
    )
    .ok()?;
    let time = Time::new(digits(&t[..2])?, digits(&t[2..4])?, digits(&t[4..])?, 0).ok()?;
    local(date.to_datetime(time), zone)
}

/// Spark `17/06/09 20:10:40`.
fn spark(text: &str, zone: &TimeZone, _: Timestamp) -> Option<Timestamp> {
    let (d, t) = text.split_once(' ')?;
    let mut p = d.split('/');
    let (y, m, day) = (p.next()?, p.next()?, p.next()?);
    if y.len() != 2 || p.next().is_some() {
        return None;
    }
    let date = Date::new(century(digits(y)?), digits(m)?, digits(day)?).ok()?;
    local(date.to_datetime(clock(t)?), zone)
}

/// HealthApp `20171223-22:15:29:606`: hour, minute, second and milliseconds
/// written without zero padding (`20171224-2:0:3:25` is 02:00:03.025).
fn healthapp(text: &str, zone: &TimeZone, _: Timestamp) -> Option<Timestamp> {
    let (d, t) = text.split_once('-')?;
    if !is_digits(d, 8) {
        return None;
    }
    let date = Date::new(digits(&d[..4])?, digits(&d[4..6])?, digits(&d[6..])?).ok()?;
    let mut parts = t.split(':');
    let mut next = |max_len: usize| -> Option<i64> {
        let p = parts.next()?;
        (1..=max_len).contains(&p.len()).then(|| digits(p))?
    };
    let (h, m, sec, millis) = (next(2)?, next(2)?, next(2)?, next(3)?);
    if parts.next().is_some() {
        return None;
    }
    let time = Time::new(
        h.try_into().ok()?,
        m.try_into().ok()?,
        sec.try_into().ok()?,
        0,
    )
    .ok()?;
    local(date.to_datetime(time), zone)?
        .checked_add(millis.milliseconds())
        .ok()
}

/// Android logcat `03-17 16:13:38.811` (no year).
fn android(text: &str, zone: &TimeZone, received_at: Timestamp) -> Option<Timestamp> {
    let (d, t) = text.split_once(' ')?;
    let (m, day) = d.split_once('-')?;
    if m.len() != 2 || day.len() != 2 {
        return None;
    }
    infer_year(digits(m)?, digits(day)?, clock(t)?, zone, received_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn parse(zone: Option<&str>, text: &str, received: &str) -> Result<String, TimestampError> {
        TimestampParser::new(zone)?
            .parse(text, at(received))
            .map(|t| t.to_string())
    }

    const RECEIVED: &str = "2026-11-23T12:00:00Z";

    #[test]
    fn the_usual_formats() {
        let cases = [
            ("2026-11-23T10:00:00Z", "2026-11-23T10:00:00Z"),
            ("2026-11-23T10:00:00.5+01:00", "2026-11-23T09:00:00.5Z"),
            ("2026-11-23T10:00:00+0100", "2026-11-23T09:00:00Z"),
            ("2026-11-23 10:00:00-0530", "2026-11-23T15:30:00Z"),
            ("2015-07-29 17:41:44,747", "2015-07-29T17:41:44.747Z"),
            ("2017-05-16 00:00:00.008", "2017-05-16T00:00:00.008Z"),
            ("Jun 14 15:16:01", "2026-06-14T15:16:01Z"),
            ("Jul  1 09:00:55", "2026-07-01T09:00:55Z"),
            ("Sun Dec 04 04:47:44 2005", "2005-12-04T04:47:44Z"),
            ("10/Oct/2000:13:55:36 -0700", "2000-10-10T20:55:36Z"),
            ("1700000000", "2023-11-14T22:13:20Z"),
            ("1700000000.25", "2023-11-14T22:13:20.25Z"),
            ("1700000000123", "2023-11-14T22:13:20.123Z"),
            ("081109 203615", "2008-11-09T20:36:15Z"),
            ("17/06/09 20:10:40", "2017-06-09T20:10:40Z"),
            ("20171223-22:15:29:606", "2017-12-23T22:15:29.606Z"),
            ("20171224-2:0:3:25", "2017-12-24T02:00:03.025Z"),
            ("03-17 16:13:38.811", "2026-03-17T16:13:38.811Z"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(None, text, RECEIVED).as_deref(), Ok(want), "{text}");
        }
        assert!(parse(None, "yesterday", RECEIVED).is_err());
        assert!(parse(None, "Feb 30 10:00:00", RECEIVED).is_err());
    }

    #[test]
    fn yearless_times_take_the_year_closest_to_receipt_across_new_year() {
        assert_eq!(
            parse(None, "Dec 31 23:59:59", "2026-01-01T00:00:05Z").unwrap(),
            "2025-12-31T23:59:59Z"
        );
        assert_eq!(
            parse(None, "Jan  1 00:00:01", "2025-12-31T23:59:58Z").unwrap(),
            "2026-01-01T00:00:01Z"
        );
        // Feb 29 exists only in a leap year: received in 2025, the closest is 2024.
        assert_eq!(
            parse(None, "Feb 29 12:00:00", "2025-03-01T00:00:00Z").unwrap(),
            "2024-02-29T12:00:00Z"
        );
    }

    #[test]
    fn zone_less_times_use_the_source_zone_across_dst() {
        let berlin = Some("Europe/Berlin");
        // Winter (CET, +01:00) and summer (CEST, +02:00).
        assert_eq!(
            parse(berlin, "2026-01-15 12:00:00", RECEIVED).unwrap(),
            "2026-01-15T11:00:00Z"
        );
        assert_eq!(
            parse(berlin, "2026-07-15 12:00:00", RECEIVED).unwrap(),
            "2026-07-15T10:00:00Z"
        );
        // 2026-03-29 02:30 does not exist (02:00 -> 03:00): moved forward to 03:30 CEST.
        assert_eq!(
            parse(berlin, "2026-03-29 02:30:00", RECEIVED).unwrap(),
            "2026-03-29T01:30:00Z"
        );
        // 2026-10-25 02:30 happens twice: the earlier one, 02:30 CEST.
        assert_eq!(
            parse(berlin, "2026-10-25 02:30:00", RECEIVED).unwrap(),
            "2026-10-25T00:30:00Z"
        );
        // A written offset wins over the source zone.
        assert_eq!(
            parse(berlin, "2026-07-15T12:00:00Z", RECEIVED).unwrap(),
            "2026-07-15T12:00:00Z"
        );
        assert_eq!(
            TimestampParser::new(Some("Mars/Olympus")).unwrap_err(),
            TimestampError::UnknownZone("Mars/Olympus".into())
        );
    }
}
