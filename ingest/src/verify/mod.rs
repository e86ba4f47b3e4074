//! Signature verification, one verifier per scheme behind one enum.
//!
//! A [`Verifier`] is built once per configured source, with its secrets resolved and decoded
//! into keys. [`Request::verify`] tries every key (so secrets can be rotated by listing the new
//! and the old one) and every signature the request carries; each comparison is constant-time
//! (`hmac::Mac::verify_slice`). The id of the key that matched travels on as `hs-key-id`.
//! Timestamped schemes refuse requests whose timestamp is further than the source's tolerance
//! from now, in either direction.

mod github;
mod hmac_generic;
mod hubspot;
#[cfg(test)]
mod mutation_tests;
mod paddle;
mod shopify;
mod slack;
mod standard;
mod stripe;
mod twilio;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use schemas::config::{Algorithm, Scheme, SourceConfig};
use schemas::time::Millis;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use thiserror::Error;

use crate::request::{Request, Unverified, Verified};

pub use github::GithubVerifier;
pub use hmac_generic::HmacVerifier;
pub use hubspot::HubspotVerifier;
pub use paddle::PaddleVerifier;
pub use shopify::ShopifyVerifier;
pub use slack::SlackVerifier;
pub use standard::StandardVerifier;
pub use stripe::StripeVerifier;
pub use twilio::TwilioVerifier;

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
        <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.expose_secret())
            .expect("HMAC accepts any key")
    }

    /// The key bytes, for HMACs over other digests (SHA-1, SHA-512).
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
    Stripe(StripeVerifier),
    Github(GithubVerifier),
    Slack(SlackVerifier),
    Shopify(ShopifyVerifier),
    Paddle(PaddleVerifier),
    Hubspot(HubspotVerifier),
    Twilio(TwilioVerifier),
    /// `scheme = "none"`: no signature; requests are admitted by [`crate::admit`] instead.
    None,
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
        let tolerance = source.tolerance();
        Ok(match source.scheme {
            Scheme::Standard => Verifier::Standard(StandardVerifier::new(
                standard::STANDARD_HEADERS,
                raw,
                tolerance,
            )?),
            Scheme::Svix => Verifier::Standard(StandardVerifier::new(
                standard::SVIX_HEADERS,
                raw,
                tolerance,
            )?),
            Scheme::Hmac => Verifier::Hmac(HmacVerifier::new(&source.hmac, raw, tolerance)?),
            Scheme::Stripe => Verifier::Stripe(StripeVerifier::new(raw, tolerance)?),
            Scheme::Github => Verifier::Github(GithubVerifier::new(raw, source.allow_sha1)?),
            Scheme::Slack => Verifier::Slack(SlackVerifier::new(raw, tolerance)?),
            Scheme::Shopify => Verifier::Shopify(ShopifyVerifier::new(raw, tolerance)?),
            Scheme::Paddle => Verifier::Paddle(PaddleVerifier::new(raw, tolerance)?),
            Scheme::Hubspot => Verifier::Hubspot(HubspotVerifier::new(raw, tolerance)?),
            Scheme::Twilio => Verifier::Twilio(TwilioVerifier::new(raw, tolerance)?),
            Scheme::None => Verifier::None,
        })
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            Verifier::Standard(v) => v.scheme(),
            Verifier::Hmac(_) => "hmac",
            Verifier::Stripe(_) => "stripe",
            Verifier::Github(_) => "github",
            Verifier::Slack(_) => "slack",
            Verifier::Shopify(_) => "shopify",
            Verifier::Paddle(_) => "paddle",
            Verifier::Hubspot(_) => "hubspot",
            Verifier::Twilio(_) => "twilio",
            Verifier::None => "none",
        }
    }

    fn check(&self, request: &Request<Unverified>, now: Millis) -> Result<String, VerifyError> {
        let (headers, body, target) =
            (request.headers(), request.body().as_ref(), request.target());
        match self {
            Verifier::Standard(v) => v.check(headers, body, now),
            Verifier::Hmac(v) => v.check(headers, body, target, now),
            Verifier::Stripe(v) => v.check(headers, body, target, now),
            Verifier::Github(v) => v.check(headers, body, target, now),
            Verifier::Slack(v) => v.check(headers, body, target, now),
            Verifier::Shopify(v) => v.check(headers, body, target, now),
            Verifier::Paddle(v) => v.check(headers, body, target, now),
            Verifier::Hubspot(v) => v.check(headers, body, target, now),
            Verifier::Twilio(v) => v.check(headers, body, target, now),
            // Never verified by a signature: see `Request::admitted`.
            Verifier::None => Err(VerifyError::NoMatch),
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

/// Keys used as given (not decoded); an empty secret is an error naming its id.
pub(crate) fn plain_keys(
    secrets: Vec<(String, secrecy::SecretString)>,
) -> Result<Vec<SigningKey>, String> {
    secrets
        .into_iter()
        .map(|(id, secret)| {
            let text = secret.expose_secret();
            if text.is_empty() {
                return Err(format!("secret `{id}` is empty"));
            }
            Ok(SigningKey::new(id, text.as_bytes().to_vec()))
        })
        .collect()
}

/// Reads a signature list of `key=value` items, such as Stripe's `t=…,v1=…,v1=…` or Paddle's
/// `ts=…;h1=…`: the one timestamp (`ts_key`) and every hex signature (`sig_key`; one that is not
/// hex is skipped). Other keys are ignored.
pub(crate) fn timestamped_hex_list<'a>(
    header: &str,
    value: &'a str,
    separator: char,
    ts_key: &str,
    sig_key: &str,
) -> Result<(&'a str, Vec<Vec<u8>>), VerifyError> {
    let malformed = |reason: String| VerifyError::Malformed {
        header: header.to_owned(),
        reason,
    };
    let mut timestamp: Option<&str> = None;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for item in value.split(separator) {
        let Some((key, val)) = item.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key == ts_key {
            if timestamp.replace(val.trim()).is_some() {
                return Err(malformed(format!("more than one `{ts_key}=`")));
            }
        } else if key == sig_key {
            candidates.extend(hex::decode(val.trim()).ok());
        }
    }
    let timestamp = timestamp.ok_or_else(|| malformed(format!("no `{ts_key}=` timestamp")))?;
    if candidates.is_empty() {
        return Err(malformed(format!("no `{sig_key}=<hex>` signature")));
    }
    Ok((timestamp, candidates))
}

/// A header that must be present and non-blank, trimmed.
pub(crate) fn required<'a>(
    headers: &'a crate::request::Headers,
    name: &str,
) -> Result<&'a str, VerifyError> {
    headers
        .get(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))
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

/// Tries every key against every candidate signature (HMAC-SHA256); returns the matching
/// key's id.
pub(crate) fn match_any<'a>(
    keys: &'a [SigningKey],
    signed: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Option<&'a str> {
    match_any_with::<Hmac<sha2::Sha256>>(keys, signed, candidates)
}

/// [`match_any`] with the HMAC's digest chosen at run time.
pub(crate) fn match_any_algorithm<'a>(
    algorithm: Algorithm,
    keys: &'a [SigningKey],
    signed: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Option<&'a str> {
    match algorithm {
        Algorithm::Sha256 => match_any_with::<Hmac<sha2::Sha256>>(keys, signed, candidates),
        Algorithm::Sha1 => match_any_with::<Hmac<sha1::Sha1>>(keys, signed, candidates),
        Algorithm::Sha512 => match_any_with::<Hmac<sha2::Sha512>>(keys, signed, candidates),
    }
}

fn match_any_with<'a, M: Mac + KeyInit + Clone>(
    keys: &'a [SigningKey],
    signed: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Option<&'a str> {
    for key in keys {
        let mut mac = <M as KeyInit>::new_from_slice(key.bytes()).expect("HMAC accepts any key");
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
    pub use super::github::sign as github;
    pub use super::github::sign_sha1 as github_sha1;
    pub use super::hmac_generic::sign as hmac;
    pub use super::hubspot::sign as hubspot;
    pub use super::paddle::sign as paddle;
    pub use super::shopify::sign as shopify;
    pub use super::slack::sign as slack;
    pub use super::standard::sign as standard;
    pub use super::stripe::sign as stripe;
    pub use super::twilio::sign as twilio;
    pub use super::twilio::url_with_body_sha256 as twilio_json_url;
}
