//! End-to-end ingest behaviour against a real Tansu broker and the real `hookstream ingest`:
//! providers' own signing and body formats, rate limits, size limits and the audit topic.

mod harness;

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
