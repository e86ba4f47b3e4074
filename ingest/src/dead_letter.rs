//! Verified requests that the source's extraction rules cannot read are kept, not lost: the
//! ingest appends them to `dlq` (acks=all, like `raw`), answers 202 `dead_lettered`, audits
//! them to `rejected` and counts them per tenant. An operator fixes the rules and redrives
//! them (`hookstream replay --from-topic dlq --error '^unreadable' --redrive`), which runs
//! extraction again with the current rules ([`Reextractor`]) and appends proper `raw` records.
//!
//! A dead letter written by the ingest is the request body byte for byte, keyed `tenant/entity`
//! when the entity rules could read it and `tenant` otherwise, with headers:
//!
//! * the `raw` metadata headers that are known: `hs-version`, `hs-tenant`, `hs-source`,
//!   `hs-scheme`, `hs-received-at`, `hs-content-type`, `hs-key-id`, and `hs-event-id`
//!   (`hs-event-id-derived`), `hs-event-type`, `hs-entity`, `hs-occurred-at` when their rules
//!   found a value;
//! * `hs-request-<name>`: the request's headers (lowercase names, UTF-8 values only), so
//!   `header:` rules can run again, except credentials and signatures ([`is_sensitive`]), and
//!   at most [`REQUEST_HEADERS_BUDGET`] bytes of them (`hs-request-dropped` counts the rest);
//! * `hs-dead-lettered-by: ingest`;
//! * `hs-error: unreadable: <field>: <why every rule of that field failed>` (at most
//!   [`MAX_ERROR_BYTES`]).
//!
//! There is no `hs-raw-partition` / `hs-raw-offset`: the request never reached `raw`.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use schemas::config::{Config, Rules};
use schemas::key::EntityKey;
use schemas::raw::{header, VERSION};
use schemas::time::{parse_rfc3339, to_rfc3339};

use crate::extract::{extract, partial, ExtractError};
use crate::request::{Headers, Request, Verified};

/// `hs-dead-lettered-by`: who wrote the dead letter (`ingest`; absent on the processor's).
pub const DEAD_LETTERED_BY: &str = "hs-dead-lettered-by";
/// Prefix of the request headers kept on a dead letter.
pub const REQUEST_PREFIX: &str = "hs-request-";
/// How many request headers did not fit in [`REQUEST_HEADERS_BUDGET`].
pub const REQUEST_DROPPED: &str = "hs-request-dropped";
/// The reason code of a verified request the rules could not read (`hs-error` prefix,
/// the answer's `reason`, the audit record's `reason`).
pub const UNREADABLE: &str = "unreadable";
/// Most bytes of request headers (names and values) kept on one dead letter.
pub const REQUEST_HEADERS_BUDGET: usize = 8 * 1024;
/// Longest `hs-error` written.
pub const MAX_ERROR_BYTES: usize = 1024;

/// A dead letter's key and headers (the value is the request body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Request headers never copied to a dead letter: credentials, cookies and signatures (a
/// signature is not a secret, but nothing downstream needs it; `raw` never carries one), plus
/// the source's own secret headers (`secret_headers`: an `hmac` source's signature header, a
/// token's header).
pub fn is_sensitive(name: &str, secret_headers: &[&str]) -> bool {
    let name = name.to_ascii_lowercase();
    if secret_headers.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
        return true;
    }
    const WORDS: [&str; 9] = [
        "signature",
        "hmac",
        "secret",
        "password",
        "auth",
        "cookie",
        "api-key",
        "apikey",
        "session",
    ];
    WORDS.iter().any(|w| name.contains(w))
        || (name.contains("token") && !name.contains("idempotency"))
}

/// The text of `hs-error` for an extraction failure.
pub fn error_text(error: &ExtractError) -> String {
    truncate(format!("{UNREADABLE}: {error}"), MAX_ERROR_BYTES)
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// The dead letter of a verified request whose extraction failed with `error`.
pub fn dead_letter(
    request: &Request<Verified>,
    scheme: &str,
    rules: &Rules,
    error: &ExtractError,
    secret_headers: &[&str],
) -> DeadLetter {
    let known = partial(request, rules);
    let text = |name: &str, value: &str| (name.to_owned(), value.as_bytes().to_vec());
    let mut headers = vec![
        text(header::VERSION, VERSION),
        text(header::TENANT, request.tenant()),
        text(header::SOURCE, request.source()),
        text(header::SCHEME, scheme),
    ];
    if let Some((id, derived)) = &known.event_id {
        headers.push(text(header::EVENT_ID, id));
        if *derived {
            headers.push(text(header::EVENT_ID_DERIVED, "body-sha256"));
        }
    }
    if let Some(event_type) = &known.event_type {
        headers.push(text(header::EVENT_TYPE, event_type));
    }
    if let Some(entity) = &known.entity {
        headers.push(text(header::ENTITY, entity));
    }
    if let Some(at) = known.occurred_at {
        headers.push(text(header::OCCURRED_AT, &to_rfc3339(at)));
    }
    headers.push(text(
        header::RECEIVED_AT,
        &to_rfc3339(request.received_at()),
    ));
    headers.push(text(
        header::CONTENT_TYPE,
        request.headers().get("content-type").unwrap_or_default(),
    ));
    headers.push(text(header::KEY_ID, request.key_id()));
    let (mut used, mut dropped) = (0usize, 0usize);
    for (name, value) in request.headers().iter() {
        if is_sensitive(name, secret_headers) || std::str::from_utf8(value).is_err() {
            continue;
        }
        let name = format!("{REQUEST_PREFIX}{name}");
        if used + name.len() + value.len() > REQUEST_HEADERS_BUDGET {
            dropped += 1;
            continue;
        }
        used += name.len() + value.len();
        headers.push((name, value.to_vec()));
    }
    if dropped > 0 {
        headers.push(text(REQUEST_DROPPED, &dropped.to_string()));
    }
    headers.push(text(DEAD_LETTERED_BY, "ingest"));
    headers.push(text(header::ERROR, &error_text(error)));
    let key = match &known.entity {
        Some(entity) => EntityKey::new(request.tenant(), entity).encode(),
        None => request.tenant().to_owned(),
    };
    DeadLetter { key, headers }
}

/// Whether a `dlq` record is a request the ingest could not read (and [`Reextractor`] can
/// read again).
pub fn is_unreadable(headers: &[(String, Vec<u8>)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| n == DEAD_LETTERED_BY && v == b"ingest")
}

/// One `raw` record re-extracted from a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reextracted {
    pub key: String,
    pub headers: Vec<(&'static str, String)>,
    /// Where the event's bytes are in the dead letter's value (a batch yields several).
    pub body: Range<usize>,
}

/// Runs extraction again, with the configuration's current rules, on requests the ingest
/// verified and dead-lettered as unreadable. No secret is needed: the signature was checked
/// when the request arrived.
pub struct Reextractor {
    sources: HashMap<(String, String), (Rules, bool)>,
}

impl Reextractor {
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut sources = HashMap::new();
        for tenant in &config.tenants {
            for source in &tenant.sources {
                let rules = source
                    .rules()
                    .map_err(|e| format!("tenant `{}` source `{}`: {e}", tenant.id, source.id))?;
                sources.insert(
                    (tenant.id.clone(), source.id.clone()),
                    (rules, source.is_batch()),
                );
            }
        }
        Ok(Self { sources })
    }

    /// The `raw` records of a dead letter written by the ingest, or why it still cannot be read.
    pub fn reextract(
        &self,
        headers: &[(String, Vec<u8>)],
        body: Bytes,
    ) -> Result<Vec<Reextracted>, String> {
        let get = |name: &str| {
            headers
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        };
        let need = |name: &'static str| get(name).ok_or(format!("header `{name}` is missing"));
        let tenant = need(header::TENANT)?;
        let source = need(header::SOURCE)?;
        let scheme = need(header::SCHEME)?;
        let received = need(header::RECEIVED_AT)?;
        let received_at = parse_rfc3339(received)
            .ok_or_else(|| format!("`{received}` is not an RFC 3339 time"))?;
        let key_id = get(header::KEY_ID).unwrap_or_default();
        let (rules, batch) = self
            .sources
            .get(&(tenant.to_owned(), source.to_owned()))
            .ok_or_else(|| format!("tenant `{tenant}` has no source `{source}` any more"))?;
        let mut request_headers = Headers::new();
        for (name, value) in headers {
            if let Some(name) = name.strip_prefix(REQUEST_PREFIX) {
                if name != "dropped" {
                    request_headers.push(name, value);
                }
            }
        }
        let request = Request::kept(
            tenant,
            source,
            request_headers,
            body,
            received_at,
            key_id.to_owned(),
        );
        let events =
            extract(&request, scheme, rules, *batch).map_err(|e| format!("{UNREADABLE}: {e}"))?;
        Ok(events
            .into_iter()
            .map(|event| Reextracted {
                key: EntityKey::new(&event.meta.tenant, &event.meta.entity).encode(),
                headers: event.meta.to_headers(),
                body: event.body,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Unverified;
    use schemas::config::{RuleText, Scheme};
    use std::collections::BTreeMap;

    fn request(headers: Headers, body: &[u8]) -> Request<Verified> {
        Request::<Unverified>::new(
            "acme",
            "orders",
            headers,
            Bytes::copy_from_slice(body),
            1_700_000_000_000,
        )
        .into_verified("k1".into())
    }

    fn rules(entity: &str) -> Rules {
        let map = BTreeMap::from([
            ("entity".to_owned(), RuleText::One(entity.to_owned())),
            (
                "event_id".to_owned(),
                RuleText::One("header:x-event".into()),
            ),
            ("event_type".to_owned(), RuleText::One("none".into())),
        ]);
        Rules::resolve(Scheme::Hmac, &map).unwrap()
    }

    fn value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn a_dead_letter_keeps_what_is_known_and_the_request_headers_but_no_credentials() {
        let mut headers = Headers::new()
            .with("X-Event", "evt-1")
            .with("content-type", "application/json")
            .with("x-signature", "sha256=abc")
            .with("Authorization", "Bearer s3cret")
            .with("I-Twilio-Idempotency-Token", "idem")
            .with("x-custom-mac", "deadbeef");
        headers.push("x-binary", &[0xff, 0xfe]);
        let request = request(headers, br#"{"nope":1}"#);
        let rules = rules("/order_id");
        let error = extract(&request, "hmac", &rules, false).unwrap_err();
        let letter = dead_letter(&request, "hmac", &rules, &error, &["x-custom-mac"]);
        assert_eq!(letter.key, "acme", "no entity: keyed by tenant");
        let h = &letter.headers;
        assert_eq!(value(h, header::EVENT_ID), Some("evt-1"));
        assert_eq!(value(h, header::ENTITY), None);
        assert_eq!(value(h, header::TENANT), Some("acme"));
        assert_eq!(value(h, header::KEY_ID), Some("k1"));
        assert_eq!(
            value(h, header::RECEIVED_AT),
            Some("2023-11-14T22:13:20.000Z")
        );
        assert_eq!(value(h, "hs-request-x-event"), Some("evt-1"));
        assert_eq!(
            value(h, "hs-request-i-twilio-idempotency-token"),
            Some("idem")
        );
        for gone in [
            "hs-request-x-signature",
            "hs-request-authorization",
            "hs-request-x-custom-mac",
            "hs-request-x-binary",
        ] {
            assert_eq!(value(h, gone), None, "{gone}");
        }
        let all: Vec<u8> = h.iter().flat_map(|(_, v)| v.clone()).collect();
        assert!(!String::from_utf8_lossy(&all).contains("s3cret"));
        let error_header = value(h, header::ERROR).unwrap();
        assert!(
            error_header.starts_with("unreadable: entity: "),
            "{error_header}"
        );
        assert!(is_unreadable(h));
    }

    #[test]
    fn request_headers_are_bounded_and_errors_truncated() {
        let mut headers = Headers::new();
        let big = "v".repeat(3000);
        for i in 0..10 {
            headers = headers.with(&format!("x-h{i}"), &big);
        }
        let request = request(headers, b"not json");
        let rules = rules("/order_id");
        let error = ExtractError {
            field: "entity",
            reason: "é".repeat(2000),
        };
        let letter = dead_letter(&request, "hmac", &rules, &error, &[]);
        let kept: usize = letter
            .headers
            .iter()
            .filter(|(n, _)| n.starts_with("hs-request-x-"))
            .map(|(n, v)| n.len() + v.len())
            .sum();
        assert!(kept <= REQUEST_HEADERS_BUDGET);
        assert_eq!(value(&letter.headers, REQUEST_DROPPED), Some("8"));
        assert!(value(&letter.headers, header::ERROR).unwrap().len() <= MAX_ERROR_BYTES);
    }

    #[test]
    fn fixed_rules_read_a_dead_letter_again() {
        let request = request(
            Headers::new()
                .with("X-Event", "evt-2")
                .with("content-type", "application/json"),
            br#"{"order":{"id":"o-9"}}"#,
        );
        let broken = rules("/order_id");
        let error = extract(&request, "hmac", &broken, false).unwrap_err();
        let letter = dead_letter(&request, "hmac", &broken, &error, &[]);
        let body = request.body().clone();
        let config = |entity: &str| {
            Config::parse_str(&format!(
                r#"
[[tenants]]
id = "acme"
[[tenants.sources]]
id = "orders"
scheme = "hmac"
secrets = [{{ id = "k1", value = "s" }}]
extract = {{ event_id = "header:x-event", event_type = "none", entity = "{entity}" }}
"#
            ))
            .unwrap()
        };
        let still = Reextractor::new(&config("/order_id")).unwrap();
        let err = still.reextract(&letter.headers, body.clone()).unwrap_err();
        assert!(err.starts_with("unreadable: entity"), "{err}");
        let fixed = Reextractor::new(&config("/order/id")).unwrap();
        let records = fixed.reextract(&letter.headers, body.clone()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key, "acme/o-9");
        assert_eq!(records[0].body, 0..body.len());
        let get = |name: &str| {
            records[0]
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get(header::EVENT_ID), Some("evt-2"));
        assert_eq!(get(header::ENTITY), Some("o-9"));
        assert_eq!(get(header::RECEIVED_AT), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(get(header::CONTENT_TYPE), Some("application/json"));
        assert_eq!(get(header::KEY_ID), Some("k1"));
    }
}
