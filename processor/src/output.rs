//! The records a partition task produces: `events`, `state` and `dlq` values built from its
//! inputs and state, deterministically (same input and state, same bytes).

use schemas::avro::Codecs;
use schemas::key::EntityKey;
use schemas::raw::header;
use schemas::records::{AlertRecord, DeferredRecord, EventRecord, Payload, StateRecord};
use schemas::time::to_rfc3339;
use schemas::topics::Topic;
use schemas::trace::{self, TraceParent};

use crate::caps::{BudgetShare, Deferral};
use crate::input::{RawInput, Undecodable};
use crate::reconcile::EntityState;

/// A record to produce, to a topic named by its [`Topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub topic: Topic,
    pub key: Vec<u8>,
    /// `None` is a tombstone (changelog deletes).
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp: Option<i64>,
    /// An explicit partition (changelog records go to their task's partition); otherwise the
    /// key's partition.
    pub partition: Option<i32>,
    /// The `raw` record (partition, offset) this record was derived from, when one input is
    /// to blame for it: a record the broker refuses for good sends that input to `dlq`.
    pub origin: Option<(i32, i64)>,
}

fn event_record(input: &RawInput, late: bool) -> EventRecord {
    let meta = &input.meta;
    let payload = Payload::from_body(&input.body);
    EventRecord {
        tenant: meta.tenant.clone(),
        source: meta.source.clone(),
        event_id: meta.event_id.clone(),
        event_type: meta.event_type.clone(),
        entity: meta.entity.clone(),
        occurred_at: to_rfc3339(input.claimed_at.unwrap_or(meta.occurred_at)),
        received_at: to_rfc3339(meta.received_at),
        late,
        time_skewed: input.claimed_at.is_some(),
        raw_offset: input.offset,
        payload: payload.payload,
        payload_base64: payload.payload_base64,
    }
}

pub fn event(input: &RawInput, late: bool, codecs: &Codecs) -> OutRecord {
    let meta = &input.meta;
    let key = EntityKey::new(&meta.tenant, &meta.entity).encode();
    let record = event_record(input, late);
    let mut headers = vec![(
        header::EVENT_ID.to_owned(),
        meta.event_id.as_bytes().to_vec(),
    )];
    if let Some(redrive) = &meta.redrive_id {
        headers.push((header::REDRIVE_ID.to_owned(), redrive.as_bytes().to_vec()));
    }
    if let Some(upstream) = &input.trace {
        let trace = continue_trace(input, upstream, late);
        headers.push((trace::HEADER.to_owned(), trace.header().into_bytes()));
    }
    OutRecord {
        topic: Topic::Events,
        key: key.into_bytes(),
        value: Some(codecs.encode(Topic::Events, &record)),
        headers,
        timestamp: Some(meta.occurred_at),
        partition: None,
        origin: Some((input.partition, input.offset)),
    }
}

/// The processor's span of the event's trace: its id derived from the `raw` position, so a
/// replay writes the same `traceparent`; exported (when OTLP export is on) from the event's
/// receipt by the ingest to its emission, reorder wait included.
fn continue_trace(input: &RawInput, upstream: &TraceParent, late: bool) -> TraceParent {
    let position = format!("raw/{}/{}", input.partition, input.offset);
    let own = upstream.derived(position.as_bytes());
    if trace::exporting() {
        let meta = &input.meta;
        let received = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(meta.received_at.max(0) as u64);
        trace::export(trace::Span {
            name: "hookstream.process",
            kind: trace::Kind::Consumer,
            context: own,
            parent: Some(*upstream),
            start: received.min(std::time::SystemTime::now()),
            end: std::time::SystemTime::now(),
            attributes: &[
                ("hookstream.tenant", meta.tenant.clone()),
                ("hookstream.source", meta.source.clone()),
                ("hookstream.event_id", meta.event_id.clone()),
                ("hookstream.entity", meta.entity.clone()),
                ("hookstream.raw_position", position),
                ("hookstream.late", late.to_string()),
            ],
            error: None,
        });
    }
    own
}

/// A Kafka tombstone for an entity whose deletion expired from the store
/// (`processor.tombstone_retention_secs`): the compacted `state` topic drops the key.
pub fn state_expired(entity_key: &[u8], at: i64) -> OutRecord {
    OutRecord {
        topic: Topic::State,
        key: entity_key.to_vec(),
        value: None,
        headers: Vec::new(),
        timestamp: Some(at),
        partition: None,
        origin: None,
    }
}

/// The entity's new `state`, derived from the event `input`.
pub fn state(input: &RawInput, state: &EntityState, codecs: &Codecs) -> OutRecord {
    let (tenant, entity) = (input.meta.tenant.as_str(), input.meta.entity.as_str());
    let record = StateRecord {
        tenant: tenant.to_owned(),
        entity: entity.to_owned(),
        version: state.version,
        updated_at: to_rfc3339(state.updated_at),
        last_event_id: state.last_event_id.clone(),
        last_event_type: state.last_event_type.clone(),
        deleted: state.deleted,
        state: state.state.clone(),
        state_base64: state.state_base64.clone(),
    };
    OutRecord {
        topic: Topic::State,
        key: EntityKey::new(tenant, entity).encode().into_bytes(),
        value: Some(codecs.encode(Topic::State, &record)),
        headers: vec![(
            header::EVENT_ID.to_owned(),
            state.last_event_id.as_bytes().to_vec(),
        )],
        timestamp: Some(state.updated_at),
        partition: None,
        origin: Some((input.partition, input.offset)),
    }
}

/// A `deferred` record: the event as `events` would carry it, with why and until when.
pub fn deferred(input: &RawInput, deferral: &Deferral, codecs: &Codecs) -> OutRecord {
    let meta = &input.meta;
    let event = event_record(input, false);
    let record = DeferredRecord {
        tenant: event.tenant,
        source: event.source,
        event_id: event.event_id,
        event_type: event.event_type,
        entity: event.entity,
        occurred_at: event.occurred_at,
        received_at: event.received_at,
        late: event.late,
        time_skewed: event.time_skewed,
        raw_offset: event.raw_offset,
        reason: deferral.reason.as_str().to_owned(),
        window_end: deferral.until.map(to_rfc3339),
        payload: event.payload,
        payload_base64: event.payload_base64,
    };
    OutRecord {
        topic: Topic::Deferred,
        key: EntityKey::new(&meta.tenant, &meta.entity)
            .encode()
            .into_bytes(),
        value: Some(codecs.encode(Topic::Deferred, &record)),
        headers: vec![(
            header::EVENT_ID.to_owned(),
            meta.event_id.as_bytes().to_vec(),
        )],
        timestamp: Some(meta.occurred_at),
        partition: None,
        origin: Some((input.partition, input.offset)),
    }
}

/// An `alerts` record, keyed by tenant, stamped with the stream time it was raised at.
pub fn alert(record: &AlertRecord, codecs: &Codecs) -> OutRecord {
    OutRecord {
        topic: Topic::Alerts,
        key: record.tenant.as_bytes().to_vec(),
        value: Some(codecs.encode(Topic::Alerts, record)),
        headers: vec![("hs-alert".to_owned(), record.kind.as_bytes().to_vec())],
        timestamp: schemas::time::parse_rfc3339(&record.raised_at),
        partition: None,
        origin: None,
    }
}

/// A `time_skewed` alert: `source` sent an event time `ahead_ms` past its receive time,
/// more than the `max_skew_ms` it is trusted with. Raised at the source's stream time `at`.
pub fn skew_alert(
    meta: &schemas::raw::RawMeta,
    claimed_at: i64,
    max_skew_ms: i64,
    at: i64,
    codecs: &Codecs,
) -> OutRecord {
    let ahead_secs = claimed_at.saturating_sub(meta.received_at) / 1000;
    let record = AlertRecord {
        tenant: meta.tenant.clone(),
        kind: "time_skewed".to_owned(),
        cap: None,
        entity: None,
        limit: Some((max_skew_ms / 1000).max(0) as u64),
        observed: Some(ahead_secs.max(0) as u64),
        window_start: None,
        window_end: None,
        raised_at: to_rfc3339(at),
        message: format!(
            "source {} of tenant {} sent event time {} for event {}, {ahead_secs} s after it was received (more than the {} s trusted); such events are processed at their receive time and flagged time_skewed",
            meta.source,
            meta.tenant,
            to_rfc3339(claimed_at),
            meta.event_id,
            max_skew_ms / 1000,
        ),
        source: Some(meta.source.clone()),
    };
    alert(&record, codecs)
}

/// A `budget` record: this task's share of a tenant's usage (compacted, key `tenant/partition`).
pub fn budget(share: &BudgetShare) -> OutRecord {
    OutRecord {
        topic: Topic::Budget,
        key: share.key().into_bytes(),
        value: Some(serde_json::to_vec(share).expect("budget share serializes")),
        headers: Vec::new(),
        timestamp: None,
        partition: None,
        origin: None,
    }
}

/// The headers every `dlq` record ends with: why, and where the record was in `raw`.
fn dead_letter_headers(headers: &mut Vec<(String, Vec<u8>)>, reason: &str, at: (i32, i64)) {
    headers.push((header::ERROR.to_owned(), reason.as_bytes().to_vec()));
    headers.push((
        header::RAW_PARTITION.to_owned(),
        at.0.to_string().into_bytes(),
    ));
    headers.push((header::RAW_OFFSET.to_owned(), at.1.to_string().into_bytes()));
}

pub fn dead_letter(bad: Undecodable) -> OutRecord {
    let mut headers = bad.headers;
    dead_letter_headers(&mut headers, &bad.reason, (bad.partition, bad.offset));
    OutRecord {
        topic: Topic::Dlq,
        key: bad.key.unwrap_or_default(),
        value: Some(bad.body),
        headers,
        timestamp: bad.timestamp,
        partition: None,
        origin: None,
    }
}

/// A `dlq` record for a decoded input the processor will not emit (too large for the
/// producer, or refused by the broker): the `raw` record as it was, with the reason.
pub fn diverted(input: &RawInput, reason: &str) -> OutRecord {
    let meta = &input.meta;
    let mut headers: Vec<(String, Vec<u8>)> = meta
        .to_headers()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect();
    if let Some(claimed) = input.claimed_at {
        // The headers as `raw` had them: the sender's claimed event time.
        for (name, value) in &mut headers {
            if name == header::OCCURRED_AT {
                *value = schemas::time::to_rfc3339(claimed).into_bytes();
            }
        }
    }
    dead_letter_headers(&mut headers, reason, (input.partition, input.offset));
    OutRecord {
        topic: Topic::Dlq,
        key: EntityKey::new(&meta.tenant, &meta.entity)
            .encode()
            .into_bytes(),
        value: Some(input.body.clone()),
        headers,
        timestamp: Some(meta.received_at),
        partition: None,
        origin: None,
    }
}

/// Bytes the largest record derived from `input` can take (its `events`, `deferred` and
/// `state` values embed the body as JSON, or base64 when it is not JSON; changelog ops are
/// no larger), with room for the other fields, key and headers, even fully escaped.
pub fn largest_output_bytes(input: &RawInput) -> usize {
    let meta = &input.meta;
    let fields = [
        &meta.tenant,
        &meta.source,
        &meta.event_id,
        &meta.event_type,
        &meta.entity,
        &meta.key_id,
        &meta.content_type,
    ]
    .iter()
    .map(|f| f.len())
    .sum::<usize>();
    let fixed = 6 * 3 * fields + 1024;
    let base64 = input.body.len().div_ceil(3) * 4;
    if input.body.len() < 48 * 1024 {
        return fixed + base64; // small: no need to find out whether it is JSON
    }
    let json = std::str::from_utf8(&input.body)
        .ok()
        .is_some_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
    fixed + if json { input.body.len() } else { base64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::raw::RawMeta;

    fn input(body: Vec<u8>) -> RawInput {
        RawInput {
            partition: 1,
            offset: 7,
            meta: RawMeta {
                tenant: "t".into(),
                source: "s".into(),
                scheme: "hmac".into(),
                event_id: "e".into(),
                event_type: "x".into(),
                entity: "n".into(),
                occurred_at: 0,
                received_at: 0,
                content_type: String::new(),
                key_id: String::new(),
                event_id_derived: false,
                redrive_id: None,
            },
            body,
            claimed_at: None,
            trace: None,
        }
    }

    /// The bound holds for every body shape: JSON, not JSON, empty, any bytes.
    #[test]
    fn the_size_bound_covers_the_records_actually_built() {
        let codecs = Codecs::json();
        let bodies: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"{}".to_vec(),
            vec![0xff; 100_000],
            format!(r#"{{"a":"{}"}}"#, "x".repeat(200_000)).into_bytes(),
            (0..=255u8).cycle().take(70_000).collect(),
            b"\"\\u0000\"".repeat(10_000),
        ];
        for body in bodies {
            let input = input(body);
            let bound = largest_output_bytes(&input);
            let event = event(&input, false, &codecs);
            let state = crate::reconcile::reconcile(
                None,
                &crate::reconcile::Change {
                    event_id: "e",
                    event_type: "x",
                    occurred_at: 0,
                    is_delete: false,
                    body: &input.body,
                },
            );
            let crate::reconcile::Outcome::Applied(state) = state else {
                panic!("applied")
            };
            let state = super::state(&input, &state, &codecs);
            for record in [event, state] {
                let size = record.key.len()
                    + record.value.as_ref().map_or(0, Vec::len)
                    + record
                        .headers
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>();
                assert!(size <= bound, "{size} > {bound}");
            }
        }
    }
}
