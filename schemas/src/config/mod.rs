//! The configuration contract: one TOML file, overridable by `HOOKSTREAM_*` environment
//! variables (`HOOKSTREAM_KAFKA__BROKERS=host:9092` overrides `kafka.brokers`; `__` separates
//! levels, and only the `kafka`, `ingest`, `processor`, `log` and `reload` sections can be
//! overridden).
//!
//! ```toml
//! [kafka]
//! brokers = "127.0.0.1:9092"
//! topic_prefix = "hookstream."
//! [kafka.properties]            # librdkafka properties for every client
//! "client.id" = "hookstream"
//! [ingest]
//! listen = "127.0.0.1:8080"
//! [[tenants]]
//! id = "acme"
//! [[tenants.sources]]
//! id = "billing"
//! scheme = "standard"
//! secrets = [{ id = "k2", value = "whsec_…" }, { id = "k1", env = "ACME_BILLING_OLD" }]
//! ```
//!
//! Secrets are given by value, by environment variable (`env`) or by file (`file`); their
//! values are wrapped in [`secrecy::SecretString`] and never printed by `Debug`.
//! [`Config::load`] parses, then [`Config::validate`] lists every problem at once with the
//! key path it concerns, which is what `hookstream check-config` prints.

mod caps;
mod extract;
mod load;
pub mod reload;
mod secret;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use caps::{
    parse_micros, BreakerConfig, CapLimits, CapsConfig, Estimate, EstimateConfig, OnWindowReset,
    MICROS_PER_UNIT,
};
pub use extract::{FieldRule, RuleText, Rules};
pub use secret::SecretRef;

use crate::topics::TopicNames;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub processor: ProcessorConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub schema_registry: SchemaRegistryConfig,
    #[serde(default)]
    pub deliver: DeliverConfig,
    #[serde(default)]
    pub trail: TrailConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// `[alerts]`: forwarding of the `alerts` topic to people, by `hookstream deliver`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default)]
    pub forward: Vec<AlertForward>,
}

/// `[[alerts.forward]]`: one receiver of the alerts (an on-call webhook, an Alertmanager).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertForward {
    pub id: String,
    /// `webhook`: the URL; `alertmanager`: its alerts API (`http://am:9093/api/v2/alerts`).
    pub url: String,
    #[serde(default)]
    pub format: AlertFormat,
    /// `webhook`: Standard Webhooks secrets (`whsec_…`) the requests are signed with.
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// Only these tenants' alerts (empty: every tenant's).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Only these kinds (`cap_reached`, `endpoint_failing`…; empty: every kind).
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default = "default_endpoint_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per alert before it is given up (logged and counted).
    #[serde(default = "default_forward_attempts")]
    pub max_attempts: u32,
    /// Where a forwarder without committed offsets starts: `latest` (no page for history) or
    /// `earliest`.
    #[serde(default)]
    pub from: ForwardFrom,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormat {
    #[default]
    Webhook,
    Alertmanager,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardFrom {
    #[default]
    Latest,
    Earliest,
}

fn default_forward_attempts() -> u32 {
    8
}

/// `[telemetry]`: OTLP export of traces (docs/operations.md). The OpenTelemetry environment
/// variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, …) take precedence.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); spans go to
    /// `/v1/traces` under it. None: no export unless the environment asks.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

/// `[log]`: how the services write their logs (to stderr).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
}

/// `text` (key=value, for people) or `json` (one object per line, for log pipelines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[reload]`: live configuration ([`reload`]). The file is re-read on `SIGHUP` and, every
/// `poll_ms` (0: never), when its bytes changed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    #[serde(default = "default_reload_poll")]
    pub poll_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            poll_ms: default_reload_poll(),
        }
    }
}

fn default_reload_poll() -> u64 {
    1000
}

/// The event trail's index (`[trail]`), kept by `hookstream admin`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrailConfig {
    /// Where the index lives (RocksDB); derived from the topics, so deleting it only costs
    /// a re-read.
    #[serde(default = "default_trail_dir")]
    pub dir: PathBuf,
    /// Facts older than this are dropped from the index (the topics keep theirs).
    #[serde(default = "default_trail_retention_hours")]
    pub retention_hours: u64,
}

impl Default for TrailConfig {
    fn default() -> Self {
        Self {
            dir: default_trail_dir(),
            retention_hours: default_trail_retention_hours(),
        }
    }
}

fn default_trail_dir() -> PathBuf {
    PathBuf::from("hookstream-trail")
}

fn default_trail_retention_hours() -> u64 {
    7 * 24
}

/// `hookstream deliver` (`[deliver]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverConfig {
    /// Consume exactly these partitions of `events`, the delivery queue, the retry tiers and
    /// the journal (manual assignment, offsets still committed under the group). Empty:
    /// subscribe and share partitions with the group. For brokers whose group coordinator
    /// keeps a SIGKILLed member's partitions (Tansu), and pinned deployments; two instances
    /// must not list the same partition.
    #[serde(default)]
    pub partitions: Vec<i32>,
    /// Requests in flight at once on this instance, shared by the lanes.
    #[serde(default = "default_deliver_max_in_flight")]
    pub max_in_flight: usize,
    /// The share of `max_in_flight` retries and redriven deliveries may hold.
    #[serde(default = "default_retry_share")]
    pub retry_share: f64,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        Self {
            partitions: Vec::new(),
            max_in_flight: default_deliver_max_in_flight(),
            retry_share: default_retry_share(),
        }
    }
}

fn default_deliver_max_in_flight() -> usize {
    512
}

fn default_retry_share() -> f64 {
    0.3
}

/// Value encodings: JSON by default; Avro in the Confluent wire format per topic, with the
/// schemas registered in a schema registry (Confluent REST API, e.g. Redpanda's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL of the registry, e.g. `http://localhost:8081`.
    #[serde(default)]
    pub url: Option<String>,
    /// Per topic (`events`, `state`, `deferred`, `alerts`, `rejected`): `json` or `avro`.
    #[serde(default)]
    pub encoding: BTreeMap<String, ValueEncoding>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    #[default]
    Json,
    Avro,
}

impl SchemaRegistryConfig {
    pub fn encoding_of(&self, topic: crate::topics::Topic) -> ValueEncoding {
        self.encoding
            .get(topic.suffix())
            .copied()
            .unwrap_or_default()
    }

    /// Topics whose values may be written in Avro.
    pub const ENCODABLE: [&'static str; 5] = ["events", "state", "deferred", "alerts", "rejected"];
}

/// The admin HTTP API (`hookstream admin`): replay and redrive jobs, behind a bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// The bearer token every request must present (`value`, `env` or `file`). Without one
    /// the admin API refuses to start.
    #[serde(default)]
    pub token: Option<SecretRef>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token: None,
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
}

impl Config {
    pub fn topics(&self) -> TopicNames {
        TopicNames::new(self.kafka.topic_prefix.clone())
            .with_output_prefix(self.processor.output_prefix.clone())
    }

    pub fn source(&self, tenant: &str, source: &str) -> Option<(&TenantConfig, &SourceConfig)> {
        let t = self.tenants.iter().find(|t| t.id == tenant)?;
        let s = t.sources.iter().find(|s| s.id == source)?;
        Some((t, s))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    #[serde(default = "default_brokers")]
    pub brokers: String,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Partitions of the topics hookstream creates (existing topics are left as they are).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of created topics; -1 takes the broker's default.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// librdkafka properties for every client.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for producers only (override `properties`).
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// librdkafka properties for consumers only (override `properties`).
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            topic_prefix: default_prefix(),
            partitions: default_partitions(),
            replication_factor: default_replication(),
            properties: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long a request waits for the broker's acknowledgement before answering 503.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// `Retry-After` seconds sent with 503 answers.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u32,
    /// The public URL the ingest is reached at (e.g. `https://hooks.example.com`), used to
    /// rebuild the URL providers sign (Twilio, HubSpot). Without it, the URL comes from
    /// `X-Forwarded-Proto`/`X-Forwarded-Host` when `trust_forwarded_headers` is set, else
    /// from the `Host` header.
    #[serde(default)]
    pub public_base_url: Option<String>,
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// Rate limit for tenants without one of their own (none: unlimited).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// HTTP worker threads (default: one per core).
    #[serde(default)]
    pub workers: Option<usize>,
    /// How many ingest replicas share the tenants' rate limits: each enforces
    /// `1/replicas` of every limit (docs/configuration.md, "Rate limits across replicas").
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this `host:port` too, and keep `/metrics`
    /// off the webhook listener (none: `/metrics` is served on `listen`).
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` names the client a source's
    /// `allow_ips` is checked against; from any other peer the header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Terminate TLS (and verify client certificates) on `listen` (none: plain HTTP).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[ingest.tls]`: the listener's certificate and key (PEM files, reloaded on SIGHUP), and
/// optionally the CA bundle client certificates are verified against.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Verify client certificates against these CAs (PEM); needed by any source's
    /// `client_certificates`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// `optional`: clients without a certificate connect (sources that name none take
    /// them); `required`: they are refused at the handshake.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Optional,
    Required,
}

/// A token bucket: `per_second` sustained requests, bursts of up to `burst` (default:
/// `per_second`). Over the limit, requests get 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            ack_timeout_ms: default_ack_timeout(),
            retry_after_secs: default_retry_after(),
            public_base_url: None,
            trust_forwarded_headers: false,
            rate_limit: None,
            workers: None,
            replicas: default_replicas(),
            metrics_listen: None,
            trusted_proxies: Vec::new(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Root of the partition tasks' RocksDB stores (one directory per input partition).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Most records taken from `raw` per turn of the loop (one commit, all partitions).
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// Consume exactly these partitions of `raw` instead of joining the group's rebalancing
    /// (offsets are still committed under `group_id`). Empty: subscribe and share partitions.
    #[serde(default)]
    pub partitions: Vec<i32>,
    /// How long an event id is remembered for dedupe, in stream time (default 72 h, Stripe's
    /// retry window).
    #[serde(default = "default_dedupe_window")]
    pub dedupe_window_secs: u64,
    /// Most events a partition task holds back for reordering; past it the oldest are released
    /// early (never dropped).
    #[serde(default = "default_max_buffered")]
    pub max_buffered: usize,
    /// A partition that receives nothing for this long (wall clock) releases everything it
    /// holds back.
    #[serde(default = "default_idle_flush")]
    pub idle_flush_ms: u64,
    /// One Kafka transaction per batch (outputs, changelog frames, offsets), for brokers with
    /// transactions; readers of the outputs should use `isolation.level=read_committed`.
    #[serde(default)]
    pub exactly_once: bool,
    /// Write the processor's topics (`events`, `state`, `dlq`, `deferred`, `alerts`,
    /// `changelog`) under this prefix instead of `kafka.topic_prefix`: a rebuild next to the
    /// live pipeline (use a fresh `group_id` with it).
    #[serde(default)]
    pub output_prefix: Option<String>,
    /// Process only these records of `raw` (set by `hookstream replay --rebuild`); the rest
    /// are consumed and ignored. Absent: everything.
    #[serde(default)]
    pub scope: Option<crate::scope::Scope>,
    /// How often partition tasks take other partitions' budget shares into their state (caps
    /// are enforced on the tenant's usage across all partitions; see docs/caps.md).
    #[serde(default = "default_budget_absorb")]
    pub budget_absorb_ms: u64,
    /// Serve `GET /metrics` (Prometheus) and `GET /healthz` here (`host:port`, port 0 for any
    /// free one). Unset: no endpoint.
    #[serde(default)]
    pub listen: Option<String>,
    /// When partition tasks write snapshots of their stores to the changelog, and how long
    /// the changelog keeps what snapshots made redundant (docs/robustness.md, bounded history).
    #[serde(default)]
    pub snapshots: SnapshotConfig,
    /// How long a deleted entity's tombstone blocks older events from re-creating it, in the
    /// tenant's stream time (default 7 days; 0: forever, an unbounded store). When it expires
    /// the entity leaves the store and a Kafka tombstone (null value) goes to `state`.
    #[serde(default = "default_tombstone_retention")]
    pub tombstone_retention_secs: u64,
    /// Most events a cap may hold for release at its window's reset, per tenant and partition
    /// task (default 100 000); past it the cap's deferrals go to `dlq` (`held_full`), from
    /// where `hookstream redrive` brings them back.
    #[serde(default = "default_max_held")]
    pub max_held_per_tenant: u64,
}

fn default_tombstone_retention() -> u64 {
    7 * 24 * 3600
}

fn default_max_held() -> u64 {
    100_000
}

fn default_budget_absorb() -> u64 {
    200
}

/// Snapshots bound a partition's restore by its state, not its age: a restore reads the
/// latest complete snapshot and the changelog frames after it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// A snapshot is due once the frames written since the last one reach
    /// `max(min_bytes, ratio × the last snapshot's bytes)`, …
    #[serde(default = "default_snapshot_min_bytes")]
    pub min_bytes: u64,
    #[serde(default = "default_snapshot_ratio")]
    pub ratio: f64,
    /// … or, with any change since, once the last one is this old (wall clock). An unchanged
    /// store is snapshotted again after a quarter of the changelog's retention, so time
    /// retention never deletes a task's only snapshot while the task runs.
    #[serde(default = "default_snapshot_interval")]
    pub interval_secs: u64,
    /// `retention.ms` of a changelog topic hookstream creates (0: kept forever). At least four
    /// snapshot intervals.
    #[serde(default = "default_changelog_retention")]
    pub changelog_retention_secs: u64,
    /// After each snapshot, delete the changelog before it (`DeleteRecords`; Kafka and
    /// Redpanda): the changelog then keeps about one snapshot plus the frames since. Off for
    /// brokers without it (Tansu).
    #[serde(default)]
    pub delete_records: bool,
}

fn default_snapshot_min_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_snapshot_ratio() -> f64 {
    0.25
}
fn default_snapshot_interval() -> u64 {
    3600
}
fn default_changelog_retention() -> u64 {
    7 * 24 * 3600
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            min_bytes: default_snapshot_min_bytes(),
            ratio: default_snapshot_ratio(),
            interval_secs: default_snapshot_interval(),
            changelog_retention_secs: default_changelog_retention(),
            delete_records: false,
        }
    }
}

impl SnapshotConfig {
    /// The changelog's `retention.ms`: -1 for kept forever.
    pub fn retention_ms(&self) -> i64 {
        match self.changelog_retention_secs {
            0 => -1,
            secs => (secs as i64).saturating_mul(1000),
        }
    }
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            group_id: default_group(),
            state_dir: default_state_dir(),
            batch_max: default_batch_max(),
            partitions: Vec::new(),
            dedupe_window_secs: default_dedupe_window(),
            max_buffered: default_max_buffered(),
            idle_flush_ms: default_idle_flush(),
            exactly_once: false,
            output_prefix: None,
            scope: None,
            budget_absorb_ms: default_budget_absorb(),
            listen: None,
            snapshots: SnapshotConfig::default(),
            tombstone_retention_secs: default_tombstone_retention(),
            max_held_per_tenant: default_max_held(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    /// This tenant's ingest rate limit (overrides `ingest.rate_limit`).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Events/hour, tokens/day and cost/day caps (none: uncapped). See [`CapsConfig`].
    #[serde(default)]
    pub caps: Option<CapsConfig>,
    /// Loop/spike breaker (none: no breaker). See [`BreakerConfig`].
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// Customers' endpoints `hookstream deliver` sends this tenant's events to.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// Rules for this tenant's deliveries (`[tenants.delivery]`).
    #[serde(default)]
    pub delivery: DeliveryPolicy,
}

/// `[tenants.delivery]`: what the tenant's endpoints may reach.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// Networks (CIDR) of loopback, private, link-local, CGNAT… addresses its endpoints may
    /// connect to; by default none (SSRF protection).
    #[serde(default)]
    pub allow_networks: Vec<String>,
}

impl DeliveryPolicy {
    /// The allowed networks, or the first that does not parse.
    pub fn networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.allow_networks
            .iter()
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .map_err(|_| format!("`{n}` is not a network like 10.0.0.0/8 or fd00::/8"))
            })
            .collect()
    }
}

/// One customer endpoint of a tenant (`[[tenants.endpoints]]`): where `hookstream deliver`
/// POSTs the tenant's events whose type matches, signed as Standard Webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub id: String,
    pub url: String,
    /// Event types to send (exact, `prefix.*` or `*`); empty: every event.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Standard Webhooks secrets (`whsec_…`): one `v1,` signature per secret (rotation).
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// Per-attempt timeout.
    #[serde(default = "default_endpoint_timeout_ms")]
    pub timeout_ms: u64,
    /// Allow `http://` URLs (default: HTTPS only).
    #[serde(default)]
    pub allow_http: bool,
    /// Disable the endpoint once it has failed, without a success, for this long (5 days).
    #[serde(default = "default_disable_after_failing_secs")]
    pub disable_after_failing_secs: u64,
    /// How long its circuit breaker stays open before a probe (doubling with each reopening
    /// in a row, up to 10 minutes or this, whichever is longer).
    #[serde(default = "default_breaker_cooldown_secs")]
    pub breaker_cooldown_secs: u64,
    /// Most requests in flight to the endpoint at once (halved on each 429/503, grown back
    /// by one per round of successes).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Most requests started per second, if limited.
    #[serde(default)]
    pub rate_per_sec: Option<u32>,
    /// `per_entity`: one request in flight per entity, and an entity's later events wait
    /// while an earlier one waits for a retry.
    #[serde(default)]
    pub ordering: Ordering,
    /// The priority lane of its requests.
    #[serde(default)]
    pub lane: Lane,
    /// Only events whose fields match every rule (besides `event_types`).
    #[serde(default)]
    pub filter: Vec<EventFilter>,
}

/// A rule on an event's field: `path` is a JSON pointer into the `events` value (e.g.
/// `/payload/status`); the field must equal `equals`, or one of `one_of` (compared as JSON
/// values: `5` and `5.0` differ, `"5"` is a string).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    pub path: String,
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    #[serde(default)]
    pub one_of: Vec<serde_json::Value>,
}

impl EventFilter {
    pub fn matches(&self, event: &serde_json::Value) -> bool {
        let Some(field) = event.pointer(&self.path) else {
            return false;
        };
        self.equals.as_ref().is_some_and(|v| v == field) || self.one_of.contains(field)
    }
}

/// A priority lane of `hookstream deliver`'s requests ([`DeliverConfig::max_in_flight`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Served first (three permits to one when both lanes wait).
    Urgent,
    #[default]
    Routine,
}

/// The order an endpoint receives an entity's events in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// As they come, in parallel.
    #[default]
    None,
    /// In the order of `events`, one at a time per entity.
    PerEntity,
}

fn default_max_in_flight() -> u32 {
    8
}

impl EndpointConfig {
    /// Whether the event's fields pass every rule of `filter`.
    pub fn admits(&self, event: &serde_json::Value) -> bool {
        self.filter.iter().all(|rule| rule.matches(event))
    }

    /// Whether events of `event_type` go to this endpoint.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self
                .event_types
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => event_type.starts_with(prefix),
                    None => pattern == event_type,
                })
    }
}

fn default_endpoint_timeout_ms() -> u64 {
    10_000
}

fn default_breaker_cooldown_secs() -> u64 {
    30
}

fn default_disable_after_failing_secs() -> u64 {
    5 * 86_400
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub id: String,
    pub scheme: Scheme,
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// Settings of the generic `hmac` scheme.
    #[serde(default)]
    pub hmac: HmacConfig,
    /// Where to find event id, type, entity and event time; defaults depend on the scheme.
    #[serde(default)]
    pub extract: BTreeMap<String, RuleText>,
    /// Event types that delete their entity (`*` matches any prefix, e.g. `*.deleted`).
    #[serde(default = "default_delete_types")]
    pub delete_types: Vec<String>,
    /// Signature timestamps further than this from now are refused (schemes with timestamps;
    /// default 300 s, Paddle 5 s as Paddle documents).
    #[serde(default)]
    pub tolerance_secs: Option<u64>,
    /// How long (event time) the processor waits for earlier events of an entity before
    /// releasing one: events are released once stream time passes event time + grace.
    #[serde(default = "default_grace")]
    pub grace_ms: u64,
    /// An event time further than this ahead of the ingest's receive time is not trusted: the
    /// processor orders, dedupes and reconciles the event at its receive time and flags it
    /// (`events.time_skewed`). Past times are always trusted (they are just late).
    #[serde(default = "default_max_future_skew")]
    pub max_future_skew_secs: u64,
    /// GitHub: also accept the legacy `X-Hub-Signature` (HMAC-SHA1) when no SHA-256 is sent.
    #[serde(default)]
    pub allow_sha1: bool,
    /// The body is a JSON array of events (HubSpot's default); each element becomes its own
    /// `raw` record, its value the element's exact bytes.
    #[serde(default)]
    pub batch: Option<bool>,
    /// Only clients from these networks (CIDRs or addresses), checked before the signature:
    /// 403 `ip_not_allowed` otherwise. Empty: any address.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// A shared token each request must carry (checked before the body is read): 401
    /// `invalid_token` when missing or wrong.
    #[serde(default)]
    pub token: Option<TokenConfig>,
    /// Only clients whose verified TLS certificate has one of these names (`CN=…`, `DNS:…`,
    /// `URI:…`, `EMAIL:…`); needs `ingest.tls.client_ca`. 401 `missing_client_certificate`
    /// without a certificate, 403 `certificate_not_allowed` for another one.
    #[serde(default)]
    pub client_certificates: Vec<String>,
}

/// A shared token each request of a source carries (`[tenants.sources.token]`): in the URL
/// path, a query parameter or a header. Compared in constant time against every secret
/// (several for a rotation); never logged, audited or copied into a topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `path`: the last segment of `/v1/hooks/{tenant}/{source}/{token}`; `query`: the query
    /// parameter `name`; `header`: the header `name` (e.g. `X-Goog-Channel-Token`).
    #[serde(rename = "in")]
    pub carrier: TokenCarrier,
    /// The query parameter or header (not for `path`).
    #[serde(default)]
    pub name: Option<String>,
    /// Accepted tokens, each at least [`TokenConfig::MIN_LENGTH`] characters.
    pub secrets: Vec<SecretRef>,
}

impl TokenConfig {
    pub const MIN_LENGTH: usize = 16;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCarrier {
    Path,
    Query,
    Header,
}

impl SourceConfig {
    /// Extraction rules: the configured ones over the scheme's defaults.
    pub fn rules(&self) -> Result<Rules, String> {
        Rules::resolve(self.scheme, &self.extract)
    }

    pub fn tolerance(&self) -> u64 {
        self.tolerance_secs.unwrap_or(match self.scheme {
            Scheme::Paddle => 5,
            _ => 300,
        })
    }

    pub fn is_batch(&self) -> bool {
        self.batch.unwrap_or(self.scheme == Scheme::Hubspot)
    }

    pub fn is_delete_type(&self, event_type: &str) -> bool {
        matches_delete_type(&self.delete_types, event_type)
    }
}

/// Whether `event_type` matches one of `patterns` (exact, or `*suffix`).
pub fn matches_delete_type(patterns: &[String], event_type: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_prefix('*') {
            Some(suffix) => event_type.ends_with(suffix),
            None => pattern == event_type,
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Stripe,
    Github,
    Twilio,
    Shopify,
    Slack,
    Standard,
    Svix,
    Hubspot,
    Paddle,
    Hmac,
    /// No signature: the source is admitted by `allow_ips`, a `token` or (with
    /// `client_certificates`) the TLS client certificate, and only together with one of them.
    None,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Stripe => "stripe",
            Scheme::Github => "github",
            Scheme::Twilio => "twilio",
            Scheme::Shopify => "shopify",
            Scheme::Slack => "slack",
            Scheme::Standard => "standard",
            Scheme::Svix => "svix",
            Scheme::Hubspot => "hubspot",
            Scheme::Paddle => "paddle",
            Scheme::Hmac => "hmac",
            Scheme::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// The generic HMAC scheme: `header` carries `prefix` + the encoded HMAC (`algorithm`) of the
/// body, or, when `timestamp_header` is set, of `{timestamp}.{body}` (Unix seconds), or of
/// `template` (placeholders `{body}`, `{timestamp}`, `{method}`, `{url}`, `{header:NAME}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    #[serde(default = "default_hmac_header")]
    pub header: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
}

impl Default for HmacConfig {
    fn default() -> Self {
        Self {
            header: default_hmac_header(),
            prefix: String::new(),
            encoding: Encoding::Hex,
            algorithm: Algorithm::Sha256,
            timestamp_header: None,
            template: None,
        }
    }
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_prefix() -> String {
    "hookstream.".into()
}
fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    -1
}
fn default_replicas() -> u32 {
    1
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_ack_timeout() -> u64 {
    30_000
}
fn default_retry_after() -> u32 {
    1
}
fn default_group() -> String {
    "hookstream-processor".into()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("hookstream-state")
}
/// Each durable step costs a few broker round trips whatever its size: 2 000 records a step
/// took the processor benchmark from 36 k to 45 k records/s over 500 (docs/benchmarks.md).
fn default_batch_max() -> usize {
    2_000
}
fn default_dedupe_window() -> u64 {
    72 * 3600
}
fn default_max_buffered() -> usize {
    100_000
}
fn default_idle_flush() -> u64 {
    10_000
}
fn default_grace() -> u64 {
    5_000
}
pub const DEFAULT_MAX_FUTURE_SKEW_SECS: u64 = 300;
fn default_max_future_skew() -> u64 {
    DEFAULT_MAX_FUTURE_SKEW_SECS
}
fn default_delete_types() -> Vec<String> {
    vec!["*.deleted".into()]
}
fn default_hmac_header() -> String {
    "x-signature".into()
}

#[cfg(test)]
mod tests {
    use super::EventFilter;
    use serde_json::json;

    #[test]
    fn a_field_rule_matches_by_json_pointer_and_json_equality() {
        let event = json!({"event_type": "call.ended", "payload": {"status": "failed", "n": 5}});
        let rule =
            |path: &str, equals: Option<serde_json::Value>, one_of: Vec<serde_json::Value>| {
                EventFilter {
                    path: path.into(),
                    equals,
                    one_of,
                }
            };
        assert!(rule("/payload/status", Some(json!("failed")), vec![]).matches(&event));
        assert!(rule("/payload/n", None, vec![json!(4), json!(5)]).matches(&event));
        assert!(
            !rule("/payload/n", Some(json!("5")), vec![]).matches(&event),
            "a string"
        );
        assert!(
            !rule("/payload/n", Some(json!(5.0)), vec![]).matches(&event),
            "a float"
        );
        assert!(!rule("/payload/missing", Some(json!(null)), vec![]).matches(&event));
    }
}
