//! End-to-end: real Tansu broker, real `hookstream ingest` and `hookstream process`
//! processes, driven over HTTP and observed through Kafka consumers.

mod harness;

use harness::kafka::{read_until, record_count};
use harness::signing::{orders_signature, standard_headers, ORDERS_OLD_SECRET, ORDERS_SECRET};
use harness::{http, Pipeline};

fn order_headers(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        ("x-signature".into(), orders_signature(secret, body)),
    ]
}

#[test]
fn a_signed_webhook_lands_byte_exact_in_raw_and_becomes_entity_state() {
    let pipeline = Pipeline::start("happy", true);
    // Unusual but valid JSON formatting and non-ASCII text must survive byte for byte.
    let body = "{ \"id\" : \"evt_1\",\n  \"type\":\"order.created\", \"order_id\":\"ord_1\",\
                \"occurred_at\":\"2026-11-22T10:00:00.250Z\", \"note\":\"caf\u{e9} \u{1f680}\" }"
        .as_bytes();
    let reply = http::post(
        &pipeline.url("/v1/hooks/acme/orders"),
        &order_headers(ORDERS_OLD_SECRET, body),
        body,
    );
    assert_eq!(reply.status, 202, "{}", reply.json);
    assert_eq!(reply.json["status"], "accepted");
    assert_eq!(reply.json["event_id"], "evt_1");
    let (partition, offset) = (
        reply.json["partition"].as_i64().unwrap(),
        reply.json["offset"].as_i64().unwrap(),
    );

    let raw = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("raw"),
        |r| !r.is_empty(),
    );
    assert_eq!(raw.len(), 1);
    let record = &raw[0];
    assert_eq!(
        (record.partition as i64, record.offset),
        (partition, offset)
    );
    assert_eq!(
        record.value, body,
        "raw value must be the request body byte for byte"
    );
    assert_eq!(record.key_str(), "acme/ord_1");
    for (name, value) in [
        ("hs-version", "1"),
        ("hs-tenant", "acme"),
        ("hs-source", "orders"),
        ("hs-scheme", "hmac"),
        ("hs-event-id", "evt_1"),
        ("hs-event-type", "order.created"),
        ("hs-entity", "ord_1"),
        ("hs-occurred-at", "2026-11-22T10:00:00.250Z"),
        ("hs-content-type", "application/json"),
        ("hs-key-id", "k-old"),
    ] {
        assert_eq!(
            record.header(name),
            Some(value),
            "header {name} in {:?}",
            record.headers
        );
    }
    assert!(record
        .header("hs-received-at")
        .is_some_and(|t| t.ends_with('Z')));
    assert!(
        !record
            .headers
            .iter()
            .any(|(_, v)| v.contains(ORDERS_OLD_SECRET) || v.contains("sha256=")),
        "no secret or signature may reach the topic"
    );

    let state = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("state"),
        |r| !r.is_empty(),
    );
    let value = state[0].json();
    assert_eq!(state[0].key_str(), "acme/ord_1");
    assert_eq!(value["tenant"], "acme");
    assert_eq!(value["entity"], "ord_1");
    assert_eq!(value["version"], 1);
    assert_eq!(value["last_event_id"], "evt_1");
    assert_eq!(value["updated_at"], "2026-11-22T10:00:00.250Z");
    assert_eq!(value["deleted"], false);
    assert_eq!(value["state"]["note"], "caf\u{e9} \u{1f680}");

    // A Standard Webhooks source on the same ingest.
    let invoice =
        br#"{"type":"invoice.paid","timestamp":"2026-11-22T10:00:01Z","data":{"id":"in_7"}}"#;
    let now = chrono::Utc::now().timestamp();
    let mut headers = standard_headers("msg_7", now, invoice);
    headers.push(("content-type".into(), "application/json".into()));
    let reply = http::post(&pipeline.url("/v1/hooks/acme/billing"), &headers, invoice);
    assert_eq!(reply.status, 202, "{}", reply.json);
    assert_eq!(reply.json["event_id"], "msg_7");
    let state = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("state"),
        |r| r.iter().any(|r| r.key_str() == "acme/in_7"),
    );
    let invoice_state = state
        .iter()
        .find(|r| r.key_str() == "acme/in_7")
        .unwrap()
        .json();
    assert_eq!(invoice_state["last_event_type"], "invoice.paid");
    assert_eq!(invoice_state["state"]["data"]["id"], "in_7");
}

#[test]
fn a_bad_signature_is_refused_with_401_and_nothing_reaches_raw() {
    let pipeline = Pipeline::start("unsigned", false);
    let url = pipeline.url("/v1/hooks/acme/orders");
    let body = br#"{"id":"evt_x","type":"order.created","order_id":"ord_x","occurred_at":"2026-11-22T10:00:00Z"}"#;

    let forged = http::post(&url, &order_headers("not-the-secret", body), body);
    assert_eq!(forged.status, 401);
    assert_eq!(forged.json["error"], "invalid_signature");
    let tampered_body = br#"{"id":"evt_x","type":"order.created","order_id":"ord_y","occurred_at":"2026-11-22T10:00:00Z"}"#;
    let tampered = http::post(&url, &order_headers(ORDERS_SECRET, body), tampered_body);
    assert_eq!(tampered.status, 401);
    let unsigned = http::post(
        &url,
        &[("content-type".into(), "application/json".into())],
        body,
    );
    assert_eq!(unsigned.status, 401);
    assert_eq!(unsigned.json["error"], "missing_signature");
    let stale = standard_headers("msg_old", chrono::Utc::now().timestamp() - 3600, body);
    let stale = http::post(&pipeline.url("/v1/hooks/acme/billing"), &stale, body);
    assert_eq!(stale.status, 401);
    assert_eq!(stale.json["error"], "stale_signature");
    for reply in [&forged, &tampered, &unsigned, &stale] {
        let message = reply.json["message"].as_str().unwrap();
        assert!(
            !message.contains(ORDERS_SECRET) && !message.contains("sha256="),
            "{message}"
        );
    }
    let unknown = http::post(
        &pipeline.url("/v1/hooks/nobody/orders"),
        &order_headers(ORDERS_SECRET, body),
        body,
    );
    assert_eq!(
        (unknown.status, unknown.json["error"].as_str()),
        (404, Some("unknown_tenant"))
    );
    // A verified request the rules cannot read is kept, in `dlq`, not in `raw`.
    let unreadable = br#"{"id":"evt_z","type":"order.created"}"#;
    let unreadable = http::post(&url, &order_headers(ORDERS_SECRET, unreadable), unreadable);
    assert_eq!(
        (unreadable.status, unreadable.json["status"].as_str()),
        (202, Some("dead_lettered"))
    );

    // The refusals were answered before anything was produced: raw is still empty...
    assert_eq!(
        record_count(&pipeline.config.brokers, &pipeline.config.topic("raw")),
        0
    );
    // ...and the same ingest does append a correctly signed request.
    let accepted = http::post(&url, &order_headers(ORDERS_SECRET, body), body);
    assert_eq!(accepted.status, 202, "{}", accepted.json);
    let raw = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("raw"),
        |r| !r.is_empty(),
    );
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].header("hs-event-id"), Some("evt_x"));
    assert_eq!(
        record_count(&pipeline.config.brokers, &pipeline.config.topic("raw")),
        1
    );
}

#[test]
fn a_duplicate_delivery_is_accepted_twice_but_yields_one_event() {
    let pipeline = Pipeline::start("dupes", true);
    let url = pipeline.url("/v1/hooks/acme/orders");
    let body = br#"{"id":"evt_d","type":"order.created","order_id":"ord_d","occurred_at":"2026-11-22T10:00:00Z"}"#;
    let first = http::post(&url, &order_headers(ORDERS_SECRET, body), body);
    let second = http::post(&url, &order_headers(ORDERS_SECRET, body), body);
    assert_eq!((first.status, second.status), (202, 202));
    assert_ne!(
        first.json["offset"], second.json["offset"],
        "both deliveries are appended"
    );

    // A later event for the same entity (same partition, after both copies) marks the end.
    let marker = br#"{"id":"evt_m","type":"order.updated","order_id":"ord_d","occurred_at":"2026-11-22T10:05:00Z"}"#;
    assert_eq!(
        http::post(&url, &order_headers(ORDERS_SECRET, marker), marker).status,
        202
    );

    let events = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("events"),
        |r| r.iter().any(|r| r.json()["event_id"] == "evt_m"),
    );
    let ids: Vec<String> = events
        .iter()
        .map(|r| r.json()["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["evt_d", "evt_m"], "one event per event id, in order");
    let first_event = events[0].json();
    assert_eq!(first_event["late"], false);
    assert_eq!(first_event["payload"]["order_id"], "ord_d");

    let states = read_until(
        &pipeline.config.brokers,
        &pipeline.config.topic("state"),
        |r| r.iter().any(|r| r.json()["last_event_id"] == "evt_m"),
    );
    let versions: Vec<i64> = states
        .iter()
        .map(|r| r.json()["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2], "the duplicate did not advance the state");
}
