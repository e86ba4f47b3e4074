//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the body keyed with the
//! webhook secret as is. GitHub signs no timestamp, so there is no replay window to check here;
//! duplicates are the processor's to drop (`X-GitHub-Delivery` is the event id).
//!
//! The legacy `X-Hub-Signature: sha1=<hex>` (HMAC-SHA1) is accepted only when the verifier is
//! built with `allow_sha1`, and only when the request carries no `X-Hub-Signature-256`: a request
//! that has the SHA-256 header is judged by it alone, so adding a SHA-1 header cannot downgrade it.

use hmac::{Hmac, Mac};
use schemas::time::Millis;
use secrecy::SecretString;
use sha1::Sha1;

use super::{match_any, plain_keys, SigningKey, VerifyError};
use crate::request::{Headers, Target};

const HEADER_SHA256: &str = "x-hub-signature-256";
const HEADER_SHA1: &str = "x-hub-signature";

#[derive(Debug)]
pub struct GithubVerifier {
    keys: Vec<SigningKey>,
    allow_sha1: bool,
}

impl GithubVerifier {
    pub fn new(secrets: Vec<(String, SecretString)>, allow_sha1: bool) -> Result<Self, String> {
        let keys = plain_keys(secrets)?;
        Ok(Self { keys, allow_sha1 })
    }

    pub fn check(
        &self,
        headers: &Headers,
        body: &[u8],
        _target: &Target,
        _now: Millis,
    ) -> Result<String, VerifyError> {
        if let Some(value) = present(headers, HEADER_SHA256) {
            let candidate = decode(value, "sha256=", HEADER_SHA256)?;
            return match_any(&self.keys, &[body], &[candidate])
                .map(str::to_owned)
                .ok_or(VerifyError::NoMatch);
        }
        if self.allow_sha1 {
            if let Some(value) = present(headers, HEADER_SHA1) {
                let candidate = decode(value, "sha1=", HEADER_SHA1)?;
                return match_sha1(&self.keys, body, &candidate)
                    .map(str::to_owned)
                    .ok_or(VerifyError::NoMatch);
            }
        }
        Err(VerifyError::MissingHeader(HEADER_SHA256.to_owned()))
    }
}

fn present<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.get(name).map(str::trim).filter(|v| !v.is_empty())
}

fn decode(value: &str, prefix: &str, header: &str) -> Result<Vec<u8>, VerifyError> {
    value
        .strip_prefix(prefix)
        .and_then(|sig| hex::decode(sig.trim()).ok())
        .ok_or_else(|| VerifyError::Malformed {
            header: header.to_owned(),
            reason: format!("expected `{prefix}` followed by a hex HMAC"),
        })
}

/// `match_any` for HMAC-SHA1 (constant-time `verify_slice`, every key tried).
fn match_sha1<'a>(keys: &'a [SigningKey], body: &[u8], candidate: &[u8]) -> Option<&'a str> {
    keys.iter()
        .find(|key| {
            let mut mac = Hmac::<Sha1>::new_from_slice(key.bytes()).expect("HMAC accepts any key");
            mac.update(body);
            mac.verify_slice(candidate).is_ok()
        })
        .map(|key| key.id.as_str())
}

/// Signs like GitHub (for `hookstream dev`, tests and benchmarks): the `X-Hub-Signature-256` value.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = SigningKey::new("sign", secret.as_bytes().to_vec()).mac();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The legacy `X-Hub-Signature` value (HMAC-SHA1).
pub fn sign_sha1(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented test vector ("Validating webhook deliveries", docs.github.com), also
    // quoted by many implementations found with the search tool.
    const DOC_SECRET: &str = "It's a Secret to Everybody";
    const DOC_BODY: &[u8] = b"Hello, World!";
    const DOC_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn verifier(secrets: &[(&str, &str)], allow_sha1: bool) -> GithubVerifier {
        let secrets = secrets
            .iter()
            .map(|(id, s)| (id.to_string(), SecretString::from(s.to_string())))
            .collect();
        GithubVerifier::new(secrets, allow_sha1).unwrap()
    }

    fn check(v: &GithubVerifier, headers: &Headers, body: &[u8]) -> Result<String, VerifyError> {
        v.check(headers, body, &Target::default(), 0)
    }

    fn sha256_header(value: &str) -> Headers {
        Headers::new().with("X-Hub-Signature-256", value)
    }

    #[test]
    fn githubs_documented_vector_verifies_and_sign_reproduces_it() {
        assert_eq!(sign(DOC_SECRET, DOC_BODY), DOC_SIG);
        let v = verifier(&[("k1", DOC_SECRET)], false);
        assert_eq!(
            check(&v, &sha256_header(DOC_SIG), DOC_BODY),
            Ok("k1".into())
        );
    }

    #[test]
    fn rotation_matches_the_second_key() {
        let v = verifier(&[("new", "a-newer-secret"), ("old", DOC_SECRET)], false);
        assert_eq!(
            check(&v, &sha256_header(DOC_SIG), DOC_BODY),
            Ok("old".into())
        );
        let by_new = sign("a-newer-secret", DOC_BODY);
        assert_eq!(
            check(&v, &sha256_header(&by_new), DOC_BODY),
            Ok("new".into())
        );
    }

    #[test]
    fn tampered_body_and_wrong_secret_do_not_match() {
        let v = verifier(&[("k1", DOC_SECRET)], false);
        assert_eq!(
            check(&v, &sha256_header(DOC_SIG), b"Hello, World?"),
            Err(VerifyError::NoMatch)
        );
        let wrong = verifier(&[("k1", "not the secret")], false);
        assert_eq!(
            check(&wrong, &sha256_header(DOC_SIG), DOC_BODY),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn missing_and_garbled_headers() {
        let v = verifier(&[("k1", DOC_SECRET)], false);
        assert_eq!(
            check(&v, &Headers::new(), DOC_BODY),
            Err(VerifyError::MissingHeader("x-hub-signature-256".into()))
        );
        for garbled in [
            "sha1=abcd",
            "757107ea0eb2509fc211221cce984b8a",
            "sha256=zz",
            "sha256=abc",
        ] {
            assert!(
                matches!(
                    check(&v, &sha256_header(garbled), DOC_BODY),
                    Err(VerifyError::Malformed { .. })
                ),
                "{garbled}"
            );
        }
    }

    #[test]
    fn sha1_only_when_allowed_and_only_without_the_sha256_header() {
        let sha1 = Headers::new().with("X-Hub-Signature", &sign_sha1(DOC_SECRET, DOC_BODY));
        let strict = verifier(&[("k1", DOC_SECRET)], false);
        assert_eq!(
            check(&strict, &sha1, DOC_BODY),
            Err(VerifyError::MissingHeader("x-hub-signature-256".into()))
        );
        let legacy = verifier(&[("new", "a-newer-secret"), ("old", DOC_SECRET)], true);
        assert_eq!(check(&legacy, &sha1, DOC_BODY), Ok("old".into()));
        assert_eq!(
            check(&legacy, &sha1, b"tampered"),
            Err(VerifyError::NoMatch)
        );
        // A wrong SHA-256 is not rescued by a right SHA-1: no downgrade.
        let both = Headers::new()
            .with("X-Hub-Signature-256", &sign("someone else", DOC_BODY))
            .with("X-Hub-Signature", &sign_sha1(DOC_SECRET, DOC_BODY));
        assert_eq!(check(&legacy, &both, DOC_BODY), Err(VerifyError::NoMatch));
        let garbled = Headers::new().with("X-Hub-Signature", "sha1=xyz");
        assert!(matches!(
            check(&legacy, &garbled, DOC_BODY),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn an_empty_secret_is_a_build_error_naming_the_id() {
        let err = GithubVerifier::new(
            vec![("k9".into(), SecretString::from(String::new()))],
            false,
        )
        .unwrap_err();
        assert!(err.contains("k9"));
    }
}
