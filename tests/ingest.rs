//! End-to-end ingest behaviour against a real Tansu broker and the real `hookstream ingest`:
//! providers' own signing and body formats, rate limits, size limits and the audit topic.

mod harness;

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use harness::kafka::read_until;
use harness::signing::orders_signature;
use harness::{http, Pipeline, Settings};

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

const PROVIDERS: &str = r#"
[[tenants]]
id = "voice"
[[tenants.sources]]
id = "stripe"
scheme = "stripe"
secrets = [{ id = "rolled", value = "whsec_old" }, { id = "current", value = "whsec_test_stripe" }]
[[tenants.sources]]
id = "github"
scheme = "github"
secrets = [{ id = "k1", value = "gh-test-secret" }]
[[tenants.sources]]
id = "twilio"
scheme = "twilio"
secrets = [{ id = "k1", value = "twilio-test-token" }]
[[tenants.sources]]
id = "hubspot"
scheme = "hubspot"
secrets = [{ id = "k1", value = "hubspot-test-secret" }]
"#;

#[test]
fn real_provider_formats_are_verified_and_appended() {
    let settings = Settings {
        ingest: "public_base_url = \"https://hooks.example.com\"".into(),
        tenants: PROVIDERS.into(),
        ..Settings::default()
    };
    let pipeline = Pipeline::start_with("providers", false, &settings);
    let now = chrono::Utc::now().timestamp();

    // Stripe: t=,v1= over "{t}.{body}" with the whsec_ string itself as key; two v1 while rolling.
    let stripe = br#"{"id":"evt_S1","type":"customer.updated","created":1763800000,"data":{"object":{"id":"cus_1"}}}"#;
    let sig = hex::encode(hmac_sha256(
        b"whsec_test_stripe",
        &[now.to_string().as_bytes(), b".", stripe],
    ));
    let header = format!("t={now},v1={},v1={sig}", "0".repeat(64));
    let reply = http::post(
        &pipeline.url("/v1/hooks/voice/stripe"),
        &[("stripe-signature".into(), header)],
        stripe,
    );
    assert_eq!(
        (reply.status, reply.json["event_id"].as_str()),
        (202, Some("evt_S1")),
        "{}",
        reply.json
    );

    // GitHub: X-Hub-Signature-256, delivery id and event name from headers.
    let github = br#"{"action":"opened","repository":{"full_name":"acme/agent"}}"#;
    let headers = vec![
        (
            "x-hub-signature-256".to_owned(),
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(b"gh-test-secret", &[github]))
            ),
        ),
        ("x-github-delivery".to_owned(), "d-123".to_owned()),
        ("x-github-event".to_owned(), "pull_request".to_owned()),
    ];
    let reply = http::post(&pipeline.url("/v1/hooks/voice/github"), &headers, github);
    assert_eq!(
        (reply.status, reply.json["event_id"].as_str()),
        (202, Some("d-123")),
        "{}",
        reply.json
    );

    // Twilio: a form body; the signed URL is the public one, not the loopback address.
    let form = b"CallSid=CA42&CallStatus=ringing&From=%2B15551230000";
    let url = "https://hooks.example.com/v1/hooks/voice/twilio";
    let mut signed = url.as_bytes().to_vec();
    for (k, v) in [
        ("CallSid", "CA42"),
        ("CallStatus", "ringing"),
        ("From", "+15551230000"),
    ] {
        signed.extend_from_slice(k.as_bytes());
        signed.extend_from_slice(v.as_bytes());
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(b"twilio-test-token").unwrap();
    mac.update(&signed);
    let headers = vec![
        (
            "x-twilio-signature".to_owned(),
            B64.encode(mac.finalize().into_bytes()),
        ),
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ),
        (
            "i-twilio-idempotency-token".to_owned(),
            "tw-idem-1".to_owned(),
        ),
    ];
    let reply = http::post(&pipeline.url("/v1/hooks/voice/twilio"), &headers, form);
    assert_eq!(
        (reply.status, reply.json["event_id"].as_str()),
        (202, Some("tw-idem-1")),
        "{}",
        reply.json
    );

    // HubSpot v3: an array of events signed as one, appended as one record per event.
    let hubspot = br#"[{"eventId":101,"subscriptionType":"contact.propertyChange","objectId":7,"occurredAt":1763800000000},{"eventId":102,"subscriptionType":"contact.deletion","objectId":8,"occurredAt":1763800001000}]"#;
    let ts_ms = (now * 1000).to_string();
    let signature = B64.encode(hmac_sha256(
        b"hubspot-test-secret",
        &[
            b"POST",
            b"https://hooks.example.com/v1/hooks/voice/hubspot",
            hubspot,
            ts_ms.as_bytes(),
        ],
    ));
    let headers = vec![
        ("x-hubspot-signature-v3".to_owned(), signature),
        ("x-hubspot-request-timestamp".to_owned(), ts_ms),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let reply = http::post(&pipeline.url("/v1/hooks/voice/hubspot"), &headers, hubspot);
    assert_eq!(reply.status, 202, "{}", reply.json);
    assert_eq!(reply.json["count"], 2);

    let raw = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("raw"),
        |r| r.len() >= 5,
    );
    let by_id = |id: &str| {
        raw.iter()
            .find(|r| r.header("hs-event-id") == Some(id))
            .unwrap_or_else(|| panic!("{id} not in raw"))
    };
    assert_eq!(by_id("evt_S1").key_str(), "voice/cus_1");
    assert_eq!(by_id("evt_S1").header("hs-key-id"), Some("current"));
    assert_eq!(
        by_id("evt_S1").header("hs-occurred-at"),
        Some("2025-11-22T08:26:40.000Z")
    );
    assert_eq!(by_id("d-123").key_str(), "voice/acme/agent");
    assert_eq!(by_id("d-123").header("hs-event-type"), Some("pull_request"));
    assert_eq!(by_id("tw-idem-1").value, form);
    assert_eq!(by_id("tw-idem-1").key_str(), "voice/CA42");
    assert_eq!(by_id("tw-idem-1").header("hs-event-type"), Some("ringing"));
    let second = by_id("102");
    assert_eq!(second.key_str(), "voice/8");
    assert_eq!(
        second.value,
        br#"{"eventId":102,"subscriptionType":"contact.deletion","objectId":8,"occurredAt":1763800001000}"#
    );
}

#[test]
fn refusals_are_audited_to_rejected_without_body_or_secret() {
    let pipeline = Pipeline::start_with(
        "audit",
        false,
        &Settings {
            max_body_bytes: 4096,
            ..Settings::default()
        },
    );
    let body = br#"{"id":"evt_forged","type":"order.created","order_id":"o","occurred_at":"2026-11-22T10:00:00Z"}"#;
    let forged = http::post(
        &pipeline.url("/v1/hooks/acme/orders"),
        &[("x-signature".into(), orders_signature("wrong-secret", body))],
        body,
    );
    assert_eq!(forged.status, 401);
    let big = vec![b'x'; 5000];
    let too_large = http::post(&pipeline.url("/v1/hooks/acme/orders"), &[], &big);
    assert_eq!(
        (too_large.status, too_large.json["error"].as_str()),
        (413, Some("payload_too_large"))
    );

    let rejected = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("rejected"),
        |r| r.len() >= 2,
    );
    let forged_audit = rejected
        .iter()
        .map(|r| r.json())
        .find(|j| j["reason"] == "invalid_signature")
        .unwrap();
    assert_eq!(forged_audit["tenant"], "acme");
    assert_eq!(forged_audit["source"], "orders");
    assert_eq!(forged_audit["status"], 401);
    assert!(forged_audit["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(
        forged_audit["body_sha256"],
        hex::encode(Sha256::digest(body))
    );
    assert_eq!(forged_audit["body_bytes"], body.len());
    let large_audit = rejected
        .iter()
        .map(|r| r.json())
        .find(|j| j["reason"] == "payload_too_large")
        .unwrap();
    assert_eq!(large_audit["body_bytes"], 5000);
    assert!(
        large_audit["body_sha256"].is_null(),
        "an unread body has no hash"
    );
    for record in &rejected {
        let text = String::from_utf8_lossy(&record.value);
        assert!(
            !text.contains("evt_forged") && !text.contains("orders-test-secret"),
            "{text}"
        );
        assert_eq!(record.key_str(), "acme");
    }
}

#[test]
fn a_tenant_over_its_rate_limit_gets_429_with_retry_after() {
    let tenants = r#"
[[tenants]]
id = "limited"
rate_limit = { per_second = 1, burst = 2 }
[[tenants.sources]]
id = "orders"
scheme = "hmac"
secrets = [{ id = "k1", value = "limited-secret" }]
hmac = { header = "x-signature", prefix = "sha256=" }
extract = { entity = "/order_id", event_type = "none" }
"#;
    let pipeline = Pipeline::start_with(
        "ratelimit",
        false,
        &Settings {
            tenants: tenants.into(),
            ..Settings::default()
        },
    );
    let url = pipeline.url("/v1/hooks/limited/orders");
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..4 {
        let body = format!(r#"{{"id":"e{i}","order_id":"o{i}"}}"#);
        let reply = http::post(
            &url,
            &[(
                "x-signature".into(),
                orders_signature("limited-secret", body.as_bytes()),
            )],
            body.as_bytes(),
        );
        if reply.status == 429 {
            retry_after = reply.retry_after.clone();
            assert_eq!(reply.json["error"], "rate_limited");
        }
        statuses.push(reply.status);
    }
    // A bucket of 2 refilling at 1/s admits at most 2 + elapsed seconds of the 4.
    let admitted = statuses.iter().filter(|s| **s == 202).count();
    assert!(
        admitted as u64 <= 2 + started.elapsed().as_secs(),
        "{statuses:?}"
    );
    if started.elapsed().as_secs() < 1 {
        assert_eq!(statuses, [202, 202, 429, 429]);
    }
    if statuses.contains(&429) {
        assert!(retry_after.unwrap().parse::<u32>().unwrap() >= 1);
    }
    // Other tenants are not limited by this one.
    let body = br#"{"id":"free","type":"t","order_id":"o","occurred_at":"2026-11-22T10:00:00Z"}"#;
    let free = http::post(
        &pipeline.url("/v1/hooks/acme/orders"),
        &[(
            "x-signature".into(),
            orders_signature(harness::signing::ORDERS_SECRET, body),
        )],
        body,
    );
    assert_eq!(free.status, 202);
}

#[test]
fn slack_url_verification_is_answered_without_appending() {
    let tenants = r#"
[[tenants]]
id = "chat"
[[tenants.sources]]
id = "slack"
scheme = "slack"
secrets = [{ id = "k1", value = "slack-test-secret" }]
"#;
    let pipeline = Pipeline::start_with(
        "slack",
        false,
        &Settings {
            tenants: tenants.into(),
            ..Settings::default()
        },
    );
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = hex::encode(hmac_sha256(
        b"slack-test-secret",
        &[b"v0:", ts.as_bytes(), b":", body],
    ));
    let headers = vec![
        ("x-slack-signature".to_owned(), format!("v0={signature}")),
        ("x-slack-request-timestamp".to_owned(), ts),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let reply = http::post(&pipeline.url("/v1/hooks/chat/slack"), &headers, body);
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(
        reply.json["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    // A forged handshake is refused like any other request.
    let forged = vec![
        headers[0].clone(),
        ("x-slack-request-timestamp".to_owned(), "1".to_owned()),
    ];
    assert_eq!(
        http::post(&pipeline.url("/v1/hooks/chat/slack"), &forged, body).status,
        401
    );
    assert_eq!(
        harness::kafka::record_count(&pipeline.config.brokers, &pipeline.config.topic("raw")),
        0
    );
}

#[test]
fn readyz_follows_the_broker_and_metrics_expose_request_and_append_latency() {
    let mut pipeline = Pipeline::start("observability", false);
    let (status, _) = http::get(&pipeline.url("/readyz"));
    assert_eq!(status, 200);
    let body = br#"{"id":"evt_m","type":"t","order_id":"o","occurred_at":"2026-11-22T10:00:00Z"}"#;
    let reply = http::post(
        &pipeline.url("/v1/hooks/acme/orders"),
        &[(
            "x-signature".into(),
            orders_signature(harness::signing::ORDERS_SECRET, body),
        )],
        body,
    );
    assert_eq!(reply.status, 202);
    let (status, metrics) = http::get(&pipeline.url("/metrics"));
    assert_eq!(status, 200);
    for name in [
        "hookstream_ingest_request_seconds",
        "hookstream_ingest_append_seconds",
        "hookstream_ingest_requests_total{tenant=\"acme\",source=\"orders\",outcome=\"accepted\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    pipeline.broker.kill();
    let (status, body) = http::get(&pipeline.url("/readyz"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("broker_unavailable"), "{body}");
    let (status, _) = http::get(&pipeline.url("/healthz"));
    assert_eq!(status, 200, "liveness does not depend on the broker");
}

fn signed_orders(body: &[u8]) -> Vec<(String, String)> {
    vec![(
        "x-signature".into(),
        orders_signature(harness::signing::ORDERS_SECRET, body),
    )]
}

/// A JSON `orders` body of exactly `size` bytes.
fn orders_body(id: &str, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"id":"{id}","type":"t","order_id":"o-{id}","occurred_at":"2026-11-22T10:00:00Z","pad":""#
    );
    let mut body = head.into_bytes();
    body.resize(size - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

#[test]
fn bodies_up_to_the_limit_are_appended_and_larger_ones_get_413_never_5xx() {
    // A source whose rules read headers only: any bytes are a readable body.
    let tenants = r#"
[[tenants]]
id = "bin"
[[tenants.sources]]
id = "blobs"
scheme = "hmac"
secrets = [{ id = "k1", value = "blob-secret" }]
hmac = { header = "x-signature", prefix = "sha256=" }
extract = { event_id = "header:x-id", event_type = "none", entity = "header:x-entity" }
"#;
    let pipeline = Pipeline::start_with(
        "limits",
        false,
        &Settings {
            tenants: tenants.into(),
            ..Settings::default()
        },
    );
    let limit = 1024 * 1024;
    // The ~1 MB JSON body that used to get 503, and one of exactly the limit.
    for (id, size) in [("near", 1_000_000), ("exact", limit)] {
        let body = orders_body(id, size);
        let reply = http::post(
            &pipeline.url("/v1/hooks/acme/orders"),
            &signed_orders(&body),
            &body,
        );
        assert_eq!(
            (reply.status, reply.json["status"].as_str()),
            (202, Some("accepted")),
            "{size}: {}",
            reply.json
        );
    }
    // One byte over: 413 with a clear reason, before anything is appended.
    let body = orders_body("over", limit + 1);
    let reply = http::post(
        &pipeline.url("/v1/hooks/acme/orders"),
        &signed_orders(&body),
        &body,
    );
    assert_eq!(
        (reply.status, reply.json["error"].as_str()),
        (413, Some("payload_too_large")),
        "{}",
        reply.json
    );
    assert!(
        reply.json["message"].as_str().unwrap().contains("1048576"),
        "{}",
        reply.json
    );
    // An 800 KB body of arbitrary (non-UTF-8) bytes is kept byte for byte.
    let blob: Vec<u8> = (0..800_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let headers = vec![
        (
            "x-signature".to_owned(),
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(b"blob-secret", &[&blob]))
            ),
        ),
        ("x-id".to_owned(), "blob-1".to_owned()),
        ("x-entity".to_owned(), "b1".to_owned()),
        (
            "content-type".to_owned(),
            "application/octet-stream".to_owned(),
        ),
    ];
    let reply = http::post(&pipeline.url("/v1/hooks/bin/blobs"), &headers, &blob);
    assert_eq!(reply.status, 202, "{}", reply.json);
    let raw = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("raw"),
        |r| r.len() >= 3,
    );
    let find = |id: &str| {
        raw.iter()
            .find(|r| r.header("hs-event-id") == Some(id))
            .unwrap_or_else(|| panic!("{id}"))
    };
    assert_eq!(find("exact").value, orders_body("exact", limit));
    assert_eq!(find("blob-1").value, blob);
    assert_eq!(find("blob-1").key_str(), "bin/b1");
    assert!(!raw.iter().any(|r| r.header("hs-event-id") == Some("over")));
}

#[test]
fn a_record_the_producer_refuses_is_413_and_an_unappendable_limit_is_refused_at_start() {
    // message.max.bytes set by hand, with room for an 80 000 byte body and its headers.
    let broker = harness::Broker::start();
    let config = harness::TestConfig::write_with(
        &broker,
        "msgmax",
        &Settings {
            max_body_bytes: 80_000,
            ..Settings::default()
        },
    );
    let path = config.variant("msgmax", |text| {
        text.replace(
            "[kafka.producer]\n",
            "[kafka.producer]\n\"message.max.bytes\" = \"100000\"\n",
        )
    });
    let ingest = harness::Service::ingest(&path);
    let pipeline = Pipeline {
        config,
        ingest,
        processor: None,
        broker,
    };
    let body = orders_body("fits", 79_000);
    let ok = http::post(
        &pipeline.url("/v1/hooks/acme/orders"),
        &signed_orders(&body),
        &body,
    );
    assert_eq!(ok.status, 202, "{}", ok.json);
    // A huge header makes the record larger than message.max.bytes: permanent, so 413.
    let mut headers = signed_orders(&body);
    headers.push((
        "content-type".into(),
        format!("application/json; x={}", "a".repeat(30_000)),
    ));
    let refused = http::post(&pipeline.url("/v1/hooks/acme/orders"), &headers, &body);
    assert_eq!(
        (refused.status, refused.json["error"].as_str()),
        (413, Some("payload_too_large")),
        "{}",
        refused.json
    );
    assert!(refused.retry_after.is_none());

    // A max_body_bytes that cannot fit: check-config lists it and the ingest does not start.
    let bad = pipeline.config.variant("bad", |text| {
        text.replace("max_body_bytes = 80000", "max_body_bytes = 1048576")
            .replace(
                "[kafka.producer]\n",
                "[kafka.producer]\n\"message.max.bytes\" = \"100000\"\n",
            )
    });
    let output = harness::process::run(&["check-config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("ingest.max_body_bytes: 1048576 does not fit in one producer message"),
        "{stderr}"
    );
    assert!(stderr.contains("message.max.bytes is 100000"), "{stderr}");
}

#[test]
fn a_verified_but_unreadable_request_is_kept_in_dlq_audited_and_redriven_once_the_rules_are_fixed()
{
    let tenants = r#"
[[tenants]]
id = "shop"
[[tenants.sources]]
id = "orders"
scheme = "hmac"
secrets = [{ id = "k1", value = "shop-secret" }]
hmac = { header = "x-signature", prefix = "sha256=" }
extract = { event_id = "header:x-event-id", event_type = "none", entity = "/order_id" }
"#;
    let pipeline = Pipeline::start_with(
        "unreadable",
        false,
        &Settings {
            tenants: tenants.into(),
            ..Settings::default()
        },
    );
    let url = pipeline.url("/v1/hooks/shop/orders");
    let body = br#"{"order":{"id":"o-9"},"total":12}"#;
    let signature = format!(
        "sha256={}",
        hex::encode(hmac_sha256(b"shop-secret", &[body]))
    );
    let headers = vec![
        ("x-signature".to_owned(), signature.clone()),
        ("x-event-id".to_owned(), "ev-77".to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
        ("authorization".to_owned(), "Bearer do-not-keep".to_owned()),
    ];
    let reply = http::post(&url, &headers, body);
    assert_eq!(reply.status, 202, "{}", reply.json);
    assert_eq!(reply.json["status"], "dead_lettered");
    assert_eq!(reply.json["reason"], "unreadable");
    assert_eq!(reply.json["event_id"], "ev-77");
    assert_eq!(reply.json["topic"], "dlq");
    assert!(reply.json["offset"].as_i64().unwrap() >= 0);
    // A forged request is refused, not kept.
    let forged = http::post(
        &url,
        &[("x-signature".into(), "sha256=00".into())],
        b"not json at all",
    );
    assert_eq!(forged.status, 401);
    // Non-JSON, non-UTF-8 bytes that verify are kept too.
    let binary = [0xffu8, 0x00, 0xfe, b'{'];
    let headers_binary = vec![(
        "x-signature".to_owned(),
        format!(
            "sha256={}",
            hex::encode(hmac_sha256(b"shop-secret", &[&binary]))
        ),
    )];
    let reply = http::post(&url, &headers_binary, &binary);
    assert_eq!(
        (reply.status, reply.json["status"].as_str()),
        (202, Some("dead_lettered")),
        "{}",
        reply.json
    );

    let dlq = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("dlq"),
        |r| r.len() >= 2,
    );
    let letter = dlq
        .iter()
        .find(|r| r.value == body)
        .expect("the body, byte for byte");
    assert_eq!(letter.key_str(), "shop");
    assert_eq!(letter.header("hs-tenant"), Some("shop"));
    assert_eq!(letter.header("hs-source"), Some("orders"));
    assert_eq!(letter.header("hs-event-id"), Some("ev-77"));
    assert_eq!(letter.header("hs-dead-lettered-by"), Some("ingest"));
    assert!(
        letter
            .header("hs-error")
            .unwrap()
            .starts_with("unreadable: entity: "),
        "{:?}",
        letter.header("hs-error")
    );
    assert_eq!(letter.header("hs-request-x-event-id"), Some("ev-77"));
    assert!(dlq.iter().any(|r| r.value == binary));
    for record in &dlq {
        for (name, value) in &record.headers {
            assert!(
                !value.contains("do-not-keep")
                    && !value.contains(&signature)
                    && !value.contains("shop-secret"),
                "{name}"
            );
        }
    }
    assert_eq!(
        harness::kafka::record_count(&pipeline.config.brokers, &pipeline.config.topic("raw")),
        0
    );

    // Audited without the body, counted per tenant.
    let rejected = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("rejected"),
        |r| {
            r.iter()
                .filter(|r| r.json()["reason"] == "unreadable")
                .count()
                >= 2
        },
    );
    let audit = rejected
        .iter()
        .map(|r| r.json())
        .find(|j| j["body_sha256"] == hex::encode(Sha256::digest(body)))
        .unwrap();
    assert_eq!(
        (audit["status"].as_u64(), audit["tenant"].as_str()),
        (Some(202), Some("shop"))
    );
    assert!(!audit.to_string().contains("o-9"));
    let (_, metrics) = http::get(&pipeline.url("/metrics"));
    assert!(
        metrics.contains("hookstream_ingest_dead_lettered_total{tenant=\"shop\",source=\"orders\",reason=\"unreadable\"} 2"),
        "{metrics}"
    );

    // The operator fixes the rule and redrives: the request becomes the raw record it should
    // have been; the binary one is still unreadable, stays in dlq, and the command says so.
    let fixed = pipeline.config.variant("fixed", |text| {
        text.replace("entity = \"/order_id\"", "entity = \"/order/id\"")
    });
    let output = harness::process::run(&[
        "replay",
        "--config",
        fixed.to_str().unwrap(),
        "--from-topic",
        "dlq",
        "--error",
        "^unreadable",
        "--redrive",
        "--id",
        "fix1",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "one record is still unreadable");
    assert!(
        stderr.contains("still") || stderr.contains("unreadable"),
        "{stderr}"
    );
    let raw = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("raw"),
        |r| !r.is_empty(),
    );
    assert_eq!(raw.len(), 1);
    let redriven = &raw[0];
    assert_eq!(redriven.value, body);
    assert_eq!(redriven.key_str(), "shop/o-9");
    assert_eq!(redriven.header("hs-event-id"), Some("ev-77"));
    assert_eq!(redriven.header("hs-entity"), Some("o-9"));
    assert_eq!(redriven.header("hs-key-id"), Some("k1"));
    assert_eq!(
        redriven.header("hs-received-at"),
        letter.header("hs-received-at")
    );
    assert_eq!(redriven.header("hs-redrive-id"), Some("fix1"));
    assert_eq!(redriven.header("hs-attempt"), Some("2"));
    assert!(
        redriven.header("hs-error").is_none() && redriven.header("hs-request-x-event-id").is_none()
    );
}

#[test]
fn a_signed_twilio_json_webhook_is_accepted_with_the_default_rules() {
    let settings = Settings {
        ingest: "public_base_url = \"https://hooks.example.com\"".into(),
        tenants: PROVIDERS.into(),
        ..Settings::default()
    };
    let pipeline = Pipeline::start_with("twiliojson", false, &settings);
    let send = |body: &[u8], token_header: Option<&str>| {
        let hash = hex::encode(Sha256::digest(body));
        let path = format!("/v1/hooks/voice/twilio?bodySHA256={hash}");
        let mut mac = Hmac::<Sha1>::new_from_slice(b"twilio-test-token").unwrap();
        mac.update(format!("https://hooks.example.com{path}").as_bytes());
        let mut headers = vec![
            (
                "x-twilio-signature".to_owned(),
                B64.encode(mac.finalize().into_bytes()),
            ),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        if let Some(token) = token_header {
            headers.push(("i-twilio-idempotency-token".to_owned(), token.to_owned()));
        }
        http::post(&pipeline.url(&path), &headers, body)
    };
    // Event Streams: an array of CloudEvents.
    let streams = br#"[{"specversion":"1.0","type":"com.twilio.voice.insights.call-summary.complete","source":"/v1/Voice/CA77/Summary","id":"EZ0001","time":"2026-11-22T10:00:00.000Z","datacontenttype":"application/json","data":{"callSid":"CA77","accountSid":"AC1"}}]"#;
    let reply = send(streams, None);
    assert_eq!(
        (
            reply.status,
            reply.json["status"].as_str(),
            reply.json["event_id"].as_str()
        ),
        (202, Some("accepted"), Some("EZ0001")),
        "{}",
        reply.json
    );
    // A single JSON object (e.g. Messaging), with the idempotency token.
    let message = br#"{"type":"com.twilio.messaging.message.delivered","id":"EZ0002","data":{"messageSid":"SM5","accountSid":"AC1"}}"#;
    let reply = send(message, Some("idem-json-1"));
    assert_eq!(
        (reply.status, reply.json["event_id"].as_str()),
        (202, Some("idem-json-1")),
        "{}",
        reply.json
    );
    // A body that does not hash to the URL's bodySHA256 is refused.
    let hash = hex::encode(Sha256::digest(b"other"));
    let path = format!("/v1/hooks/voice/twilio?bodySHA256={hash}");
    let mut mac = Hmac::<Sha1>::new_from_slice(b"twilio-test-token").unwrap();
    mac.update(format!("https://hooks.example.com{path}").as_bytes());
    let forged = http::post(
        &pipeline.url(&path),
        &[(
            "x-twilio-signature".to_owned(),
            B64.encode(mac.finalize().into_bytes()),
        )],
        message,
    );
    assert_eq!(forged.status, 401);

    let raw = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("raw"),
        |r| r.len() >= 2,
    );
    let first = raw
        .iter()
        .find(|r| r.header("hs-event-id") == Some("EZ0001"))
        .unwrap();
    assert_eq!(first.key_str(), "voice/CA77");
    assert_eq!(
        first.header("hs-event-type"),
        Some("com.twilio.voice.insights.call-summary.complete")
    );
    assert_eq!(first.value, streams);
    let second = raw
        .iter()
        .find(|r| r.header("hs-event-id") == Some("idem-json-1"))
        .unwrap();
    assert_eq!(second.key_str(), "voice/SM5");
    assert_eq!(
        second.header("hs-event-type"),
        Some("com.twilio.messaging.message.delivered")
    );
}

/// `allow_ips` on a signed source, checked before the signature: the TCP peer is the client
/// unless it is a trusted proxy; then the right-most untrusted `X-Forwarded-For` hop is. A
/// spoofed header from an untrusted peer changes nothing; a refusal is 403 `ip_not_allowed`,
/// audited to `rejected` with the client address, and counted; other sources and tenants are
/// unaffected.
#[test]
fn allow_ips_admit_by_client_address_behind_trusted_proxies_only() {
    let tenants = r#"
[[tenants]]
id = "walled"
[[tenants.sources]]
id = "loopback"
scheme = "hmac"
secrets = [{ id = "k1", value = "walled-secret" }]
hmac = { header = "x-signature", prefix = "sha256=" }
extract = { entity = "/order_id", event_type = "none" }
allow_ips = ["127.0.0.0/8"]
[[tenants.sources]]
id = "partner"
scheme = "hmac"
secrets = [{ id = "k1", value = "walled-secret" }]
hmac = { header = "x-signature", prefix = "sha256=" }
extract = { entity = "/order_id", event_type = "none" }
allow_ips = ["203.0.113.0/24", "2001:db8::/32"]
"#;
    let settings = |trusted: &str| Settings {
        tenants: tenants.into(),
        ingest: format!("trusted_proxies = [{trusted}]\n"),
        ..Settings::default()
    };
    let post = |pipeline: &Pipeline, source: &str, id: &str, forwarded: Option<&str>| {
        let body = format!(r#"{{"id":"{id}","order_id":"o1"}}"#);
        let mut headers = vec![(
            "x-signature".to_owned(),
            orders_signature("walled-secret", body.as_bytes()),
        )];
        if let Some(chain) = forwarded {
            headers.push(("x-forwarded-for".to_owned(), chain.to_owned()));
        }
        http::post(
            &pipeline.url(&format!("/v1/hooks/walled/{source}")),
            &headers,
            body.as_bytes(),
        )
    };

    // No trusted proxy: the loopback peer is the client, whatever it forwards.
    let direct = Pipeline::start_with("allowips", false, &settings(""));
    assert_eq!(post(&direct, "loopback", "a1", None).status, 202);
    assert_eq!(
        post(&direct, "loopback", "a2", Some("198.51.100.1")).status,
        202,
        "a header from an untrusted peer is ignored"
    );
    let spoofed = post(&direct, "partner", "a3", Some("203.0.113.9"));
    assert_eq!(
        (spoofed.status, spoofed.json["error"].as_str()),
        (403, Some("ip_not_allowed"))
    );
    assert!(
        spoofed.json["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{}",
        spoofed.json
    );
    let rejected = harness::kafka::read_until(
        &direct.config.brokers,
        &direct.config.topic("rejected"),
        |r| !r.is_empty(),
    );
    let audit = rejected[0].json();
    assert_eq!(
        (audit["status"].as_u64(), audit["reason"].as_str()),
        (Some(403), Some("ip_not_allowed"))
    );
    assert!(audit["message"]
        .as_str()
        .unwrap()
        .contains("client address 127.0.0.1"));

    // Loopback is a trusted proxy: the right-most untrusted forwarded hop is the client.
    let proxied = Pipeline::start_with(
        "allowipsproxy",
        false,
        &settings("\"127.0.0.1\", \"10.0.0.0/8\""),
    );
    assert_eq!(
        post(
            &proxied,
            "partner",
            "b1",
            Some("1.2.3.4, 203.0.113.9, 10.0.0.7")
        )
        .status,
        202,
        "caller 203.0.113.9 behind two of our proxies"
    );
    assert_eq!(
        post(&proxied, "partner", "b2", Some("2001:db8::5")).status,
        202
    );
    assert_eq!(
        post(&proxied, "partner", "b3", Some("::ffff:203.0.113.10")).status,
        202
    );
    let outside = post(&proxied, "partner", "b4", Some("203.0.113.9, 198.51.100.1"));
    assert_eq!(
        outside.status, 403,
        "the right-most untrusted hop is outside"
    );
    assert!(outside.json["message"]
        .as_str()
        .unwrap()
        .contains("198.51.100.1"));
    assert_eq!(
        post(
            &proxied,
            "partner",
            "b5",
            Some("203.0.113.9, not-an-address")
        )
        .status,
        403,
        "garbage stops the walk at our proxy, which is not allowed"
    );
    assert_eq!(
        post(&proxied, "loopback", "b6", None).status,
        202,
        "no header: the proxy is the client"
    );
    let metrics = harness::http::get(&proxied.url("/metrics")).1;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("ip_not_allowed") && l.contains("walled")),
        "refusals are counted per tenant"
    );
}

/// Senders that do not sign: `scheme = "none"` admitted by a shared token (last path
/// segment, query parameter or header; two tokens during a rotation) or by `allow_ips`
/// alone, and a token as a second layer on a signed source. Missing and wrong tokens are 401,
/// a path segment a source does not take is 404, and no token ever appears in a `raw` or
/// `rejected` record or in the ingest's log; `hs-key-id` names the token that matched.
#[test]
fn unsigned_sources_are_admitted_by_token_or_address_and_never_leak_the_token() {
    const NEW: &str = "tok-new-7f3a9c21d0e4b5";
    const OLD: &str = "tok-old-5e1d2c3b4a5968";
    let tokens = format!(
        "secrets = [{{ id = \"t-new\", value = \"{NEW}\" }}, {{ id = \"t-old\", value = \"{OLD}\" }}]"
    );
    let extract = "extract = { entity = \"/order_id\", event_type = \"none\" }";
    let tenants = format!(
        r#"
[[tenants]]
id = "plain"
[[tenants.sources]]
id = "path"
scheme = "none"
{extract}
token = {{ in = "path", {tokens} }}
[[tenants.sources]]
id = "query"
scheme = "none"
{extract}
token = {{ in = "query", name = "key", {tokens} }}
[[tenants.sources]]
id = "goog"
scheme = "none"
{extract}
token = {{ in = "header", name = "X-Goog-Channel-Token", {tokens} }}
[[tenants.sources]]
id = "office"
scheme = "none"
{extract}
allow_ips = ["127.0.0.0/8"]
[[tenants.sources]]
id = "signed"
scheme = "hmac"
secrets = [{{ id = "k1", value = "plain-secret" }}]
hmac = {{ header = "x-signature", prefix = "sha256=" }}
{extract}
token = {{ in = "header", name = "X-Channel-Key", {tokens} }}
"#
    );
    let settings = Settings {
        tenants,
        ..Settings::default()
    };
    let pipeline = Pipeline::start_with("unsigned", false, &settings);
    let post = |path: &str, id: &str, headers: &[(&str, &str)]| {
        let body = format!(r#"{{"id":"{id}","order_id":"o1"}}"#);
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        // An empty `x-signature` asks for the right signature.
        for (name, value) in &mut headers {
            if name == "x-signature" && value.is_empty() {
                *value = orders_signature("plain-secret", body.as_bytes());
            }
        }
        let reply = http::post(&pipeline.url(path), &headers, body.as_bytes());
        (
            reply.status,
            reply.json["error"].as_str().unwrap_or("").to_owned(),
        )
    };
    let ok = (202, String::new());
    let refused = |status: u16, code: &str| (status, code.to_owned());

    assert_eq!(post(&format!("/v1/hooks/plain/path/{NEW}"), "p1", &[]), ok);
    assert_eq!(post(&format!("/v1/hooks/plain/path/{OLD}"), "p2", &[]), ok);
    assert_eq!(
        post("/v1/hooks/plain/path/tok-new-7f3a9c21d0e4b6", "p3", &[]),
        refused(401, "invalid_token")
    );
    assert_eq!(
        post("/v1/hooks/plain/path", "p4", &[]),
        refused(401, "missing_token")
    );
    assert_eq!(
        post(&format!("/v1/hooks/plain/query?key={NEW}"), "q1", &[]),
        ok
    );
    assert_eq!(
        post(&format!("/v1/hooks/plain/query?key={NEW}x"), "q2", &[]),
        refused(401, "invalid_token")
    );
    assert_eq!(
        post(&format!("/v1/hooks/plain/query/{NEW}"), "q3", &[]),
        refused(404, "not_found"),
        "this source takes its token in the query"
    );
    assert_eq!(
        post(
            "/v1/hooks/plain/goog",
            "g1",
            &[("X-Goog-Channel-Token", OLD)]
        ),
        ok
    );
    assert_eq!(
        post("/v1/hooks/plain/goog", "g2", &[]),
        refused(401, "missing_token")
    );
    assert_eq!(post("/v1/hooks/plain/office", "o1", &[]), ok);
    let signed = [("x-signature", ""), ("X-Channel-Key", NEW)];
    assert_eq!(post("/v1/hooks/plain/signed", "s1", &signed), ok);
    assert_eq!(
        post("/v1/hooks/plain/signed", "s2", &[("x-signature", "")]),
        refused(401, "missing_token"),
        "a good signature without the token"
    );
    assert_eq!(
        post(
            "/v1/hooks/plain/signed",
            "s3",
            &[("x-signature", "sha256=00"), ("X-Channel-Key", NEW)]
        ),
        refused(401, "invalid_signature"),
        "the token does not stand in for the signature"
    );

    let raw = harness::kafka::read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("raw"),
        |r| r.len() >= 6,
    );
    let key_ids: BTreeMap<String, String> = raw
        .iter()
        .map(|r| {
            (
                r.header("hs-event-id").unwrap().to_owned(),
                r.header("hs-key-id").unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("p1", "t-new"),
        ("p2", "t-old"),
        ("q1", "t-new"),
        ("g1", "t-old"),
        ("o1", "allow_ips"),
        ("s1", "k1"),
    ]
    .into_iter()
    .map(|(e, k)| (e.to_owned(), k.to_owned()))
    .collect();
    assert_eq!(key_ids, expected);
    let rejected = harness::kafka::read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("rejected"),
        |r| r.len() >= 7,
    );
    let log = pipeline.ingest.log();
    for secret in [NEW, OLD, "tok-new-7f3a9c21d0e4b6"] {
        for record in raw.iter().chain(&rejected) {
            let text = format!(
                "{} {:?} {}",
                String::from_utf8_lossy(&record.value),
                record.headers,
                String::from_utf8_lossy(&record.key)
            );
            assert!(!text.contains(secret), "a token in a record: {text}");
        }
        assert!(!log.contains(secret), "a token in the ingest's log");
    }
}

/// Certificates for the TLS test: a CA, and leaves it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf with this common name and DNS names (the server's also gets 127.0.0.1).
    fn leaf(&self, common_name: &str, dns: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }
}

/// An HTTPS agent trusting `roots`, presenting `identity` if given.
fn tls_agent(
    roots: &[&Ca],
    identity: Option<&(rcgen::Certificate, rcgen::KeyPair)>,
) -> ureq::Agent {
    let mut store = rustls::RootCertStore::empty();
    for ca in roots {
        store.add(ca.cert.der().clone()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    ureq::AgentBuilder::new()
        .tls_config(std::sync::Arc::new(config))
        .build()
}

/// `[ingest.tls]`: HTTPS with client certificates verified against a CA bundle. A
/// `scheme = "none"` source naming a certificate admits exactly that client (401 without a
/// certificate, 403 for another one of the same CA; a certificate of a foreign CA fails the
/// handshake), while a signed source on the same listener takes clients without one, and a
/// signed source naming a certificate needs both. SIGHUP
/// loads a new certificate for new connections without dropping open ones, and a bad file
/// keeps the old certificate.
#[test]
fn tls_and_client_certificates_admit_per_source_and_the_certificate_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (first_ca, second_ca, clients_ca, foreign_ca) = (
        Ca::new("first"),
        Ca::new("second"),
        Ca::new("clients"),
        Ca::new("foreign"),
    );
    let (server, server_key) = first_ca.leaf("ingest", &["localhost"]);
    let cert = file("server.pem", &server.pem());
    let key = file("server.key", &server_key.serialize_pem());
    let client_ca = file("clients.pem", &clients_ca.cert.pem());
    let carrier = clients_ca.leaf("carrier", &["hooks.carrier.example"]);
    let intruder = clients_ca.leaf("intruder", &["intruder.example"]);
    let rogue = foreign_ca.leaf("carrier", &["hooks.carrier.example"]);
    let settings = Settings {
        ingest: format!(
            "tls = {{ cert = \"{cert}\", key = \"{key}\", client_ca = \"{client_ca}\" }}\n"
        ),
        tenants: r#"
[[tenants]]
id = "tls"
[[tenants.sources]]
id = "carrier"
scheme = "none"
extract = { entity = "/order_id", event_type = "none" }
client_certificates = ["DNS:hooks.carrier.example"]
[[tenants.sources]]
id = "signed"
scheme = "hmac"
secrets = [{ id = "k1", value = "tls-secret" }]
hmac = { header = "x-signature", prefix = "sha256=" }
extract = { entity = "/order_id", event_type = "none" }
[[tenants.sources]]
id = "both"
scheme = "hmac"
secrets = [{ id = "k1", value = "tls-secret" }]
hmac = { header = "x-signature", prefix = "sha256=" }
extract = { entity = "/order_id", event_type = "none" }
client_certificates = ["CN=carrier"]
"#
        .into(),
        ..Settings::default()
    };
    let pipeline = Pipeline::start_with("tls", false, &settings);
    let base = pipeline.ingest.base_url().to_owned();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let post = |agent: &ureq::Agent, source: &str, id: &str| -> Result<(u16, String), String> {
        let body = format!(r#"{{"id":"{id}","order_id":"o1"}}"#);
        let request = agent.post(&format!("{base}/v1/hooks/tls/{source}")).set(
            "x-signature",
            &orders_signature("tls-secret", body.as_bytes()),
        );
        match request.send_bytes(body.as_bytes()) {
            Ok(response) => Ok((response.status(), String::new())),
            Err(ureq::Error::Status(status, response)) => {
                let json: serde_json::Value = response.into_json().unwrap();
                Ok((status, json["error"].as_str().unwrap_or("").to_owned()))
            }
            Err(error) => Err(error.to_string()),
        }
    };
    let ok = Ok((202, String::new()));
    let as_carrier = tls_agent(&[&first_ca], Some(&carrier));
    assert_eq!(post(&as_carrier, "carrier", "c1"), ok);
    assert_eq!(
        post(&tls_agent(&[&first_ca], Some(&intruder)), "carrier", "c2"),
        Ok((403, "certificate_not_allowed".to_owned()))
    );
    let anonymous = tls_agent(&[&first_ca], None);
    assert_eq!(
        post(&anonymous, "carrier", "c3"),
        Ok((401, "missing_client_certificate".to_owned()))
    );
    assert_eq!(
        post(&anonymous, "signed", "s1"),
        ok,
        "no certificate needed"
    );
    // A certificate and a signature: both needed.
    assert_eq!(post(&as_carrier, "both", "b1"), ok);
    assert_eq!(
        post(&anonymous, "both", "b2"),
        Ok((401, "missing_client_certificate".to_owned()))
    );
    let unsigned = as_carrier
        .post(&format!("{base}/v1/hooks/tls/both"))
        .set("x-signature", "sha256=00")
        .send_bytes(br#"{"id":"b3","order_id":"o1"}"#);
    assert!(
        matches!(unsigned, Err(ureq::Error::Status(401, _))),
        "the certificate does not stand in for the signature"
    );
    assert!(
        post(&tls_agent(&[&first_ca], Some(&rogue)), "carrier", "c4").is_err(),
        "a certificate of another CA fails the handshake"
    );
    let raw = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("raw"),
        |r| r.len() >= 3,
    );
    let carrier_record = raw
        .iter()
        .find(|r| r.header("hs-event-id") == Some("c1"))
        .unwrap();
    assert_eq!(
        carrier_record.header("hs-key-id"),
        Some("client_certificate")
    );

    // A new certificate, of another CA, on SIGHUP: new connections get it, the carrier's
    // open connection goes on.
    let (renewed, renewed_key) = second_ca.leaf("ingest", &["localhost"]);
    std::fs::write(dir.path().join("server.key"), renewed_key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), renewed.pem()).unwrap();
    pipeline.ingest.hangup();
    let trusting_second = tls_agent(&[&second_ca], Some(&carrier));
    harness::wait_until(|| post(&trusting_second, "carrier", "c5").is_ok())
        .expect("new connections get the reloaded certificate");
    assert_eq!(
        post(&as_carrier, "carrier", "c6"),
        ok,
        "the connection opened before the reload is not dropped"
    );
    assert!(
        post(&tls_agent(&[&first_ca], Some(&carrier)), "carrier", "c7").is_err(),
        "the old certificate is gone for new connections"
    );
    std::fs::write(dir.path().join("server.pem"), "not a certificate").unwrap();
    pipeline.ingest.hangup();
    harness::wait_until(|| {
        pipeline
            .ingest
            .log()
            .contains("TLS certificate reload failed")
    })
    .expect("a bad file is reported");
    assert_eq!(
        post(&tls_agent(&[&second_ca], Some(&carrier)), "carrier", "c8"),
        ok,
        "a bad file keeps the certificate in use"
    );
}
