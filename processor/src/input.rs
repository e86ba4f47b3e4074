//! Decoding of `raw` records into the processor's input. A record that cannot be decoded
//! (missing or malformed headers, a key that disagrees with them) is not dropped: it goes to
//! `dlq` with the reason in the `hs-error` header.

use rdkafka::message::{Headers, Message, OwnedMessage};
use schemas::key::EntityKey;
use schemas::raw::RawMeta;

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
    let headers: Vec<(String, Vec<u8>)> = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
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
    Ok(RawInput {
        partition: message.partition(),
        offset: message.offset(),
        meta,
        body,
        claimed_at: None,
    })
}
