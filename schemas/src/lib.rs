//! hookstream's data contracts, shared by `ingest` and `processor` (which never depend on
//! each other).
//!
//! * [`topics`]: the topic names under a configurable prefix, and how each is created.
//! * [`key`]: the partition-key rule `tenant/entity` used by every keyed topic.
//! * [`raw`]: the Kafka headers that carry metadata beside the byte-exact body in `raw`.
//! * [`records`]: the JSON values of the derived topics (`events`, `state`).
//! * [`scope`]: record filters and offset ranges shared by replay and a rebuilding processor.
//! * [`avro`], [`registry`]: the Avro encoding (Confluent wire format) and the schema registry.
//! * [`config`]: the TOML configuration contract and its validation.
//! * [`kafka`]: librdkafka client settings and topic provisioning through the admin API.
//!
//! Every format here is documented in `docs/topics.md`; a change to a value's shape is a
//! change of contract for analytics consumers.

pub mod avro;
pub mod config;
pub mod error;
pub mod kafka;
pub mod key;
pub mod raw;
pub mod records;
pub mod registry;
pub mod scope;
pub mod time;
pub mod topic_config;
pub mod topics;
pub mod trace;

pub use error::SchemasError;
