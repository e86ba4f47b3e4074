//! The sample tenant of `hookstream dev`: tenant `acme` with a Standard Webhooks source
//! (`billing`) and a generic HMAC source (`orders`), with dev-only secrets (the same
//! defaults as `compose/`), and signed requests for them.

use schemas::config::{
    Algorithm, Config, Encoding, HmacConfig, KafkaConfig, RuleText, Scheme, SecretRef,
    SourceConfig, TenantConfig,
};
use std::collections::BTreeMap;
use std::path::Path;

pub const TENANT: &str = "acme";
pub const BILLING_SECRET: &str = "whsec_aG9va3N0cmVhbS1kZXYtb25seS1OT1QtQS1TRUNSRVQ=";
pub const ORDERS_SECRET: &str = "dev-only-orders-secret-not-for-production";
pub const ORDERS_HEADER: &str = "x-signature";
pub const ORDERS_PREFIX: &str = "sha256=";

pub fn config(brokers: &str, listen: &str, state_dir: &Path, partitions: i32) -> Config {
    let billing = SourceConfig {
        id: "billing".into(),
        scheme: Scheme::Standard,
        secrets: vec![SecretRef::by_value("dev", BILLING_SECRET)],
        hmac: HmacConfig::default(),
        extract: BTreeMap::new(),
        delete_types: vec!["*.deleted".into()],
        tolerance_secs: None,
        allow_sha1: false,
        grace_ms: 5_000,
        max_future_skew_secs: schemas::config::DEFAULT_MAX_FUTURE_SKEW_SECS,
        batch: None,
        allow_ips: Vec::new(),
        token: None,
        client_certificates: Vec::new(),
    };
    let orders = SourceConfig {
        id: "orders".into(),
        scheme: Scheme::Hmac,
        secrets: vec![SecretRef::by_value("dev", ORDERS_SECRET)],
        hmac: HmacConfig {
            header: ORDERS_HEADER.into(),
            prefix: ORDERS_PREFIX.into(),
            encoding: Encoding::Hex,
            algorithm: Algorithm::Sha256,
            timestamp_header: None,
            template: None,
        },
        extract: BTreeMap::from([
            ("entity".to_owned(), RuleText::One("/order_id".to_owned())),
            (
                "occurred_at".to_owned(),
                RuleText::One("/occurred_at".to_owned()),
            ),
        ]),
        delete_types: vec!["*.deleted".into()],
        tolerance_secs: None,
        allow_sha1: false,
        grace_ms: 5_000,
        max_future_skew_secs: schemas::config::DEFAULT_MAX_FUTURE_SKEW_SECS,
        batch: None,
        allow_ips: Vec::new(),
        token: None,
        client_certificates: Vec::new(),
    };
    let mut config = Config::parse_str("").expect("empty configuration parses");
    config.kafka = KafkaConfig {
        brokers: brokers.to_owned(),
        partitions,
        replication_factor: 1,
        ..config.kafka
    };
    config.ingest.listen = listen.to_owned();
    config.processor.state_dir = state_dir.to_owned();
    config.processor.idle_flush_ms = 1_000;
    config.tenants = vec![TenantConfig {
        id: TENANT.into(),
        rate_limit: None,
        sources: vec![billing, orders],
        caps: None,
        breaker: None,
        endpoints: Vec::new(),
        delivery: Default::default(),
    }];
    config
}

/// A signed request: the path under the ingest, its headers and body.
pub struct SignedRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl SignedRequest {
    pub fn curl(&self, base: &str) -> String {
        let mut command = format!("curl -sS -X POST '{base}{}'", self.path);
        for (name, value) in &self.headers {
            command.push_str(&format!(" \\\n  -H '{name}: {value}'"));
        }
        command.push_str(&format!(" \\\n  --data-raw '{}'", self.body));
        command
    }
}

pub fn order(
    event_id: &str,
    event_type: &str,
    order_id: &str,
    occurred_at: &str,
    extra: &str,
) -> SignedRequest {
    let body = format!(
        r#"{{"id":"{event_id}","type":"{event_type}","order_id":"{order_id}","occurred_at":"{occurred_at}"{extra}}}"#
    );
    let signature = ingest::verify::sign::hmac(
        ORDERS_SECRET,
        ORDERS_PREFIX,
        Encoding::Hex,
        None,
        body.as_bytes(),
    );
    SignedRequest {
        path: format!("/v1/hooks/{TENANT}/orders"),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (ORDERS_HEADER.into(), signature),
        ],
        body,
    }
}

pub fn invoice(
    msg_id: &str,
    event_type: &str,
    invoice_id: &str,
    timestamp: &str,
    now_secs: i64,
) -> SignedRequest {
    let body = format!(
        r#"{{"type":"{event_type}","timestamp":"{timestamp}","data":{{"id":"{invoice_id}","amount_due":4200}}}}"#
    );
    let signature =
        ingest::verify::sign::standard(BILLING_SECRET, msg_id, now_secs, body.as_bytes());
    SignedRequest {
        path: format!("/v1/hooks/{TENANT}/billing"),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("webhook-id".into(), msg_id.into()),
            ("webhook-timestamp".into(), now_secs.to_string()),
            ("webhook-signature".into(), signature),
        ],
        body,
    }
}
