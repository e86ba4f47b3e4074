//! JSON values of the derived topics. Field order is fixed by the struct definitions and
//! payloads are embedded verbatim ([`RawValue`]), so the same input always serializes to the
//! same bytes: a replayed batch re-emits byte-identical records.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A provider body as records carry it: embedded as JSON when it is JSON, otherwise base64
/// (the two `Option` fields of [`EventRecord`] and [`StateRecord`]).
#[derive(Debug, Clone)]
pub struct Payload {
    pub payload: Option<Box<RawValue>>,
    pub payload_base64: Option<String>,
}

impl Payload {
    pub fn from_body(body: &[u8]) -> Self {
        let json = std::str::from_utf8(body)
            .ok()
            .and_then(|text| serde_json::from_str::<Box<RawValue>>(text).ok());
        match json {
            Some(raw) => Self {
                payload: Some(raw),
                payload_base64: None,
            },
            None => {
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD.encode(body);
                Self {
                    payload: None,
                    payload_base64: Some(encoded),
                }
            }
        }
    }
}

/// A value of the `events` topic: one deduplicated event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    pub tenant: String,
    pub source: String,
    pub event_id: String,
    pub event_type: String,
    pub entity: String,
    /// Event time, RFC 3339 UTC.
    pub occurred_at: String,
    /// Time ingest received the request, RFC 3339 UTC.
    pub received_at: String,
    /// The event is older than one already released for its entity.
    pub late: bool,
    /// `occurred_at` was more than the source's `max_future_skew_secs` ahead of `received_at`:
    /// the event was processed at its receive time; `occurred_at` keeps the claimed time.
    #[serde(default)]
    pub time_skewed: bool,
    /// Offset of the event in `raw` (partition = this record's partition).
    pub raw_offset: i64,
    /// The body, when it is JSON, embedded as it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<RawValue>>,
    /// The body, base64, when it is not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

/// A value of the compacted `state` topic: the latest reconciled state of one entity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRecord {
    pub tenant: String,
    pub entity: String,
    /// Number of events applied to this entity; increases by one with each applied event.
    pub version: u64,
    /// Event time of the event that produced this state, RFC 3339 UTC.
    pub updated_at: String,
    pub last_event_id: String,
    pub last_event_type: String,
    pub deleted: bool,
    /// The latest payload as JSON; absent once the entity is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Box<RawValue>>,
    /// The latest payload, base64, when it is not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_base64: Option<String>,
}

/// A value of the `rejected` topic (key: tenant): the audit of one refused request. It
/// never holds the body, a signature or a secret — only the body's size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub tenant: String,
    pub source: String,
    /// HTTP status answered.
    pub status: u16,
    /// Error code answered (`invalid_signature`, `rate_limited`, …).
    pub reason: String,
    pub message: String,
    pub remote_addr: String,
    /// Hex SHA-256 of the body, when it was read.
    pub body_sha256: Option<String>,
    pub body_bytes: Option<u64>,
    /// RFC 3339 UTC.
    pub received_at: String,
}

/// A value of the `usage` input topic (key: tenant): what handling one event actually cost,
/// reported by a downstream worker. Negative numbers do not parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub tenant: String,
    pub event_id: String,
    pub tokens: u64,
    /// Millionths of the tenant's billing currency unit.
    pub cost_micros: u64,
    /// Source of the event, when the worker knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A value of the `deferred` topic (key: `tenant/entity`): an event held back by a cap or a
/// breaker, with the reason; the fields before `reason` are [`EventRecord`]'s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeferredRecord {
    pub tenant: String,
    pub source: String,
    pub event_id: String,
    pub event_type: String,
    pub entity: String,
    pub occurred_at: String,
    pub received_at: String,
    pub late: bool,
    #[serde(default)]
    pub time_skewed: bool,
    pub raw_offset: i64,
    /// `events_per_hour`, `tokens_per_day`, `cost_per_day`, `loop_suspected` or
    /// `spike_suspected`.
    pub reason: String,
    /// The earliest release time, RFC 3339 UTC; null when the event waits for a redrive.
    pub window_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

/// A value of the `alerts` topic (key: tenant). Every field is always written, the ones that
/// do not apply as null; times are stream time, so a replay re-emits the same alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub tenant: String,
    /// `cap_reached`, `cap_recovered`, `spike_suspected` or `loop_suspected`.
    pub kind: String,
    /// The cap of a cap alert.
    pub cap: Option<String>,
    /// The entity of a `loop_suspected` alert.
    pub entity: Option<String>,
    pub limit: Option<u64>,
    pub observed: Option<u64>,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    pub raised_at: String,
    pub message: String,
    /// The source of a `time_skewed` alert.
    #[serde(default)]
    pub source: Option<String>,
}

fn raw_text(raw: &Option<Box<RawValue>>) -> Option<&str> {
    raw.as_ref().map(|r| r.get())
}

impl PartialEq for EventRecord {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.tenant,
            &self.source,
            &self.event_id,
            &self.event_type,
            &self.entity,
        ) == (&o.tenant, &o.source, &o.event_id, &o.event_type, &o.entity)
            && (
                &self.occurred_at,
                &self.received_at,
                self.late,
                self.time_skewed,
                self.raw_offset,
            ) == (
                &o.occurred_at,
                &o.received_at,
                o.late,
                o.time_skewed,
                o.raw_offset,
            )
            && raw_text(&self.payload) == raw_text(&o.payload)
            && self.payload_base64 == o.payload_base64
    }
}

impl PartialEq for StateRecord {
    fn eq(&self, o: &Self) -> bool {
        (&self.tenant, &self.entity, self.version, &self.updated_at)
            == (&o.tenant, &o.entity, o.version, &o.updated_at)
            && (&self.last_event_id, &self.last_event_type, self.deleted)
                == (&o.last_event_id, &o.last_event_type, o.deleted)
            && raw_text(&self.state) == raw_text(&o.state)
            && self.state_base64 == o.state_base64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payload_is_embedded_verbatim_and_binary_is_base64() {
        let body = br#"{"b": 1,  "a": [true]}"#;
        let payload = Payload::from_body(body);
        assert_eq!(
            payload.payload.as_ref().unwrap().get(),
            r#"{"b": 1,  "a": [true]}"#
        );

        let binary = Payload::from_body(&[0xff, 0x00]);
        assert_eq!(binary.payload_base64.as_deref(), Some("/wA="));
        assert!(binary.payload.is_none());
    }

    #[test]
    fn event_record_serializes_deterministically() {
        let record = EventRecord {
            tenant: "acme".into(),
            source: "orders".into(),
            event_id: "e1".into(),
            event_type: "order.created".into(),
            entity: "o1".into(),
            occurred_at: "2023-11-14T22:13:20.000Z".into(),
            received_at: "2023-11-14T22:13:21.000Z".into(),
            late: false,
            time_skewed: false,
            raw_offset: 7,
            payload: Payload::from_body(br#"{"id":"e1"}"#).payload,
            payload_base64: None,
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(
            text,
            r#"{"tenant":"acme","source":"orders","event_id":"e1","event_type":"order.created","entity":"o1","occurred_at":"2023-11-14T22:13:20.000Z","received_at":"2023-11-14T22:13:21.000Z","late":false,"time_skewed":false,"raw_offset":7,"payload":{"id":"e1"}}"#
        );
        let back: EventRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
    }
}
