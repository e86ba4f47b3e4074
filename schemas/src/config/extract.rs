//! Extraction rules: where a source's requests carry their event id, event type, entity and
//! event time. A field takes one rule or a list of rules (the first that finds a value wins):
//!
//! * `/data/object/id` — a JSON pointer (RFC 6901) into the body (or into each element of a
//!   batch body);
//! * `header:webhook-id` — a request header;
//! * `form:CallSid` — a field of an `application/x-www-form-urlencoded` body;
//! * `body:sha256` — the hex SHA-256 of the body, for senders without event ids; an id derived
//!   this way is flagged with the `hs-event-id-derived` header;
//! * `received` — the time ingest received the request (for `occurred_at` only);
//! * `none` — absent (for `event_type` only).
//!
//! Defaults per scheme are in [`Rules::defaults`] and `docs/configuration.md`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Scheme;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRule {
    Pointer(String),
    Header(String),
    Form(String),
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
        } else if let Some(name) = text.strip_prefix("form:") {
            if name.is_empty() {
                return Err(format!("`{text}`: form field name is empty"));
            }
            Ok(FieldRule::Form(name.to_owned()))
        } else if text == "body:sha256" {
            Ok(FieldRule::BodySha256)
        } else if text == "received" {
            Ok(FieldRule::Received)
        } else if text == "none" {
            Ok(FieldRule::Absent)
        } else {
            Err(format!(
                "`{text}` is not a rule: use a JSON pointer (`/data/id`), `header:NAME`, `form:NAME`, \
                 `body:sha256`, `received` or `none`"
            ))
        }
    }
}

/// One rule or a list of rules, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RuleText {
    One(String),
    Many(Vec<String>),
}

impl RuleText {
    fn texts(&self) -> Vec<&str> {
        match self {
            RuleText::One(text) => vec![text.as_str()],
            RuleText::Many(texts) => texts.iter().map(String::as_str).collect(),
        }
    }
}

/// The four rule lists of one source, resolved against the scheme's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub event_id: Vec<FieldRule>,
    pub event_type: Vec<FieldRule>,
    pub entity: Vec<FieldRule>,
    pub occurred_at: Vec<FieldRule>,
}

pub const FIELDS: [&str; 4] = ["event_id", "event_type", "entity", "occurred_at"];

impl Rules {
    /// Defaults per scheme: `[event_id, event_type, entity, occurred_at]`.
    pub fn defaults(scheme: Scheme) -> [&'static [&'static str]; 4] {
        match scheme {
            Scheme::Standard => [
                &["header:webhook-id"],
                &["/type"],
                &["/data/id"],
                &["/timestamp", "received"],
            ],
            Scheme::Svix => [
                &["header:svix-id"],
                &["/type"],
                &["/data/id"],
                &["/timestamp", "received"],
            ],
            Scheme::Stripe => [&["/id"], &["/type"], &["/data/object/id"], &["/created"]],
            Scheme::Github => [
                &["header:x-github-delivery"],
                &["header:x-github-event"],
                &[
                    "/pull_request/node_id",
                    "/issue/node_id",
                    "/repository/full_name",
                    "/organization/login",
                ],
                &["received"],
            ],
            Scheme::Twilio => [
                // One call or message sends many status callbacks, so its Sid is not an event
                // id; the idempotency token is unique per callback and stable across retries.
                // Form rules read form bodies only, pointers JSON bodies only (Twilio's JSON
                // webhooks: Event Streams CloudEvents, alone or as an array, Voice Insights,
                // other JSON callbacks with `bodySHA256` in the URL).
                &[
                    "header:i-twilio-idempotency-token",
                    "/id",
                    "/0/id",
                    "body:sha256",
                ],
                &[
                    "form:MessageStatus",
                    "form:CallStatus",
                    "form:SmsStatus",
                    "/type",
                    "/0/type",
                    "none",
                ],
                &[
                    "form:CallSid",
                    "form:MessageSid",
                    "form:SmsSid",
                    "form:From",
                    "/data/callSid",
                    "/data/messageSid",
                    "/data/conversationSid",
                    "/0/data/callSid",
                    "/0/data/messageSid",
                    "/0/data/conversationSid",
                    "/call_sid",
                    "/CallSid",
                    "/MessageSid",
                    "/source",
                    "/0/source",
                    "/data/accountSid",
                    "/0/data/accountSid",
                    "/account_sid",
                    "/AccountSid",
                ],
                &["received"],
            ],
            Scheme::Shopify => [
                &["header:x-shopify-event-id", "header:x-shopify-webhook-id"],
                &["header:x-shopify-topic"],
                &["/admin_graphql_api_id", "/id"],
                &["header:x-shopify-triggered-at", "/updated_at", "received"],
            ],
            Scheme::Slack => [
                &["/event_id", "body:sha256"],
                &["/event/type", "/type"],
                &["/event/channel", "/event/user", "/team_id"],
                &["/event_time", "received"],
            ],
            Scheme::Hubspot => [
                &["/eventId"],
                &["/subscriptionType"],
                &["/objectId"],
                &["/occurredAt"],
            ],
            Scheme::Paddle => [
                &["/event_id"],
                &["/event_type"],
                &["/data/id"],
                &["/occurred_at"],
            ],
            Scheme::Hmac | Scheme::None => [&["/id"], &["/type"], &["/entity"], &["received"]],
        }
    }

    pub fn resolve(
        scheme: Scheme,
        configured: &BTreeMap<String, RuleText>,
    ) -> Result<Self, String> {
        if let Some(unknown) = configured.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{unknown}` (expected one of {FIELDS:?})"
            ));
        }
        let defaults = Self::defaults(scheme);
        let mut resolved = Vec::with_capacity(4);
        for (field, default) in FIELDS.iter().zip(defaults) {
            let texts = configured
                .get(*field)
                .map(RuleText::texts)
                .unwrap_or_else(|| default.to_vec());
            if texts.is_empty() {
                return Err(format!("{field}: the list of rules is empty"));
            }
            let mut rules = Vec::with_capacity(texts.len());
            for text in texts {
                let rule = FieldRule::parse(text).map_err(|e| format!("{field}: {e}"))?;
                let allowed = match (*field, &rule) {
                    (
                        "occurred_at",
                        FieldRule::BodySha256 | FieldRule::Absent | FieldRule::Form(_),
                    ) => false,
                    ("occurred_at", _) => true,
                    ("event_type", FieldRule::Received | FieldRule::BodySha256) => false,
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
            resolved.push(rules);
        }
        let mut it = resolved.into_iter();
        let mut next = || it.next().expect("four rule lists");
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

    fn one(k: &str, v: &str) -> BTreeMap<String, RuleText> {
        BTreeMap::from([(k.to_owned(), RuleText::One(v.to_owned()))])
    }

    #[test]
    fn defaults_depend_on_scheme_and_configured_rules_override_them() {
        let rules = Rules::resolve(Scheme::Standard, &BTreeMap::new()).unwrap();
        assert_eq!(rules.event_id, vec![FieldRule::Header("webhook-id".into())]);
        let rules = Rules::resolve(Scheme::Hmac, &one("entity", "/order_id")).unwrap();
        assert_eq!(rules.entity, vec![FieldRule::Pointer("/order_id".into())]);
        assert_eq!(rules.occurred_at, vec![FieldRule::Received]);
        for scheme in [
            Scheme::Stripe,
            Scheme::Github,
            Scheme::Twilio,
            Scheme::Shopify,
            Scheme::Slack,
            Scheme::Hubspot,
            Scheme::Paddle,
            Scheme::Svix,
        ] {
            Rules::resolve(scheme, &BTreeMap::new()).unwrap();
        }
    }

    #[test]
    fn lists_are_tried_in_order() {
        let configured = BTreeMap::from([(
            "entity".to_owned(),
            RuleText::Many(vec!["/data/object/id".into(), "form:CallSid".into()]),
        )]);
        let rules = Rules::resolve(Scheme::Hmac, &configured).unwrap();
        assert_eq!(
            rules.entity,
            vec![
                FieldRule::Pointer("/data/object/id".into()),
                FieldRule::Form("CallSid".into())
            ]
        );
        let empty = BTreeMap::from([("entity".to_owned(), RuleText::Many(vec![]))]);
        assert!(Rules::resolve(Scheme::Hmac, &empty)
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn bad_rules_are_explained() {
        let bad = |k: &str, v: &str| Rules::resolve(Scheme::Hmac, &one(k, v)).unwrap_err();
        assert!(bad("entity", "received").contains("entity"));
        assert!(bad("event_id", "data.id").contains("JSON pointer"));
        assert!(bad("entity_id", "/x").contains("unknown field"));
        assert!(bad("event_id", "header:").contains("header name"));
    }
}
