//! Avro mode against a real Tansu broker and the harness's schema registry: a processor
//! writing Avro registers its schemas under the TopicNameStrategy subjects, its `events` and
//! `state` decode with an independent implementation (Python fastavro, schemas fetched from the
//! registry by id) to exactly the values a JSON processor wrote for the same input, `tail`
//! decodes them, and an incompatible registered schema stops the processor at start-up.

mod harness;
mod workload;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::kafka::{read_until, Record, Watermarks};
use harness::process::run_ok;
use harness::registry::Registry;
use harness::{Broker, Service, Settings, TestConfig};
use workload::{produce, wait_for_events, Input};

fn schema_python() -> String {
    let python = std::env::var("SCHEMA_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/hookstream/schema-venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python with fastavro at {python}: run ./scripts/test (it installs the schema tools), or set SCHEMA_PYTHON"
    );
    python
}

/// Decodes Confluent-framed values with fastavro.
fn fastavro(registry: &str, values: &[Vec<u8>]) -> Vec<serde_json::Value> {
    let request = serde_json::json!({
        "registry": registry,
        "values": values.iter().map(hex::encode).collect::<Vec<_>>(),
    });
    let mut child = Command::new(schema_python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/avro_decode.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "fastavro failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// An Avro record as JSON-encoding-shaped JSON: arbitrary-JSON fields parsed from their text,
/// nulls dropped (absent in the JSON encoding).
fn as_json_encoding(mut value: serde_json::Value) -> serde_json::Value {
    let object = value.as_object_mut().unwrap();
    object.retain(|_, v| !v.is_null());
    for field in ["payload", "state"] {
        if let Some(serde_json::Value::String(text)) = object.get(field) {
            let parsed = serde_json::from_str(text).unwrap();
            object.insert(field.into(), parsed);
        }
    }
    value
}

fn per_partition(records: &[Record]) -> BTreeMap<i32, Vec<&Record>> {
    let mut by: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for record in records {
        by.entry(record.partition).or_default().push(record);
    }
    by
}

fn inputs() -> Vec<Input> {
    let mut inputs = workload::stream(1_500);
    inputs.push(Input {
        tenant: "t1".into(),
        entity: "plain".into(),
        event_id: "plain-text".into(),
        event_type: "note".into(),
        occurred_at: 1_763_800_000_000,
        body: "not JSON at all".into(),
    });
    inputs
}

#[test]
fn avro_events_and_state_decode_independently_to_the_json_values() {
    let registry = Registry::start();
    let broker = Broker::start();
    let settings = Settings {
        idle_flush_ms: 5_000,
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "avro", &settings);
    let brokers = config.brokers.clone();
    harness::create_topics(&config);
    let inputs = inputs();
    produce(&brokers, &config.topic("raw"), &inputs, 0);

    let _json = Service::processor(&config.path);
    let avro_config = config.variant("avro", |text| {
        format!(
            "{}\n[schema_registry]\nurl = \"{}\"\nencoding = {{ events = \"avro\", state = \"avro\" }}\n",
            text.replace("group_id = \"processor-avro\"", "group_id = \"processor-avro-av\"\noutput_prefix = \"t.avro.av.\""),
            registry.url
        )
    });
    let _avro = Service::processor(&avro_config);
    wait_for_events(&brokers, &config.topic("events"), &inputs);
    for topic in ["events", "state"] {
        let json_count = Watermarks::new(&brokers, &config.topic(topic)).count();
        let avro_topic = format!("t.avro.av.{topic}");
        Watermarks::new(&brokers, &avro_topic).wait_for(json_count, Duration::from_secs(120));
        let json = read_until(&brokers, &config.topic(topic), |r| {
            r.len() as i64 >= json_count
        });
        let avro = read_until(&brokers, &avro_topic, |r| r.len() as i64 >= json_count);
        let json = per_partition(&json);
        let avro = per_partition(&avro);
        assert_eq!(
            json.keys().collect::<Vec<_>>(),
            avro.keys().collect::<Vec<_>>()
        );
        for (partition, json_records) in &json {
            let avro_records = &avro[partition];
            let values: Vec<Vec<u8>> = avro_records.iter().map(|r| r.value.clone()).collect();
            let decoded = fastavro(&registry.url, &values);
            assert_eq!(decoded.len(), json_records.len(), "{topic}/{partition}");
            for ((json_record, avro_record), decoded) in
                json_records.iter().zip(avro_records).zip(decoded)
            {
                assert_eq!(json_record.key, avro_record.key);
                assert_eq!(json_record.headers, avro_record.headers);
                assert_eq!(
                    as_json_encoding(decoded),
                    json_record.json(),
                    "{topic}/{partition}: the Avro value decodes differently from the JSON one"
                );
            }
        }
    }
    let listed: serde_json::Value =
        serde_json::from_str(&harness::http::get(&format!("{}/subjects", registry.url)).1).unwrap();
    assert_eq!(
        listed,
        serde_json::json!(["t.avro.av.events-value", "t.avro.av.state-value"])
    );

    // tail decodes Avro through the registry, like JSON.
    let (lines, _) = run_ok(&[
        "tail",
        "--config",
        avro_config.to_str().unwrap(),
        "t.avro.av.events",
        "--entity",
        "plain",
        "--format",
        "json",
    ]);
    let line: serde_json::Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(line["value"]["event_id"], "plain-text", "{line}");
    assert_eq!(
        line["value"]["payload_base64"], "bm90IEpTT04gYXQgYWxs",
        "{line}"
    );
    assert!(line["schema_id"].as_u64().is_some(), "{line}");
}

#[test]
fn a_schema_the_registry_finds_incompatible_stops_the_processor_at_start_up() {
    let registry = Registry::start();
    let broker = Broker::start();
    let config = TestConfig::write(&broker, "avrocompat");
    // An earlier `events` schema without `raw_offset`: ours has the field without a default,
    // so it cannot read data written with that one (BACKWARD).
    let mut earlier: serde_json::Value =
        serde_json::from_str(include_str!("../schemas/avro/events.avsc")).unwrap();
    earlier["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "raw_offset");
    let body = serde_json::json!({ "schema": earlier.to_string() }).to_string();
    let reply = harness::http::post(
        &format!(
            "{}/subjects/t.avrocompat.events-value/versions",
            registry.url
        ),
        &[(
            "content-type".into(),
            "application/vnd.schemaregistry.v1+json".into(),
        )],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.json);
    let avro_config = config.variant("avro", |text| {
        format!(
            "{text}\n[schema_registry]\nurl = \"{}\"\nencoding = {{ events = \"avro\" }}\n",
            registry.url
        )
    });
    let output = harness::process::run(&["process", "--config", avro_config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("schema registry refused the schema of `t.avrocompat.events-value`: it is not compatible with the subject's latest version"),
        "{stderr}"
    );
    assert!(
        stderr.contains("raw_offset"),
        "the registry's reason is shown: {stderr}"
    );
}
