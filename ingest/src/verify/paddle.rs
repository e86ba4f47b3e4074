//! Paddle Billing: `Paddle-Signature: ts=<unix secs>;h1=<hex>[;h1=<hex>…]`.
//!
//! Signed content is `{ts}:{body}`, HMAC-SHA256 keyed with the notification destination's secret
//! key as is (`pdl_ntfset_…`), hex encoded. Several `h1` may be sent while a secret is rotated;
//! unknown keys are ignored. Paddle's SDKs refuse a `ts` more than 5 s from now by default; the
//! window here is the source's `tolerance_secs`, in both directions. (Paddle Classic's
//! `p_signature` body field is a different, public-key scheme and is not handled here.)

use hmac::Mac;
use schemas::time::Millis;
use secrecy::SecretString;

use super::{
    check_timestamp, match_any, plain_keys, required, timestamped_hex_list, SigningKey, VerifyError,
};
use crate::request::{Headers, Target};

const HEADER: &str = "paddle-signature";

#[derive(Debug)]
pub struct PaddleVerifier {
    keys: Vec<SigningKey>,
    tolerance_secs: u64,
}

impl PaddleVerifier {
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
        _target: &Target,
        now: Millis,
    ) -> Result<String, VerifyError> {
        let value = required(headers, HEADER)?;
        let (timestamp, candidates) = timestamped_hex_list(HEADER, value, ';', "ts", "h1")?;
        check_timestamp(HEADER, timestamp, now, self.tolerance_secs)?;
        let signed: [&[u8]; 3] = [timestamp.as_bytes(), b":", body];
        match_any(&self.keys, &signed, &candidates)
            .map(str::to_owned)
            .ok_or(VerifyError::NoMatch)
    }
}

/// Signs like Paddle (for `hookstream dev`, tests and benchmarks): the whole header value.
pub fn sign(secret: &str, timestamp_secs: i64, body: &[u8]) -> String {
    format!(
        "ts={timestamp_secs};h1={}",
        signature_hex(secret, timestamp_secs, body)
    )
}

fn signature_hex(secret: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let mut mac = SigningKey::new("sign", secret.as_bytes().to_vec()).mac();
    mac.update(format!("{timestamp_secs}:").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example in Paddle's Go SDK (github.com/PaddleHQ/paddle-go-sdk,
    // example_webhook_verifier_test.go), found with the search tool and cross-checked with
    // Python's `hmac` before being written here.
    const DOC_SECRET: &str =
        "pdl_ntfset_01hsdn8d43dt7mezr1ef2jtbaw_hKkRiCGyyRhbFwIUuqiTBgI7gnWoV0Gr";
    const DOC_TS: i64 = 1710929255;
    const DOC_HEADER: &str =
        "ts=1710929255;h1=6c05ef8fa83c44d751be6d259ec955ce5638e2c54095bf128e408e2fce1589c8";
    const DOC_BODY: &[u8] = br#"{"data":{"id":"pri_01hsdn96k2hxjzsq5yerecdj9j","name":null,"status":"active","quantity":{"maximum":999999,"minimum":1},"tax_mode":"account_setting","product_id":"pro_01hsdn8qp7yydry3x1yeg6a9rv","unit_price":{"amount":"1000","currency_code":"USD"},"custom_data":null,"description":"testing","import_meta":null,"trial_period":null,"billing_cycle":{"interval":"month","frequency":1},"unit_price_overrides":[]},"event_id":"evt_01hsdn97563968dy0szkmgjwh3","event_type":"price.created","occurred_at":"2024-03-20T10:07:35.590857Z","notification_id":"ntf_01hsdn977e920kbgzt6r6c9rqc"}"#;
    const OTHER: &str = "pdl_ntfset_01unittestunittestunittestu_otherSecretForUnitTests";

    fn verifier(secrets: &[(&str, &str)], tolerance_secs: u64) -> PaddleVerifier {
        let secrets = secrets
            .iter()
            .map(|(id, s)| (id.to_string(), SecretString::from(s.to_string())))
            .collect();
        PaddleVerifier::new(secrets, tolerance_secs).unwrap()
    }

    fn check(
        v: &PaddleVerifier,
        value: &str,
        body: &[u8],
        now_secs: i64,
    ) -> Result<String, VerifyError> {
        let headers = Headers::new().with("Paddle-Signature", value);
        v.check(&headers, body, &Target::default(), now_secs * 1000)
    }

    #[test]
    fn paddles_sdk_example_verifies_and_sign_reproduces_it() {
        assert_eq!(sign(DOC_SECRET, DOC_TS, DOC_BODY), DOC_HEADER);
        let v = verifier(&[("k1", DOC_SECRET)], 5);
        assert_eq!(check(&v, DOC_HEADER, DOC_BODY, DOC_TS + 5), Ok("k1".into()));
    }

    #[test]
    fn rotation_matches_the_second_key_among_several_h1() {
        let v = verifier(&[("new", OTHER), ("old", DOC_SECRET)], 5);
        assert_eq!(check(&v, DOC_HEADER, DOC_BODY, DOC_TS), Ok("old".into()));
        let several = format!(
            "ts={DOC_TS};h1=not-hex;h1={};h1={};future=1",
            "00".repeat(32),
            signature_hex(DOC_SECRET, DOC_TS, DOC_BODY)
        );
        assert_eq!(check(&v, &several, DOC_BODY, DOC_TS), Ok("old".into()));
    }

    #[test]
    fn tampered_body_wrong_secret_and_moved_timestamp_do_not_match() {
        let v = verifier(&[("k1", DOC_SECRET)], 5);
        assert_eq!(
            check(&v, DOC_HEADER, b"{}", DOC_TS),
            Err(VerifyError::NoMatch)
        );
        let wrong = verifier(&[("k1", OTHER)], 5);
        assert_eq!(
            check(&wrong, DOC_HEADER, DOC_BODY, DOC_TS),
            Err(VerifyError::NoMatch)
        );
        let moved = DOC_HEADER.replacen("ts=1710929255", "ts=1710929256", 1);
        assert_eq!(
            check(&v, &moved, DOC_BODY, DOC_TS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused_with_the_configured_tolerance() {
        let v = verifier(&[("k1", DOC_SECRET)], 5);
        assert_eq!(check(&v, DOC_HEADER, DOC_BODY, DOC_TS - 5), Ok("k1".into()));
        assert_eq!(
            check(&v, DOC_HEADER, DOC_BODY, DOC_TS + 6),
            Err(VerifyError::Stale { tolerance_secs: 5 })
        );
        assert_eq!(
            check(&v, DOC_HEADER, DOC_BODY, DOC_TS - 6),
            Err(VerifyError::Stale { tolerance_secs: 5 })
        );
        let lenient = verifier(&[("k1", DOC_SECRET)], 300);
        assert_eq!(
            check(&lenient, DOC_HEADER, DOC_BODY, DOC_TS + 300),
            Ok("k1".into())
        );
    }

    #[test]
    fn missing_and_garbled_headers() {
        let v = verifier(&[("k1", DOC_SECRET)], 5);
        assert_eq!(
            v.check(&Headers::new(), DOC_BODY, &Target::default(), DOC_TS * 1000),
            Err(VerifyError::MissingHeader("paddle-signature".into()))
        );
        let zeros = "00".repeat(32);
        let cases = vec![
            "garbage".to_owned(),
            format!("h1={zeros}"),
            format!("ts={DOC_TS}"),
            format!("ts={DOC_TS};h1=xyz"),
            format!("ts=soon;h1={zeros}"),
            format!("ts={DOC_TS};ts={DOC_TS};h1={zeros}"),
            // Stripe's separator is not Paddle's.
            format!("ts={DOC_TS},h1={zeros}"),
        ];
        for garbled in &cases {
            assert!(
                matches!(
                    check(&v, garbled, DOC_BODY, DOC_TS),
                    Err(VerifyError::Malformed { .. })
                ),
                "{garbled}"
            );
        }
    }

    #[test]
    fn an_empty_secret_is_a_build_error_naming_the_id() {
        let err = PaddleVerifier::new(vec![("p1".into(), SecretString::from(String::new()))], 5)
            .unwrap_err();
        assert!(err.contains("p1"));
    }
}
