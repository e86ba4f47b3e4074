//! Decoding of `raw` records: Kafka headers of any bytes (names mostly `hs-*`, values any bytes
//! or null, repeated or missing) and any key.
//!
//! * `RawMeta::from_headers` never panics; what it accepts is canonical: written back with
//!   `to_headers` and read again it is the same metadata, and each field is the value of the
//!   header's last occurrence.
//! * `EntityKey::decode` accepts exactly `tenant/entity` with a non-empty tenant and
//!   round-trips through `encode`.
//! * With the `processor` feature, the processor's own `input::decode` of the same record (an
//!   rdkafka message) agrees: it succeeds exactly when the headers decode, the key decodes and
//!   agrees with them; otherwise the dead letter keeps the key, headers and body byte for byte.
//!   A header name that is not UTF-8 (bytes on the wire) never panics it and changes nothing.

#![no_main]

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use schemas::key::EntityKey;
use schemas::raw::{header, RawMeta};

const NAMES: [&str; 15] = [
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
    header::ERROR,
    header::ATTEMPT,
];
const TIMES: [&str; 6] = [
    "2023-11-14T22:13:20.123Z",
    "2023-11-14T23:13:20+01:00",
    "1969-12-31T23:59:59.9995Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    " 2023-11-14T22:13:20Z ",
];

struct Record {
    headers: Vec<(String, Option<Vec<u8>>)>,
    /// A last header whose name is not UTF-8, which only the processor's path can be given
    /// (Kafka header names are bytes on the wire; `RawMeta::from_headers` takes text).
    odd_name: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    body: Vec<u8>,
}

fn record(u: &mut Unstructured<'_>) -> ArbResult<Record> {
    let mut headers = Vec::new();
    // Usually a complete, plausible set first, so mutations explore past the required headers.
    if u.arbitrary()? {
        for name in &NAMES[..11] {
            let value = if name.ends_with("-at") {
                TIMES[u.choose_index(TIMES.len())?].to_owned()
            } else {
                u.arbitrary::<String>()?
            };
            headers.push((name.to_string(), Some(value.into_bytes())));
        }
    }
    for _ in 0..u.int_in_range(0..=8)? {
        let name = if u.ratio(7u8, 8)? {
            NAMES[u.choose_index(NAMES.len())?].to_owned()
        } else {
            u.arbitrary::<String>()?
        };
        let value = match u.int_in_range(0u8..=3)? {
            0 => None,
            1 => Some(TIMES[u.choose_index(TIMES.len())?].as_bytes().to_vec()),
            _ => Some(u.arbitrary::<Vec<u8>>()?),
        };
        headers.push((name, value));
    }
    let key = if u.ratio(1u8, 8)? {
        None
    } else if u.arbitrary()? {
        // A key that agrees with the last tenant and entity headers, when they are text.
        let last = |name: &str| {
            headers
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| String::from_utf8(v.clone().unwrap_or_default()).ok())
                .unwrap_or_default()
        };
        Some(format!("{}/{}", last(header::TENANT), last(header::ENTITY)).into_bytes())
    } else {
        Some(u.arbitrary::<Vec<u8>>()?)
    };
    let body = u.arbitrary()?;
    let odd_name = if u.ratio(1u8, 8)? {
        // Not UTF-8 up to its first NUL, where librdkafka's reading of names stops.
        Some(u.arbitrary::<Vec<u8>>()?).filter(|n| {
            std::str::from_utf8(n.split(|b| *b == 0).next().unwrap_or_default()).is_err()
        })
    } else {
        None
    };
    Ok(Record {
        headers,
        odd_name,
        key,
        body,
    })
}

fn run(u: &mut Unstructured<'_>) -> ArbResult<()> {
    let record = record(u)?;
    let pairs = || {
        record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
    };
    let meta = RawMeta::from_headers(pairs());
    if let Ok(meta) = &meta {
        let written = meta.to_headers();
        let again = RawMeta::from_headers(written.iter().map(|(n, v)| (*n, Some(v.as_bytes()))))
            .expect("written raw headers decode");
        assert_eq!(&again, meta, "raw headers are not canonical: {written:?}");
        let last = |name: &str| {
            record
                .headers
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8(v.clone().unwrap_or_default()).unwrap())
        };
        assert_eq!(last(header::TENANT).as_ref(), Some(&meta.tenant));
        assert_eq!(last(header::ENTITY).as_ref(), Some(&meta.entity));
        assert_eq!(last(header::EVENT_ID).as_ref(), Some(&meta.event_id));
        assert_eq!(last(header::REDRIVE_ID), meta.redrive_id);
    }
    let key = EntityKey::decode(record.key.as_deref().unwrap_or_default());
    if let Ok(key) = &key {
        assert!(!key.tenant.is_empty() && !key.tenant.contains('/'));
        assert_eq!(
            key.encode().as_bytes(),
            record.key.as_deref().unwrap_or_default()
        );
        assert_eq!(
            EntityKey::decode(key.encode().as_bytes()).ok().as_ref(),
            Some(key)
        );
    }
    #[cfg(feature = "processor")]
    processor_decode(&record, meta.ok(), key.ok());
    Ok(())
}

#[cfg(feature = "processor")]
fn processor_decode(record: &Record, meta: Option<RawMeta>, key: Option<EntityKey>) {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    // librdkafka hands header names out as C strings: a name with a NUL byte (legal in
    // Kafka) reaches the processor cut at the NUL. That is rdkafka's reading, not the
    // processor's, so such records are left out of the comparison (docs/fuzzing.md).
    if record.headers.iter().any(|(name, _)| name.contains('\0')) {
        return;
    }

    let mut headers = OwnedHeaders::new();
    for (name, value) in &record.headers {
        headers = headers.insert(Header {
            key: name.as_str(),
            value: value.as_deref(),
        });
    }
    // rdkafka's own header accessors panic on such a name; the processor reads headers with
    // `schemas::kafka::header_pairs` since 89e4ed4, which this checks (docs/fuzzing.md).
    let odd = record.odd_name.as_ref();
    if let Some(name) = odd {
        let native = headers.as_borrowed() as *const _ as *mut rdkafka::types::RDKafkaHeaders;
        // SAFETY: `BorrowedHeaders` is rdkafka's view of the native list it points to; the
        // name and value slices outlive the call, which copies them.
        unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                native,
                name.as_ptr().cast(),
                name.len() as isize,
                b"x".as_ptr() as *const std::ffi::c_void,
                1,
            );
        }
    }
    let message = OwnedMessage::new(
        Some(record.body.clone()),
        record.key.clone(),
        "hookstream.raw".into(),
        Timestamp::CreateTime(1_700_000_000_000),
        3,
        42,
        Some(headers),
    );
    let agrees = match (&meta, &key) {
        (Some(meta), Some(key)) => key.tenant == meta.tenant && key.entity == meta.entity,
        _ => false,
    };
    // A name that is not UTF-8 reads lossily (cut at a NUL, as librdkafka keeps names): it
    // can be no `hs-*` header, so the outcome is the same as without it.
    let odd_pair = odd.map(|name| {
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        (String::from_utf8_lossy(name).into_owned(), b"x".to_vec())
    });
    match processor::input::decode(&message) {
        Ok(input) => {
            assert!(agrees, "the processor accepted a record the schemas refuse");
            assert_eq!(Some(&input.meta), meta.as_ref());
            assert_eq!(input.body, record.body);
            assert_eq!((input.partition, input.offset), (3, 42));
        }
        Err(dead) => {
            assert!(
                !agrees,
                "the processor refused a good record: {}",
                dead.reason
            );
            assert!(!dead.reason.is_empty());
            assert_eq!(dead.key, record.key);
            assert_eq!(dead.body, record.body);
            assert_eq!(dead.timestamp, Some(1_700_000_000_000));
            let kept: Vec<(String, Vec<u8>)> = record
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), v.clone().unwrap_or_default()))
                .chain(odd_pair)
                .collect();
            assert_eq!(dead.headers, kept, "the dead letter changed the headers");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
