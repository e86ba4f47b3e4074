//! A record read from any hookstream topic, owned, with the lookups replay and tail need.

use rdkafka::message::{BorrowedMessage, Message};
use schemas::raw::header;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl From<&BorrowedMessage<'_>> for Record {
    fn from(message: &BorrowedMessage<'_>) -> Self {
        let headers = schemas::kafka::header_pairs(message.headers());
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

impl Record {
    /// The last value of header `name`, when it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// A field to filter on: the `hs-*` header, else the same field of a JSON value
    /// (`events`, `state`, `deferred`, …), else the tenant or entity half of the key.
    pub fn field(&self, name: &str) -> Option<String> {
        if let Some(value) = self.header(name) {
            return Some(value.to_owned());
        }
        let json_name = match name {
            header::TENANT => "tenant",
            header::SOURCE => "source",
            header::ENTITY => "entity",
            header::EVENT_TYPE => "event_type",
            header::EVENT_ID => "event_id",
            _ => return None,
        };
        if let Some(value) = self
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
            .and_then(|v| v.get(json_name).and_then(|f| f.as_str().map(str::to_owned)))
        {
            return Some(value);
        }
        let key = std::str::from_utf8(self.key.as_deref()?).ok()?;
        let key = schemas::key::EntityKey::decode(key.as_bytes()).ok()?;
        match name {
            header::TENANT => Some(key.tenant),
            header::ENTITY => Some(key.entity),
            _ => None,
        }
    }
}
