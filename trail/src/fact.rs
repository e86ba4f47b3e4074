//! Facts: what one record of a topic says about one event. Pure: a record's topic, position,
//! key, headers and value in, at most one [`Fact`] out.
//!
//! | topic | stage | event named by |
//! |---|---|---|
//! | `rejected` | `refused` (status and reason) | nothing trusted: tenant, source, body SHA-256 |
//! | `raw` | `appended`, or `redriven` (with `hs-redrive-id`) | `hs-tenant`, `hs-source`, `hs-event-id` |
//! | `dlq` | `dead_lettered` (`hs-error`) | the same headers |
//! | `deferred` | `deferred` (cap or breaker) | the record's fields |
//! | `events` | `emitted` (late, time-skewed) | the record's fields |
//! | `deliveries` | `attempt` (endpoint, attempt, outcome, status) | tenant, event id; the source from the delivery id |
//! | `delivery-dlq` | `delivery_dead_lettered` (endpoint, reason) | the record's fields |
//!
//! Nothing secret is kept: no request headers, no bodies (only the SHA-256 of a `raw` body,
//! to link it to refusals of the same bytes), no signature and no token.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The topics a trail is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Rejected,
    Raw,
    Dlq,
    Deferred,
    Events,
    Deliveries,
    DeliveryDlq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Refused,
    Appended,
    Redriven,
    DeadLettered,
    Deferred,
    Emitted,
    Attempt,
    DeliveryDeadLettered,
}

impl Stage {
    /// The order of stages that happen in the same millisecond.
    pub fn rank(self) -> u8 {
        match self {
            Stage::Refused => 0,
            Stage::Appended | Stage::Redriven => 1,
            Stage::DeadLettered => 2,
            Stage::Deferred => 3,
            Stage::Emitted => 4,
            Stage::Attempt => 5,
            Stage::DeliveryDeadLettered => 6,
        }
    }
}

/// One fact of an event's trail, with where it is in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    pub stage: Stage,
    pub tenant: String,
    pub source: Option<String>,
    pub event_id: Option<String>,
    pub entity: Option<String>,
    /// When it happened (ms since the epoch): the record's own time field, else the
    /// record's Kafka timestamp.
    pub at: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// What happened, in a few words: `401 invalid_signature`, `late`, `crm #2 delivered 200`…
    pub detail: String,
    /// SHA-256 (hex) of the body: of a refused request, or of an appended `raw` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    /// For `emitted` and `deferred`: the offset of the `raw` record it came from (same
    /// partition number: `events` and `raw` are keyed alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_offset: Option<i64>,
}

/// A record as read from Kafka.
pub struct Record<'a> {
    pub kind: Kind,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp (ms), if it has one.
    pub timestamp: Option<i64>,
    pub headers: &'a [(String, Vec<u8>)],
    pub value: &'a [u8],
    /// The value as JSON (decoded from Avro when it was Avro); none if it is neither.
    pub json: Option<&'a serde_json::Value>,
}

const DETAIL_MAX: usize = 200;

impl Record<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.json.and_then(|j| j[name].as_str())
    }

    fn time(&self, field: Option<&str>) -> i64 {
        field
            .and_then(schemas::time::parse_rfc3339)
            .or(self.timestamp)
            .unwrap_or(0)
    }

    fn fact(&self, stage: Stage, tenant: &str, detail: String) -> Fact {
        let mut detail = detail;
        if detail.len() > DETAIL_MAX {
            let mut end = DETAIL_MAX;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push('…');
        }
        Fact {
            stage,
            tenant: tenant.to_owned(),
            source: None,
            event_id: None,
            entity: None,
            at: self.timestamp.unwrap_or(0),
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
            detail,
            body_sha256: None,
            raw_offset: None,
        }
    }
}

/// The fact a record states, if it names a tenant (hostile or foreign values state none).
pub fn of(record: &Record<'_>) -> Option<Fact> {
    use schemas::raw::header as h;
    let owned = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
    match record.kind {
        Kind::Rejected => {
            let tenant = record.field("tenant")?;
            let json = record.json?;
            let detail = format!(
                "{} {}",
                json["status"].as_u64().unwrap_or(0),
                record.field("reason").unwrap_or("")
            );
            Some(Fact {
                source: owned(record.field("source")),
                at: record.time(record.field("received_at")),
                body_sha256: owned(record.field("body_sha256")),
                ..record.fact(Stage::Refused, tenant, detail)
            })
        }
        Kind::Raw | Kind::Dlq => {
            let tenant = record.header(h::TENANT)?;
            let (stage, detail) = match (record.kind, record.header(h::REDRIVE_ID)) {
                (Kind::Dlq, _) => (
                    Stage::DeadLettered,
                    record.header(h::ERROR).unwrap_or("").to_owned(),
                ),
                (_, Some(redrive)) => (Stage::Redriven, format!("redrive {redrive}")),
                (_, None) => (
                    Stage::Appended,
                    format!("key id {}", record.header(h::KEY_ID).unwrap_or("?")),
                ),
            };
            let body =
                (record.kind == Kind::Raw).then(|| hex::encode(Sha256::digest(record.value)));
            Some(Fact {
                source: owned(record.header(h::SOURCE)),
                event_id: owned(record.header(h::EVENT_ID)),
                entity: owned(record.header(h::ENTITY)),
                at: record
                    .time(record.header(h::RECEIVED_AT))
                    .max(record.timestamp.unwrap_or(0)),
                body_sha256: body,
                ..record.fact(stage, tenant, detail)
            })
        }
        Kind::Deferred | Kind::Events => {
            let tenant = record.field("tenant")?;
            let json = record.json?;
            let flag = |name: &str| json[name].as_bool().unwrap_or(false);
            let detail = match record.kind {
                Kind::Deferred => record.field("reason").unwrap_or("").to_owned(),
                _ => [("late", flag("late")), ("time_skewed", flag("time_skewed"))]
                    .iter()
                    .filter(|(_, set)| *set)
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let stage = if record.kind == Kind::Deferred {
                Stage::Deferred
            } else {
                Stage::Emitted
            };
            Some(Fact {
                source: owned(record.field("source")),
                event_id: owned(record.field("event_id")),
                entity: owned(record.field("entity")),
                raw_offset: json["raw_offset"].as_i64(),
                ..record.fact(stage, tenant, detail)
            })
        }
        Kind::Deliveries | Kind::DeliveryDlq => {
            let tenant = record.field("tenant")?;
            let json = record.json?;
            let endpoint = record.field("endpoint").unwrap_or("?");
            let attempt = json["attempt"].as_u64().unwrap_or(0);
            let (stage, detail, at) = if record.kind == Kind::Deliveries {
                let answer = match (json["status"].as_u64(), record.field("error")) {
                    (Some(status), _) => status.to_string(),
                    (None, Some(error)) => error.to_owned(),
                    (None, None) => String::new(),
                };
                let outcome = record.field("outcome").unwrap_or("");
                let detail = format!("{endpoint} #{attempt} {outcome} {answer}");
                let at = record.time(record.field("attempted_at"));
                (Stage::Attempt, detail, at)
            } else {
                let reason = record.field("reason").unwrap_or("");
                let at = json["dead_at"].as_i64().or(record.timestamp).unwrap_or(0);
                (
                    Stage::DeliveryDeadLettered,
                    format!("{endpoint} after #{attempt}: {reason}"),
                    at,
                )
            };
            // The source is the delivery id's third segment: tenant/endpoint/source/event.
            let source = owned(record.field("source")).or_else(|| {
                record
                    .field("delivery_id")
                    .and_then(|id| id.split('/').nth(2))
                    .map(str::to_owned)
            });
            Some(Fact {
                source,
                event_id: owned(record.field("event_id")),
                at,
                ..record.fact(stage, tenant, detail.trim().to_owned())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(
        kind: Kind,
        headers: &'a [(String, Vec<u8>)],
        value: &'a [u8],
        json: Option<&'a serde_json::Value>,
    ) -> Record<'a> {
        Record {
            kind,
            topic: "t",
            partition: 1,
            offset: 7,
            timestamp: Some(1_000),
            headers,
            value,
            json,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn raw_records_are_appended_or_redriven_with_their_body_hash_and_no_headers_kept() {
        let h = headers(&[
            ("hs-tenant", "acme"),
            ("hs-source", "stripe"),
            ("hs-event-id", "evt_1"),
            ("hs-entity", "cus_1"),
            ("hs-key-id", "k1"),
            ("hs-received-at", "2026-11-24T10:02:00.000Z"),
        ]);
        let fact = of(&record(Kind::Raw, &h, b"{}", None)).unwrap();
        assert_eq!(fact.stage, Stage::Appended);
        assert_eq!(
            (
                fact.source.as_deref(),
                fact.event_id.as_deref(),
                fact.entity.as_deref()
            ),
            (Some("stripe"), Some("evt_1"), Some("cus_1"))
        );
        assert_eq!(
            fact.at,
            schemas::time::parse_rfc3339("2026-11-24T10:02:00.000Z").unwrap()
        );
        assert_eq!(
            fact.body_sha256.unwrap(),
            hex::encode(Sha256::digest(b"{}"))
        );
        assert_eq!(fact.detail, "key id k1");
        let mut redriven = h.clone();
        redriven.push(("hs-redrive-id".into(), b"r1".to_vec()));
        assert_eq!(
            of(&record(Kind::Raw, &redriven, b"{}", None))
                .unwrap()
                .stage,
            Stage::Redriven
        );
        assert_eq!(
            of(&record(Kind::Raw, &[], b"{}", None)),
            None,
            "no tenant: no fact"
        );
    }

    #[test]
    fn deliveries_name_their_source_from_the_delivery_id() {
        let json = serde_json::json!({
            "tenant": "acme", "endpoint": "crm", "event_id": "a/b", "attempt": 2,
            "delivery_id": "acme/crm/stripe/a/b", "outcome": "delivered", "status": 200,
            "attempted_at": "2026-11-24T10:03:00.000Z"
        });
        let fact = of(&record(Kind::Deliveries, &[], b"", Some(&json))).unwrap();
        assert_eq!(fact.source.as_deref(), Some("stripe"));
        assert_eq!(fact.event_id.as_deref(), Some("a/b"));
        assert_eq!(fact.detail, "crm #2 delivered 200");
    }

    #[test]
    fn refusals_keep_status_reason_and_body_hash_and_long_details_are_cut() {
        let json = serde_json::json!({
            "tenant": "acme", "source": "stripe", "status": 401, "reason": "invalid_signature",
            "message": "x", "remote_addr": "", "body_sha256": "ab", "received_at": "2026-11-24T10:02:00.000Z"
        });
        let fact = of(&record(Kind::Rejected, &[], b"", Some(&json))).unwrap();
        assert_eq!(
            (fact.stage, fact.detail.as_str()),
            (Stage::Refused, "401 invalid_signature")
        );
        assert_eq!(fact.body_sha256.as_deref(), Some("ab"));
        let long = headers(&[("hs-tenant", "acme"), ("hs-error", &"é".repeat(300))]);
        let fact = of(&record(Kind::Dlq, &long, b"", None)).unwrap();
        assert!(fact.detail.len() <= DETAIL_MAX + '…'.len_utf8());
        assert_eq!(fact.body_sha256, None);
    }
}
