use std::collections::HashSet;
use std::net::SocketAddr;

use base64::Engine;
use secrecy::ExposeSecret;

use super::{Config, EndpointConfig, Scheme, SourceConfig, TenantConfig};
use crate::SchemasError;

impl Config {
    /// Checks everything that can be checked without a broker, listing every problem with
    /// the key path it concerns. Secrets are resolved (environment and files read) but their
    /// values never appear in a message.
    pub fn validate(&self) -> Result<(), SchemasError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SchemasError::Invalid(problems))
        }
    }

    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            p.push("kafka.brokers: must name at least one broker (host:port)".into());
        }
        check_prefix(&mut p, "kafka.topic_prefix", &k.topic_prefix);
        let registry = &self.schema_registry;
        for (topic, encoding) in &registry.encoding {
            if !super::SchemaRegistryConfig::ENCODABLE.contains(&topic.as_str()) {
                p.push(format!(
                    "schema_registry.encoding.{topic}: not a topic hookstream writes a schema for (one of {})",
                    super::SchemaRegistryConfig::ENCODABLE.join(", ")
                ));
            } else if *encoding == super::ValueEncoding::Avro && registry.url.is_none() {
                p.push(format!(
                    "schema_registry.encoding.{topic}: `avro` needs schema_registry.url"
                ));
            }
        }
        if let Some(url) = &registry.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                p.push(format!(
                    "schema_registry.url: `{url}` is not an http:// or https:// URL"
                ));
            }
        }
        if let Some(prefix) = &self.processor.output_prefix {
            check_prefix(&mut p, "processor.output_prefix", prefix);
            if *prefix == k.topic_prefix {
                p.push("processor.output_prefix: equals kafka.topic_prefix; leave it unset to write the live topics".into());
            }
        }
        if k.partitions < 1 {
            p.push(format!(
                "kafka.partitions: {} is not a positive number",
                k.partitions
            ));
        }
        if k.replication_factor == 0 || k.replication_factor < -1 {
            p.push(format!(
                "kafka.replication_factor: {} (use a positive number, or -1 for the broker's default)",
                k.replication_factor
            ));
        }
        if self.ingest.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "ingest.listen: `{}` is not an address like 127.0.0.1:8080",
                self.ingest.listen
            ));
        }
        if let Some(listen) = &self.processor.listen {
            if listen.parse::<SocketAddr>().is_err() {
                p.push(format!(
                    "processor.listen: `{listen}` is not an address like 127.0.0.1:9465"
                ));
            }
        }
        if self.ingest.max_body_bytes == 0 {
            p.push("ingest.max_body_bytes: must be positive".into());
        }
        if let Some(workers) = self.ingest.workers {
            if !(1..=512).contains(&workers) {
                p.push(format!("ingest.workers: {workers} (use 1 to 512)"));
            }
        }
        if !(1..=1000).contains(&self.ingest.replicas) {
            p.push(format!(
                "ingest.replicas: {} (use 1 to 1000: how many ingest replicas share each rate limit)",
                self.ingest.replicas
            ));
        }
        if let Some(listen) = &self.ingest.metrics_listen {
            if listen == &self.ingest.listen && !listen.ends_with(":0") {
                p.push(format!(
                    "ingest.metrics_listen: `{listen}` is also ingest.listen; leave it unset to serve /metrics there"
                ));
            }
        }
        if self.deliver.max_in_flight == 0 {
            p.push("deliver.max_in_flight: must be positive".into());
        }
        if !(self.deliver.retry_share > 0.0 && self.deliver.retry_share <= 1.0) {
            p.push("deliver.retry_share: must be more than 0 and at most 1".into());
        }
        if self.ingest.ack_timeout_ms == 0 {
            p.push("ingest.ack_timeout_ms: must be positive".into());
        }
        if let Some(tls) = &self.ingest.tls {
            let files = [
                ("cert", Some(&tls.cert)),
                ("key", Some(&tls.key)),
                ("client_ca", tls.client_ca.as_ref()),
            ];
            for (name, path) in files {
                if let Some(path) = path.filter(|path| !path.is_file()) {
                    p.push(format!(
                        "ingest.tls.{name}: `{}` is not a readable file",
                        path.display()
                    ));
                }
            }
        }
        if let Some(url) = &self.ingest.public_base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('?') {
                p.push(format!(
                    "ingest.public_base_url: `{url}` must be an http(s) URL without a query"
                ));
            }
        }
        if let Some(limit) = &self.ingest.rate_limit {
            rate_limit_problems(limit, "ingest.rate_limit", &mut p);
        }
        if self.processor.group_id.trim().is_empty() {
            p.push("processor.group_id: must not be empty".into());
        }
        if self.processor.batch_max == 0 {
            p.push("processor.batch_max: must be positive".into());
        }
        if self.processor.max_held_per_tenant == 0 {
            p.push("processor.max_held_per_tenant: must be positive (a tenant must be able to hold at least one deferred event)".into());
        }
        snapshot_problems(&self.processor.snapshots, &mut p);
        let mut tenants = HashSet::new();
        for (ti, tenant) in self.tenants.iter().enumerate() {
            let at = format!("tenants[{ti}] (`{}`)", tenant.id);
            if let Err(e) = check_id(&tenant.id) {
                p.push(format!("{at}.id: {e}"));
            }
            if !tenants.insert(tenant.id.as_str()) {
                p.push(format!("{at}.id: tenant `{}` is defined twice", tenant.id));
            }
            if let Some(limit) = &tenant.rate_limit {
                rate_limit_problems(limit, &format!("{at}.rate_limit"), &mut p);
            }
            let mut sources = HashSet::new();
            for (si, source) in tenant.sources.iter().enumerate() {
                let at = format!("{at}.sources[{si}] (`{}`)", source.id);
                if let Err(e) = check_id(&source.id) {
                    p.push(format!("{at}.id: {e}"));
                }
                if !sources.insert(source.id.as_str()) {
                    p.push(format!("{at}.id: source `{}` is defined twice", source.id));
                }
                source_problems(source, &at, &mut p);
                let verifies_clients = self
                    .ingest
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.client_ca.is_some());
                if !source.client_certificates.is_empty() && !verifies_clients {
                    p.push(format!(
                        "{at}.client_certificates: needs `ingest.tls.client_ca` (the CAs client \
                         certificates are verified against)"
                    ));
                }
            }
            caps_problems(tenant, &at, &mut p);
            if let Err(e) = tenant.delivery.networks() {
                p.push(format!("{at}.delivery.allow_networks: {e}"));
            }
            let mut endpoints = HashSet::new();
            for (ei, endpoint) in tenant.endpoints.iter().enumerate() {
                let at = format!("{at}.endpoints[{ei}] (`{}`)", endpoint.id);
                if let Err(e) = check_id(&endpoint.id) {
                    p.push(format!("{at}.id: {e}"));
                }
                if !endpoints.insert(endpoint.id.as_str()) {
                    p.push(format!(
                        "{at}.id: endpoint `{}` is defined twice",
                        endpoint.id
                    ));
                }
                endpoint_problems(endpoint, &at, &mut p);
            }
        }
        forward_problems(&self.alerts.forward, &mut p);
        p
    }
}

fn forward_problems(forwards: &[super::AlertForward], p: &mut Vec<String>) {
    let mut ids = std::collections::BTreeSet::new();
    for (i, forward) in forwards.iter().enumerate() {
        let at = format!("alerts.forward[{i}] (`{}`)", forward.id);
        if !ids.insert(forward.id.as_str()) {
            p.push(format!("{at}.id: used twice"));
        }
        p.extend(url_problem(&at, &forward.url, forward.allow_http));
        if forward.format == super::AlertFormat::Webhook && forward.secrets.is_empty() {
            p.push(format!(
                "{at}.secrets: a webhook forward signs its requests: give at least one whsec_ secret"
            ));
        }
        for (j, secret) in forward.secrets.iter().enumerate() {
            if let Err(e) = secret.resolve() {
                p.push(format!("{at}.secrets[{j}]: {e}"));
            }
        }
        if forward.timeout_ms == 0 || forward.max_attempts == 0 {
            p.push(format!(
                "{at}: timeout_ms and max_attempts must be positive"
            ));
        }
    }
}

/// An outbound URL must be `https://`, or `http://` where `allow_http` says so.
fn url_problem(at: &str, url: &str, allow_http: bool) -> Option<String> {
    let https = url.starts_with("https://");
    let http = url.starts_with("http://");
    (!(https || http && allow_http)).then(|| {
        format!("{at}.url: `{url}` is not an https:// URL (http:// only with allow_http = true)")
    })
}

fn endpoint_problems(endpoint: &EndpointConfig, at: &str, p: &mut Vec<String>) {
    p.extend(url_problem(at, &endpoint.url, endpoint.allow_http));
    for (i, rule) in endpoint.filter.iter().enumerate() {
        if !rule.path.starts_with('/') {
            p.push(format!(
                "{at}.filter[{i}].path: `{}` is not a JSON pointer like /payload/status",
                rule.path
            ));
        }
        if rule.equals.is_some() != rule.one_of.is_empty() {
            p.push(format!(
                "{at}.filter[{i}]: needs exactly one of `equals` and `one_of`"
            ));
        }
    }
    if !(1..=1_000).contains(&endpoint.max_in_flight) {
        p.push(format!("{at}.max_in_flight: must be 1 to 1000"));
    }
    if endpoint.rate_per_sec == Some(0) {
        p.push(format!(
            "{at}.rate_per_sec: must be positive (leave it out for no limit)"
        ));
    }
    if endpoint.breaker_cooldown_secs == 0 {
        p.push(format!("{at}.breaker_cooldown_secs: must be positive"));
    }
    if endpoint.timeout_ms == 0 {
        p.push(format!("{at}.timeout_ms: must be positive"));
    }
    if endpoint.secrets.is_empty() {
        p.push(format!(
            "{at}.secrets: at least one `whsec_` secret is required"
        ));
    }
    for (ki, secret) in endpoint.secrets.iter().enumerate() {
        let at = format!("{at}.secrets[{ki}] (`{}`)", secret.id);
        match secret.resolve() {
            Err(e) => p.push(format!("{at}: {e}")),
            Ok(value) => {
                let value = value.expose_secret();
                let key = value.strip_prefix("whsec_").unwrap_or("");
                if base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .map_or(true, |k| k.is_empty())
                {
                    p.push(format!(
                        "{at}: a Standard Webhooks secret is `whsec_` followed by base64"
                    ));
                }
            }
        }
    }
}

fn source_problems(source: &SourceConfig, at: &str, p: &mut Vec<String>) {
    if let Err(e) = source.rules() {
        p.push(format!("{at}.extract: {e}"));
    }
    match (source.scheme, source.secrets.is_empty()) {
        (Scheme::None, false) => p.push(format!(
            "{at}.secrets: scheme `none` checks no signature; put tokens in `token.secrets`"
        )),
        (Scheme::None, true) => {}
        (_, true) => p.push(format!("{at}.secrets: at least one secret is required")),
        _ => {}
    }
    if source.scheme == Scheme::None
        && source.allow_ips.is_empty()
        && source.token.is_none()
        && source.client_certificates.is_empty()
    {
        p.push(format!(
            "{at}.scheme: `none` needs `allow_ips`, a `token` or `client_certificates`: a \
             source without any check would accept anyone's requests"
        ));
    }
    for (i, rule) in source.client_certificates.iter().enumerate() {
        let known = ["CN=", "DNS:", "URI:", "EMAIL:"];
        if !known
            .iter()
            .any(|k| rule.len() > k.len() && rule.starts_with(k))
        {
            p.push(format!(
                "{at}.client_certificates[{i}]: `{rule}` is not `CN=…`, `DNS:…`, `URI:…` or `EMAIL:…`"
            ));
        }
    }
    if let Some(token) = &source.token {
        token_problems(token, &format!("{at}.token"), p);
    }
    let standard = matches!(source.scheme, Scheme::Standard | Scheme::Svix);
    each_secret(&source.secrets, at, p, |at, text, p| {
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        if standard
            && base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .is_err()
        {
            p.push(format!(
                "{at}: a Standard Webhooks secret is `whsec_` followed by base64 \
                 (the value is not shown)"
            ));
        }
    });
    if source.scheme == Scheme::Hmac && source.hmac.header.trim().is_empty() {
        p.push(format!("{at}.hmac.header: must name the signature header"));
    }
    if source.delete_types.iter().any(|t| t.is_empty() || t == "*") {
        p.push(format!(
            "{at}.delete_types: an empty or bare `*` pattern would delete every entity"
        ));
    }
}

fn token_problems(token: &super::TokenConfig, at: &str, p: &mut Vec<String>) {
    use super::TokenCarrier;
    match (token.carrier, token.name.as_deref().map(str::trim)) {
        (TokenCarrier::Path, Some(_)) => p.push(format!(
            "{at}.name: a path token has no name (it is the URL's last segment)"
        )),
        (TokenCarrier::Query | TokenCarrier::Header, None | Some("")) => p.push(format!(
            "{at}.name: names the query parameter or header that carries the token"
        )),
        (TokenCarrier::Header, Some(name))
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) =>
        {
            p.push(format!("{at}.name: `{name}` is not a header name"))
        }
        _ => {}
    }
    if token.secrets.is_empty() {
        p.push(format!("{at}.secrets: at least one token is required"));
    }
    each_secret(&token.secrets, at, p, |at, value, p| {
        if value.chars().count() < super::TokenConfig::MIN_LENGTH {
            p.push(format!(
                "{at}: a token needs at least {} characters (the value is not shown)",
                super::TokenConfig::MIN_LENGTH
            ));
        }
        let unsafe_in_url = |c: char| !(c.is_ascii_alphanumeric() || "-._~".contains(c));
        if token.carrier != TokenCarrier::Header && value.chars().any(unsafe_in_url) {
            p.push(format!(
                "{at}: a token in the URL may use only letters, digits and `-._~` \
                 (the value is not shown)"
            ));
        }
    });
}

/// Checks a list of secrets (ids present and unique, each resolvable), then `check` on each
/// resolved value with its `at`; messages never contain a value.
fn each_secret(
    secrets: &[super::SecretRef],
    at: &str,
    p: &mut Vec<String>,
    mut check: impl FnMut(&str, &str, &mut Vec<String>),
) {
    let mut ids = HashSet::new();
    for (ki, secret) in secrets.iter().enumerate() {
        let at = format!("{at}.secrets[{ki}] (`{}`)", secret.id);
        if secret.id.trim().is_empty() {
            p.push(format!("{at}.id: must not be empty"));
        }
        if !ids.insert(secret.id.as_str()) {
            p.push(format!("{at}.id: secret id `{}` is used twice", secret.id));
        }
        match secret.resolve() {
            Err(e) => p.push(format!("{at}: {e}")),
            Ok(value) => check(&at, value.expose_secret(), p),
        }
    }
}

fn caps_problems(tenant: &TenantConfig, at: &str, p: &mut Vec<String>) {
    if let Some(caps) = &tenant.caps {
        if let Err(problems) = caps.resolve() {
            p.extend(problems.into_iter().map(|e| format!("{at}.caps.{e}")));
        }
        for (i, rule) in caps.estimates.iter().enumerate() {
            if let Some(source) = &rule.source {
                if !tenant.sources.iter().any(|s| &s.id == source) {
                    p.push(format!(
                        "{at}.caps.estimates[{i}].source: the tenant has no source `{source}`"
                    ));
                }
            }
        }
    }
    if let Some(breaker) = &tenant.breaker {
        p.extend(
            breaker
                .problems()
                .into_iter()
                .map(|e| format!("{at}.breaker.{e}")),
        );
    }
}

fn rate_limit_problems(limit: &super::RateLimit, at: &str, p: &mut Vec<String>) {
    if limit.per_second == 0 {
        p.push(format!("{at}.per_second: must be positive"));
    }
    if limit.burst == Some(0) {
        p.push(format!("{at}.burst: must be positive"));
    }
}

/// Tenant and source ids appear in URLs, record keys and topic headers: lowercase ASCII
/// letters, digits, `_` and `-`, 1 to 64 characters, starting with a letter or digit.
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` must be 1-64 characters of a-z, 0-9, `_`, `-`, starting with a letter or digit"
        ))
    }
}

fn check_prefix(p: &mut Vec<String>, key: &str, prefix: &str) {
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        p.push(format!(
            "{key}: `{prefix}` may only contain ASCII letters, digits, `.`, `_`, `-`"
        ));
    }
    if prefix.len() > 200 {
        p.push(format!("{key}: longer than 200 characters"));
    }
}

fn snapshot_problems(s: &super::SnapshotConfig, p: &mut Vec<String>) {
    if !(s.ratio.is_finite() && s.ratio > 0.0) {
        p.push(format!(
            "processor.snapshots.ratio: {} is not a positive number",
            s.ratio
        ));
    }
    if s.interval_secs == 0 {
        p.push("processor.snapshots.interval_secs: must be positive".into());
    }
    let retention = s.changelog_retention_secs;
    if retention != 0 && retention < s.interval_secs.saturating_mul(4) {
        p.push(format!(
            "processor.snapshots.changelog_retention_secs: {retention} is less than four snapshot intervals ({} s): the changelog could lose a task's only snapshot; raise it, lower interval_secs, or set 0 to keep the changelog forever",
            s.interval_secs.saturating_mul(4)
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const GOOD: &str = r#"
        [kafka]
        brokers = "127.0.0.1:9092"
        [[tenants]]
        id = "acme"
        [[tenants.sources]]
        id = "billing"
        scheme = "standard"
        secrets = [{ id = "k1", value = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }]
        [[tenants.sources]]
        id = "orders"
        scheme = "hmac"
        secrets = [{ id = "k1", value = "plain" }]
        hmac = { header = "x-sig", prefix = "sha256=" }
        extract = { entity = "/order_id" }
    "#;

    #[test]
    fn an_unsigned_source_needs_an_address_rule_or_a_token_and_tokens_are_checked() {
        let config = |source: &str| {
            Config::parse_str(&format!(
                "[[tenants]]\nid = \"acme\"\n[[tenants.sources]]\nid = \"plain\"\nscheme = \"none\"\n{source}"
            ))
            .unwrap()
            .problems()
        };
        let open = config("");
        assert!(
            open.iter()
                .any(|p| p.contains("`none` needs `allow_ips`, a `token`")),
            "{open:?}"
        );
        assert_eq!(
            config("allow_ips = [\"203.0.113.0/24\"]\n"),
            Vec::<String>::new()
        );
        let good = "secrets = [{ id = \"t1\", value = \"tok-7f3a9c21d0e4b5a6\" }]";
        assert_eq!(
            config(&format!("token = {{ in = \"path\", {good} }}\n")),
            Vec::<String>::new()
        );
        let bad = config(
            "secrets = [{ id = \"k\", value = \"x\" }]\ntoken = { in = \"query\", secrets = [{ id = \"t1\", value = \"short\" }, { id = \"t1\", value = \"has space in it, long enough\" }] }\n",
        );
        for expected in [
            "secrets: scheme `none` checks no signature",
            "token.name: names the query parameter",
            "token.secrets[0] (`t1`): a token needs at least 16 characters",
            "token.secrets[1] (`t1`).id: secret id `t1` is used twice",
            "token.secrets[1] (`t1`): a token in the URL may use only",
        ] {
            assert!(
                bad.iter().any(|p| p.contains(expected)),
                "{expected}: {bad:?}"
            );
        }
        assert!(!bad
            .iter()
            .any(|p| p.contains("short") || p.contains("has space")));
        let header = config(&format!(
            "token = {{ in = \"header\", name = \"X Bad\", {good} }}\n"
        ));
        assert!(
            header.iter().any(|p| p.contains("is not a header name")),
            "{header:?}"
        );
    }

    #[test]
    fn a_good_config_validates() {
        let config = Config::parse_str(GOOD).unwrap();
        assert_eq!(config.problems(), Vec::<String>::new());
        let (_, orders) = config.source("acme", "orders").unwrap();
        assert_eq!(orders.hmac.header, "x-sig");
        assert!(orders.is_delete_type("order.deleted"));
        assert!(!orders.is_delete_type("order.created"));
    }

    #[test]
    fn problems_name_their_key_and_never_a_secret() {
        let text = r#"
            [kafka]
            topic_prefix = "bad prefix"
            partitions = 0
            [ingest]
            listen = "nowhere"
            [processor]
            max_held_per_tenant = 0
            [[tenants]]
            id = "Acme/1"
            [[tenants.sources]]
            id = "billing"
            scheme = "standard"
            secrets = [
              { id = "k1", value = "whsec_!!not-base64-SUPERSECRET" },
              { id = "k2", env = "HOOKSTREAM_TEST_UNSET_VARIABLE" },
            ]
            [[tenants.sources]]
            id = "billing"
            scheme = "paddle"
            secrets = []
            extract = { entity = "received" }
            [[tenants.endpoints]]
            id = "crm"
            url = "http://crm.example.com/hooks"
            secrets = [{ id = "e1", value = "whsec_!!SUPERSECRET" }]
            filter = [{ path = "payload.status", equals = "failed", one_of = ["x"] }]
            [tenants.delivery]
            allow_networks = ["10.0.0.0/8", "nope"]
        "#;
        let problems = Config::parse_str(text).unwrap().problems().join("\n");
        for expected in [
            "kafka.topic_prefix",
            "kafka.partitions",
            "ingest.listen",
            "processor.max_held_per_tenant",
            "tenants[0] (`Acme/1`).id",
            "secrets[0] (`k1`): a Standard Webhooks secret",
            "`HOOKSTREAM_TEST_UNSET_VARIABLE` is not set",
            "source `billing` is defined twice",
            "sources[1] (`billing`).secrets: at least one",
            "sources[1] (`billing`).extract: entity",
            "endpoints[0] (`crm`).url: `http://crm.example.com/hooks` is not an https:// URL",
            "endpoints[0] (`crm`).secrets[0] (`e1`): a Standard Webhooks secret",
            "endpoints[0] (`crm`).filter[0].path: `payload.status` is not a JSON pointer",
            "endpoints[0] (`crm`).filter[0]: needs exactly one of `equals` and `one_of`",
            "delivery.allow_networks: `nope` is not a network",
        ] {
            assert!(
                problems.contains(expected),
                "missing `{expected}` in:\n{problems}"
            );
        }
        assert!(!problems.contains("SUPERSECRET"));
    }

    #[test]
    fn caps_and_breaker_problems_name_their_key() {
        let text = format!(
            "{GOOD}{}",
            r#"
            [tenants.caps]
            cost_per_day = "12.5.0"
            timezone = "Nowhere/City"
            [[tenants.caps.estimates]]
            source = "ghost"
            [tenants.breaker]
            cooldown_secs = 0
            "#
        );
        let problems = Config::parse_str(&text).unwrap().problems().join("\n");
        for expected in [
            "tenants[0] (`acme`).caps.cost_per_day: `12.5.0` is not a decimal amount",
            "tenants[0] (`acme`).caps.timezone: `Nowhere/City`",
            "tenants[0] (`acme`).caps.estimates[0].source: the tenant has no source `ghost`",
            "tenants[0] (`acme`).breaker.cooldown_secs: must be positive",
        ] {
            assert!(
                problems.contains(expected),
                "missing `{expected}` in:\n{problems}"
            );
        }
        let fine = format!("{GOOD}\n[tenants.caps]\ncost_per_day = \"3\"\n[tenants.breaker]\n");
        let config = Config::parse_str(&fine).unwrap();
        assert_eq!(config.problems(), Vec::<String>::new());
        let caps = config.tenants[0].caps.as_ref().unwrap().resolve().unwrap();
        assert_eq!(caps.cost_per_day_micros, Some(3_000_000));
        assert_eq!(
            config.tenants[0]
                .breaker
                .as_ref()
                .unwrap()
                .entity_per_minute,
            300
        );
    }

    #[test]
    fn the_documented_caps_example_validates() {
        let doc = include_str!("../../../docs/configuration.md");
        let section = &doc[doc.find("## Caps").expect("a Caps section")..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let config = Config::parse_str(example).unwrap();
        assert_eq!(config.problems(), Vec::<String>::new());
        let caps = config.tenants[0].caps.as_ref().unwrap().resolve().unwrap();
        assert_eq!(caps.cost_per_day_micros, Some(12_500_000));
        assert_eq!(caps.timezone.name(), "America/New_York");
        assert_eq!(caps.estimates[1].cost_per_1k_tokens_micros, 3_000);
        let breaker = config.tenants[0].breaker.as_ref().unwrap();
        assert_eq!(breaker.spike_multiple, Some(10.0));
    }

    #[test]
    fn unknown_keys_and_bad_types_are_parse_errors() {
        let err = Config::parse_str("[kafka]\nbrokerz = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("brokerz"), "{err}");
        let err = Config::parse_str("[kafka]\npartitions = \"six\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("partitions"), "{err}");
    }

    #[test]
    fn secrets_debug_output_is_redacted() {
        let config = Config::parse_str(GOOD).unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "{debug}"
        );
        assert!(!debug.contains("plain"), "{debug}");
    }
}
