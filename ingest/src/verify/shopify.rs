//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, the HMAC-SHA256 of the raw body keyed with the
//! app's client secret (or the webhook signing secret shown in the admin) as is.
//!
//! Shopify signs no timestamp: `X-Shopify-Triggered-At` is sent but is *not* covered by the HMAC,
//! so it cannot bound a replay and is not checked here (`tolerance_secs` is accepted by `new` only
//! so every provider has the same constructor). Duplicates are the processor's to drop
//! (`X-Shopify-Webhook-Id` / `X-Shopify-Event-Id` are the event id).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::Mac;
use schemas::time::Millis;
use secrecy::SecretString;

use super::{match_any, plain_keys, required, SigningKey, VerifyError};
use crate::request::{Headers, Target};

const HEADER: &str = "x-shopify-hmac-sha256";

#[derive(Debug)]
pub struct ShopifyVerifier {
    keys: Vec<SigningKey>,
}

impl ShopifyVerifier {
    pub fn new(secrets: Vec<(String, SecretString)>, _tolerance_secs: u64) -> Result<Self, String> {
        let keys = plain_keys(secrets)?;
        Ok(Self { keys })
    }

    pub fn check(
        &self,
        headers: &Headers,
        body: &[u8],
        _target: &Target,
        _now: Millis,
    ) -> Result<String, VerifyError> {
        let value = required(headers, HEADER)?;
        let candidate = B64.decode(value).map_err(|_| VerifyError::Malformed {
            header: HEADER.to_owned(),
            reason: "not a base64 HMAC".into(),
        })?;
        match_any(&self.keys, &[body], &[candidate])
            .map(str::to_owned)
            .ok_or(VerifyError::NoMatch)
    }
}

/// Signs like Shopify (for `hookstream dev`, tests and benchmarks): the header value.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = SigningKey::new("sign", secret.as_bytes().to_vec()).mac();
    mac.update(body);
    B64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shopify publishes no test vector; these tests are round trips through `sign`, whose
    // construction (base64 of HMAC-SHA256 over the raw body) is the documented one.
    const SECRET: &str = "shpss_unit_test_secret_old";
    const OTHER: &str = "shpss_unit_test_secret_new";
    const BODY: &[u8] = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;

    fn verifier(secrets: &[(&str, &str)]) -> ShopifyVerifier {
        let secrets = secrets
            .iter()
            .map(|(id, s)| (id.to_string(), SecretString::from(s.to_string())))
            .collect();
        ShopifyVerifier::new(secrets, 300).unwrap()
    }

    fn check(v: &ShopifyVerifier, headers: &Headers, body: &[u8]) -> Result<String, VerifyError> {
        v.check(headers, body, &Target::default(), 0)
    }

    fn headers(value: &str) -> Headers {
        Headers::new().with("X-Shopify-Hmac-Sha256", value)
    }

    #[test]
    fn a_signed_request_verifies_and_the_signature_is_base64_of_32_bytes() {
        let sig = sign(SECRET, BODY);
        assert_eq!(B64.decode(&sig).unwrap().len(), 32);
        let v = verifier(&[("k1", SECRET)]);
        assert_eq!(check(&v, &headers(&sig), BODY), Ok("k1".into()));
    }

    #[test]
    fn rotation_matches_the_second_key() {
        let v = verifier(&[("new", OTHER), ("old", SECRET)]);
        assert_eq!(
            check(&v, &headers(&sign(SECRET, BODY)), BODY),
            Ok("old".into())
        );
        assert_eq!(
            check(&v, &headers(&sign(OTHER, BODY)), BODY),
            Ok("new".into())
        );
    }

    #[test]
    fn tampered_body_and_wrong_secret_do_not_match() {
        let v = verifier(&[("k1", SECRET)]);
        let sig = sign(SECRET, BODY);
        assert_eq!(
            check(&v, &headers(&sig), b"{\"id\":1}"),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            check(&v, &headers(&sign(OTHER, BODY)), BODY),
            Err(VerifyError::NoMatch)
        );
        // The unsigned trigger time changes nothing either way.
        let with_time = headers(&sig).with("X-Shopify-Triggered-At", "2001-01-01T00:00:00Z");
        assert_eq!(check(&v, &with_time, BODY), Ok("k1".into()));
    }

    #[test]
    fn missing_and_garbled_headers() {
        let v = verifier(&[("k1", SECRET)]);
        assert_eq!(
            check(&v, &Headers::new(), BODY),
            Err(VerifyError::MissingHeader("x-shopify-hmac-sha256".into()))
        );
        for garbled in ["not base64!", "sha256=abcd", "%%%"] {
            assert!(
                matches!(
                    check(&v, &headers(garbled), BODY),
                    Err(VerifyError::Malformed { .. })
                ),
                "{garbled}"
            );
        }
        // Well-formed base64 of the wrong length is simply no match.
        assert_eq!(check(&v, &headers("AAAA"), BODY), Err(VerifyError::NoMatch));
    }

    #[test]
    fn an_empty_secret_is_a_build_error_naming_the_id() {
        let err = ShopifyVerifier::new(vec![("s1".into(), SecretString::from(String::new()))], 0)
            .unwrap_err();
        assert!(err.contains("s1"));
    }
}
