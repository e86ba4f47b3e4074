//! Signs requests the way providers do, independently of the code under test (plain `hmac`
//! and `sha2`, not the ingest's verifiers).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const ORDERS_SECRET: &str = "orders-test-secret-new";
pub const ORDERS_OLD_SECRET: &str = "orders-test-secret-old";
pub const BILLING_SECRET: &str = "whsec_dGVzdC1iaWxsaW5nLXNlY3JldC0zMi1ieXRlcyE=";

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `x-signature: sha256=<hex HMAC of the body>` for the `orders` source.
pub fn orders_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

/// Standard Webhooks headers for the `billing` source.
pub fn standard_headers(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = B64
        .decode(BILLING_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let ts = timestamp.to_string();
    let signature = B64.encode(hmac_sha256(
        &key,
        &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body],
    ));
    vec![
        ("webhook-id".into(), msg_id.into()),
        ("webhook-timestamp".into(), ts),
        ("webhook-signature".into(), format!("v1,{signature}")),
    ]
}
