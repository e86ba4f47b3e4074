//! The tenants as the ingest serves them: each source's verifier, rules and admission gate,
//! and each tenant's rate limiter, built from the configuration and swapped whole on a
//! reload ([`crate::live`]).
//!
//! A request takes the [`Tenants`] current when it starts and keeps them to its end, so a
//! reload never changes the rules under a request in flight.
//!
//! Rate limits are token buckets per replica: with `ingest.replicas = N`, each replica
//! allows `per_second / N` (and `burst / N`), rounded up, so N replicas behind a load balancer
//! that spreads a tenant's requests evenly give it its configured limit. A reload keeps a
//! tenant's bucket (and the tokens it has used) when its limit did not change.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use schemas::config::{Config, RateLimit, Rules};

use crate::admit;
use crate::verify::Verifier;

pub struct SourceRuntime {
    pub verifier: Verifier,
    pub rules: Rules,
    pub batch: bool,
    /// Headers never copied to a dead letter: the `hmac` scheme's signature header, the
    /// token's header.
    pub secret_headers: Vec<String>,
    /// `allow_ips` and the shared token, checked before the body is read.
    pub gate: admit::Gate,
}

/// One replica's share of a tenant's limit, and its bucket.
pub struct Limiter {
    pub share: (NonZeroU32, NonZeroU32),
    pub bucket: Arc<DefaultDirectRateLimiter>,
}

pub struct TenantRuntime {
    pub sources: HashMap<String, SourceRuntime>,
    pub limiter: Option<Limiter>,
}

#[derive(Default)]
pub struct Tenants {
    pub by_id: HashMap<String, TenantRuntime>,
}

/// This replica's share of `limit`: `(per_second, burst)` divided by `replicas`, rounded up.
pub fn share(limit: RateLimit, replicas: u32) -> (NonZeroU32, NonZeroU32) {
    let replicas = replicas.max(1);
    let per_second = limit.per_second.max(1);
    let burst = limit.burst.filter(|b| *b > 0).unwrap_or(per_second);
    let part = |n: u32| NonZeroU32::new(n.div_ceil(replicas)).unwrap_or(NonZeroU32::MIN);
    (part(per_second), part(burst))
}

impl Tenants {
    pub fn get(&self, tenant: &str) -> Option<&TenantRuntime> {
        self.by_id.get(tenant)
    }

    /// Builds every tenant, listing what fails (bad templates, secrets a scheme cannot use).
    /// Buckets of `previous` are kept for tenants whose share did not change.
    pub fn build(config: &Config, previous: Option<&Tenants>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut by_id = HashMap::new();
        for tenant in &config.tenants {
            let mut sources = HashMap::new();
            for source in &tenant.sources {
                let at = format!("tenant `{}` source `{}`", tenant.id, source.id);
                let mut problem = |e: String| problems.push(format!("{at}: {e}"));
                let verifier = Verifier::build(source).map_err(|e| problem(e.to_string()));
                let rules = source.rules().map_err(|e| problem(e.to_string()));
                let gate = admit::Gate::build(source).map_err(|e| problem(e.to_string()));
                if let (Ok(verifier), Ok(rules), Ok(gate)) = (verifier, rules, gate) {
                    let signature_header = (source.scheme == schemas::config::Scheme::Hmac)
                        .then(|| source.hmac.header.to_ascii_lowercase());
                    let secret_headers = signature_header
                        .into_iter()
                        .chain(gate.token_header().map(str::to_owned))
                        .collect();
                    let runtime = SourceRuntime {
                        verifier,
                        rules,
                        batch: source.is_batch(),
                        secret_headers,
                        gate,
                    };
                    sources.insert(source.id.clone(), runtime);
                }
            }
            let limit = tenant.rate_limit.or(config.ingest.rate_limit);
            let kept = previous
                .and_then(|p| p.get(&tenant.id))
                .and_then(|t| t.limiter.as_ref());
            let limiter = limit.map(|limit| limiter(share(limit, config.ingest.replicas), kept));
            by_id.insert(tenant.id.clone(), TenantRuntime { sources, limiter });
        }
        if problems.is_empty() {
            Ok(Self { by_id })
        } else {
            Err(problems)
        }
    }
}

fn limiter(share: (NonZeroU32, NonZeroU32), kept: Option<&Limiter>) -> Limiter {
    let bucket = match kept {
        Some(kept) if kept.share == share => kept.bucket.clone(),
        _ => Arc::new(RateLimiter::direct(
            Quota::per_second(share.0).allow_burst(share.1),
        )),
    };
    Limiter { share, bucket }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: Option<u32>) -> RateLimit {
        RateLimit { per_second, burst }
    }

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn each_replica_enforces_its_share_rounded_up() {
        assert_eq!(share(limit(100, None), 1), (nz(100), nz(100)));
        assert_eq!(share(limit(100, Some(10)), 3), (nz(34), nz(4)));
        assert_eq!(share(limit(1, None), 8), (nz(1), nz(1)));
        assert_eq!(share(limit(0, Some(0)), 0), (nz(1), nz(1)));
    }

    fn config(toml: &str) -> Config {
        Config::parse_str(toml).unwrap()
    }

    const TENANT: &str = "[[tenants]]\nid = \"acme\"\nrate_limit = { per_second = 5 }\n";

    #[test]
    fn a_reload_keeps_an_unchanged_bucket_and_replaces_a_changed_one() {
        let first = Tenants::build(&config(TENANT), None).unwrap();
        let bucket = &first.get("acme").unwrap().limiter.as_ref().unwrap().bucket;
        for _ in 0..5 {
            bucket.check().unwrap();
        }
        assert!(bucket.check().is_err());

        let same = Tenants::build(&config(TENANT), Some(&first)).unwrap();
        let kept = &same.get("acme").unwrap().limiter.as_ref().unwrap().bucket;
        assert!(Arc::ptr_eq(bucket, kept));
        assert!(kept.check().is_err(), "the used tokens stay used");

        let raised = TENANT.replace("per_second = 5", "per_second = 50");
        let changed = Tenants::build(&config(&raised), Some(&first)).unwrap();
        let fresh = &changed
            .get("acme")
            .unwrap()
            .limiter
            .as_ref()
            .unwrap()
            .bucket;
        assert!(!Arc::ptr_eq(bucket, fresh));
        assert!(fresh.check().is_ok());
    }
}
