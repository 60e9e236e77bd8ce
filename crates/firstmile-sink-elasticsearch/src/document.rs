//! Events as Elasticsearch documents (pure): ECS field names, the index an
//! event goes to, `_bulk` bodies, and what a `_bulk` answer says per item.

use firstmile_event::{DeadLetterKind, Endpoint, Event};
use firstmile_sink::ItemOutcome;
use serde_json::{json, Map, Value};

/// The daily index of an event: named by `received_at`, the one time no
/// reprocessing changes, so a replayed event (even one whose `@timestamp`
/// was corrected) overwrites its earlier copy instead of landing beside it.
pub fn index_name(prefix: &str, event: &Event) -> String {
    let day = event.received_at.to_zoned(jiff::tz::TimeZone::UTC).date();
    format!(
        "{prefix}-{:04}.{:02}.{:02}",
        day.year(),
        day.month(),
        day.day()
    )
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.into(), v);
    }
}

fn endpoint(e: &Endpoint) -> Value {
    let mut m = Map::new();
    put(&mut m, "ip", e.ip.map(|ip| json!(ip.to_string())));
    put(&mut m, "port", e.port.map(|p| json!(p)));
    if let Some(g) = &e.geo {
        let mut geo = Map::new();
        put(
            &mut geo,
            "city_name",
            g.city_name.as_ref().map(|c| json!(c)),
        );
        put(
            &mut geo,
            "country_iso_code",
            g.country_iso_code.as_ref().map(|c| json!(c)),
        );
        put(
            &mut geo,
            "location",
            g.location.map(|l| json!({"lat": l.lat, "lon": l.lon})),
        );
        m.insert("geo".into(), Value::Object(geo));
    }
    if let Some(a) = &e.autonomous_system {
        m.insert(
            "as".into(),
            json!({"number": a.number, "organization": {"name": a.organization_name}}),
        );
    }
    if let Some(a) = &e.asset {
        m.insert("asset".into(), json!({"owner": a.owner, "zone": a.zone}));
    }
    Value::Object(m)
}

/// The event as a document; ECS names, firstmile's own fields under
/// `firstmile` (the remaining parsed fields in `firstmile.fields`).
pub fn document(e: &Event) -> Value {
    let mut doc = json!({
        "@timestamp": e.timestamp.to_string(),
        "event": {
            "id": e.event_id.to_string(),
            "dataset": e.event.dataset,
            "action": e.event.action,
            "outcome": e.event.outcome,
            "code": e.event.code,
            "severity": e.event.severity,
        },
        "log": {"level": e.log.level, "logger": e.log.logger},
        "host": {"name": e.host.name},
        "process": {"name": e.process.name, "pid": e.process.pid},
        "user": {"name": e.user.name},
        "source": endpoint(&e.source),
        "destination": endpoint(&e.destination),
        "http": {
            "request": {"method": e.http.request_method},
            "response": {"status_code": e.http.response_status_code},
        },
        "url": {"original": e.url.original},
        "user_agent": {"original": e.user_agent.original},
        "message": e.message,
        "labels": e.labels,
        "firstmile": {
            "received_at": e.received_at.to_string(),
            "pipeline_version": e.pipeline_version,
            "raw_bytes": e.raw_bytes,
            "origin": {
                "source": e.origin.source,
                "topic": e.origin.topic,
                "partition": e.origin.partition,
                "offset": e.origin.offset,
            },
            "fields": e.fields,
        },
    });
    if let Some(t) = &e.threat {
        doc["threat"] = json!({"indicator": {
            "type": t.indicator.kind,
            "matched": t.indicator.matched,
            "matched_field": t.indicator.matched_field,
        }});
    }
    strip_nulls(&mut doc);
    doc
}

/// Nulls and objects left empty say nothing: leave them out.
fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        for child in m.values_mut() {
            strip_nulls(child);
        }
        m.retain(|_, c| !(c.is_null() || c.as_object().is_some_and(Map::is_empty)));
    }
}

/// Appends one `index` action and its document to a `_bulk` body.
pub fn push_index(body: &mut Vec<u8>, index: &str, id: &str, doc: &[u8]) {
    let action = json!({"index": {"_index": index, "_id": id}});
    // Serializing a json! value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *body, &action);
    body.push(b'\n');
    body.extend_from_slice(doc);
    body.push(b'\n');
}

/// Error types that put the fault on the cluster, not on the document,
/// whatever their status: the document is written again later, never
/// dead-lettered (ARCHITECTURE.md, "Sinks", has the table of causes).
pub const CLUSTER_ERRORS: &[&str] = &[
    // index.blocks.write, read_only, read_only_allow_delete (disk flood
    // stage): 403 or 429 until someone lifts the block.
    "cluster_block_exception",
    // A closed index, or a missing one where auto-creation is off: the
    // operator opens or creates it.
    "index_closed_exception",
    "index_not_found_exception",
    "unavailable_shards_exception",
    "no_shard_available_action_exception",
    "es_rejected_execution_exception",
    "circuit_breaking_exception",
];

/// The outcome of each item of a `_bulk` answer, in request order; `None`
/// if the answer is not a `_bulk` answer for `n` items.
pub fn item_outcomes(answer: &Value, n: usize) -> Option<Vec<ItemOutcome>> {
    let items = answer["items"].as_array()?;
    if items.len() != n {
        return None;
    }
    items
        .iter()
        .map(|item| {
            let (_, result) = item.as_object()?.iter().next()?;
            let status = result["status"].as_u64()?;
            let error = &result["error"];
            let error_type = error["type"].as_str().unwrap_or("unknown").to_string();
            let reason = error["reason"].as_str().unwrap_or("").to_string();
            let cluster = CLUSTER_ERRORS.contains(&error_type.as_str());
            Some(match status {
                200..=299 | 409 => ItemOutcome::Written,
                429 | 500..=599 => ItemOutcome::Retry(format!("{status} {error_type}: {reason}")),
                _ if cluster => ItemOutcome::Retry(format!("{status} {error_type}: {reason}")),
                _ => ItemOutcome::Rejected {
                    kind: DeadLetterKind::RejectedByElasticsearch,
                    message: format!("{error_type}: {reason}"),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use firstmile_event::Origin;

    fn event() -> Event {
        let origin = Origin {
            source: "openssh".into(),
            topic: "raw.openssh".into(),
            partition: 1,
            offset: 9,
        };
        let mut e = Event::new(origin, "2026-11-18T23:59:59Z".parse().unwrap(), "3");
        e.timestamp = "2026-11-19T00:00:01Z".parse().unwrap();
        e
    }

    #[test]
    fn the_index_is_named_by_receipt_not_by_event_time() {
        assert_eq!(index_name("events", &event()), "events-2026.11.18");
    }

    #[test]
    fn documents_use_ecs_names_and_leave_out_what_is_unknown() {
        let mut e = event();
        e.source.ip = Some("81.2.69.142".parse().unwrap());
        e.http.response_status_code = Some(404);
        e.fields.insert("sshd.session".into(), "7".into());
        let doc = document(&e);
        assert_eq!(doc["@timestamp"], "2026-11-19T00:00:01Z");
        assert_eq!(doc["source"]["ip"], "81.2.69.142");
        assert_eq!(doc["http"]["response"]["status_code"], 404);
        assert_eq!(doc["firstmile"]["fields"]["sshd.session"], "7");
        assert_eq!(doc["firstmile"]["origin"]["offset"], 9);
        assert!(
            doc.get("user").is_none(),
            "an empty object is left out: {doc}"
        );
        assert!(doc["http"]["request"].is_null());
    }

    #[test]
    fn bulk_items_are_done_retried_or_rejected() {
        let answer = json!({"errors": true, "items": [
            {"index": {"status": 201}},
            {"index": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
            {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
            {"index": {"status": 503, "error": {"type": "unavailable_shards_exception", "reason": "x"}}},
            {"index": {"status": 400, "error": {"type": "document_parsing_exception", "reason": "failed to parse field [message]"}}},
            {"index": {"status": 403, "error": {"type": "cluster_block_exception", "reason": "index [x] blocked by: [FORBIDDEN/8/index write (api)];"}}},
            {"index": {"status": 404, "error": {"type": "index_not_found_exception", "reason": "no such index [x]"}}},
            {"index": {"status": 400, "error": {"type": "index_closed_exception", "reason": "closed"}}},
        ]});
        let outcomes = item_outcomes(&answer, 8).unwrap();
        assert_eq!(outcomes[0], ItemOutcome::Written);
        assert_eq!(outcomes[1], ItemOutcome::Written);
        assert!(matches!(outcomes[2], ItemOutcome::Retry(_)));
        assert!(matches!(outcomes[3], ItemOutcome::Retry(_)));
        assert_eq!(
            outcomes[4],
            ItemOutcome::Rejected {
                kind: DeadLetterKind::RejectedByElasticsearch,
                message: "document_parsing_exception: failed to parse field [message]".into()
            }
        );
        for (i, outcome) in outcomes.iter().enumerate().skip(5) {
            assert!(
                matches!(outcome, ItemOutcome::Retry(_)),
                "item {i}: the cluster's fault, not the document's: {outcome:?}"
            );
        }
        assert_eq!(
            item_outcomes(&answer, 4),
            None,
            "a count mismatch is not trusted"
        );
        assert_eq!(item_outcomes(&json!({"error": "x"}), 1), None);
    }
}
