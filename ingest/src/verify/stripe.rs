//! Stripe: `Stripe-Signature: t=<unix secs>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`.
//!
//! Signed content is `{t}.{body}`, HMAC-SHA256 keyed with the endpoint secret *as is* (the whole
//! `whsec_…` string is the key; unlike Standard Webhooks it is not base64-decoded), hex encoded.
//! While a secret is being rolled Stripe sends one `v1` per active secret; `v0` (legacy test-mode
//! scheme) and unknown keys are ignored.
//!
//! Timestamp window — a deliberate choice, documented here: Stripe's own libraries refuse a `t`
//! older than the tolerance (300 s by default) and accept any `t` in the future. We refuse a `t`
//! older than `tolerance_secs` exactly as Stripe does, and *also* refuse a `t` more than
//! [`FUTURE_SKEW_SECS`] ahead of our clock. Stripe signs just before sending, so only clock skew
//! can put a genuine delivery in the future; bounding it keeps the replay window finite even when
//! our clock lags. A future `t` is reported as `Stale { tolerance_secs: FUTURE_SKEW_SECS }`, the
//! bound that was exceeded.

use hmac::Mac;
use schemas::time::Millis;
use secrecy::{ExposeSecret, SecretString};

use super::{match_any, required, timestamped_hex_list, SigningKey, VerifyError};
use crate::request::{Headers, Target};

const HEADER: &str = "stripe-signature";

/// How far in the future a `t=` may be (clock skew) before the request is refused.
pub const FUTURE_SKEW_SECS: u64 = 300;

#[derive(Debug)]
pub struct StripeVerifier {
    keys: Vec<SigningKey>,
    tolerance_secs: u64,
}

impl StripeVerifier {
    /// Every secret must be a Stripe endpoint secret (`whsec_…`); it is used verbatim as the key.
    pub fn new(secrets: Vec<(String, SecretString)>, tolerance_secs: u64) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(secrets.len());
        for (id, secret) in secrets {
            let text = secret.expose_secret();
            if !text.starts_with("whsec_") || text.len() == "whsec_".len() {
                return Err(format!(
                    "secret `{id}` is not a Stripe endpoint signing secret (expected `whsec_…`)"
                ));
            }
            keys.push(SigningKey::new(id, text.as_bytes().to_vec()));
        }
        Ok(Self {
            keys,
            tolerance_secs,
        })
    }

    pub fn check(
        &self,
        headers: &Headers,
        body: &[u8],
        _target: &Target,
        now: Millis,
    ) -> Result<String, VerifyError> {
        let value = required(headers, HEADER)?;
        let (timestamp, candidates) = timestamped_hex_list(HEADER, value, ',', "t", "v1")?;
        let secs: i64 = timestamp
            .parse()
            .map_err(|_| malformed("`t=` is not a Unix timestamp in seconds"))?;
        self.check_window(secs, now)?;
        let signed: [&[u8]; 3] = [timestamp.as_bytes(), b".", body];
        match_any(&self.keys, &signed, &candidates)
            .map(str::to_owned)
            .ok_or(VerifyError::NoMatch)
    }

    /// Past: `tolerance_secs` (as Stripe). Future: [`FUTURE_SKEW_SECS`] (our hardening).
    fn check_window(&self, t: i64, now: Millis) -> Result<(), VerifyError> {
        // Saturating: `t` comes from the request and may be any i64.
        let age = (now / 1000).saturating_sub(t);
        if age > 0 && age.unsigned_abs() > self.tolerance_secs {
            return Err(VerifyError::Stale {
                tolerance_secs: self.tolerance_secs,
            });
        }
        if age < 0 && age.unsigned_abs() > FUTURE_SKEW_SECS {
            return Err(VerifyError::Stale {
                tolerance_secs: FUTURE_SKEW_SECS,
            });
        }
        Ok(())
    }
}

fn malformed(reason: &str) -> VerifyError {
    VerifyError::Malformed {
        header: HEADER.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Signs like Stripe (for `hookstream dev`, tests and benchmarks): the whole header value.
pub fn sign(secret: &str, timestamp_secs: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp_secs},v1={}",
        signature_hex(secret, timestamp_secs, body)
    )
}

fn signature_hex(secret: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let mut mac = SigningKey::new("sign", secret.as_bytes().to_vec()).mac();
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_old_secret_for_unit_tests";
    const OTHER: &str = "whsec_test_new_secret_for_unit_tests";
    const TS: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    fn verifier(secrets: &[(&str, &str)]) -> StripeVerifier {
        let secrets = secrets
            .iter()
            .map(|(id, s)| (id.to_string(), SecretString::from(s.to_string())))
            .collect();
        StripeVerifier::new(secrets, 300).unwrap()
    }

    fn headers(value: &str) -> Headers {
        Headers::new().with("Stripe-Signature", value)
    }

    fn target() -> Target {
        Target {
            method: "POST".into(),
            url: "https://hooks.example.com/v1/hooks/acme/stripe".into(),
        }
    }

    #[test]
    fn a_signed_request_verifies() {
        let v = verifier(&[("k1", SECRET)]);
        let sig = sign(SECRET, TS, BODY);
        assert!(sig.starts_with(&format!("t={TS},v1=")));
        assert_eq!(
            v.check(&headers(&sig), BODY, &target(), TS * 1000),
            Ok("k1".into())
        );
    }

    #[test]
    fn rotation_matches_the_second_key_among_several_v1_and_ignores_v0() {
        let v = verifier(&[("new", OTHER), ("old", SECRET)]);
        // Only the old secret signed this one.
        let value = sign(SECRET, TS, BODY);
        assert_eq!(
            v.check(&headers(&value), BODY, &target(), TS * 1000),
            Ok("old".into())
        );
        // Several v1 during a roll, a v0, an unknown key and a non-hex candidate: all tolerated.
        let mixed = format!(
            "t={TS},v1=zz-not-hex,v1={},v0={},scheme=x,v1={}",
            "00".repeat(32),
            signature_hex(OTHER, TS, BODY),
            signature_hex(SECRET, TS, BODY),
        );
        assert_eq!(
            v.check(&headers(&mixed), BODY, &target(), TS * 1000),
            Ok("old".into())
        );
    }

    #[test]
    fn a_v0_signature_alone_does_not_count() {
        let v = verifier(&[("k1", SECRET)]);
        let value = format!("t={TS},v0={}", signature_hex(SECRET, TS, BODY));
        assert!(matches!(
            v.check(&headers(&value), BODY, &target(), TS * 1000),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn tampered_body_wrong_secret_and_replayed_timestamp_do_not_match() {
        let v = verifier(&[("k1", SECRET)]);
        let sig = sign(SECRET, TS, BODY);
        let now = TS * 1000;
        assert_eq!(
            v.check(&headers(&sig), b"{}", &target(), now),
            Err(VerifyError::NoMatch)
        );
        let wrong = sign(OTHER, TS, BODY);
        assert_eq!(
            v.check(&headers(&wrong), BODY, &target(), now),
            Err(VerifyError::NoMatch)
        );
        // Same v1 under another t: the timestamp is covered by the signature.
        let moved = sig.replacen(&format!("t={TS}"), &format!("t={}", TS + 1), 1);
        assert_eq!(
            v.check(&headers(&moved), BODY, &target(), now),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn tolerance_is_past_tolerance_and_future_skew() {
        let v = verifier(&[("k1", SECRET)]);
        let sig = sign(SECRET, TS, BODY);
        let at = |secs: i64| v.check(&headers(&sig), BODY, &target(), secs * 1000);
        assert_eq!(at(TS + 300), Ok("k1".into()));
        assert_eq!(
            at(TS + 301),
            Err(VerifyError::Stale {
                tolerance_secs: 300
            })
        );
        assert_eq!(at(TS - 300), Ok("k1".into()));
        assert_eq!(
            at(TS - 301),
            Err(VerifyError::Stale {
                tolerance_secs: FUTURE_SKEW_SECS
            })
        );
        // An absurd t from the request cannot overflow the arithmetic.
        let extreme = format!("t={},v1={}", i64::MIN, "00".repeat(32));
        assert_eq!(
            v.check(&headers(&extreme), BODY, &target(), TS * 1000),
            Err(VerifyError::Stale {
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn missing_and_garbled_headers() {
        let v = verifier(&[("k1", SECRET)]);
        let now = TS * 1000;
        assert_eq!(
            v.check(&Headers::new(), BODY, &target(), now),
            Err(VerifyError::MissingHeader("stripe-signature".into()))
        );
        let zeros = "00".repeat(32);
        let cases = vec![
            "garbage".to_owned(),
            "t=abc,v1=00".to_owned(),
            format!("v1={zeros}"),
            format!("t={TS},v1=not-hex"),
            format!("t={TS},t={TS},v1={zeros}"),
        ];
        for garbled in &cases {
            assert!(
                matches!(
                    v.check(&headers(garbled), BODY, &target(), now),
                    Err(VerifyError::Malformed { .. })
                ),
                "{garbled}"
            );
        }
    }

    #[test]
    fn stripes_documented_header_shape_parses() {
        // The example header from Stripe's "Check the webhook signatures" docs (also quoted by
        // several implementations found with the search tool). Stripe does not publish the
        // secret, so this only shows the header parses and our key does not match it.
        let doc =
            "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,\
                   v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";
        let v = verifier(&[("k1", SECRET)]);
        assert_eq!(
            v.check(&headers(doc), BODY, &target(), 1_492_774_577_000),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn a_secret_without_the_whsec_prefix_is_a_build_error_without_the_secret() {
        let err = StripeVerifier::new(
            vec![("k1".into(), SecretString::from("TOPSECRET".to_owned()))],
            300,
        )
        .unwrap_err();
        assert!(err.contains("k1") && !err.contains("TOPSECRET"));
        assert!(StripeVerifier::new(
            vec![("k2".into(), SecretString::from("whsec_".to_owned()))],
            300
        )
        .is_err());
    }
}
