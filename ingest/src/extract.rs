//! Extraction: reads a verified request's event id, event type, entity and event time with
//! the source's [`Rules`], producing the metadata of its `raw` record(s). Each field has a list
//! of rules; the first that finds a value wins. JSON and form bodies are parsed at most once,
//! and only when a rule points into them.
//!
//! A batch source (HubSpot's default) sends a JSON array of events: each element becomes its
//! own record, whose value is the element's exact bytes within the body.

use std::ops::Range;

use schemas::config::{FieldRule, Rules};
use schemas::raw::RawMeta;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::request::{Request, Verified};

/// Longest event id, entity or event type accepted (they become keys and headers).
pub const MAX_FIELD_BYTES: usize = 1024;
/// Most events accepted in one batch body.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ExtractError {
    pub field: &'static str,
    pub reason: String,
}

/// One event of a request: its metadata and where its bytes are in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub meta: RawMeta,
    pub body: Range<usize>,
}

pub fn extract(
    request: &Request<Verified>,
    scheme: &str,
    rules: &Rules,
    batch: bool,
) -> Result<Vec<Extracted>, ExtractError> {
    let body = request.body().as_ref();
    if !batch {
        let meta = extract_one(request, scheme, rules, body, None)?;
        return Ok(vec![Extracted {
            meta,
            body: 0..body.len(),
        }]);
    }
    let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| ExtractError {
        field: "body",
        reason: format!("a batch source needs a JSON array: {e}"),
    })?;
    if elements.is_empty() || elements.len() > MAX_BATCH {
        return Err(ExtractError {
            field: "body",
            reason: format!(
                "a batch holds 1 to {MAX_BATCH} events, not {}",
                elements.len()
            ),
        });
    }
    let start = body.as_ptr() as usize;
    elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| {
            let text = element.get().as_bytes();
            let offset = text.as_ptr() as usize - start;
            let meta = extract_one(request, scheme, rules, text, Some(index))?;
            Ok(Extracted {
                meta,
                body: offset..offset + text.len(),
            })
        })
        .collect()
}

fn extract_one(
    request: &Request<Verified>,
    scheme: &str,
    rules: &Rules,
    body: &[u8],
    index: Option<usize>,
) -> Result<RawMeta, ExtractError> {
    let mut source = Source {
        request,
        body,
        json: None,
        form: None,
        index,
    };
    let (event_id, derived) = source.text_with_rule("event_id", &rules.event_id)?;
    let event_type = if rules.event_type == [FieldRule::Absent] {
        String::new()
    } else {
        source
            .text_with_rule("event_type", &rules.event_type)
            .map(|(t, _)| t)
            .or_else(|e| {
                if rules.event_type.contains(&FieldRule::Absent) {
                    Ok(String::new())
                } else {
                    Err(e)
                }
            })?
    };
    let (entity, _) = source.text_with_rule("entity", &rules.entity)?;
    let occurred_at = source.time(&rules.occurred_at)?;
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
        event_id_derived: derived,
        redrive_id: None,
    })
}

/// What the rules could read of a request whose extraction failed, field by field (each
/// field's rules tried on their own), for the headers of its dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    pub event_id: Option<(String, bool)>,
    pub event_type: Option<String>,
    pub entity: Option<String>,
    pub occurred_at: Option<i64>,
}

pub fn partial(request: &Request<Verified>, rules: &Rules) -> Partial {
    let mut source = Source {
        request,
        body: request.body().as_ref(),
        json: None,
        form: None,
        index: None,
    };
    Partial {
        event_id: source.text_with_rule("event_id", &rules.event_id).ok(),
        event_type: source
            .text_with_rule("event_type", &rules.event_type)
            .ok()
            .map(|(t, _)| t),
        entity: source
            .text_with_rule("entity", &rules.entity)
            .ok()
            .map(|(e, _)| e),
        occurred_at: source.time(&rules.occurred_at).ok(),
    }
}

struct Source<'a> {
    request: &'a Request<Verified>,
    body: &'a [u8],
    json: Option<Option<Value>>,
    form: Option<Option<Vec<(String, String)>>>,
    /// Position within a batch body.
    index: Option<usize>,
}

enum Found {
    Value(Value),
    Missing(String),
}

impl Source<'_> {
    fn text_with_rule(
        &mut self,
        field: &'static str,
        rules: &[FieldRule],
    ) -> Result<(String, bool), ExtractError> {
        let mut missing = Vec::new();
        for rule in rules {
            match self.lookup(rule) {
                Found::Missing(why) => missing.push(why),
                Found::Value(value) => {
                    let text = match value {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        other => {
                            return Err(self.error(
                                field,
                                format!("{} is not a string or number", describe(&other)),
                            ))
                        }
                    };
                    if text.trim().is_empty() {
                        return Err(self.error(field, "is empty".into()));
                    }
                    if text.len() > MAX_FIELD_BYTES {
                        return Err(
                            self.error(field, format!("is longer than {MAX_FIELD_BYTES} bytes"))
                        );
                    }
                    return Ok((text, *rule == FieldRule::BodySha256));
                }
            }
        }
        Err(self.error(field, missing.join("; ")))
    }

    fn time(&mut self, rules: &[FieldRule]) -> Result<i64, ExtractError> {
        let mut missing = Vec::new();
        for rule in rules {
            if *rule == FieldRule::Received {
                return Ok(self.request.received_at());
            }
            match self.lookup(rule) {
                Found::Missing(why) => missing.push(why),
                Found::Value(value) => {
                    return schemas::time::parse_event_time(&value).ok_or_else(|| {
                        self.error(
                            "occurred_at",
                            format!(
                                "{} is not an RFC 3339 time or a Unix timestamp",
                                describe(&value)
                            ),
                        )
                    })
                }
            }
        }
        Err(self.error("occurred_at", missing.join("; ")))
    }

    fn lookup(&mut self, rule: &FieldRule) -> Found {
        match rule {
            FieldRule::Header(name) => match self.request.headers().get(name) {
                Some(v) => Found::Value(Value::String(v.to_owned())),
                None => Found::Missing(format!("header `{name}` is missing")),
            },
            FieldRule::Pointer(pointer) => {
                let body = self.body;
                let json = self
                    .json
                    .get_or_insert_with(|| serde_json::from_slice(body).ok());
                match json {
                    None => Found::Missing(format!(
                        "the body is not JSON, so `{pointer}` cannot be read"
                    )),
                    Some(json) => match json.pointer(pointer).filter(|v| !v.is_null()) {
                        Some(v) => Found::Value(v.clone()),
                        None => Found::Missing(format!("`{pointer}` is not in the body")),
                    },
                }
            }
            FieldRule::Form(name) => {
                let is_form = self.request.headers().get("content-type").is_some_and(|t| {
                    t.to_ascii_lowercase()
                        .starts_with("application/x-www-form-urlencoded")
                });
                let body = self.body;
                let form = self.form.get_or_insert_with(|| {
                    is_form.then(|| form_urlencoded::parse(body).into_owned().collect())
                });
                match form {
                    None => Found::Missing(format!(
                        "the body is not a form, so `form:{name}` cannot be read"
                    )),
                    Some(fields) => match fields.iter().find(|(k, _)| k == name) {
                        Some((_, v)) => Found::Value(Value::String(v.clone())),
                        None => Found::Missing(format!("form field `{name}` is missing")),
                    },
                }
            }
            FieldRule::BodySha256 => {
                Found::Value(Value::String(hex::encode(Sha256::digest(self.body))))
            }
            FieldRule::Received => Found::Value(Value::from(self.request.received_at())),
            FieldRule::Absent => Found::Missing("no value".into()),
        }
    }

    fn error(&self, field: &'static str, reason: String) -> ExtractError {
        let reason = match self.index {
            Some(index) => format!("event {index} of the batch: {reason}"),
            None => reason,
        };
        ExtractError { field, reason }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Headers, Unverified};
    use bytes::Bytes;
    use schemas::config::{RuleText, Scheme};
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

    fn rules(scheme: Scheme, pairs: &[(&str, &str)]) -> Rules {
        let map: BTreeMap<String, RuleText> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), RuleText::One(v.to_string())))
            .collect();
        Rules::resolve(scheme, &map).unwrap()
    }

    fn one(request: &Request<Verified>, rules: &Rules) -> Result<RawMeta, ExtractError> {
        extract(request, "hmac", rules, false).map(|mut v| v.remove(0).meta)
    }

    #[test]
    fn reads_fields_from_body_headers_and_clock() {
        let request = verified(
            Headers::new()
                .with("X-Event", "evt_9")
                .with("content-type", "application/json"),
            r#"{"type":"order.paid","order":{"id":42},"at":"2023-11-14T22:13:20Z"}"#,
        );
        let rules = rules(
            Scheme::Hmac,
            &[
                ("event_id", "header:x-event"),
                ("entity", "/order/id"),
                ("occurred_at", "/at"),
            ],
        );
        let meta = one(&request, &rules).unwrap();
        assert_eq!(meta.event_id, "evt_9");
        assert_eq!(meta.entity, "42");
        assert_eq!(meta.event_type, "order.paid");
        assert_eq!(meta.occurred_at, 1_700_000_000_000);
        assert_eq!(meta.received_at, 5_000);
        assert_eq!(meta.content_type, "application/json");
        assert_eq!(meta.key_id, "k1");
        assert!(!meta.event_id_derived);
    }

    #[test]
    fn stripe_defaults_read_a_stripe_event() {
        let request = verified(
            Headers::new(),
            r#"{"id":"evt_1","type":"customer.updated","created":1700000000,"data":{"object":{"id":"cus_9"}}}"#,
        );
        let meta = one(&request, &rules(Scheme::Stripe, &[])).unwrap();
        assert_eq!(
            (meta.event_id.as_str(), meta.entity.as_str()),
            ("evt_1", "cus_9")
        );
        assert_eq!(meta.occurred_at, 1_700_000_000_000);
    }

    #[test]
    fn twilio_form_bodies_are_read_with_form_rules() {
        let request = verified(
            Headers::new()
                .with(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )
                .with("I-Twilio-Idempotency-Token", "tok-1"),
            "CallSid=CA123&CallStatus=completed&From=%2B15551234567",
        );
        let meta = one(&request, &rules(Scheme::Twilio, &[])).unwrap();
        let fields = (
            meta.event_id.as_str(),
            meta.event_type.as_str(),
            meta.entity.as_str(),
        );
        assert_eq!(fields, ("tok-1", "completed", "CA123"));
        assert_eq!(meta.occurred_at, 5_000);
        // Without the token, two status callbacks of one call still get distinct ids.
        let form = Headers::new().with("content-type", "application/x-www-form-urlencoded");
        let ringing = verified(form.clone(), "CallSid=CA123&CallStatus=ringing");
        let answered = verified(form, "CallSid=CA123&CallStatus=in-progress");
        let ringing = one(&ringing, &rules(Scheme::Twilio, &[])).unwrap();
        let answered = one(&answered, &rules(Scheme::Twilio, &[])).unwrap();
        assert!(ringing.event_id_derived && ringing.event_id != answered.event_id);
        assert_eq!(ringing.entity, answered.entity);
    }

    #[test]
    fn twilio_json_bodies_are_read_with_the_default_rules() {
        let json = || Headers::new().with("content-type", "application/json");
        // Event Streams: an array of CloudEvents.
        let streams = verified(
            json(),
            r#"[{"specversion":"1.0","type":"com.twilio.voice.insights.call-summary.complete","source":"/v1/Voice/CA77/Summary","id":"EZ1","data":{"callSid":"CA77"}}]"#,
        );
        let meta = one(&streams, &rules(Scheme::Twilio, &[])).unwrap();
        assert_eq!(
            (
                meta.event_id.as_str(),
                meta.event_type.as_str(),
                meta.entity.as_str()
            ),
            (
                "EZ1",
                "com.twilio.voice.insights.call-summary.complete",
                "CA77"
            )
        );
        assert!(!meta.event_id_derived);
        // One CloudEvent, the idempotency token winning over the body's id.
        let message = verified(
            json().with("I-Twilio-Idempotency-Token", "tok-9"),
            r#"{"type":"com.twilio.messaging.message.delivered","id":"EZ2","data":{"messageSid":"SM5"}}"#,
        );
        let meta = one(&message, &rules(Scheme::Twilio, &[])).unwrap();
        assert_eq!(
            (meta.event_id.as_str(), meta.entity.as_str()),
            ("tok-9", "SM5")
        );
        // Voice Insights style snake case, no id or type: hash id, no type.
        let summary = verified(json(), r#"{"call_sid":"CA1","account_sid":"AC1"}"#);
        let meta = one(&summary, &rules(Scheme::Twilio, &[])).unwrap();
        assert_eq!(
            (meta.entity.as_str(), meta.event_type.as_str()),
            ("CA1", "")
        );
        assert!(meta.event_id_derived);
        // Anything with just an account is still readable.
        let account = verified(json(), r#"{"AccountSid":"AC9","Payload":"x"}"#);
        assert_eq!(
            one(&account, &rules(Scheme::Twilio, &[])).unwrap().entity,
            "AC9"
        );
    }

    #[test]
    fn partial_reads_each_field_on_its_own() {
        let request = verified(Headers::new().with("x-event", "e1"), r#"{"type":"t"}"#);
        let rules = rules(Scheme::Hmac, &[("event_id", "header:x-event")]);
        assert!(one(&request, &rules).is_err());
        let known = partial(&request, &rules);
        assert_eq!(known.event_id, Some(("e1".into(), false)));
        assert_eq!(known.event_type.as_deref(), Some("t"));
        assert_eq!(known.entity, None);
        assert_eq!(known.occurred_at, Some(5_000));
    }

    #[test]
    fn hubspot_batches_become_one_record_per_element_with_exact_bytes() {
        let body = r#"[ {"eventId":1,"subscriptionType":"contact.creation","objectId":11,"occurredAt":1700000000000},
            {"eventId":2, "subscriptionType":"contact.deletion","objectId":12,"occurredAt":1700000001000} ]"#;
        let request = verified(Headers::new(), body);
        let events = extract(&request, "hubspot", &rules(Scheme::Hubspot, &[]), true).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].meta.event_id, "2");
        assert_eq!(events[1].meta.entity, "12");
        assert_eq!(events[1].meta.occurred_at, 1_700_000_001_000);
        assert_eq!(
            &body[events[1].body.clone()],
            r#"{"eventId":2, "subscriptionType":"contact.deletion","objectId":12,"occurredAt":1700000001000}"#
        );
        let bad = verified(
            Headers::new(),
            r#"[{"eventId":1,"objectId":3,"occurredAt":1}, {"objectId":4}]"#,
        );
        let err = extract(
            &bad,
            "hubspot",
            &rules(Scheme::Hubspot, &[("event_type", "none")]),
            true,
        )
        .unwrap_err();
        assert!(err.reason.starts_with("event 1 of the batch"), "{err}");
        assert!(extract(
            &verified(Headers::new(), "[]"),
            "hubspot",
            &rules(Scheme::Hubspot, &[]),
            true
        )
        .is_err());
        assert!(extract(
            &verified(Headers::new(), "{}"),
            "hubspot",
            &rules(Scheme::Hubspot, &[]),
            true
        )
        .is_err());
    }

    #[test]
    fn missing_or_unusable_fields_say_which_and_why() {
        let request = verified(Headers::new(), r#"{"id":"e1","entity":{"nested":true}}"#);
        let err = one(&request, &rules(Scheme::Hmac, &[])).unwrap_err();
        assert_eq!(err.field, "event_type");
        let err = one(&request, &rules(Scheme::Hmac, &[("event_type", "none")])).unwrap_err();
        assert_eq!(
            err,
            ExtractError {
                field: "entity",
                reason: "an object is not a string or number".into()
            }
        );
        let not_json = verified(Headers::new(), "id=e1");
        let err = one(&not_json, &rules(Scheme::Hmac, &[])).unwrap_err();
        assert!(err.reason.contains("not JSON"), "{err}");
    }

    #[test]
    fn body_hash_can_stand_in_for_an_event_id_and_is_flagged() {
        let request = verified(Headers::new(), r#"{"entity":"x"}"#);
        let configured: BTreeMap<String, RuleText> = BTreeMap::from([
            (
                "event_id".to_owned(),
                RuleText::Many(vec!["/id".into(), "body:sha256".into()]),
            ),
            ("event_type".to_owned(), RuleText::One("none".into())),
        ]);
        let meta = one(
            &request,
            &Rules::resolve(Scheme::Hmac, &configured).unwrap(),
        )
        .unwrap();
        assert_eq!(meta.event_id.len(), 64);
        assert!(meta.event_id_derived);
        assert_eq!(meta.occurred_at, 5_000);
    }
}
