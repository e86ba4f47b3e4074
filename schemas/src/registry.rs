//! The schema registry (Confluent REST API; Redpanda's built-in registry speaks it too):
//! registering our schemas at start-up under the TopicNameStrategy subject `<topic>-value`,
//! and decoding Confluent-framed values by the schema id they carry.
//!
//! Registration first asks the registry whether the schema is compatible with the subject's
//! latest version (under the subject's configured compatibility level), so that a refusal is
//! reported with the registry's reasons instead of a bare HTTP 409; then it registers through
//! `schema_registry_converter`, which returns the id (the existing one when the schema is
//! already registered).

use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::avro::{schema_text, Codec, Codecs};
use crate::config::{Config, ValueEncoding};
use crate::topics::{Topic, TopicNames};
use crate::SchemasError;

/// `url` without credentials (`https://user:secret@host` → `https://host`), for messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) if !userinfo.contains('/') => format!("{scheme}://{host}"),
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The TopicNameStrategy subject of a topic's values.
pub fn subject(topic_name: &str) -> String {
    format!("{topic_name}-value")
}

/// Registers the schema of every topic among `topics` that the configuration writes in Avro,
/// and returns how each topic's values are to be encoded.
pub async fn codecs(config: &Config, topics: &[Topic]) -> Result<Codecs, SchemasError> {
    let mut codecs = Codecs::json();
    let names = config.topics();
    for topic in topics {
        if config.schema_registry.encoding_of(*topic) != ValueEncoding::Avro {
            continue;
        }
        let url = config.schema_registry.url.as_deref().ok_or_else(|| {
            SchemasError::Config("schema_registry.url is required for Avro topics".into())
        })?;
        let id = register(url, &names, *topic).await?;
        tracing::info!(topic = %names.name(*topic), id, "values are written in Avro (schema registered)");
        codecs.set(*topic, Codec::avro(*topic, id)?);
    }
    Ok(codecs)
}

async fn register(url: &str, names: &TopicNames, topic: Topic) -> Result<u32, SchemasError> {
    let text = schema_text(topic)
        .ok_or_else(|| SchemasError::Avro(format!("topic `{}` has no schema", topic.suffix())))?;
    let subject = subject(&names.name(topic));
    check_compatibility(url, &subject, text).await?;
    let settings = SrSettings::new(url.trim_end_matches('/').to_owned());
    let supplied = SuppliedSchema::new(None, SchemaType::Avro, text.to_owned());
    let registered = post_schema(&settings, subject.clone(), supplied)
        .await
        .map_err(|e| {
            SchemasError::Registry(format!("registering `{subject}` at {}: {e}", redact(url)))
        })?;
    Ok(registered.id)
}

async fn check_compatibility(url: &str, subject: &str, schema: &str) -> Result<(), SchemasError> {
    let endpoint = format!(
        "{}/compatibility/subjects/{subject}/versions/latest?verbose=true",
        url.trim_end_matches('/')
    );
    let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" }).to_string();
    let answer = tokio::task::spawn_blocking(move || {
        match ureq::post(&endpoint)
            .timeout(std::time::Duration::from_secs(30))
            .set("content-type", "application/vnd.schemaregistry.v1+json")
            .send_string(&body)
        {
            Ok(response) => Ok((
                response.status(),
                response.into_string().unwrap_or_default(),
            )),
            Err(ureq::Error::Status(status, response)) => {
                Ok((status, response.into_string().unwrap_or_default()))
            }
            Err(error) => Err(error.to_string()),
        }
    })
    .await
    .map_err(|e| SchemasError::Registry(e.to_string()))?
    .map_err(|e| SchemasError::Registry(format!("{}: {e}", redact(url))))?;
    let (status, text) = answer;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    match status {
        200 if json["is_compatible"] == true => Ok(()),
        200 => Err(SchemasError::Incompatible {
            subject: subject.to_owned(),
            details: json["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|m| m.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }),
        // 40401 subject not found / 40402 version not found: nothing to be compatible with.
        404 => Ok(()),
        _ => Err(SchemasError::Registry(format!(
            "compatibility check of `{subject}` answered {status}: {text}"
        ))),
    }
}

/// Decodes Confluent-framed Avro values to JSON, fetching writer schemas by id (cached).
pub struct Decoder {
    inner: AvroDecoder,
}

impl Decoder {
    pub fn new(url: &str) -> Self {
        Self {
            inner: AvroDecoder::new(SrSettings::new(url.trim_end_matches('/').to_owned())),
        }
    }

    /// Decodes a framed value. A registry that cannot be reached (or answers 502/503) is a
    /// retriable [`SchemasError::Registry`]; a value that cannot be decoded is
    /// [`SchemasError::Avro`], which retrying does not change.
    pub async fn decode(&self, bytes: &[u8]) -> Result<serde_json::Value, SchemasError> {
        let decoded = self.inner.decode(Some(bytes)).await.map_err(|e| {
            if e.retriable {
                SchemasError::Registry(format!("decoding an Avro value: {e}"))
            } else {
                SchemasError::Avro(format!("decoding an Avro value: {e}"))
            }
        })?;
        serde_json::Value::try_from(decoded.value)
            .map_err(|e| SchemasError::Avro(format!("converting to JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_registry_is_retriable_and_a_bad_value_is_not() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // bound and released: nothing listens there
        let framed = [0u8, 0, 0, 0, 7, 2, 4];
        let down = Decoder::new(&format!("http://127.0.0.1:{port}"));
        let error = down.decode(&framed).await.unwrap_err();
        assert!(error.is_retriable(), "{error}");
        let unframed = down.decode(b"{\"json\": true}").await.unwrap_err();
        assert!(!unframed.is_retriable(), "{unframed}");
    }

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact("https://key:s3cret@registry.example:8081"),
            "https://registry.example:8081"
        );
        assert_eq!(redact("http://localhost:8081"), "http://localhost:8081");
    }
}
