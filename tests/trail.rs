//! The event trail end to end: real Tansu, ingest, processor and `hookstream admin` (which
//! keeps the trail index); lookups through the admin API and `hookstream trail`.

mod harness;

use harness::signing::{orders_signature, ORDERS_SECRET};
use harness::{http, Pipeline, Service, Settings};

const TOKEN: &str = "s3cret-admin";

/// A tenant allowed one event per hour (of event time); what is over waits in `deferred`
/// and is released when the next hour begins.
const CAPPED: &str = r#"
[[tenants]]
id = "capped"
[[tenants.sources]]
id = "orders"
scheme = "hmac"
secrets = [{ id = "k1", value = "capped-secret" }]
hmac = { header = "x-signature", prefix = "sha256=" }
extract = { entity = "/order_id", occurred_at = "/occurred_at" }
[tenants.caps]
events_per_hour = 1
on_window_reset = "release"
"#;

fn get(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = ureq::get(url);
    if let Some(token) = token {
        request = request.set("authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(response) => (response.status(), response.into_json().unwrap()),
        Err(ureq::Error::Status(status, response)) => {
            (status, response.into_json().unwrap_or_default())
        }
        Err(error) => panic!("{error}"),
    }
}

fn stages(timeline: &serde_json::Value) -> Vec<String> {
    timeline["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| l["stage"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One event refused (bad signature), then accepted, then sent again (a duplicate); an
/// older event of its entity after it was emitted (late); an event deferred by its
/// tenant's cap and released when the window resets; an event dead-lettered as unreadable and redriven under fixed rules. Each shows
/// its timeline with the topic/partition/offset of every fact, through the admin API (behind
/// its token) and `hookstream trail` (table and JSON); an entity's events and a source's
/// refusals are found too; no signature or secret is in any answer.
#[test]
fn an_events_timeline_shows_every_stage_it_went_through() {
    let settings = Settings {
        tenants: format!(
            "{CAPPED}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ value = \"{TOKEN}\" }}\n"
        ),
        ..Settings::default()
    };
    let pipeline = Pipeline::start_with("trail", true, &settings);
    let admin = Service::admin(&pipeline.config.path);
    let post = |body: &str, signature: Option<&str>| {
        let signature = signature
            .map(str::to_owned)
            .unwrap_or_else(|| orders_signature(ORDERS_SECRET, body.as_bytes()));
        http::post(
            &pipeline.url("/v1/hooks/acme/orders"),
            &[("x-signature".to_owned(), signature)],
            body.as_bytes(),
        )
    };
    let now = schemas::time::to_rfc3339(schemas::time::now_millis());
    let first =
        format!(r#"{{"id":"e1","type":"order.paid","order_id":"o1","occurred_at":"{now}"}}"#);
    let forged = "sha256=0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(post(&first, Some(forged)).status, 401);
    assert_eq!(post(&first, None).status, 202);
    assert_eq!(post(&first, None).status, 202, "a repeat");
    let unreadable = r#"{"id":"e3","type":"order.paid","customer":"c9"}"#;
    let reply = post(unreadable, None);
    assert_eq!(reply.json["status"], "dead_lettered", "{}", reply.json);

    let url = |path: &str| format!("{}{path}", admin.base_url());
    let timeline = |event: &str, expected: usize| {
        let mut last = serde_json::Value::Null;
        harness::wait_until(|| {
            let (_, body) = get(&url(&format!("/v1/trail/acme/orders/{event}")), Some(TOKEN));
            last = body;
            stages(&last).len() >= expected
        })
        .unwrap_or_else(|| panic!("the trail of {event}: {last:#}"));
        last
    };
    let e1 = timeline("e1", 4);
    let e1_stages = stages(&e1);
    assert_eq!(e1_stages[..2], ["refused", "appended"], "{e1:#}");
    let mut rest = e1_stages[2..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        ["appended", "emitted"],
        "the repeat and the emission, in either order: {e1:#}"
    );
    let lines = e1["lines"].as_array().unwrap();
    assert_eq!(lines[0]["detail"], "401 invalid_signature");
    let repeat = lines[2..]
        .iter()
        .find(|l| l["stage"] == "appended")
        .unwrap();
    assert!(
        repeat["note"].as_str().unwrap().contains("dedupe"),
        "{e1:#}"
    );
    let emitted = lines.iter().find(|l| l["stage"] == "emitted").unwrap();
    assert_eq!(
        emitted["raw_offset"], lines[1]["offset"],
        "from the first append"
    );
    for line in lines {
        assert!(line["topic"].as_str().unwrap().starts_with("t.trail."));
        assert!(line["offset"].as_i64().unwrap() >= 0);
    }
    // Sent once e1 is emitted: an older event of the same entity is late.
    let late = r#"{"id":"e2","type":"order.paid","order_id":"o1","occurred_at":"2020-01-01T00:00:00.000Z"}"#;
    assert_eq!(post(late, None).status, 202);
    let e2 = timeline("e2", 2);
    assert_eq!(stages(&e2), ["appended", "emitted"]);
    assert!(
        e2["lines"][1]["detail"].as_str().unwrap().contains("late"),
        "{e2:#}"
    );

    // e3: dead-lettered, then redriven with rules that read it.
    let e3 = timeline("e3", 1);
    assert_eq!(stages(&e3), ["dead_lettered"]);
    let fixed = pipeline.config.dir().join("fixed.toml");
    let text = std::fs::read_to_string(&pipeline.config.path)
        .unwrap()
        .replace(
            "extract = { entity = \"/order_id\", occurred_at = \"/occurred_at\" }",
            "extract = { entity = \"/customer\", occurred_at = \"received\" }",
        );
    assert!(text.contains("/customer"));
    std::fs::write(&fixed, text).unwrap();
    let fixed = fixed.to_str().unwrap();
    harness::process::run_ok(&[
        "replay",
        "--from-topic",
        "dlq",
        "--redrive",
        "--config",
        fixed,
    ]);
    let e3 = timeline("e3", 3);
    assert_eq!(
        stages(&e3),
        ["dead_lettered", "redriven", "emitted"],
        "{e3:#}"
    );

    // Deferred by the tenant's cap, then released when the next hour of event time begins.
    for (id, at) in [
        ("c1", "2026-11-24T08:00:01.000Z"),
        ("c2", "2026-11-24T08:00:02.000Z"),
        ("c3", "2026-11-24T09:00:03.000Z"),
    ] {
        let body =
            format!(r#"{{"id":"{id}","type":"order.paid","order_id":"k1","occurred_at":"{at}"}}"#);
        let reply = http::post(
            &pipeline.url("/v1/hooks/capped/orders"),
            &[(
                "x-signature".to_owned(),
                orders_signature("capped-secret", body.as_bytes()),
            )],
            body.as_bytes(),
        );
        assert_eq!(reply.status, 202, "{}", reply.json);
    }
    let mut c2 = serde_json::Value::Null;
    harness::wait_until(|| {
        c2 = get(&url("/v1/trail/capped/orders/c2"), Some(TOKEN)).1;
        stages(&c2).len() >= 3
    })
    .unwrap_or_else(|| panic!("c2 is released: {c2:#}"));
    assert_eq!(stages(&c2), ["appended", "deferred", "emitted"], "{c2:#}");
    assert!(
        !c2["lines"][1]["detail"].as_str().unwrap().is_empty(),
        "the cap is named: {c2:#}"
    );

    // The CLI, table and JSON.
    let trail = |args: &[&str]| {
        let config = pipeline.config.path.to_str().unwrap();
        let args = [
            &["trail"],
            args,
            &["--admin", admin.base_url(), "--config", config],
        ]
        .concat();
        harness::process::run_ok(&args).0
    };
    let table = trail(&["--tenant", "acme", "--source", "orders", "e1"]);
    assert!(table.contains("acme/orders/e1: 4 fact(s)"), "{table}");
    assert!(
        table.contains("refused") && table.contains("emitted"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&trail(&[
        "--tenant", "acme", "--source", "orders", "e1", "--json",
    ]))
    .unwrap();
    assert_eq!(stages(&json).len(), 4);
    let entity: serde_json::Value = serde_json::from_str(&trail(&[
        "--tenant", "acme", "--entity", "o1", "--since", "1d", "--json",
    ]))
    .unwrap();
    let ids: Vec<&str> = entity["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e1", "e2"], "by when they were appended: {entity:#}");
    let refused = trail(&["--tenant", "acme", "--source", "orders", "--refused"]);
    assert!(refused.contains("401 invalid_signature"), "{refused}");

    // Behind the token; a missing event is 404; nothing secret in any answer.
    assert_eq!(get(&url("/v1/trail/acme/orders/e1"), None).0, 401);
    assert_eq!(get(&url("/v1/trail/acme/orders/nope"), Some(TOKEN)).0, 404);
    let everything = format!("{e1} {e2} {e3} {entity} {refused} {table}");
    for secret in [
        ORDERS_SECRET,
        forged,
        &orders_signature(ORDERS_SECRET, first.as_bytes()),
    ] {
        assert!(!everything.contains(secret), "a secret in a trail");
    }
}
