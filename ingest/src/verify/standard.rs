//! Standard Webhooks (and Svix, the same algorithm under `svix-*` header names).
//!
//! Signed content is `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 keyed with the
//! base64 part of a `whsec_…` secret. `webhook-signature` holds space-separated
//! `v1,<base64>` entries (several during key rotation); other versions are ignored.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use schemas::time::Millis;
use secrecy::{ExposeSecret, SecretString};

use super::{check_timestamp, match_any, required, SigningKey, VerifyError};
use crate::request::Headers;

pub struct HeaderNames {
    scheme: &'static str,
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

pub const STANDARD_HEADERS: HeaderNames = HeaderNames {
    scheme: "standard",
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};

pub const SVIX_HEADERS: HeaderNames = HeaderNames {
    scheme: "svix",
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

pub struct StandardVerifier {
    names: HeaderNames,
    keys: Vec<SigningKey>,
    tolerance_secs: u64,
}

impl std::fmt::Debug for StandardVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardVerifier")
            .field("scheme", &self.names.scheme)
            .field("keys", &self.keys)
            .finish()
    }
}

impl StandardVerifier {
    pub fn new(
        names: HeaderNames,
        secrets: Vec<(String, SecretString)>,
        tolerance_secs: u64,
    ) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(secrets.len());
        for (id, secret) in secrets {
            let text = secret.expose_secret();
            let encoded = text.strip_prefix("whsec_").unwrap_or(text);
            let key = B64
                .decode(encoded)
                .map_err(|_| format!("secret `{id}` is not `whsec_` followed by base64"))?;
            keys.push(SigningKey::new(id, key));
        }
        Ok(Self {
            names,
            keys,
            tolerance_secs,
        })
    }

    pub fn scheme(&self) -> &'static str {
        self.names.scheme
    }

    pub fn check(
        &self,
        headers: &Headers,
        body: &[u8],
        now: Millis,
    ) -> Result<String, VerifyError> {
        let n = &self.names;
        let required = |name: &str| required(headers, name);
        let id = required(n.id)?;
        let timestamp = required(n.timestamp)?;
        let signature = required(n.signature)?;
        check_timestamp(n.timestamp, timestamp, now, self.tolerance_secs)?;
        let candidates: Vec<Vec<u8>> = signature
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|sig| B64.decode(sig).ok())
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::Malformed {
                header: n.signature.to_owned(),
                reason: "no `v1,<base64>` signature".into(),
            });
        }
        let signed: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.trim().as_bytes(), b".", body];
        match_any(&self.keys, &signed, &candidates)
            .map(str::to_owned)
            .ok_or(VerifyError::NoMatch)
    }
}

/// Signs like a Standard Webhooks sender (for `hookstream dev`, tests and benchmarks).
pub fn sign(secret: &str, id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = SigningKey::new("sign", B64.decode(encoded).unwrap_or_default());
    let mut mac = key.mac();
    for part in [
        id.as_bytes(),
        b".",
        timestamp_secs.to_string().as_bytes(),
        b".",
        body,
    ] {
        hmac::Mac::update(&mut mac, part);
    }
    format!("v1,{}", B64.encode(hmac::Mac::finalize(mac).into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification's reference tests.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn verifier(secrets: &[(&str, &str)]) -> StandardVerifier {
        let secrets = secrets
            .iter()
            .map(|(id, s)| (id.to_string(), SecretString::from(s.to_string())))
            .collect();
        StandardVerifier::new(STANDARD_HEADERS, secrets, 300).unwrap()
    }

    fn headers(sig: &str, ts: i64) -> Headers {
        Headers::new()
            .with("webhook-id", ID)
            .with("webhook-timestamp", &ts.to_string())
            .with("webhook-signature", sig)
    }

    #[test]
    fn reference_vector_verifies_and_sign_reproduces_it() {
        assert_eq!(sign(SECRET, ID, TS, BODY), SIG);
        let v = verifier(&[("k1", SECRET)]);
        assert_eq!(v.check(&headers(SIG, TS), BODY, TS * 1000), Ok("k1".into()));
    }

    #[test]
    fn rotation_matches_the_key_that_signed_among_several_signatures() {
        let other = "whsec_c2Vjb25kLXNlY3JldC1mb3ItdGVzdHM=";
        let v = verifier(&[("new", other), ("old", SECRET)]);
        let sig = format!("v1,bm90LWEtc2lnbmF0dXJl {SIG} v2,ignored");
        assert_eq!(
            v.check(&headers(&sig, TS), BODY, TS * 1000),
            Ok("old".into())
        );
    }

    #[test]
    fn tampering_staleness_and_missing_headers_are_refused() {
        let v = verifier(&[("k1", SECRET)]);
        let now = TS * 1000;
        assert_eq!(
            v.check(&headers(SIG, TS), b"{\"test\": 1}", now),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            v.check(&headers(SIG, TS), BODY, (TS + 301) * 1000),
            Err(VerifyError::Stale {
                tolerance_secs: 300
            })
        );
        assert_eq!(
            v.check(&headers(SIG, TS), BODY, (TS - 301) * 1000),
            Err(VerifyError::Stale {
                tolerance_secs: 300
            })
        );
        let no_sig = Headers::new()
            .with("webhook-id", ID)
            .with("webhook-timestamp", "1");
        assert_eq!(
            v.check(&no_sig, BODY, now),
            Err(VerifyError::MissingHeader("webhook-signature".into()))
        );
        assert!(matches!(
            v.check(&headers("v2,abc", TS), BODY, now),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn a_secret_that_is_not_base64_is_a_build_error_without_the_secret() {
        let err = StandardVerifier::new(
            STANDARD_HEADERS,
            vec![(
                "k1".into(),
                SecretString::from("whsec_***TOPSECRET".to_owned()),
            )],
            300,
        )
        .unwrap_err();
        assert!(err.contains("k1") && !err.contains("TOPSECRET"));
    }
}
