//! BSD syslog (RFC 3164) as real systems write it: an optional `<PRI>`, a
//! `Mmm dd hh:mm:ss` timestamp (day space-padded, no year), the host, and a tag
//! `prog`, `prog[pid]` or `prog(sub)[pid]` ended by `:`; a line without a tag
//! keeps everything after the host as its message.

use crate::Fields;

/// Parses one line; `None` if it is not BSD syslog.
pub fn parse_rfc3164(line: &str) -> Option<Fields> {
    let mut fields = Fields::new();
    let mut rest = line;
    if let Some(after) = rest.strip_prefix('<') {
        let end = after.find('>')?;
        let pri: u16 = after[..end].parse().ok()?;
        if pri > 191 {
            return None;
        }
        fields.push(("log.syslog.priority".into(), pri.to_string()));
        rest = &after[end + 1..];
    }
    // "Jun 14 15:16:01" or "Jul  1 09:00:55": month, padded day, time.
    let month = rest.get(..3)?;
    if !MONTHS.contains(&month) || rest.as_bytes().get(3) != Some(&b' ') {
        return None;
    }
    let after_month = rest[4..].trim_start_matches(' ');
    let day_len = after_month.find(' ')?;
    let day = &after_month[..day_len];
    if day.is_empty() || day.len() > 2 || !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let after_day = &after_month[day_len + 1..];
    let time = after_day.get(..8)?;
    let t = time.as_bytes();
    if !(t[2] == b':'
        && t[5] == b':'
        && t.iter()
            .enumerate()
            .all(|(i, b)| i == 2 || i == 5 || b.is_ascii_digit()))
    {
        return None;
    }
    fields.push(("timestamp".into(), format!("{month} {day} {time}")));
    let after_time = after_day[8..].strip_prefix(' ')?;
    let host_len = after_time.find(' ').unwrap_or(after_time.len());
    let host = &after_time[..host_len];
    if host.is_empty() {
        return None;
    }
    fields.push(("host.name".into(), host.to_string()));
    let body = after_time.get(host_len + 1..).unwrap_or("");

    // The tag: the first token, if it ends with ':' (maybe after [pid]), or
    // `prog 1.4.1:` — a program that puts its version in the tag (syslogd).
    let token_end = body.find([' ', ':']).unwrap_or(body.len());
    let (tag, message) = if body[token_end..].starts_with(':') && token_end > 0 {
        (Some(&body[..token_end]), &body[token_end + 1..])
    } else if let Some(end) = versioned_tag_end(body, token_end) {
        (Some(&body[..end]), &body[end + 1..])
    } else {
        (None, body)
    };
    if let Some(tag) = tag {
        match tag.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
            Some((name, pid)) if !name.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
                fields.push(("process.name".into(), name.to_string()));
                fields.push(("process.pid".into(), pid.to_string()));
            }
            _ => fields.push(("process.name".into(), tag.to_string())),
        }
    }
    fields.push((
        "message".into(),
        message.strip_prefix(' ').unwrap_or(message).to_string(),
    ));
    Some(fields)
}

/// With `prog 1.4.1: msg`, the index of the `:` after the version.
fn versioned_tag_end(body: &str, token_end: usize) -> Option<usize> {
    if token_end == 0 || !body[token_end..].starts_with(' ') {
        return None;
    }
    let version = &body[token_end + 1..];
    let len = version.find(':')?;
    let v = &version[..len];
    let looks_like_version = v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_digit() || c == '.');
    looks_like_version.then_some(token_end + 1 + len)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(f: &'a Fields, k: &str) -> Option<&'a str> {
        f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn real_world_variants() {
        let f = parse_rfc3164(
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; x ",
        )
        .unwrap();
        assert_eq!(get(&f, "timestamp"), Some("Jun 14 15:16:01"));
        assert_eq!(get(&f, "host.name"), Some("combo"));
        assert_eq!(get(&f, "process.name"), Some("sshd(pam_unix)"));
        assert_eq!(get(&f, "process.pid"), Some("19939"));
        assert_eq!(get(&f, "message"), Some("authentication failure; x "));

        let f = parse_rfc3164("<34>Jul  1 09:00:55 host kernel: Linux version 2.6").unwrap();
        assert_eq!(get(&f, "log.syslog.priority"), Some("34"));
        assert_eq!(get(&f, "timestamp"), Some("Jul 1 09:00:55"));
        assert_eq!(get(&f, "process.name"), Some("kernel"));
        assert_eq!(get(&f, "process.pid"), None);

        let f = parse_rfc3164("Jun 19 04:08:55 combo syslogd 1.4.1: restart.").unwrap();
        assert_eq!(get(&f, "process.name"), Some("syslogd 1.4.1"));
        assert_eq!(get(&f, "message"), Some("restart."));

        let f = parse_rfc3164("Dec 10 06:55:46 LabSZ no tag here: at all").unwrap();
        assert_eq!(get(&f, "process.name"), None);
        assert_eq!(get(&f, "message"), Some("no tag here: at all"));
    }

    #[test]
    fn not_syslog() {
        for line in [
            "",
            "<999>Jun 14 15:16:01 h x: y",
            "2015-07-29 17:41:44 x",
            "Jun 141 15:16:01 h x",
            "Jun 14 15:16 h x",
            "<34",
            "Jun 14 15:16:01 ",
        ] {
            assert_eq!(parse_rfc3164(line), None, "{line:?}");
        }
    }
}
