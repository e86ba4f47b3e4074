//! Standard Webhooks signatures: `webhook-signature` is `v1,<base64 HMAC-SHA256 of
//! id.timestamp.body>` once per active secret, space-separated, so a receiver verifies with
//! whichever secret it has during a rotation. The signing itself is the `standardwebhooks`
//! crate's (the reference implementation).

use secrecy::{ExposeSecret, SecretString};
use standardwebhooks::Webhook;

use crate::error::DeliverError;

/// An endpoint's signers, one per secret.
pub struct Signer {
    hooks: Vec<Webhook>,
}

impl Signer {
    pub fn new(secrets: &[SecretString]) -> Result<Self, DeliverError> {
        let hooks = secrets
            .iter()
            .map(|s| Webhook::new(s.expose_secret()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| DeliverError::Config("a secret is not `whsec_` + base64".into()))?;
        Ok(Self { hooks })
    }

    /// The `webhook-signature` value for message `id` sent at `timestamp` (Unix seconds).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> Result<String, DeliverError> {
        let signatures = self
            .hooks
            .iter()
            .map(|hook| hook.sign(id, timestamp, body))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DeliverError::Config(format!("signing failed: {e}")))?;
        Ok(signatures.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks specification's libraries.
    #[test]
    fn signs_like_the_specification() {
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let signer = Signer::new(&[secret.clone(), secret]).unwrap();
        let signature = signer
            .sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        let one = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(signature, format!("{one} {one}"));
    }
}
