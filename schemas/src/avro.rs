//! The Avro encoding of topic values, for deployments with a schema registry: each value is
//! framed in the Confluent wire format (magic byte `0`, the schema id as 4 bytes big-endian,
//! then the Avro binary datum). The schemas are the `.avsc` files in `schemas/avro/`,
//! compiled in; [`ToAvro`] maps each record type onto its schema field for field (arbitrary
//! JSON such as `payload` travels as its JSON text, exactly as embedded in the JSON encoding).
//!
//! [`Codecs`] holds, per topic, how its values are written: JSON, or Avro with the id the
//! registry gave the schema ([`crate::registry`] registers them at start-up).

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::Schema;
use serde::Serialize;

use crate::records::{
    AlertRecord, DeferredRecord, EventRecord, RejectedRecord, StateRecord, UsageRecord,
};
use crate::topics::Topic;
use crate::SchemasError;

/// The Confluent wire format's first byte.
pub const MAGIC: u8 = 0;

/// The compiled-in schema text of a topic's values, if the topic has an Avro schema.
pub fn schema_text(topic: Topic) -> Option<&'static str> {
    Some(match topic {
        Topic::Events => include_str!("../avro/events.avsc"),
        Topic::State => include_str!("../avro/state.avsc"),
        Topic::Rejected => include_str!("../avro/rejected.avsc"),
        Topic::Deferred => include_str!("../avro/deferred.avsc"),
        Topic::Alerts => include_str!("../avro/alerts.avsc"),
        Topic::Usage => include_str!("../avro/usage.avsc"),
        Topic::Raw | Topic::Dlq | Topic::Changelog | Topic::Budget => return None,
    })
}

/// A record that has an Avro form.
pub trait ToAvro {
    fn to_avro(&self) -> Value;
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// A `["null", T]` union.
fn nullable(value: Option<Value>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

impl ToAvro for EventRecord {
    fn to_avro(&self) -> Value {
        record(vec![
            ("tenant", string(&self.tenant)),
            ("source", string(&self.source)),
            ("event_id", string(&self.event_id)),
            ("event_type", string(&self.event_type)),
            ("entity", string(&self.entity)),
            ("occurred_at", string(&self.occurred_at)),
            ("received_at", string(&self.received_at)),
            ("late", Value::Boolean(self.late)),
            ("time_skewed", Value::Boolean(self.time_skewed)),
            ("raw_offset", Value::Long(self.raw_offset)),
            (
                "payload",
                nullable(self.payload.as_ref().map(|p| string(p.get()))),
            ),
            (
                "payload_base64",
                nullable(self.payload_base64.as_deref().map(string)),
            ),
        ])
    }
}

impl EventRecord {
    /// An `events` value in the Confluent Avro wire format, read with the compiled-in
    /// schema; None when it is not one (a reader of `events` then skips it).
    pub fn from_avro(bytes: &[u8]) -> Option<Self> {
        static SCHEMA: std::sync::OnceLock<Option<Schema>> = std::sync::OnceLock::new();
        let (_, mut datum) = unframe(bytes)?;
        let schema = SCHEMA
            .get_or_init(|| Schema::parse_str(schema_text(Topic::Events)?).ok())
            .as_ref()?;
        let Value::Record(fields) = apache_avro::from_avro_datum(schema, &mut datum, None).ok()?
        else {
            return None;
        };
        let fields: BTreeMap<String, Value> = fields.into_iter().collect();
        let text = |name: &str| match fields.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let optional = |name: &str| match fields.get(name) {
            Some(Value::Union(_, value)) => match value.as_ref() {
                Value::String(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        let flag = |name: &str| matches!(fields.get(name), Some(Value::Boolean(true)));
        let payload = match optional("payload") {
            Some(json) => Some(serde_json::value::RawValue::from_string(json).ok()?),
            None => None,
        };
        Some(EventRecord {
            tenant: text("tenant")?,
            source: text("source")?,
            event_id: text("event_id")?,
            event_type: text("event_type")?,
            entity: text("entity")?,
            occurred_at: text("occurred_at")?,
            received_at: text("received_at")?,
            late: flag("late"),
            time_skewed: flag("time_skewed"),
            raw_offset: match fields.get("raw_offset") {
                Some(Value::Long(n)) => *n,
                _ => return None,
            },
            payload,
            payload_base64: optional("payload_base64"),
        })
    }
}

impl ToAvro for StateRecord {
    fn to_avro(&self) -> Value {
        record(vec![
            ("tenant", string(&self.tenant)),
            ("entity", string(&self.entity)),
            ("version", Value::Long(self.version as i64)),
            ("updated_at", string(&self.updated_at)),
            ("last_event_id", string(&self.last_event_id)),
            ("last_event_type", string(&self.last_event_type)),
            ("deleted", Value::Boolean(self.deleted)),
            (
                "state",
                nullable(self.state.as_ref().map(|p| string(p.get()))),
            ),
            (
                "state_base64",
                nullable(self.state_base64.as_deref().map(string)),
            ),
        ])
    }
}

impl ToAvro for RejectedRecord {
    fn to_avro(&self) -> Value {
        record(vec![
            ("tenant", string(&self.tenant)),
            ("source", string(&self.source)),
            ("status", Value::Int(i32::from(self.status))),
            ("reason", string(&self.reason)),
            ("message", string(&self.message)),
            ("remote_addr", string(&self.remote_addr)),
            (
                "body_sha256",
                nullable(self.body_sha256.as_deref().map(string)),
            ),
            (
                "body_bytes",
                nullable(self.body_bytes.map(|b| Value::Long(b as i64))),
            ),
            ("received_at", string(&self.received_at)),
        ])
    }
}

fn long(n: u64) -> Value {
    Value::Long(i64::try_from(n).unwrap_or(i64::MAX))
}

impl ToAvro for UsageRecord {
    fn to_avro(&self) -> Value {
        record(vec![
            ("tenant", string(&self.tenant)),
            ("event_id", string(&self.event_id)),
            ("tokens", long(self.tokens)),
            ("cost_micros", long(self.cost_micros)),
            ("source", nullable(self.source.as_deref().map(string))),
        ])
    }
}

impl ToAvro for DeferredRecord {
    fn to_avro(&self) -> Value {
        record(vec![
            ("tenant", string(&self.tenant)),
            ("source", string(&self.source)),
            ("event_id", string(&self.event_id)),
            ("event_type", string(&self.event_type)),
            ("entity", string(&self.entity)),
            ("occurred_at", string(&self.occurred_at)),
            ("received_at", string(&self.received_at)),
            ("late", Value::Boolean(self.late)),
            ("time_skewed", Value::Boolean(self.time_skewed)),
            ("raw_offset", Value::Long(self.raw_offset)),
            ("reason", string(&self.reason)),
            (
                "window_end",
                nullable(self.window_end.as_deref().map(string)),
            ),
            (
                "payload",
                nullable(self.payload.as_ref().map(|p| string(p.get()))),
            ),
            (
                "payload_base64",
                nullable(self.payload_base64.as_deref().map(string)),
            ),
        ])
    }
}

impl ToAvro for AlertRecord {
    fn to_avro(&self) -> Value {
        record(vec![
            ("tenant", string(&self.tenant)),
            ("kind", string(&self.kind)),
            ("cap", nullable(self.cap.as_deref().map(string))),
            ("entity", nullable(self.entity.as_deref().map(string))),
            ("limit", nullable(self.limit.map(long))),
            ("observed", nullable(self.observed.map(long))),
            (
                "window_start",
                nullable(self.window_start.as_deref().map(string)),
            ),
            (
                "window_end",
                nullable(self.window_end.as_deref().map(string)),
            ),
            ("raised_at", string(&self.raised_at)),
            ("message", string(&self.message)),
            ("source", nullable(self.source.as_deref().map(string))),
        ])
    }
}

/// How the values of one topic are written.
#[derive(Debug, Clone)]
pub enum Codec {
    Json,
    /// Avro in the Confluent wire format, under the schema the registry numbered `id`.
    Avro {
        id: u32,
        schema: Arc<Schema>,
    },
}

impl Codec {
    pub fn avro(topic: Topic, id: u32) -> Result<Self, SchemasError> {
        let text = schema_text(topic).ok_or_else(|| {
            SchemasError::Avro(format!("topic `{}` has no Avro schema", topic.suffix()))
        })?;
        let schema = Schema::parse_str(text)
            .map_err(|e| SchemasError::Avro(format!("{}: {e}", topic.suffix())))?;
        Ok(Self::Avro {
            id,
            schema: Arc::new(schema),
        })
    }

    /// The value's bytes. Encoding a record into its own compiled-in schema cannot fail; a
    /// mismatch is a bug caught by the schema contract tests, so it panics.
    pub fn encode<T: Serialize + ToAvro>(&self, record: &T) -> Vec<u8> {
        match self {
            Codec::Json => serde_json::to_vec(record).expect("records serialize to JSON"),
            Codec::Avro { id, schema } => {
                let datum = apache_avro::to_avro_datum(schema, record.to_avro())
                    .expect("a record matches its own Avro schema");
                frame(*id, &datum)
            }
        }
    }
}

/// Prefixes an Avro datum with the Confluent wire format header.
pub fn frame(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(5 + datum.len());
    bytes.push(MAGIC);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

/// The schema id and datum of a Confluent-framed value; None when it is not framed.
pub fn unframe(bytes: &[u8]) -> Option<(u32, &[u8])> {
    if bytes.len() < 5 || bytes[0] != MAGIC {
        return None;
    }
    let id = u32::from_be_bytes(bytes[1..5].try_into().ok()?);
    Some((id, &bytes[5..]))
}

/// Per topic, how its values are written (JSON unless set).
#[derive(Debug, Clone, Default)]
pub struct Codecs {
    by_topic: BTreeMap<&'static str, Codec>,
}

impl Codecs {
    pub fn json() -> Self {
        Self::default()
    }

    pub fn set(&mut self, topic: Topic, codec: Codec) {
        self.by_topic.insert(topic.suffix(), codec);
    }

    pub fn get(&self, topic: Topic) -> &Codec {
        self.by_topic.get(topic.suffix()).unwrap_or(&Codec::Json)
    }

    pub fn encode<T: Serialize + ToAvro>(&self, topic: Topic, record: &T) -> Vec<u8> {
        self.get(topic).encode(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Payload;

    fn event() -> EventRecord {
        EventRecord {
            tenant: "acme".into(),
            source: "orders".into(),
            event_id: "e1".into(),
            event_type: "order.created".into(),
            entity: "o1".into(),
            occurred_at: "2023-11-14T22:13:20.000Z".into(),
            received_at: "2023-11-14T22:13:21.000Z".into(),
            late: false,
            time_skewed: false,
            raw_offset: 7,
            payload: Payload::from_body(br#"{"id": "e1"}"#).payload,
            payload_base64: None,
        }
    }

    #[test]
    fn avro_values_are_framed_and_decode_to_the_same_fields() {
        let codec = Codec::avro(Topic::Events, 42).unwrap();
        let bytes = codec.encode(&event());
        let (id, datum) = unframe(&bytes).unwrap();
        assert_eq!(id, 42);
        let Codec::Avro { schema, .. } = &codec else {
            unreachable!()
        };
        let value = apache_avro::from_avro_datum(schema, &mut &datum[..], None).unwrap();
        assert_eq!(value, event().to_avro());
    }

    #[test]
    fn an_avro_event_reads_back_to_the_record_and_its_json() {
        let bytes = Codec::avro(Topic::Events, 7).unwrap().encode(&event());
        let back = EventRecord::from_avro(&bytes).unwrap();
        assert_eq!(back, event());
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(event()).unwrap(),
            "the same JSON as the JSON encoding"
        );
        assert!(EventRecord::from_avro(b"{\"tenant\":\"t\"}").is_none());
        assert!(EventRecord::from_avro(&bytes[..bytes.len() / 2]).is_none());
    }

    #[test]
    fn json_is_the_default() {
        let codecs = Codecs::json();
        let bytes = codecs.encode(Topic::Events, &event());
        assert_eq!(bytes, serde_json::to_vec(&event()).unwrap());
        assert!(unframe(&bytes).is_none());
    }

    #[test]
    fn every_schema_with_a_topic_parses() {
        for topic in Topic::ALL {
            if let Some(text) = schema_text(topic) {
                Schema::parse_str(text).unwrap_or_else(|e| panic!("{}: {e}", topic.suffix()));
            }
        }
    }
}
