//! Extraction: reads a verified request's event id, event type, entity and event time with
//! the source's [`Rules`], producing the metadata of its `raw` record. The body is parsed as
//! JSON at most once, and only when a rule points into it.

use schemas::config::{FieldRule, Rules};
use schemas::raw::RawMeta;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::request::{Request, Verified};

/// Longest event id, entity or event type accepted (they become keys and headers).
pub const MAX_FIELD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ExtractError {
    pub field: &'static str,
    pub reason: String,
}

pub fn extract(
    request: &Request<Verified>,
    scheme: &str,
    rules: &Rules,
) -> Result<RawMeta, ExtractError> {
    let mut body = LazyJson::new(request.body());
    let event_id = text(request, &mut body, "event_id", &rules.event_id)?;
    let event_type = match rules.event_type {
        FieldRule::Absent => String::new(),
        ref rule => text(request, &mut body, "event_type", rule)?,
    };
    let entity = text(request, &mut body, "entity", &rules.entity)?;
    let occurred_at = match &rules.occurred_at {
        FieldRule::Received => request.received_at(),
        rule => {
            let value = lookup(request, &mut body, "occurred_at", rule)?;
            schemas::time::parse_event_time(&value).ok_or_else(|| ExtractError {
                field: "occurred_at",
                reason: format!(
                    "{} is not an RFC 3339 time or a Unix timestamp",
                    describe(&value)
                ),
            })?
        }
    };
    Ok(RawMeta {
        tenant: request.tenant().to_owned(),
        source: request.source().to_owned(),
        scheme: scheme.to_owned(),
        event_id,
        event_type,
        entity,
        occurred_at,
        received_at: request.received_at(),
        content_type: request
            .headers()
            .get("content-type")
            .unwrap_or_default()
            .to_owned(),
        key_id: request.key_id().to_owned(),
    })
}

fn text(
    request: &Request<Verified>,
    body: &mut LazyJson<'_>,
    field: &'static str,
    rule: &FieldRule,
) -> Result<String, ExtractError> {
    let text = match lookup(request, body, field, rule)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        other => {
            return Err(ExtractError {
                field,
                reason: format!("{} is not a string or number", describe(&other)),
            })
        }
    };
    if text.trim().is_empty() {
        return Err(ExtractError {
            field,
            reason: "is empty".into(),
        });
    }
    if text.len() > MAX_FIELD_BYTES {
        return Err(ExtractError {
            field,
            reason: format!("is longer than {MAX_FIELD_BYTES} bytes"),
        });
    }
    Ok(text)
}

fn lookup(
    request: &Request<Verified>,
    body: &mut LazyJson<'_>,
    field: &'static str,
    rule: &FieldRule,
) -> Result<Value, ExtractError> {
    match rule {
        FieldRule::Header(name) => request
            .headers()
            .get(name)
            .map(|v| Value::String(v.to_owned()))
            .ok_or_else(|| ExtractError {
                field,
                reason: format!("header `{name}` is missing"),
            }),
        FieldRule::Pointer(pointer) => {
            let json = body.get().ok_or_else(|| ExtractError {
                field,
                reason: format!("the body is not JSON, so `{pointer}` cannot be read"),
            })?;
            json.pointer(pointer)
                .filter(|v| !v.is_null())
                .cloned()
                .ok_or_else(|| ExtractError {
                    field,
                    reason: format!("`{pointer}` is not in the body"),
                })
        }
        FieldRule::BodySha256 => Ok(Value::String(hex::encode(Sha256::digest(request.body())))),
        FieldRule::Received => Ok(Value::from(request.received_at())),
        FieldRule::Absent => Err(ExtractError {
            field,
            reason: "has no rule".into(),
        }),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "the string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct LazyJson<'a> {
    bytes: &'a [u8],
    parsed: Option<Option<Value>>,
}

impl<'a> LazyJson<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            parsed: None,
        }
    }

    fn get(&mut self) -> Option<&Value> {
        self.parsed
            .get_or_insert_with(|| serde_json::from_slice(self.bytes).ok())
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Headers, Unverified};
    use bytes::Bytes;
    use schemas::config::Scheme;
    use std::collections::BTreeMap;

    fn verified(headers: Headers, body: &str) -> Request<Verified> {
        Request::<Unverified>::new(
            "acme",
            "orders",
            headers,
            Bytes::from(body.to_owned()),
            5_000,
        )
        .into_verified("k1".into())
    }

    fn rules(pairs: &[(&str, &str)]) -> Rules {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Rules::resolve(Scheme::Hmac, &map).unwrap()
    }

    #[test]
    fn reads_fields_from_body_headers_and_clock() {
        let request = verified(
            Headers::new()
                .with("X-Event", "evt_9")
                .with("content-type", "application/json"),
            r#"{"type":"order.paid","order":{"id":42},"at":"2023-11-14T22:13:20Z"}"#,
        );
        let meta = extract(
            &request,
            "hmac",
            &rules(&[
                ("event_id", "header:x-event"),
                ("entity", "/order/id"),
                ("occurred_at", "/at"),
            ]),
        )
        .unwrap();
        assert_eq!(meta.event_id, "evt_9");
        assert_eq!(meta.entity, "42");
        assert_eq!(meta.event_type, "order.paid");
        assert_eq!(meta.occurred_at, 1_700_000_000_000);
        assert_eq!(meta.received_at, 5_000);
        assert_eq!(meta.content_type, "application/json");
        assert_eq!(meta.key_id, "k1");
    }

    #[test]
    fn missing_or_unusable_fields_say_which_and_why() {
        let request = verified(Headers::new(), r#"{"id":"e1","entity":{"nested":true}}"#);
        let err = extract(&request, "hmac", &rules(&[])).unwrap_err();
        assert_eq!(err.field, "event_type");
        let err = extract(&request, "hmac", &rules(&[("event_type", "none")])).unwrap_err();
        assert_eq!(
            err,
            ExtractError {
                field: "entity",
                reason: "an object is not a string or number".into()
            }
        );
        let not_json = verified(Headers::new(), "id=e1");
        let err = extract(&not_json, "hmac", &rules(&[])).unwrap_err();
        assert!(err.reason.contains("not JSON"), "{err}");
    }

    #[test]
    fn body_hash_can_stand_in_for_an_event_id() {
        let request = verified(Headers::new(), r#"{"entity":"x"}"#);
        let meta = extract(
            &request,
            "hmac",
            &rules(&[("event_id", "body:sha256"), ("event_type", "none")]),
        )
        .unwrap();
        assert_eq!(meta.event_id.len(), 64);
        assert_eq!(meta.occurred_at, 5_000);
    }
}
