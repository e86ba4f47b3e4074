//! The `raw` topic: the provider's request body byte for byte as the record value, keyed
//! `tenant/entity`, with everything hookstream learned about the request in Kafka headers.
//! Header values are UTF-8 text so `kcat -J` shows them as they are.
//!
//! | header             | value |
//! |--------------------|-------|
//! | `hs-version`       | `1`, the version of this header set |
//! | `hs-tenant`        | tenant id |
//! | `hs-source`        | source id within the tenant |
//! | `hs-scheme`        | signature scheme that verified the request (`standard`, `hmac`, …) |
//! | `hs-event-id`      | provider's event id (the dedupe key together with tenant and source) |
//! | `hs-event-type`    | provider's event type, empty when the source has none |
//! | `hs-entity`        | entity the event is about (also the second half of the key) |
//! | `hs-occurred-at`   | event time, RFC 3339 UTC with milliseconds |
//! | `hs-received-at`   | time ingest received the request, RFC 3339 UTC with milliseconds |
//! | `hs-content-type`  | the request's `Content-Type`, empty when absent |
//! | `hs-key-id`        | id of the configured secret whose signature matched |
//! | `hs-event-id-derived` | `body-sha256` when the sender had no event id and the id is the body's SHA-256; absent otherwise |
//!
//! Secrets and signatures are never copied into headers.

use crate::time::{parse_rfc3339, to_rfc3339, Millis};
use crate::SchemasError;

pub const VERSION: &str = "1";

pub mod header {
    pub const VERSION: &str = "hs-version";
    pub const TENANT: &str = "hs-tenant";
    pub const SOURCE: &str = "hs-source";
    pub const SCHEME: &str = "hs-scheme";
    pub const EVENT_ID: &str = "hs-event-id";
    pub const EVENT_TYPE: &str = "hs-event-type";
    pub const ENTITY: &str = "hs-entity";
    pub const OCCURRED_AT: &str = "hs-occurred-at";
    pub const RECEIVED_AT: &str = "hs-received-at";
    pub const CONTENT_TYPE: &str = "hs-content-type";
    pub const KEY_ID: &str = "hs-key-id";
    pub const EVENT_ID_DERIVED: &str = "hs-event-id-derived";
    /// Set on `dlq` records: why the processor could not handle the record.
    pub const ERROR: &str = "hs-error";
    /// Set by `hookstream replay --redrive`: the redrive's id. The processor dedupes a
    /// redriven event per redrive id, so each redrive is processed once.
    pub const REDRIVE_ID: &str = "hs-redrive-id";
    /// Set by a redrive: `topic/partition/offset` of the record it copies.
    pub const REDRIVE_FROM: &str = "hs-redrive-from";
    /// How many times the record has been handled: absent is 1; a redrive adds one.
    pub const ATTEMPT: &str = "hs-attempt";
    /// Set on `dlq` records: where the record was in `raw`.
    pub const RAW_PARTITION: &str = "hs-raw-partition";
    pub const RAW_OFFSET: &str = "hs-raw-offset";
}

/// Metadata of one accepted webhook, carried in the headers of its `raw` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMeta {
    pub tenant: String,
    pub source: String,
    pub scheme: String,
    pub event_id: String,
    pub event_type: String,
    pub entity: String,
    pub occurred_at: Millis,
    pub received_at: Millis,
    pub content_type: String,
    pub key_id: String,
    /// The event id is the body's SHA-256 (the sender sent none).
    pub event_id_derived: bool,
    /// Set when the record is a deliberate redrive (`hs-redrive-id`).
    pub redrive_id: Option<String>,
}

impl RawMeta {
    /// Header pairs in a fixed order, so the same request always produces the same record.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (header::VERSION, VERSION.to_owned()),
            (header::TENANT, self.tenant.clone()),
            (header::SOURCE, self.source.clone()),
            (header::SCHEME, self.scheme.clone()),
            (header::EVENT_ID, self.event_id.clone()),
            (header::EVENT_TYPE, self.event_type.clone()),
            (header::ENTITY, self.entity.clone()),
            (header::OCCURRED_AT, to_rfc3339(self.occurred_at)),
            (header::RECEIVED_AT, to_rfc3339(self.received_at)),
            (header::CONTENT_TYPE, self.content_type.clone()),
            (header::KEY_ID, self.key_id.clone()),
        ];
        if self.event_id_derived {
            headers.push((header::EVENT_ID_DERIVED, "body-sha256".to_owned()));
        }
        if let Some(redrive) = &self.redrive_id {
            headers.push((header::REDRIVE_ID, redrive.clone()));
        }
        headers
    }

    /// Reads the metadata back from `(name, value)` header pairs.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<Self, SchemasError> {
        let mut found: Vec<(&str, &str)> = Vec::new();
        for (name, value) in headers {
            // Headers hookstream does not read (a tracing proxy's, a client's) may hold any
            // bytes: only ours must be UTF-8 text.
            if static_name(name) == "unknown" {
                continue;
            }
            let text = std::str::from_utf8(value.unwrap_or_default()).map_err(|_| {
                SchemasError::BadHeader {
                    name: static_name(name),
                    reason: "not UTF-8".into(),
                }
            })?;
            found.push((name, text));
        }
        let get = |name: &'static str| -> Result<String, SchemasError> {
            found
                .iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
                .ok_or(SchemasError::MissingHeader(name))
        };
        let time = |name: &'static str| -> Result<Millis, SchemasError> {
            let text = get(name)?;
            parse_rfc3339(&text).ok_or_else(|| SchemasError::BadHeader {
                name,
                reason: format!("`{text}` is not an RFC 3339 time"),
            })
        };
        Ok(Self {
            tenant: get(header::TENANT)?,
            source: get(header::SOURCE)?,
            scheme: get(header::SCHEME)?,
            event_id: get(header::EVENT_ID)?,
            event_type: get(header::EVENT_TYPE).unwrap_or_default(),
            entity: get(header::ENTITY)?,
            occurred_at: time(header::OCCURRED_AT)?,
            received_at: time(header::RECEIVED_AT)?,
            content_type: get(header::CONTENT_TYPE).unwrap_or_default(),
            key_id: get(header::KEY_ID).unwrap_or_default(),
            event_id_derived: get(header::EVENT_ID_DERIVED).is_ok(),
            redrive_id: get(header::REDRIVE_ID).ok(),
        })
    }
}

fn static_name(name: &str) -> &'static str {
    const ALL: [&str; 13] = [
        header::VERSION,
        header::TENANT,
        header::SOURCE,
        header::SCHEME,
        header::EVENT_ID,
        header::EVENT_TYPE,
        header::ENTITY,
        header::OCCURRED_AT,
        header::RECEIVED_AT,
        header::CONTENT_TYPE,
        header::KEY_ID,
        header::EVENT_ID_DERIVED,
        header::REDRIVE_ID,
    ];
    ALL.into_iter().find(|n| *n == name).unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RawMeta {
        RawMeta {
            tenant: "acme".into(),
            source: "billing".into(),
            scheme: "standard".into(),
            event_id: "evt_1".into(),
            event_type: "invoice.paid".into(),
            entity: "in_1".into(),
            occurred_at: 1_700_000_000_123,
            received_at: 1_700_000_001_000,
            content_type: "application/json".into(),
            key_id: "k1".into(),
            event_id_derived: false,
            redrive_id: None,
        }
    }

    #[test]
    fn headers_round_trip() {
        let meta = sample();
        let pairs = meta.to_headers();
        let parsed =
            RawMeta::from_headers(pairs.iter().map(|(n, v)| (*n, Some(v.as_bytes())))).unwrap();
        assert_eq!(parsed, meta);
    }

    #[test]
    fn a_derived_event_id_is_flagged() {
        let meta = RawMeta {
            event_id_derived: true,
            ..sample()
        };
        let pairs = meta.to_headers();
        assert!(pairs.contains(&(header::EVENT_ID_DERIVED, "body-sha256".to_owned())));
        let parsed =
            RawMeta::from_headers(pairs.iter().map(|(n, v)| (*n, Some(v.as_bytes())))).unwrap();
        assert!(parsed.event_id_derived);
    }

    #[test]
    fn foreign_headers_of_any_bytes_are_ignored() {
        let pairs = sample().to_headers();
        let mut headers: Vec<(&str, Option<&[u8]>)> = pairs
            .iter()
            .map(|(n, v)| (*n, Some(v.as_bytes())))
            .collect();
        headers.insert(0, ("traceparent", Some(&[0xff, 0xfe, 0x00])));
        headers.push(("x-binary", Some(&[0xc3, 0x28])));
        headers.push(("x-null", None));
        assert_eq!(RawMeta::from_headers(headers).unwrap(), sample());

        let mut ours: Vec<(&str, Option<&[u8]>)> = pairs
            .iter()
            .map(|(n, v)| (*n, Some(v.as_bytes())))
            .collect();
        ours.push((header::ENTITY, Some(&[0xff])));
        let err = RawMeta::from_headers(ours).unwrap_err();
        assert!(err.to_string().contains("hs-entity"), "{err}");
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let mut pairs = sample().to_headers();
        pairs.retain(|(n, _)| *n != header::EVENT_ID);
        let err =
            RawMeta::from_headers(pairs.iter().map(|(n, v)| (*n, Some(v.as_bytes())))).unwrap_err();
        assert!(err.to_string().contains("hs-event-id"), "{err}");

        let mut pairs = sample().to_headers();
        pairs.push((header::OCCURRED_AT, "soon".into()));
        let err =
            RawMeta::from_headers(pairs.iter().map(|(n, v)| (*n, Some(v.as_bytes())))).unwrap_err();
        assert!(err.to_string().contains("hs-occurred-at"), "{err}");
    }
}
