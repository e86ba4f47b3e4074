//! Extraction (JSON pointer, form, header, body hash, clock rules; single and batch bodies)
//! over fuzzed requests and fuzzed rule texts, through the public API: the request is made
//! verified by signing it (GitHub's scheme, which signs the body only).
//!
//! Invariants on success: one event per non-batch body covering all of it; a batch yields 1
//! to `MAX_BATCH` events whose ranges lie inside the body, in order, each a JSON value; event
//! id and entity are non-blank and at most `MAX_FIELD_BYTES`; tenant, source, key id, receive
//! time and content type come from the request; a derived id is the hex SHA-256 of the event's
//! bytes; and the metadata survives the `raw` record's headers (`RawMeta::to_headers` →
//! `from_headers`) unchanged.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use ingest::extract::{extract, MAX_BATCH, MAX_FIELD_BYTES};
use ingest::request::{Headers, Request, Unverified};
use ingest::verify::{sign, Verifier};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use schemas::config::{Config, RuleText, Rules, Scheme};
use schemas::raw::RawMeta;
use sha2::{Digest, Sha256};

const RECEIVED: i64 = 1_700_000_000_000;
const FIELDS: [&str; 4] = ["event_id", "event_type", "entity", "occurred_at"];
const SCHEMES: [Scheme; 10] = [
    Scheme::Stripe,
    Scheme::Github,
    Scheme::Twilio,
    Scheme::Shopify,
    Scheme::Slack,
    Scheme::Standard,
    Scheme::Svix,
    Scheme::Hubspot,
    Scheme::Paddle,
    Scheme::Hmac,
];
const HEADER_NAMES: [&str; 8] = [
    "content-type",
    "webhook-id",
    "x-github-delivery",
    "x-github-event",
    "x-shopify-topic",
    "i-twilio-idempotency-token",
    "x-event",
    "x-entity",
];
const RULE_TEXTS: [&str; 14] = [
    "/id",
    "/data/id",
    "/type",
    "/created",
    "/data/object/id",
    "/0",
    "/a~1b/~0c",
    "header:x-event",
    "header:content-type",
    "form:CallSid",
    "form:From",
    "body:sha256",
    "received",
    "none",
];
const CONTENT_TYPES: [&str; 3] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8",
];

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let config = Config::parse_str(
            "[[tenants]]\nid = \"acme\"\n[[tenants.sources]]\nid = \"orders\"\nscheme = \"github\"\n\
             secrets = [{ id = \"k1\", value = \"extract-fuzz\" }]\n",
        )
        .unwrap();
        Verifier::build(&config.tenants[0].sources[0]).unwrap()
    })
}

fn rule_text(u: &mut Unstructured<'_>) -> ArbResult<String> {
    Ok(if u.ratio(3u8, 4)? {
        RULE_TEXTS[u.choose_index(RULE_TEXTS.len())?].to_owned()
    } else {
        u.arbitrary()?
    })
}

fn run(u: &mut Unstructured<'_>) -> ArbResult<()> {
    let scheme = SCHEMES[u.choose_index(SCHEMES.len())?];
    let mut configured = BTreeMap::new();
    for field in FIELDS {
        match u.int_in_range(0u8..=2)? {
            0 => {}
            1 => {
                configured.insert(field.to_owned(), RuleText::One(rule_text(u)?));
            }
            _ => {
                let n = u.int_in_range(1..=3)?;
                let mut texts = Vec::with_capacity(n);
                for _ in 0..n {
                    texts.push(rule_text(u)?);
                }
                configured.insert(field.to_owned(), RuleText::Many(texts));
            }
        }
    }
    let Ok(rules) = Rules::resolve(scheme, &configured) else {
        return Ok(());
    };
    let batch: bool = u.arbitrary()?;
    let mut headers = Headers::new();
    if u.arbitrary()? {
        headers.push(
            "content-type",
            CONTENT_TYPES[u.choose_index(CONTENT_TYPES.len())?].as_bytes(),
        );
    }
    for _ in 0..u.int_in_range(0..=4)? {
        let name = HEADER_NAMES[u.choose_index(HEADER_NAMES.len())?];
        headers.push(name, &u.arbitrary::<Vec<u8>>()?);
    }
    let body: Vec<u8> = u.arbitrary()?;
    headers.push(
        "x-hub-signature-256",
        sign::github("extract-fuzz", &body).as_bytes(),
    );
    let content_type = headers.get("content-type").unwrap_or_default().to_owned();
    let request =
        Request::<Unverified>::new("acme", "orders", headers, Bytes::from(body), RECEIVED)
            .verify(verifier(), RECEIVED)
            .expect("a signed request verifies");
    let body = request.body().as_ref();

    let Ok(events) = extract(&request, scheme.as_str(), &rules, batch) else {
        return Ok(());
    };
    assert!(!events.is_empty(), "an extraction without events");
    if batch {
        assert!(
            events.len() <= MAX_BATCH,
            "{} events in a batch",
            events.len()
        );
    } else {
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].body, 0..body.len());
    }
    let mut end = 0;
    for event in &events {
        let range = event.body.clone();
        assert!(
            range.start >= end && range.end <= body.len(),
            "{range:?} of {}",
            body.len()
        );
        end = range.end;
        let bytes = &body[range];
        if batch {
            // Syntax only: `1e400` is JSON but no `serde_json::Value` (docs/fuzzing.md).
            serde_json::from_slice::<&serde_json::value::RawValue>(bytes)
                .expect("each batch element is a JSON value");
        }
        let meta = &event.meta;
        for (name, value) in [("event_id", &meta.event_id), ("entity", &meta.entity)] {
            assert!(!value.trim().is_empty(), "{name} is blank");
            assert!(
                value.len() <= MAX_FIELD_BYTES,
                "{name} is {} bytes",
                value.len()
            );
        }
        assert_eq!(
            (
                meta.tenant.as_str(),
                meta.source.as_str(),
                meta.key_id.as_str()
            ),
            ("acme", "orders", "k1")
        );
        assert_eq!(meta.scheme, scheme.as_str());
        assert_eq!(meta.received_at, RECEIVED);
        assert_eq!(meta.content_type, content_type);
        assert_eq!(meta.redrive_id, None);
        if meta.event_id_derived {
            assert_eq!(meta.event_id, hex::encode(Sha256::digest(bytes)));
        }
        let headers = meta.to_headers();
        let back = RawMeta::from_headers(headers.iter().map(|(n, v)| (*n, Some(v.as_bytes()))))
            .expect("the raw headers of an extracted event decode");
        assert_eq!(&back, meta, "raw headers do not round-trip: {headers:?}");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
