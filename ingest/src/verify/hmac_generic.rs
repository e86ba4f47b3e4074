//! Generic HMAC-SHA256: the configured header carries `prefix` followed by the hex or base64
//! HMAC of the body, or of `{timestamp}.{body}` when a timestamp header is configured. Several
//! signatures may be sent separated by commas or spaces.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use schemas::config::{Encoding, HmacConfig};
use schemas::time::Millis;
use secrecy::{ExposeSecret, SecretString};

use super::{check_timestamp, match_any, SigningKey, VerifyError};
use crate::request::Headers;

#[derive(Debug)]
pub struct HmacVerifier {
    header: String,
    prefix: String,
    encoding: Encoding,
    timestamp_header: Option<String>,
    keys: Vec<SigningKey>,
    tolerance_secs: u64,
}

impl HmacVerifier {
    pub fn new(
        config: &HmacConfig,
        secrets: Vec<(String, SecretString)>,
        tolerance_secs: u64,
    ) -> Self {
        let keys = secrets
            .into_iter()
            .map(|(id, secret)| SigningKey::new(id, secret.expose_secret().as_bytes().to_vec()))
            .collect();
        Self {
            header: config.header.to_ascii_lowercase(),
            prefix: config.prefix.clone(),
            encoding: config.encoding,
            timestamp_header: config
                .timestamp_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            keys,
            tolerance_secs,
        }
    }

    pub fn check(
        &self,
        headers: &Headers,
        body: &[u8],
        now: Millis,
    ) -> Result<String, VerifyError> {
        let value = headers
            .get(&self.header)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| VerifyError::MissingHeader(self.header.clone()))?;
        let timestamp = match &self.timestamp_header {
            Some(name) => {
                let ts = headers
                    .get(name)
                    .ok_or_else(|| VerifyError::MissingHeader(name.clone()))?;
                check_timestamp(name, ts, now, self.tolerance_secs)?;
                Some(ts.trim())
            }
            None => None,
        };
        let candidates: Vec<Vec<u8>> = value
            .split([',', ' '])
            .filter_map(|part| part.trim().strip_prefix(self.prefix.as_str()))
            .filter_map(|sig| match self.encoding {
                Encoding::Hex => hex::decode(sig).ok(),
                Encoding::Base64 => B64.decode(sig).ok(),
            })
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::Malformed {
                header: self.header.clone(),
                reason: format!(
                    "expected `{}` followed by a {:?} HMAC",
                    self.prefix, self.encoding
                ),
            });
        }
        let signed: Vec<&[u8]> = match timestamp {
            Some(ts) => vec![ts.as_bytes(), b".", body],
            None => vec![body],
        };
        match_any(&self.keys, &signed, &candidates)
            .map(str::to_owned)
            .ok_or(VerifyError::NoMatch)
    }
}

/// Signs like a generic HMAC sender (for `hookstream dev`, tests and benchmarks).
pub fn sign(
    secret: &str,
    prefix: &str,
    encoding: Encoding,
    timestamp: Option<i64>,
    body: &[u8],
) -> String {
    let mut mac = SigningKey::new("sign", secret.as_bytes().to_vec()).mac();
    if let Some(ts) = timestamp {
        hmac::Mac::update(&mut mac, format!("{ts}.").as_bytes());
    }
    hmac::Mac::update(&mut mac, body);
    let digest = hmac::Mac::finalize(mac).into_bytes();
    match encoding {
        Encoding::Hex => format!("{prefix}{}", hex::encode(digest)),
        Encoding::Base64 => format!("{prefix}{}", B64.encode(digest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(timestamp_header: Option<&str>) -> HmacVerifier {
        let config = HmacConfig {
            header: "X-Signature".into(),
            prefix: "sha256=".into(),
            encoding: Encoding::Hex,
            timestamp_header: timestamp_header.map(str::to_owned),
        };
        let secrets = vec![
            (
                "new".to_owned(),
                SecretString::from("new-secret".to_owned()),
            ),
            (
                "old".to_owned(),
                SecretString::from("It's a Secret to Everybody".to_owned()),
            ),
        ];
        HmacVerifier::new(&config, secrets, 300)
    }

    #[test]
    fn github_documented_example_verifies_with_the_old_key() {
        // GitHub's documented test vector for X-Hub-Signature-256.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let headers = Headers::new().with("x-signature", sig);
        assert_eq!(
            verifier(None).check(&headers, b"Hello, World!", 0),
            Ok("old".into())
        );
        assert_eq!(
            sign(
                "It's a Secret to Everybody",
                "sha256=",
                Encoding::Hex,
                None,
                b"Hello, World!"
            ),
            sig
        );
    }

    #[test]
    fn timestamped_signatures_cover_the_timestamp() {
        let now = 1_700_000_000_000;
        let sig = sign(
            "new-secret",
            "sha256=",
            Encoding::Hex,
            Some(1_700_000_000),
            b"{}",
        );
        let headers = Headers::new()
            .with("x-signature", &sig)
            .with("x-timestamp", "1700000000");
        let v = verifier(Some("X-Timestamp"));
        assert_eq!(v.check(&headers, b"{}", now), Ok("new".into()));
        let replayed = Headers::new()
            .with("x-signature", &sig)
            .with("x-timestamp", "1700000001");
        assert_eq!(v.check(&replayed, b"{}", now), Err(VerifyError::NoMatch));
        assert_eq!(
            v.check(&headers, b"{}", now + 301_000),
            Err(VerifyError::Stale {
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn wrong_prefix_or_encoding_is_malformed_and_absent_header_is_missing() {
        let v = verifier(None);
        let headers = Headers::new().with("x-signature", "sha1=abcd");
        assert!(matches!(
            v.check(&headers, b"x", 0),
            Err(VerifyError::Malformed { .. })
        ));
        assert_eq!(
            v.check(&Headers::new(), b"x", 0),
            Err(VerifyError::MissingHeader("x-signature".into()))
        );
    }
}
