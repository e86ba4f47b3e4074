//! The Rust types and the schema files under `schemas/` describe the same records: every
//! example round-trips through its Rust type unchanged, and the Avro schema, the JSON Schema
//! and the Rust type name the same fields, in the same order (Avro and serde both write
//! fields in declaration order). `schemas/check.py` checks the files among themselves
//! (validity, Avro round trips, backward compatibility with the released versions).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use schemas::avro::{schema_text, ToAvro};
use schemas::records::{
    AlertRecord, DeferredRecord, EventRecord, RejectedRecord, StateRecord, UsageRecord,
};
use schemas::topics::Topic;

fn file(relative: &str) -> Value {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Field names in the order a JSON text writes them.
fn ordered_keys(json: &str) -> Vec<String> {
    // serde_json's Map does not keep order without `preserve_order`: scan the top level.
    let mut keys = Vec::new();
    let bytes = json.as_bytes();
    let (mut depth, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b'"' => {
                let start = i + 1;
                i += 1;
                while bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let after = json[i + 1..].trim_start();
                if depth == 1 && after.starts_with(':') {
                    keys.push(json[start..i].to_owned());
                }
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

fn check<T: DeserializeOwned + Serialize + ToAvro>(topic: &str, full: T) {
    let example = file(&format!("examples/{topic}.json"));
    let typed: T = serde_json::from_value(example.clone())
        .unwrap_or_else(|e| panic!("{topic}: the example does not fit the Rust type: {e}"));
    avro_round_trip(topic, &typed);
    avro_round_trip(topic, &full);
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        example,
        "{topic}: the example changed in a round trip through the Rust type"
    );
    let rust_fields = ordered_keys(&serde_json::to_string(&full).unwrap());
    let avro = file(&format!("avro/{topic}.avsc"));
    let avro_fields: Vec<String> = avro["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        avro_fields, rust_fields,
        "{topic}: Avro fields vs the Rust type"
    );
    let json_schema = file(&format!("json/{topic}.schema.json"));
    let mut properties: Vec<String> = json_schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut sorted = rust_fields.clone();
    properties.sort();
    sorted.sort();
    assert_eq!(
        properties, sorted,
        "{topic}: JSON Schema properties vs the Rust type"
    );
}

/// The record's Avro form fits the topic's schema and decodes back unchanged.
fn avro_round_trip<T: ToAvro>(topic: &str, record: &T) {
    let topic = Topic::ALL
        .into_iter()
        .find(|t| t.suffix() == topic)
        .unwrap();
    let schema = Schema::parse_str(schema_text(topic).unwrap()).unwrap();
    let datum = apache_avro::to_avro_datum(&schema, record.to_avro())
        .unwrap_or_else(|e| panic!("{}: does not fit its Avro schema: {e}", topic.suffix()));
    let back = apache_avro::from_avro_datum(&schema, &mut &datum[..], None).unwrap();
    assert_eq!(
        back,
        record.to_avro(),
        "{}: Avro round trip",
        topic.suffix()
    );
}

fn released_versions() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("avro/released");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    versions.sort();
    versions
}

/// Backward compatibility (what a registry at `BACKWARD_TRANSITIVE` enforces): the current
/// schema of every topic reads data written with every released version of it.
#[test]
fn every_schema_reads_data_written_with_every_released_version() {
    let versions = released_versions();
    assert!(!versions.is_empty(), "no released schema versions");
    for version in versions {
        for entry in std::fs::read_dir(&version).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let released = Schema::parse_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let current = Schema::parse_str(
                &std::fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("avro")
                        .join(&name),
                )
                .unwrap(),
            )
            .unwrap();
            SchemaCompatibility::can_read(&released, &current).unwrap_or_else(|e| {
                panic!(
                    "avro/{name} cannot read data written with {}: {e}",
                    path.display()
                )
            });
        }
    }
}

/// The check above is not vacuous: the changes the evolution rules forbid are caught, the one
/// they allow passes.
#[test]
fn the_compatibility_check_catches_incompatible_changes() {
    let released = file("avro/events.avsc");
    let with = |edit: &dyn Fn(&mut Vec<Value>)| {
        let mut changed = released.clone();
        edit(changed["fields"].as_array_mut().unwrap());
        Schema::parse_str(&changed.to_string()).unwrap()
    };
    let released_schema = Schema::parse_str(&released.to_string()).unwrap();
    type Edit<'a> = (&'a str, &'a dyn Fn(&mut Vec<Value>));
    let forbidden: [Edit<'_>; 3] = [
        ("a new field without a default", &|fields| {
            fields.push(serde_json::json!({"name": "tier", "type": "string"}))
        }),
        (
            "a field retyped",
            &|fields| fields[9] = serde_json::json!({"name": "raw_offset", "type": "string"}),
        ),
        ("an optional field made required", &|fields| {
            fields[10] = serde_json::json!({"name": "payload", "type": "string"})
        }),
    ];
    for (what, edit) in forbidden {
        assert!(
            SchemaCompatibility::can_read(&released_schema, &with(edit)).is_err(),
            "{what} was not caught"
        );
    }
    let allowed = with(&|fields| {
        fields
            .push(serde_json::json!({"name": "tier", "type": ["null", "string"], "default": null}))
    });
    SchemaCompatibility::can_read(&released_schema, &allowed).unwrap();
}

fn raw(json: &str) -> Option<Box<serde_json::value::RawValue>> {
    Some(serde_json::value::RawValue::from_string(json.to_owned()).unwrap())
}

#[test]
fn events_records_match_their_schemas() {
    check(
        "events",
        EventRecord {
            tenant: "t".into(),
            source: "s".into(),
            event_id: "e".into(),
            event_type: "x".into(),
            entity: "n".into(),
            occurred_at: "2023-11-14T22:13:20.000Z".into(),
            received_at: "2023-11-14T22:13:20.000Z".into(),
            late: false,
            time_skewed: false,
            raw_offset: 1,
            payload: raw("{}"),
            payload_base64: Some(String::new()),
        },
    );
}

#[test]
fn state_records_match_their_schemas() {
    check(
        "state",
        StateRecord {
            tenant: "t".into(),
            entity: "n".into(),
            version: 1,
            updated_at: "2023-11-14T22:13:20.000Z".into(),
            last_event_id: "e".into(),
            last_event_type: "x".into(),
            deleted: false,
            state: raw("{}"),
            state_base64: Some(String::new()),
        },
    );
}

#[test]
fn rejected_records_match_their_schemas() {
    check(
        "rejected",
        RejectedRecord {
            tenant: "t".into(),
            source: "s".into(),
            status: 401,
            reason: "invalid_signature".into(),
            message: "m".into(),
            remote_addr: "127.0.0.1".into(),
            body_sha256: Some(String::new()),
            body_bytes: Some(1),
            received_at: "2023-11-14T22:13:20.000Z".into(),
        },
    );
}

#[test]
fn usage_records_match_their_schemas() {
    check(
        "usage",
        UsageRecord {
            tenant: "t".into(),
            event_id: "e".into(),
            tokens: 1,
            cost_micros: 2,
            source: Some("s".into()),
        },
    );
}

#[test]
fn deferred_records_match_their_schemas() {
    check(
        "deferred",
        DeferredRecord {
            tenant: "t".into(),
            source: "s".into(),
            event_id: "e".into(),
            event_type: "x".into(),
            entity: "n".into(),
            occurred_at: "2023-11-14T22:13:20.000Z".into(),
            received_at: "2023-11-14T22:13:20.000Z".into(),
            late: false,
            time_skewed: false,
            raw_offset: 1,
            reason: "tokens_per_day".into(),
            window_end: None,
            payload: raw("{}"),
            payload_base64: Some(String::new()),
        },
    );
}

#[test]
fn alert_records_match_their_schemas() {
    check(
        "alerts",
        AlertRecord {
            tenant: "t".into(),
            kind: "loop_suspected".into(),
            cap: None,
            entity: Some("n".into()),
            limit: Some(1),
            observed: Some(2),
            window_start: None,
            window_end: None,
            raised_at: "2023-11-14T22:13:20.000Z".into(),
            message: "m".into(),
            source: None,
        },
    );
}

#[test]
fn the_key_scanner_keeps_order_and_skips_nested_keys() {
    assert_eq!(
        ordered_keys(r#"{"b":1,"a":{"z":"x\"y"},"c":[{"q":1}]}"#),
        vec!["b", "a", "c"]
    );
}
