//! Extraction rules: where a source's requests carry their event id, event type, entity and
//! event time. A rule is written as a string:
//!
//! * `/data/object/id` — a JSON pointer (RFC 6901) into the body;
//! * `header:webhook-id` — a request header;
//! * `body:sha256` — the hex SHA-256 of the body (an event id for senders that have none);
//! * `received` — the time ingest received the request (for `occurred_at` only);
//! * `none` — absent (for `event_type` only).
//!
//! | field | `standard` | `svix` | `hmac` |
//! |---|---|---|---|
//! | `event_id` | `header:webhook-id` | `header:svix-id` | `/id` |
//! | `event_type` | `/type` | `/type` | `/type` |
//! | `entity` | `/data/id` | `/data/id` | `/entity` |
//! | `occurred_at` | `/timestamp` | `/timestamp` | `received` |

use std::collections::BTreeMap;

use super::Scheme;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRule {
    Pointer(String),
    Header(String),
    BodySha256,
    Received,
    Absent,
}

impl FieldRule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.starts_with('/') {
            Ok(FieldRule::Pointer(text.to_owned()))
        } else if let Some(name) = text.strip_prefix("header:") {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(format!(
                    "`{text}`: header name is empty or not a valid header name"
                ));
            }
            Ok(FieldRule::Header(name.to_ascii_lowercase()))
        } else if text == "body:sha256" {
            Ok(FieldRule::BodySha256)
        } else if text == "received" {
            Ok(FieldRule::Received)
        } else if text == "none" {
            Ok(FieldRule::Absent)
        } else {
            Err(format!(
                "`{text}` is not a rule: use a JSON pointer (`/data/id`), `header:NAME`, \
                 `body:sha256`, `received` or `none`"
            ))
        }
    }
}

/// The four rules of one source, resolved against the scheme's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub event_id: FieldRule,
    pub event_type: FieldRule,
    pub entity: FieldRule,
    pub occurred_at: FieldRule,
}

pub const FIELDS: [&str; 4] = ["event_id", "event_type", "entity", "occurred_at"];

impl Rules {
    pub fn defaults(scheme: Scheme) -> [&'static str; 4] {
        match scheme {
            Scheme::Standard => ["header:webhook-id", "/type", "/data/id", "/timestamp"],
            Scheme::Svix => ["header:svix-id", "/type", "/data/id", "/timestamp"],
            _ => ["/id", "/type", "/entity", "received"],
        }
    }

    pub fn resolve(scheme: Scheme, configured: &BTreeMap<String, String>) -> Result<Self, String> {
        if let Some(unknown) = configured.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{unknown}` (expected one of {FIELDS:?})"
            ));
        }
        let defaults = Self::defaults(scheme);
        let mut rules = Vec::with_capacity(4);
        for (field, default) in FIELDS.iter().zip(defaults) {
            let text = configured
                .get(*field)
                .map(String::as_str)
                .unwrap_or(default);
            let rule = FieldRule::parse(text).map_err(|e| format!("{field}: {e}"))?;
            let allowed = match (*field, &rule) {
                ("occurred_at", FieldRule::BodySha256 | FieldRule::Absent) => false,
                ("occurred_at", _) => true,
                ("event_type", FieldRule::Received) => false,
                ("event_type", _) => true,
                (_, FieldRule::Received | FieldRule::Absent) => false,
                ("entity", FieldRule::BodySha256) => false,
                _ => true,
            };
            if !allowed {
                return Err(format!("{field}: `{text}` cannot be used for this field"));
            }
            rules.push(rule);
        }
        let mut it = rules.into_iter();
        let mut next = || it.next().expect("four rules");
        Ok(Self {
            event_id: next(),
            event_type: next(),
            entity: next(),
            occurred_at: next(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_depend_on_scheme_and_configured_rules_override_them() {
        let rules = Rules::resolve(Scheme::Standard, &BTreeMap::new()).unwrap();
        assert_eq!(rules.event_id, FieldRule::Header("webhook-id".into()));
        let configured = BTreeMap::from([("entity".to_owned(), "/order_id".to_owned())]);
        let rules = Rules::resolve(Scheme::Hmac, &configured).unwrap();
        assert_eq!(rules.entity, FieldRule::Pointer("/order_id".into()));
        assert_eq!(rules.occurred_at, FieldRule::Received);
    }

    #[test]
    fn bad_rules_are_explained() {
        let bad = |k: &str, v: &str| {
            Rules::resolve(
                Scheme::Hmac,
                &BTreeMap::from([(k.to_owned(), v.to_owned())]),
            )
            .unwrap_err()
        };
        assert!(bad("entity", "received").contains("entity"));
        assert!(bad("event_id", "data.id").contains("JSON pointer"));
        assert!(bad("entity_id", "/x").contains("unknown field"));
        assert!(bad("event_id", "header:").contains("header name"));
    }
}
