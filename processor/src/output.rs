//! The records a partition task produces: `events`, `state` and `dlq` values built from its
//! inputs and state, deterministically (same input and state, same bytes).

use schemas::avro::Codecs;
use schemas::key::EntityKey;
use schemas::raw::header;
use schemas::records::{AlertRecord, DeferredRecord, EventRecord, Payload, StateRecord};
use schemas::time::to_rfc3339;
use schemas::topics::Topic;

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
        occurred_at: to_rfc3339(meta.occurred_at),
        received_at: to_rfc3339(meta.received_at),
        late,
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
    OutRecord {
        topic: Topic::Events,
        key: key.into_bytes(),
        value: Some(codecs.encode(Topic::Events, &record)),
        headers,
        timestamp: Some(meta.occurred_at),
        partition: None,
    }
}

pub fn state(tenant: &str, entity: &str, state: &EntityState, codecs: &Codecs) -> OutRecord {
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
    }
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
    }
}

pub fn dead_letter(bad: Undecodable) -> OutRecord {
    let mut headers = bad.headers;
    headers.push((header::ERROR.to_owned(), bad.reason.into_bytes()));
    headers.push((
        header::RAW_PARTITION.to_owned(),
        bad.partition.to_string().into_bytes(),
    ));
    headers.push((
        header::RAW_OFFSET.to_owned(),
        bad.offset.to_string().into_bytes(),
    ));
    OutRecord {
        topic: Topic::Dlq,
        key: bad.key.unwrap_or_default(),
        value: Some(bad.body),
        headers,
        timestamp: bad.timestamp,
        partition: None,
    }
}
