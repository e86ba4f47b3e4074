//! The ingest's one error type and its one mapping to HTTP answers. Every answer is JSON
//! `{"error": "<code>", "message": "…"}`; client mistakes are 4xx, broker trouble is 503 with
//! `Retry-After`. A record the producer or broker refuses for good (too large, invalid) is a
//! permanent condition: 413 `payload_too_large`, never 503 (a provider would retry it forever).
//! A verified request the extraction rules cannot read is not an error at all: it is kept in
//! `dlq` and answered 202 (see [`crate::dead_letter`]). Messages never contain secrets, signatures or bodies.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use thiserror::Error;

use crate::extract::ExtractError;
use crate::verify::VerifyError;

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    #[error("tenant `{tenant}` has no source `{source_id}`")]
    UnknownSource { tenant: String, source_id: String },
    #[error("signature rejected: {0}")]
    Unauthorized(#[from] VerifyError),
    /// The client address (the peer, or behind a trusted proxy the forwarded one) is not in
    /// the source's `allow_ips`.
    #[error("client address {client} (connected from {peer}) is not in the source's allow_ips")]
    IpNotAllowed {
        client: std::net::IpAddr,
        peer: std::net::IpAddr,
    },
    /// The source's shared token is missing or matches none of its tokens (`place`: where
    /// the sender must put it; never the token).
    #[error("{}", if *missing { format!("the source's token is missing: send it {place}") } else { "the token does not match the source's tokens".to_owned() })]
    InvalidToken { missing: bool, place: String },
    /// The source names client certificates and the connection presented none.
    #[error("the source needs a TLS client certificate and the connection has none")]
    MissingClientCertificate,
    /// The connection's verified client certificate has none of the source's names.
    #[error("the client certificate ({names}) is not one the source accepts")]
    CertificateNotAllowed { names: String },
    #[error("body is larger than the {limit} byte limit")]
    TooLarge { limit: usize },
    /// The producer or the broker refused the record for good (too large for
    /// `message.max.bytes`, an invalid record): retrying the same request cannot succeed.
    #[error("the event cannot be stored: {reason}")]
    NotAppendable { reason: String },
    #[error("request cannot be read by the source's extraction rules: {0}")]
    Unreadable(#[from] ExtractError),
    #[error("request body could not be read: {0}")]
    BadBody(String),
    #[error("the tenant is over its ingest rate limit")]
    RateLimited { retry_after: u32 },
    #[error("the broker's producer queue is full")]
    QueueFull { retry_after: u32 },
    #[error("the broker did not acknowledge the event: {reason}")]
    Unavailable { reason: String, retry_after: u32 },
    #[error("no such route")]
    NotFound,
    /// Start-up failures (configuration, binding, broker clients); never sent over HTTP.
    #[error("ingest cannot start: {0}")]
    Startup(String),
}

impl IngestError {
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::UnknownTenant(_) => "unknown_tenant",
            IngestError::UnknownSource { .. } => "unknown_source",
            IngestError::Unauthorized(VerifyError::Stale { .. }) => "stale_signature",
            IngestError::Unauthorized(VerifyError::MissingHeader(_)) => "missing_signature",
            IngestError::Unauthorized(_) => "invalid_signature",
            IngestError::IpNotAllowed { .. } => "ip_not_allowed",
            IngestError::InvalidToken { missing: true, .. } => "missing_token",
            IngestError::InvalidToken { .. } => "invalid_token",
            IngestError::MissingClientCertificate => "missing_client_certificate",
            IngestError::CertificateNotAllowed { .. } => "certificate_not_allowed",
            IngestError::TooLarge { .. } | IngestError::NotAppendable { .. } => "payload_too_large",
            IngestError::Unreadable(_) => "unreadable_request",
            IngestError::BadBody(_) => "bad_request",
            IngestError::RateLimited { .. } => "rate_limited",
            IngestError::QueueFull { .. } => "queue_full",
            IngestError::Unavailable { .. } => "broker_unavailable",
            IngestError::NotFound => "not_found",
            IngestError::Startup(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            IngestError::QueueFull { retry_after }
            | IngestError::RateLimited { retry_after }
            | IngestError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
}

impl ResponseError for IngestError {
    fn status_code(&self) -> StatusCode {
        match self {
            IngestError::UnknownTenant(_)
            | IngestError::UnknownSource { .. }
            | IngestError::NotFound => StatusCode::NOT_FOUND,
            IngestError::Unauthorized(_)
            | IngestError::InvalidToken { .. }
            | IngestError::MissingClientCertificate => StatusCode::UNAUTHORIZED,
            IngestError::IpNotAllowed { .. } | IngestError::CertificateNotAllowed { .. } => {
                StatusCode::FORBIDDEN
            }
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::TooLarge { .. } | IngestError::NotAppendable { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::Unreadable(_) | IngestError::BadBody(_) => StatusCode::BAD_REQUEST,
            IngestError::QueueFull { .. } | IngestError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngestError::Startup(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(Body {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mistakes_are_4xx_and_broker_trouble_is_503_with_retry_after() {
        let cases = [
            (IngestError::UnknownTenant("x".into()), 404),
            (IngestError::Unauthorized(VerifyError::NoMatch), 401),
            (
                IngestError::InvalidToken {
                    missing: true,
                    place: "in the header `x-token`".into(),
                },
                401,
            ),
            (IngestError::TooLarge { limit: 1 }, 413),
            (
                IngestError::NotAppendable {
                    reason: "too large".into(),
                },
                413,
            ),
            (
                IngestError::Unreadable(ExtractError {
                    field: "entity",
                    reason: "missing".into(),
                }),
                400,
            ),
            (IngestError::QueueFull { retry_after: 2 }, 503),
            (IngestError::RateLimited { retry_after: 1 }, 429),
        ];
        for (error, status) in cases {
            let response = error.error_response();
            assert_eq!(response.status().as_u16(), status, "{error}");
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                status == 503 || status == 429
            );
        }
    }
}
