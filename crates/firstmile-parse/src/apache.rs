//! Apache HTTP server error log:
//! `[Sun Dec 04 04:47:44 2005] [notice] message` (2.2) and
//! `[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 43] [client 1.2.3.4:80] message` (2.4).

use crate::Fields;

pub fn parse_error_log(line: &str) -> Option<Fields> {
    let mut fields = Fields::new();
    let (time, mut rest) = bracket(line)?;
    if !time.contains(':') {
        return None;
    }
    fields.push(("timestamp".into(), time.to_string()));
    let (level, after) = bracket(rest.trim_start())?;
    match level.split_once(':') {
        Some((module, level)) => {
            fields.push(("apache.module".into(), module.to_string()));
            fields.push(("log.level".into(), level.to_string()));
        }
        None => fields.push(("log.level".into(), level.to_string())),
    }
    rest = after;
    loop {
        let trimmed = rest.trim_start();
        let Some((inner, after)) = bracket(trimmed) else {
            break;
        };
        if let Some(pid) = inner.strip_prefix("pid ") {
            let (pid, tid) = pid.split_once(":tid ").unwrap_or((pid, ""));
            fields.push(("process.pid".into(), pid.to_string()));
            if !tid.is_empty() {
                fields.push(("process.thread.id".into(), tid.to_string()));
            }
        } else if let Some(client) = inner.strip_prefix("client ") {
            let (ip, port) = match client.rsplit_once(':') {
                Some((ip, port))
                    if port.bytes().all(|b| b.is_ascii_digit()) && ip.contains('.') =>
                {
                    (ip, Some(port))
                }
                _ => (client, None),
            };
            fields.push(("source.ip".into(), ip.to_string()));
            if let Some(port) = port {
                fields.push(("source.port".into(), port.to_string()));
            }
        } else {
            break;
        }
        rest = after;
    }
    let message = rest.strip_prefix(' ').unwrap_or(rest);
    fields.push(("message".into(), message.to_string()));
    Some(fields)
}

/// `[inner]rest` → (inner, rest).
fn bracket(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some((&inner[..end], &inner[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats() {
        let f = parse_error_log("[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/x")
            .unwrap();
        assert_eq!(
            f,
            vec![
                ("timestamp".into(), "Sun Dec 04 04:47:44 2005".into()),
                ("log.level".into(), "notice".into()),
                ("message".into(), "workerEnv.init() ok /etc/x".into()),
            ]
        );
        let f = parse_error_log("[Wed Oct 11 14:32:52.1 2000] [core:error] [pid 35708:tid 43] [client 72.15.99.187:5050] File does not exist").unwrap();
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("apache.module"), Some("core"));
        assert_eq!(get("log.level"), Some("error"));
        assert_eq!(get("process.pid"), Some("35708"));
        assert_eq!(get("source.ip"), Some("72.15.99.187"));
        assert_eq!(get("source.port"), Some("5050"));
        assert_eq!(get("message"), Some("File does not exist"));
        assert_eq!(parse_error_log("no brackets"), None);
    }
}
