//! Decoding of `raw` records into the processor's input. A record that cannot be decoded
//! (missing or malformed headers, a key that disagrees with them) is not dropped: it goes to
//! `dlq` with the reason in the `hs-error` header.

use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message, OwnedHeaders, OwnedMessage};
use schemas::key::EntityKey;
use schemas::raw::RawMeta;
use schemas::trace::TraceParent;

#[derive(Debug, Clone)]
pub struct RawInput {
    pub partition: i32,
    pub offset: i64,
    /// `meta.occurred_at` is the time the event is processed at; when the sender's claimed
    /// event time was not trusted ([`crate::clock::trusted_time`]), that time is the receive
    /// time and the claimed one is kept here for the records.
    pub meta: RawMeta,
    pub body: Vec<u8>,
    pub claimed_at: Option<schemas::time::Millis>,
    /// The ingest span's context (`traceparent` header), continued into `events`.
    pub trace: Option<TraceParent>,
}

#[derive(Debug, Clone)]
pub struct Undecodable {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The `raw` record's timestamp, kept so the dead letter is the same on every replay.
    pub timestamp: Option<i64>,
    pub reason: String,
}

pub fn decode(message: &OwnedMessage) -> Result<RawInput, Box<Undecodable>> {
    decode_with(message, message.headers().map(OwnedHeaders::as_borrowed))
}

/// [`decode`] of a record as the consumer hands it over, without copying it first.
pub fn decode_borrowed(message: &BorrowedMessage<'_>) -> Result<RawInput, Box<Undecodable>> {
    decode_with(message, message.headers())
}

fn decode_with(
    message: &impl Message,
    headers: Option<&BorrowedHeaders>,
) -> Result<RawInput, Box<Undecodable>> {
    let headers = schemas::kafka::header_pairs(headers);
    let body = message.payload().unwrap_or_default().to_vec();
    let fail = |reason: String| {
        Box::new(Undecodable {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            headers: headers.clone(),
            body: body.clone(),
            timestamp: message.timestamp().to_millis(),
            reason,
        })
    };
    let meta = RawMeta::from_headers(
        headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_slice()))),
    )
    .map_err(|e| fail(e.to_string()))?;
    let key =
        EntityKey::decode(message.key().unwrap_or_default()).map_err(|e| fail(e.to_string()))?;
    if key.tenant != meta.tenant || key.entity != meta.entity {
        return Err(fail(format!(
            "record key `{}` disagrees with headers (tenant `{}`, entity `{}`)",
            key.encode(),
            meta.tenant,
            meta.entity
        )));
    }
    let trace = headers
        .iter()
        .find(|(k, _)| k == schemas::trace::HEADER)
        .and_then(|(_, v)| TraceParent::parse(v));
    Ok(RawInput {
        partition: message.partition(),
        offset: message.offset(),
        meta,
        body,
        claimed_at: None,
        trace,
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
    use schemas::raw::RawMeta;

    use super::*;

    /// A header name of any bytes (librdkafka accepts them; rdkafka's accessors panic on
    /// them) neither crashes the processor nor changes what it reads.
    #[test]
    fn a_header_name_that_is_not_utf8_is_read_without_a_panic() {
        let meta = RawMeta {
            tenant: "t".into(),
            source: "s".into(),
            scheme: "hmac".into(),
            event_id: "e1".into(),
            event_type: "x".into(),
            entity: "n".into(),
            occurred_at: 1_700_000_000_000,
            received_at: 1_700_000_000_000,
            content_type: String::new(),
            key_id: String::new(),
            event_id_derived: false,
            redrive_id: None,
        };
        let headers = meta
            .to_headers()
            .iter()
            .fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            });
        let odd_name = [0xffu8, 0xfe, b'x'];
        let native = headers.as_borrowed() as *const rdkafka::message::BorrowedHeaders
            as *mut rdkafka::bindings::rd_kafka_headers_t;
        // SAFETY: `headers` owns the list and outlives the call; librdkafka copies both ranges.
        let added = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                native,
                odd_name.as_ptr().cast(),
                odd_name.len() as isize,
                b"v".as_ptr().cast(),
                1,
            )
        };
        assert_eq!(
            added,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        let message = OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"t/n".to_vec()),
            "raw".into(),
            Timestamp::NotAvailable,
            0,
            7,
            Some(headers),
        );
        let input = decode(&message).expect("decodes");
        assert_eq!(input.meta, meta);
    }
}
