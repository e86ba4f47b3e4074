//! HubSpot, signature v3: `X-HubSpot-Signature-v3: <base64>`, the HMAC-SHA256 keyed with the
//! app's client secret as is, over `{method}{uri}{body}{timestamp}` (no separators), where
//! `timestamp` is `X-HubSpot-Request-Timestamp` exactly as sent, in **milliseconds**.
//!
//! `uri` is the full URL HubSpot called (scheme, host, path, query: [`Target::url`]) with these
//! percent-encodings decoded first, as HubSpot's "Validating requests" page lists them:
//! `%3A :`, `%2F /`, `%3F ?`, `%40 @`, `%21 !`, `%24 $`, `%27 '`, `%28 (`, `%29 )`, `%2A *`,
//! `%2C ,`, `%3B ;` (hex digits in either case; everything else, e.g. `%20`, stays encoded).
//! HubSpot's own SDKs sign the URL they are given without decoding, so the URL exactly as
//! received is tried as well when it differs; both are URLs HubSpot called, so this widens
//! nothing an attacker without the secret could use.
//!
//! HubSpot asks receivers to refuse a timestamp older than 5 minutes; the window is
//! `tolerance_secs` and applies in both directions (a future timestamp can only be clock skew).
//! The legacy v1/v2 `X-HubSpot-Signature` (plain SHA-256, no timestamp) is not accepted.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::Mac;
use schemas::time::Millis;
use secrecy::SecretString;

use super::{match_any, plain_keys, required, SigningKey, VerifyError};
use crate::request::{Headers, Target};

const SIGNATURE: &str = "x-hubspot-signature-v3";
const TIMESTAMP: &str = "x-hubspot-request-timestamp";

/// The characters HubSpot decodes in the URI before signing.
const DECODED: &[u8] = b":/?@!$'()*,;";

#[derive(Debug)]
pub struct HubspotVerifier {
    keys: Vec<SigningKey>,
    tolerance_secs: u64,
}

impl HubspotVerifier {
    pub fn new(secrets: Vec<(String, SecretString)>, tolerance_secs: u64) -> Result<Self, String> {
        let keys = plain_keys(secrets)?;
        Ok(Self {
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
        let required = |name: &str| required(headers, name);
        let signature = required(SIGNATURE)?;
        let timestamp = required(TIMESTAMP)?;
        self.check_window(timestamp, now)?;
        let candidate = B64.decode(signature).map_err(|_| VerifyError::Malformed {
            header: SIGNATURE.to_owned(),
            reason: "not a base64 HMAC".into(),
        })?;
        let candidates = [candidate];
        let decoded = decode_uri(&target.url);
        let mut uris = vec![decoded.as_str()];
        if decoded != target.url {
            uris.push(target.url.as_str());
        }
        for uri in uris {
            let signed: [&[u8]; 4] = [
                target.method.as_bytes(),
                uri.as_bytes(),
                body,
                timestamp.as_bytes(),
            ];
            if let Some(id) = match_any(&self.keys, &signed, &candidates) {
                return Ok(id.to_owned());
            }
        }
        Err(VerifyError::NoMatch)
    }

    fn check_window(&self, timestamp: &str, now: Millis) -> Result<(), VerifyError> {
        // Digits only: the string is signed as sent, so no sign, space or exponent.
        let ms: i64 = Some(timestamp)
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| VerifyError::Malformed {
                header: TIMESTAMP.to_owned(),
                reason: "not a Unix timestamp in milliseconds".into(),
            })?;
        let skew_ms = now.saturating_sub(ms).unsigned_abs();
        if skew_ms > self.tolerance_secs.saturating_mul(1000) {
            return Err(VerifyError::Stale {
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }
}

/// Decodes the percent-encodings HubSpot lists (and only those), in one pass, so `%253A` stays
/// `%253A`.
pub fn decode_uri(uri: &str) -> String {
    let bytes = uri.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                let c = (hi << 4) | lo;
                if DECODED.contains(&c) {
                    out.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    // Only ASCII bytes were replaced by ASCII bytes, so the result is still UTF-8.
    String::from_utf8(out).expect("ASCII-for-ASCII replacement keeps UTF-8")
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Signs like HubSpot v3 (for `hookstream dev`, tests and benchmarks): the
/// `X-HubSpot-Signature-v3` value for a request to `url`, decoded as HubSpot does.
pub fn sign(secret: &str, method: &str, url: &str, body: &[u8], timestamp_ms: i64) -> String {
    let mut mac = SigningKey::new("sign", secret.as_bytes().to_vec()).mac();
    mac.update(method.as_bytes());
    mac.update(decode_uri(url).as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixed v3 vectors from HubSpot's official SDK test suites, found with the search tool and
    // cross-checked with Python's `hmac` before being written here:
    // HubSpot/hubspot-api-python tests/spec/utils/test_signature.py and
    // HubSpot/hubspot-api-ruby spec/helpers/signature_spec.rb.
    const SDK_SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const SDK_URL: &str = "https://www.example.com/webhook_uri";
    const SDK_BODY: &[u8] = b"{'example_field':'example_value'}";
    const PY_TS: i64 = 1693657560000;
    const PY_SIG: &str = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=";
    const RB_TS: i64 = 1700000300000;
    const RB_SIG: &str = "RnbPH7+UMKVkbV32P8bz450N4M56aPmcru1+D3kSDtw=";

    fn verifier(secrets: &[(&str, &str)]) -> HubspotVerifier {
        let secrets = secrets
            .iter()
            .map(|(id, s)| (id.to_string(), SecretString::from(s.to_string())))
            .collect();
        HubspotVerifier::new(secrets, 300).unwrap()
    }

    fn headers(sig: &str, ts: &str) -> Headers {
        Headers::new()
            .with("X-HubSpot-Signature-v3", sig)
            .with("X-HubSpot-Request-Timestamp", ts)
    }

    fn target(method: &str, url: &str) -> Target {
        Target {
            method: method.into(),
            url: url.into(),
        }
    }

    #[test]
    fn hubspot_sdk_vectors_verify_and_sign_reproduces_them() {
        assert_eq!(sign(SDK_SECRET, "POST", SDK_URL, SDK_BODY, PY_TS), PY_SIG);
        assert_eq!(sign(SDK_SECRET, "POST", SDK_URL, SDK_BODY, RB_TS), RB_SIG);
        let v = verifier(&[("k1", SDK_SECRET)]);
        for (ts, sig) in [(PY_TS, PY_SIG), (RB_TS, RB_SIG)] {
            let h = headers(sig, &ts.to_string());
            assert_eq!(
                v.check(&h, SDK_BODY, &target("POST", SDK_URL), ts + 1000),
                Ok("k1".into())
            );
        }
    }

    #[test]
    fn rotation_matches_the_second_key() {
        let v = verifier(&[
            ("new", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"),
            ("old", SDK_SECRET),
        ]);
        let h = headers(PY_SIG, &PY_TS.to_string());
        assert_eq!(
            v.check(&h, SDK_BODY, &target("POST", SDK_URL), PY_TS),
            Ok("old".into())
        );
    }

    #[test]
    fn body_method_url_timestamp_and_secret_are_all_covered() {
        let v = verifier(&[("k1", SDK_SECRET)]);
        let h = headers(PY_SIG, &PY_TS.to_string());
        let post = target("POST", SDK_URL);
        assert_eq!(v.check(&h, b"{}", &post, PY_TS), Err(VerifyError::NoMatch));
        assert_eq!(
            v.check(&h, SDK_BODY, &target("PUT", SDK_URL), PY_TS),
            Err(VerifyError::NoMatch)
        );
        let http = target("POST", "http://www.example.com/webhook_uri");
        assert_eq!(
            v.check(&h, SDK_BODY, &http, PY_TS),
            Err(VerifyError::NoMatch)
        );
        let moved = headers(PY_SIG, &(PY_TS + 1).to_string());
        assert_eq!(
            v.check(&moved, SDK_BODY, &post, PY_TS),
            Err(VerifyError::NoMatch)
        );
        let wrong = verifier(&[("k1", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz")]);
        assert_eq!(
            wrong.check(&h, SDK_BODY, &post, PY_TS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn the_listed_encodings_are_decoded_and_nothing_else() {
        assert_eq!(
            decode_uri(
                "https://h.example/a%3Ab%2fc%3F%40%21%24%27%28%29%2A%2C%3B?q=%20%26%3D%253A%2"
            ),
            "https://h.example/a:b/c?@!$'()*,;?q=%20%26%3D%253A%2"
        );
        assert_eq!(decode_uri("https://h.example/ü%3a"), "https://h.example/ü:");
        // A request to an encoded URL verifies against the decoded form HubSpot signs…
        let url = "https://h.example/hooks/acme%2Fhubspot?portal=1%3A2&tag=a%20b";
        let v = verifier(&[("k1", SDK_SECRET)]);
        let ts = 1_700_000_000_000_i64;
        let decoded_sig = sign(SDK_SECRET, "POST", url, b"[]", ts);
        let h = headers(&decoded_sig, &ts.to_string());
        assert_eq!(
            v.check(&h, b"[]", &target("POST", url), ts),
            Ok("k1".into())
        );
        // …and against the URL as received, as HubSpot's SDKs compute it.
        let mut mac = SigningKey::new("raw", SDK_SECRET.as_bytes().to_vec()).mac();
        mac.update(format!("POST{url}[]{ts}").as_bytes());
        let raw_sig = B64.encode(mac.finalize().into_bytes());
        assert_ne!(raw_sig, decoded_sig);
        let h = headers(&raw_sig, &ts.to_string());
        assert_eq!(
            v.check(&h, b"[]", &target("POST", url), ts),
            Ok("k1".into())
        );
    }

    #[test]
    fn the_millisecond_timestamp_window_applies_both_ways() {
        let v = verifier(&[("k1", SDK_SECRET)]);
        let h = headers(PY_SIG, &PY_TS.to_string());
        let post = target("POST", SDK_URL);
        assert_eq!(
            v.check(&h, SDK_BODY, &post, PY_TS + 300_000),
            Ok("k1".into())
        );
        assert_eq!(
            v.check(&h, SDK_BODY, &post, PY_TS + 300_001),
            Err(VerifyError::Stale {
                tolerance_secs: 300
            })
        );
        assert_eq!(
            v.check(&h, SDK_BODY, &post, PY_TS - 300_000),
            Ok("k1".into())
        );
        assert_eq!(
            v.check(&h, SDK_BODY, &post, PY_TS - 300_001),
            Err(VerifyError::Stale {
                tolerance_secs: 300
            })
        );
        // A timestamp in seconds is 1000× too small: far in the past.
        let secs = headers(PY_SIG, &(PY_TS / 1000).to_string());
        assert_eq!(
            v.check(&secs, SDK_BODY, &post, PY_TS),
            Err(VerifyError::Stale {
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn missing_and_garbled_headers() {
        let v = verifier(&[("k1", SDK_SECRET)]);
        let post = target("POST", SDK_URL);
        let ts = PY_TS.to_string();
        let no_sig = Headers::new().with("X-HubSpot-Request-Timestamp", &ts);
        assert_eq!(
            v.check(&no_sig, SDK_BODY, &post, PY_TS),
            Err(VerifyError::MissingHeader("x-hubspot-signature-v3".into()))
        );
        let no_ts = Headers::new().with("X-HubSpot-Signature-v3", PY_SIG);
        assert_eq!(
            v.check(&no_ts, SDK_BODY, &post, PY_TS),
            Err(VerifyError::MissingHeader(
                "x-hubspot-request-timestamp".into()
            ))
        );
        for (sig, ts) in [
            ("not base64!", ts.as_str()),
            (PY_SIG, "-1693657560000"),
            (PY_SIG, "1.69e12"),
            (PY_SIG, "+1693657560000"),
            (PY_SIG, "99999999999999999999"),
        ] {
            assert!(
                matches!(
                    v.check(&headers(sig, ts), SDK_BODY, &post, PY_TS),
                    Err(VerifyError::Malformed { .. })
                ),
                "{sig} {ts}"
            );
        }
    }
}
