//! End-to-end harness: starts real processes on free loopback ports — a Tansu broker with its
//! own working directory and sqlite file, and the `hookstream` binary in its `ingest` and
//! `process` roles — and talks to them as users do (HTTP, Kafka consumers). Everything is
//! killed and removed when its guard drops. Waiting is always on a condition with a deadline
//! (a line printed, a port answering, a record arriving), never a fixed sleep.

#![allow(dead_code)]

pub mod broker;
pub mod http;
pub mod kafka;
pub mod process;
pub mod registry;
pub mod signing;
pub mod sink;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use broker::Broker;
pub use process::Service;

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A test's configuration file, under its own topic prefix and state directory.
pub struct TestConfig {
    pub path: PathBuf,
    pub prefix: String,
    pub brokers: String,
    _dir: tempfile::TempDir,
}

/// Settings a test may change in its configuration file.
pub struct Settings {
    pub ack_timeout_ms: u64,
    pub max_body_bytes: usize,
    /// Extra lines for the `[ingest]` section.
    pub ingest: String,
    /// Extra lines for the `[processor]` section.
    pub processor: String,
    pub batch_max: usize,
    pub idle_flush_ms: u64,
    /// Extra `[[tenants]]` entries appended at the end.
    pub tenants: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ack_timeout_ms: 20_000,
            max_body_bytes: 1024 * 1024,
            ingest: String::new(),
            processor: String::new(),
            batch_max: 100,
            idle_flush_ms: 300,
            tenants: String::new(),
        }
    }
}

impl TestConfig {
    pub fn write(broker: &Broker, name: &str) -> Self {
        Self::write_with(broker, name, &Settings::default())
    }

    pub fn write_with(broker: &Broker, name: &str, settings: &Settings) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hookstream-{name}-"))
            .tempdir()
            .unwrap();
        let prefix = format!("t.{name}.");
        let state_dir = dir.path().join("state");
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
topic_prefix = "{prefix}"
partitions = 3
replication_factor = 1
[kafka.properties]
"client.id" = "hookstream-test"
[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"fetch.max.bytes" = "1048576"
"max.partition.fetch.bytes" = "262144"
"queued.max.messages.kbytes" = "2048"
[kafka.producer]
"message.timeout.ms" = "15000"

[ingest]
listen = "127.0.0.1:0"
ack_timeout_ms = {ack_timeout_ms}
max_body_bytes = {max_body_bytes}
{ingest_extra}

[processor]
group_id = "processor-{name}"
state_dir = "{state_dir}"
batch_max = {batch_max}
idle_flush_ms = {idle_flush_ms}
{processor_extra}

[trail]
dir = "{trail_dir}"

[[tenants]]
id = "acme"

[[tenants.sources]]
id = "orders"
scheme = "hmac"
secrets = [{{ id = "k-new", value = "{orders_new}" }}, {{ id = "k-old", file = "{secret_file}" }}]
hmac = {{ header = "x-signature", prefix = "sha256=", encoding = "hex" }}
extract = {{ entity = "/order_id", occurred_at = "/occurred_at" }}

[[tenants.sources]]
id = "billing"
scheme = "standard"
secrets = [{{ id = "k1", value = "{billing}" }}]

{tenants_extra}
"#,
            ack_timeout_ms = settings.ack_timeout_ms,
            max_body_bytes = settings.max_body_bytes,
            ingest_extra = settings.ingest,
            processor_extra = settings.processor,
            batch_max = settings.batch_max,
            idle_flush_ms = settings.idle_flush_ms,
            tenants_extra = settings.tenants,
            brokers = broker.address(),
            state_dir = state_dir.display(),
            trail_dir = dir.path().join("trail").display(),
            orders_new = signing::ORDERS_SECRET,
            billing = signing::BILLING_SECRET,
            secret_file = dir.path().join("orders-old.secret").display(),
        );
        std::fs::write(
            dir.path().join("orders-old.secret"),
            signing::ORDERS_OLD_SECRET,
        )
        .unwrap();
        let path = dir.path().join("hookstream.toml");
        std::fs::write(&path, text).unwrap();
        Self {
            path,
            prefix,
            brokers: broker.address(),
            _dir: dir,
        }
    }

    pub fn topic(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Writes a variant of this configuration (another instance: same broker, topics and,
    /// unless edited, group) with `edit` applied to its text; returns its path.
    pub fn variant(&self, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
        let text = std::fs::read_to_string(&self.path).unwrap();
        let state_dir = self.dir().join("state");
        let other = self.dir().join(format!("state-{name}"));
        let text = edit(text.replace(
            &format!("state_dir = \"{}\"", state_dir.display()),
            &format!("state_dir = \"{}\"", other.display()),
        ));
        let path = self.dir().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A running pipeline: broker, ingest and (optionally) processor.
pub struct Pipeline {
    pub config: TestConfig,
    pub ingest: Service,
    pub processor: Option<Service>,
    pub broker: Broker,
}

impl Pipeline {
    pub fn start(name: &str, with_processor: bool) -> Self {
        Self::start_with(name, with_processor, &Settings::default())
    }

    pub fn start_with(name: &str, with_processor: bool, settings: &Settings) -> Self {
        let broker = Broker::start();
        let config = TestConfig::write_with(&broker, name, settings);
        let ingest = Service::ingest(&config.path);
        let processor = with_processor.then(|| Service::processor(&config.path));
        Self {
            config,
            ingest,
            processor,
            broker,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.ingest.base_url())
    }
}

/// Polls `condition` until it holds (Some) or [`DEADLINE`] passes (None).
pub fn wait_until(mut condition: impl FnMut() -> bool) -> Option<()> {
    let deadline = std::time::Instant::now() + DEADLINE;
    while std::time::Instant::now() < deadline {
        if condition() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(100)); // polling interval
    }
    condition().then_some(())
}

/// A benchmark's numeric setting from the environment (`HOOKSTREAM_BENCH_…`), else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates the configuration's topics with `hookstream topics --create` (no service started,
/// so no consumer group is joined) and checks its listing.
pub fn create_topics(config: &TestConfig) {
    let (stdout, _) = process::run_ok(&[
        "topics",
        "--create",
        "--config",
        config.path.to_str().unwrap(),
    ]);
    let partitions = schemas::config::Config::load(&config.path)
        .unwrap()
        .kafka
        .partitions;
    let created = format!(" {partitions} partitions");
    for suffix in ["raw", "events", "state", "changelog", "budget"] {
        let name = config.topic(suffix);
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains(&created)),
            "{name} created with {partitions} partitions:\n{stdout}"
        );
    }
}
