//! Generic HMAC, for any sender that signs with a shared secret: the configured `header`
//! carries `prefix` followed by the hex or base64 HMAC (SHA-256, SHA-1 or SHA-512) of a signed
//! string. The signed string is the body, or `{timestamp}.{body}` when `timestamp_header` is
//! set, or any `template` built from `{body}`, `{timestamp}`, `{method}`, `{url}` and
//! `{header:NAME}`. Several signatures may be sent separated by commas or spaces.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use schemas::config::{Algorithm, Encoding, HmacConfig};
use schemas::time::Millis;
use secrecy::{ExposeSecret, SecretString};

use super::{check_timestamp, match_any_algorithm, required, SigningKey, VerifyError};
use crate::request::{Headers, Target};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Body,
    Timestamp,
    Method,
    Url,
    Header(String),
}

/// Parses a signed-string template such as `{timestamp}.{body}`.
fn parse_template(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("template `{template}`: `{{` without `}}`"))?
            + open;
        let name = &rest[open + 1..close];
        parts.push(match name {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "method" => Part::Method,
            "url" => Part::Url,
            _ => match name.strip_prefix("header:") {
                Some(header) if !header.is_empty() => Part::Header(header.to_ascii_lowercase()),
                _ => {
                    return Err(format!(
                        "template `{template}`: unknown placeholder `{{{name}}}`"
                    ))
                }
            },
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_owned()));
    }
    if !parts.contains(&Part::Body) {
        return Err(format!(
            "template `{template}` does not include `{{body}}`: the body would be unsigned"
        ));
    }
    Ok(parts)
}

#[derive(Debug)]
pub struct HmacVerifier {
    header: String,
    prefix: String,
    encoding: Encoding,
    algorithm: Algorithm,
    timestamp_header: Option<String>,
    template: Vec<Part>,
    keys: Vec<SigningKey>,
    tolerance_secs: u64,
}

impl HmacVerifier {
    pub fn new(
        config: &HmacConfig,
        secrets: Vec<(String, SecretString)>,
        tolerance_secs: u64,
    ) -> Result<Self, String> {
        let keys = secrets
            .into_iter()
            .map(|(id, secret)| SigningKey::new(id, secret.expose_secret().as_bytes().to_vec()))
            .collect();
        let template = match (&config.template, &config.timestamp_header) {
            (Some(template), _) => template.clone(),
            (None, Some(_)) => "{timestamp}.{body}".to_owned(),
            (None, None) => "{body}".to_owned(),
        };
        let template = parse_template(&template)?;
        if template.contains(&Part::Timestamp) && config.timestamp_header.is_none() {
            return Err("the template uses `{timestamp}` but no `timestamp_header` is set".into());
        }
        Ok(Self {
            header: config.header.to_ascii_lowercase(),
            prefix: config.prefix.clone(),
            encoding: config.encoding,
            algorithm: config.algorithm,
            timestamp_header: config
                .timestamp_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            template,
            keys,
            tolerance_secs,
        })
    }

    pub fn check(
        &self,
        headers: &Headers,
        body: &[u8],
        target: &Target,
        now: Millis,
    ) -> Result<String, VerifyError> {
        let value = required(headers, &self.header)?;
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
        let mut signed: Vec<&[u8]> = Vec::with_capacity(self.template.len());
        for part in &self.template {
            signed.push(match part {
                Part::Literal(text) => text.as_bytes(),
                Part::Body => body,
                Part::Timestamp => timestamp.unwrap_or_default().as_bytes(),
                Part::Method => target.method.as_bytes(),
                Part::Url => target.url.as_bytes(),
                Part::Header(name) => headers
                    .get(name)
                    .ok_or_else(|| VerifyError::MissingHeader(name.clone()))?
                    .as_bytes(),
            });
        }
        match_any_algorithm(self.algorithm, &self.keys, &signed, &candidates)
            .map(str::to_owned)
            .ok_or(VerifyError::NoMatch)
    }
}

/// Signs like a generic HMAC-SHA256 sender over `{body}` or `{timestamp}.{body}` (for
/// `hookstream dev`, tests and benchmarks).
pub fn sign(
    secret: &str,
    prefix: &str,
    encoding: Encoding,
    timestamp: Option<i64>,
    body: &[u8],
) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts any key");
    if let Some(ts) = timestamp {
        mac.update(format!("{ts}.").as_bytes());
    }
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    match encoding {
        Encoding::Hex => format!("{prefix}{}", hex::encode(digest)),
        Encoding::Base64 => format!("{prefix}{}", B64.encode(digest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(timestamp_header: Option<&str>) -> HmacConfig {
        HmacConfig {
            header: "X-Signature".into(),
            prefix: "sha256=".into(),
            encoding: Encoding::Hex,
            algorithm: Algorithm::Sha256,
            timestamp_header: timestamp_header.map(str::to_owned),
            template: None,
        }
    }

    fn secrets() -> Vec<(String, SecretString)> {
        vec![
            (
                "new".to_owned(),
                SecretString::from("new-secret".to_owned()),
            ),
            (
                "old".to_owned(),
                SecretString::from("It's a Secret to Everybody".to_owned()),
            ),
        ]
    }

    fn verifier(timestamp_header: Option<&str>) -> HmacVerifier {
        HmacVerifier::new(&config(timestamp_header), secrets(), 300).unwrap()
    }

    const T: Target = Target {
        method: String::new(),
        url: String::new(),
    };

    #[test]
    fn github_documented_example_verifies_with_the_old_key() {
        // GitHub's documented test vector for X-Hub-Signature-256.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let headers = Headers::new().with("x-signature", sig);
        assert_eq!(
            verifier(None).check(&headers, b"Hello, World!", &T, 0),
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
        assert_eq!(v.check(&headers, b"{}", &T, now), Ok("new".into()));
        let replayed = Headers::new()
            .with("x-signature", &sig)
            .with("x-timestamp", "1700000001");
        assert_eq!(
            v.check(&replayed, b"{}", &T, now),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            v.check(&headers, b"{}", &T, now + 301_000),
            Err(VerifyError::Stale {
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn sha1_and_sha512_with_base64_and_a_template() {
        use hmac::digest::KeyInit;
        let mut config = config(None);
        config.algorithm = Algorithm::Sha512;
        config.encoding = Encoding::Base64;
        config.prefix = String::new();
        config.template = Some("{method} {url}\n{header:x-id}\n{body}".into());
        let v = HmacVerifier::new(&config, secrets(), 300).unwrap();
        let target = Target {
            method: "POST".into(),
            url: "https://h.example/x?a=1".into(),
        };
        let mut mac = <Hmac<sha2::Sha512> as KeyInit>::new_from_slice(b"new-secret").unwrap();
        mac.update(b"POST https://h.example/x?a=1\nabc\nbody");
        let sig = B64.encode(mac.finalize().into_bytes());
        let headers = Headers::new().with("x-signature", &sig).with("x-id", "abc");
        assert_eq!(v.check(&headers, b"body", &target, 0), Ok("new".into()));
        let other_id = Headers::new().with("x-signature", &sig).with("x-id", "abd");
        assert_eq!(
            v.check(&other_id, b"body", &target, 0),
            Err(VerifyError::NoMatch)
        );

        config.algorithm = Algorithm::Sha1;
        config.template = None;
        let v = HmacVerifier::new(&config, secrets(), 300).unwrap();
        let mut mac =
            <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"It's a Secret to Everybody").unwrap();
        mac.update(b"body");
        let headers = Headers::new().with("x-signature", &B64.encode(mac.finalize().into_bytes()));
        assert_eq!(v.check(&headers, b"body", &target, 0), Ok("old".into()));
    }

    #[test]
    fn templates_must_sign_the_body_and_name_known_placeholders() {
        let mut c = config(None);
        c.template = Some("{timestamp}".into());
        assert!(HmacVerifier::new(&c, secrets(), 300)
            .unwrap_err()
            .contains("{body}"));
        c.template = Some("{nonce}.{body}".into());
        assert!(HmacVerifier::new(&c, secrets(), 300)
            .unwrap_err()
            .contains("unknown placeholder"));
        c.template = Some("{timestamp}.{body}".into());
        assert!(HmacVerifier::new(&c, secrets(), 300)
            .unwrap_err()
            .contains("timestamp_header"));
    }

    #[test]
    fn wrong_prefix_or_encoding_is_malformed_and_absent_header_is_missing() {
        let v = verifier(None);
        let headers = Headers::new().with("x-signature", "sha1=abcd");
        assert!(matches!(
            v.check(&headers, b"x", &T, 0),
            Err(VerifyError::Malformed { .. })
        ));
        assert_eq!(
            v.check(&Headers::new(), b"x", &T, 0),
            Err(VerifyError::MissingHeader("x-signature".into()))
        );
    }
}
