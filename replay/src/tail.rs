//! `hookstream tail`: prints records of any topic, decoded. Values that are JSON print as
//! JSON (pretty, or compact in JSON lines), other UTF-8 as a string, anything else as base64;
//! a value in the Confluent wire format (magic byte 0, 4-byte schema id) is shown with its
//! schema id and base64 body — or, with `schema_registry.url` configured, decoded through the
//! writer schema the registry holds for that id ([`Avro`]). Header values print as text when
//! they are UTF-8.

use std::io::Write;

use base64::Engine as _;
use schemas::time::to_rfc3339;
use serde_json::{json, Map, Value};

use crate::record::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Human-readable: a header line, the headers, then the value (pretty JSON when it is JSON).
    Pretty,
    /// One JSON object per line: topic, partition, offset, timestamp, key, headers, value.
    Json,
}

fn text_or_base64(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// The value, decoded as well as it can be.
pub fn value(bytes: &[u8]) -> Value {
    if let Ok(json) = serde_json::from_slice::<Value>(bytes) {
        return json;
    }
    if bytes.len() >= 5 && bytes[0] == 0 && std::str::from_utf8(bytes).is_err() {
        let id = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes"));
        return json!({
            "confluent_schema_id": id,
            "base64": base64::engine::general_purpose::STANDARD.encode(&bytes[5..]),
        });
    }
    text_or_base64(bytes)
}

/// A value decoded from Avro: the schema id it was written with and its JSON form.
#[derive(Debug, Clone, PartialEq)]
pub struct Avro {
    pub schema_id: u32,
    pub value: Value,
}

fn shown_value(record: &Record, avro: Option<&Avro>) -> Option<Value> {
    match avro {
        Some(avro) => Some(avro.value.clone()),
        None => record.value.as_deref().map(value),
    }
}

pub fn json_line(record: &Record, avro: Option<&Avro>) -> Value {
    let headers: Map<String, Value> = record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), text_or_base64(v)))
        .collect();
    let mut line = json!({
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp.map(to_rfc3339),
        "key": record.key.as_deref().map(text_or_base64),
        "headers": headers,
        "value": shown_value(record, avro),
    });
    if let Some(avro) = avro {
        line["schema_id"] = json!(avro.schema_id);
    }
    line
}

pub fn pretty(record: &Record, avro: Option<&Avro>) -> String {
    let mut out = format!(
        "{}/{}@{}  {}  key={}{}\n",
        record.topic,
        record.partition,
        record.offset,
        record
            .timestamp
            .map(to_rfc3339)
            .unwrap_or_else(|| "-".into()),
        record
            .key
            .as_deref()
            .map(|k| match text_or_base64(k) {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .unwrap_or_else(|| "(none)".into()),
        avro.map(|a| format!("  avro schema {}", a.schema_id))
            .unwrap_or_default(),
    );
    for (name, header) in &record.headers {
        let shown = match text_or_base64(header) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        out.push_str(&format!("  {name}: {shown}\n"));
    }
    match shown_value(record, avro) {
        None => out.push_str("  (tombstone)\n"),
        Some(Value::String(text)) => out.push_str(&format!("{text}\n")),
        Some(json) => {
            out.push_str(&serde_json::to_string_pretty(&json).expect("json prints"));
            out.push('\n');
        }
    }
    out
}

pub fn print(
    out: &mut impl Write,
    record: &Record,
    avro: Option<&Avro>,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", json_line(record, avro)),
        Format::Pretty => writeln!(out, "{}", pretty(record, avro)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &[u8]) -> Record {
        Record {
            topic: "hookstream.events".into(),
            partition: 1,
            offset: 7,
            timestamp: Some(1_500),
            key: Some(b"acme/o1".to_vec()),
            value: Some(value.to_vec()),
            headers: vec![("hs-event-id".into(), b"e1".to_vec())],
        }
    }

    #[test]
    fn json_lines_carry_everything_decoded() {
        let line = json_line(&record(br#"{"a":1}"#), None);
        assert_eq!(
            line,
            json!({
                "topic": "hookstream.events", "partition": 1, "offset": 7,
                "timestamp": "1970-01-01T00:00:01.500Z", "key": "acme/o1",
                "headers": {"hs-event-id": "e1"}, "value": {"a": 1}
            })
        );
    }

    #[test]
    fn binary_and_confluent_values_are_shown_not_mangled() {
        assert_eq!(value(&[0xff, 0x00]), json!({"base64": "/wA="}));
        assert_eq!(
            value(&[0, 0, 0, 0, 9, 0xff]),
            json!({"confluent_schema_id": 9, "base64": "/w=="})
        );
        assert_eq!(value(b"plain"), json!("plain"));
    }

    #[test]
    fn pretty_output_has_position_headers_and_value() {
        let text = pretty(&record(br#"{"a":1}"#), None);
        assert_eq!(
            text,
            "hookstream.events/1@7  1970-01-01T00:00:01.500Z  key=acme/o1\n  hs-event-id: e1\n{\n  \"a\": 1\n}\n"
        );
    }
}
