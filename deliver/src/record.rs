//! The delivery topics' records (JSON; schemas in `schemas/json/`).
//!
//! * A [`Delivery`] waits in a retry tier (`delivery-retry-<delay>`) for its next attempt, and
//!   goes to `delivery-dlq` when it is given up, with the reason.
//! * An [`AttemptRecord`] in `deliveries` logs one attempt: its outcome, the status, timing
//!   and a bounded prefix of the response body.
//!
//! Keys: `tenant/endpoint`, so an endpoint's records keep their order in one partition.

use serde::{Deserialize, Serialize};

/// One (event, endpoint) pair on its way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `tenant/endpoint/source/event_id`: unique per pair, the seed of the retry jitter.
    pub delivery_id: String,
    pub tenant: String,
    pub endpoint: String,
    pub source: String,
    pub event_id: String,
    pub event_type: String,
    /// The event's entity (ordering `per_entity` keeps its events in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// The attempt this record is for: 1, 2, …
    pub attempt: u32,
    /// Not before this time (ms since the epoch).
    pub due_at: i64,
    /// Sent again from `delivery-dlq` (it takes the retries' share of the lanes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redriven: bool,
    /// When it was dead-lettered (ms since the epoch; `delivery-dlq` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<i64>,
    /// Why the delivery was given up (`delivery-dlq` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `events` record's `traceparent` (the processor's span), continued by each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The request body: the `events` record's value, embedded as JSON (not as a string, so
    /// a record is barely larger than its event).
    pub body: Body,
}

/// A JSON text, written into a record as itself. Records written before it was embedded (a
/// JSON string holding the text) still read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body(String);

impl Body {
    /// `text` must be JSON (it is the `events` value, parsed before).
    pub fn json(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.0.clone())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        if text.starts_with('"') {
            let legacy: String = serde_json::from_str(text).map_err(serde::de::Error::custom)?;
            return Ok(Self(legacy));
        }
        Ok(Self(text.to_owned()))
    }
}

impl Delivery {
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.endpoint)
    }
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Unique per request (`<run>-<n>`), also its `hookstream-attempt-id` header.
    pub attempt_id: String,
    pub delivery_id: String,
    pub tenant: String,
    pub endpoint: String,
    pub event_id: String,
    pub attempt: u32,
    /// `delivered`, `retry`, `wait` (the endpoint asked to wait; no attempt used up),
    /// `dead`, `disabled` (410: the endpoint is disabled, the delivery dead-lettered) or
    /// `interrupted` (the worker died during the request: it may or may not have arrived).
    pub outcome: String,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// `timeout`, `connection`, `refused` or `interrupted` when there was none.
    pub error: Option<String>,
    /// RFC 3339 UTC ms.
    pub attempted_at: String,
    /// The name lookup of the connection this request opened; null over a pooled
    /// connection, for an IP literal, or without a connection.
    #[serde(default)]
    pub dns_ms: Option<u64>,
    /// TCP connect and TLS handshake of the connection this request opened; null over a
    /// pooled connection or without a connection.
    #[serde(default)]
    pub connect_ms: Option<u64>,
    /// From sending the request to the response's headers (connection set-up included);
    /// null without a response.
    #[serde(default)]
    pub first_byte_ms: Option<u64>,
    /// The address connected to (`ip:port`), null without a response.
    #[serde(default)]
    pub address: Option<String>,
    /// From sending the request to the end of the answer (or the failure).
    pub duration_ms: u64,
    /// When the next attempt is due (RFC 3339), for `retry` and `wait`.
    pub next_attempt_at: Option<String>,
    /// The first bytes of the response body (at most 256, lossy UTF-8).
    pub response_prefix: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema examples (checked against the JSON Schemas by `schemas/check.py`) are what
    /// these types write, field for field.
    /// `schemas/avro/deliveries.avsc` lists the attempt record's fields in the order this
    /// type writes them (the JSON Schema's agreement is `schemas/check.py`'s).
    #[test]
    fn the_avro_schema_has_the_records_fields_in_order() {
        let avsc: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/avro/deliveries.avsc")).unwrap();
        let names: Vec<String> = avsc["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect();
        let example: AttemptRecord =
            serde_json::from_str(include_str!("../../schemas/examples/deliveries.json")).unwrap();
        let text = serde_json::to_string(&example).unwrap();
        let positions: Vec<usize> = names
            .iter()
            .map(|n| {
                text.find(&format!("\"{n}\":"))
                    .unwrap_or_else(|| panic!("{n} not written"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{names:?} vs {text}"
        );
        assert_eq!(text.matches("\":").count(), names.len(), "no other field");
    }

    #[test]
    fn a_body_is_embedded_as_json_and_an_old_string_body_still_reads() {
        let body = r#"{"tenant":"t","text":"é \"q\" \u0000"}"#;
        let written = serde_json::to_string(&Body::json(body.to_owned())).unwrap();
        assert_eq!(written, body, "not re-escaped");
        let legacy = serde_json::to_string(body).unwrap();
        let read: Body = serde_json::from_str(&legacy).unwrap();
        assert_eq!(read.as_str(), body);
    }

    #[test]
    fn records_match_the_schema_examples() {
        for (example, round_trip) in [
            (
                include_str!("../../schemas/examples/deliveries.json"),
                (|v: &str| serde_json::to_value(serde_json::from_str::<AttemptRecord>(v).unwrap()))
                    as fn(&str) -> serde_json::Result<serde_json::Value>,
            ),
            (
                include_str!("../../schemas/examples/delivery.json"),
                |v: &str| serde_json::to_value(serde_json::from_str::<Delivery>(v).unwrap()),
            ),
        ] {
            let expected: serde_json::Value = serde_json::from_str(example).unwrap();
            assert_eq!(round_trip(example).unwrap(), expected);
        }
    }
}
