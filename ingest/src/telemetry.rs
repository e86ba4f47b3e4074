//! Typed runtime events of the ingest: each one logs and counts a metric, in one place.
//!
//! Metrics (Prometheus names):
//! * `hookstream_ingest_requests_total{tenant,source,outcome}` — every webhook request, by
//!   outcome (`accepted` or the error code);
//! * `hookstream_ingest_append_seconds` — time from request to broker acknowledgement;
//! * `hookstream_ingest_body_bytes` — accepted body sizes;
//! * `hookstream_ingest_dead_lettered_total{tenant,source,reason}` — verified requests kept in
//!   `dlq` instead of `raw` (reason `unreadable`: the extraction rules could not read them);
//!   they also count in `hookstream_ingest_requests_total` with outcome `dead_lettered`.

use std::time::Duration;

use crate::error::IngestError;
use crate::extract::ExtractError;

/// Every configured source's series exist from start-up (and after a reload adds it), at 0.
pub fn register(config: &schemas::config::Config) {
    for tenant in &config.tenants {
        for source in &tenant.sources {
            let (tenant, source) = (tenant.id.clone(), source.id.clone());
            metrics::counter!("hookstream_ingest_requests_total", "tenant" => tenant.clone(), "source" => source.clone(), "outcome" => "accepted").increment(0);
            metrics::counter!("hookstream_ingest_dead_lettered_total", "tenant" => tenant, "source" => source, "reason" => crate::dead_letter::UNREADABLE).increment(0);
        }
    }
}

pub enum IngestEvent<'a> {
    Accepted {
        tenant: &'a str,
        source: &'a str,
        event_id: &'a str,
        partition: i32,
        offset: i64,
        bytes: usize,
        elapsed: Duration,
    },
    Refused {
        tenant: &'a str,
        source: &'a str,
        error: &'a IngestError,
    },
    DeadLettered {
        tenant: &'a str,
        source: &'a str,
        reason: &'static str,
        error: &'a ExtractError,
        partition: i32,
        offset: i64,
    },
}

impl IngestEvent<'_> {
    pub fn emit(self) {
        match self {
            IngestEvent::Accepted {
                tenant,
                source,
                event_id,
                partition,
                offset,
                bytes,
                elapsed,
            } => {
                tracing::debug!(tenant, source, event_id, partition, offset, "accepted");
                metrics::counter!("hookstream_ingest_requests_total", "tenant" => tenant.to_owned(), "source" => source.to_owned(), "outcome" => "accepted").increment(1);
                metrics::histogram!("hookstream_ingest_append_seconds")
                    .record(elapsed.as_secs_f64());
                metrics::histogram!("hookstream_ingest_body_bytes").record(bytes as f64);
            }
            IngestEvent::DeadLettered {
                tenant,
                source,
                reason,
                error,
                partition,
                offset,
            } => {
                tracing::warn!(tenant, source, reason, %error, partition, offset, "verified but unreadable: kept in dlq");
                metrics::counter!("hookstream_ingest_dead_lettered_total", "tenant" => tenant.to_owned(), "source" => source.to_owned(), "reason" => reason).increment(1);
                metrics::counter!("hookstream_ingest_requests_total", "tenant" => tenant.to_owned(), "source" => source.to_owned(), "outcome" => "dead_lettered").increment(1);
            }
            IngestEvent::Refused {
                tenant,
                source,
                error,
            } => {
                let code = error.code();
                if matches!(
                    error,
                    IngestError::QueueFull { .. } | IngestError::Unavailable { .. }
                ) {
                    tracing::warn!(tenant, source, code, %error, "refused");
                } else {
                    tracing::info!(tenant, source, code, %error, "refused");
                }
                // Unknown tenants are not labelled by name: a scanner must not create series.
                let (tenant, source) = match error {
                    IngestError::UnknownTenant(_) => ("unknown", "unknown"),
                    IngestError::UnknownSource { .. } => (tenant, "unknown"),
                    _ => (tenant, source),
                };
                metrics::counter!("hookstream_ingest_requests_total", "tenant" => tenant.to_owned(), "source" => source.to_owned(), "outcome" => code).increment(1);
            }
        }
    }
}
