//! Signature verification, one verifier per scheme behind one enum.
//!
//! A [`Verifier`] is built once per configured source, with its secrets resolved and decoded
//! into keys. [`Request::verify`] tries every key (so secrets can be rotated by listing the new
//! and the old one) and every signature the request carries; each comparison is constant-time
//! (`hmac::Mac::verify_slice`). The id of the key that matched travels on as `hs-key-id`.
//! Timestamped schemes refuse requests whose timestamp is further than the source's tolerance
//! from now, in either direction.

mod hmac_generic;
mod standard;

use hmac::{Hmac, Mac};
use schemas::config::{Scheme, SourceConfig};
use schemas::time::Millis;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use thiserror::Error;

use crate::request::{Request, Unverified, Verified};

pub use hmac_generic::HmacVerifier;
pub use standard::StandardVerifier;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header `{0}`")]
    MissingHeader(String),
    #[error("malformed header `{header}`: {reason}")]
    Malformed { header: String, reason: String },
    #[error("timestamp is outside the {tolerance_secs} s tolerance")]
    Stale { tolerance_secs: u64 },
    #[error("no signature matches any configured secret")]
    NoMatch,
}

/// A decoded signing key. Its bytes never leave this type except into an HMAC.
pub struct SigningKey {
    pub id: String,
    key: SecretSlice<u8>,
}

impl SigningKey {
    pub fn new(id: impl Into<String>, key: Vec<u8>) -> Self {
        Self {
            id: id.into(),
            key: SecretSlice::from(key),
        }
    }

    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.key.expose_secret()).expect("HMAC accepts any key")
    }

    /// The key bytes, for HMACs over other digests (SHA-1, SHA-512).
    #[allow(dead_code)]
    pub(crate) fn bytes(&self) -> &[u8] {
        self.key.expose_secret()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub enum Verifier {
    Standard(StandardVerifier),
    Hmac(HmacVerifier),
}

impl Verifier {
    /// Resolves and decodes the source's secrets. Errors never contain secret material.
    pub fn build(source: &SourceConfig) -> Result<Self, String> {
        let mut raw = Vec::with_capacity(source.secrets.len());
        for secret in &source.secrets {
            let value = secret
                .resolve()
                .map_err(|e| format!("secret `{}`: {e}", secret.id))?;
            raw.push((secret.id.clone(), value));
        }
        match source.scheme {
            Scheme::Standard => {
                StandardVerifier::new(standard::STANDARD_HEADERS, raw, source.tolerance_secs)
                    .map(Verifier::Standard)
            }
            Scheme::Svix => {
                StandardVerifier::new(standard::SVIX_HEADERS, raw, source.tolerance_secs)
                    .map(Verifier::Standard)
            }
            Scheme::Hmac => Ok(Verifier::Hmac(HmacVerifier::new(
                &source.hmac,
                raw,
                source.tolerance_secs,
            ))),
            other => Err(format!(
                "scheme `{}` is not supported by this build",
                other.as_str()
            )),
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            Verifier::Standard(v) => v.scheme(),
            Verifier::Hmac(_) => "hmac",
        }
    }

    fn check(&self, request: &Request<Unverified>, now: Millis) -> Result<String, VerifyError> {
        match self {
            Verifier::Standard(v) => v.check(request.headers(), request.body(), now),
            Verifier::Hmac(v) => v.check(request.headers(), request.body(), now),
        }
    }
}

impl Request<Unverified> {
    pub fn verify(
        self,
        verifier: &Verifier,
        now: Millis,
    ) -> Result<Request<Verified>, VerifyError> {
        let key_id = verifier.check(&self, now)?;
        Ok(self.into_verified(key_id))
    }
}

/// Checks a signature timestamp (Unix seconds) against now, in both directions.
pub(crate) fn check_timestamp(
    header: &str,
    value: &str,
    now: Millis,
    tolerance_secs: u64,
) -> Result<i64, VerifyError> {
    let secs: i64 = value.trim().parse().map_err(|_| VerifyError::Malformed {
        header: header.to_owned(),
        reason: "not a Unix timestamp in seconds".into(),
    })?;
    let skew = (now / 1000).saturating_sub(secs).unsigned_abs();
    if skew > tolerance_secs {
        return Err(VerifyError::Stale { tolerance_secs });
    }
    Ok(secs)
}

/// Tries every key against every candidate signature; returns the matching key's id.
pub(crate) fn match_any<'a>(
    keys: &'a [SigningKey],
    signed: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Option<&'a str> {
    for key in keys {
        let mut mac = key.mac();
        for part in signed {
            mac.update(part);
        }
        for candidate in candidates {
            if mac.clone().verify_slice(candidate).is_ok() {
                return Some(&key.id);
            }
        }
    }
    None
}

/// Signing as providers do, for `hookstream dev`, tests and benchmarks.
pub mod sign {
    pub use super::hmac_generic::sign as hmac;
    pub use super::standard::sign as standard;
}
