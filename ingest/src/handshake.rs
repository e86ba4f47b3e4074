//! Provider handshakes: requests a provider sends to check the endpoint, answered directly
//! (after signature verification) instead of being appended as events.
//!
//! * Slack's Events API `url_verification`: `{"type":"url_verification","challenge":"…"}` is
//!   answered 200 `{"challenge":"…"}`.

use serde_json::Value;

use crate::request::{Request, Verified};

/// The answer to a handshake, if the request is one.
pub fn answer(scheme: &str, request: &Request<Verified>) -> Option<Value> {
    if scheme != "slack" {
        return None;
    }
    let body: Value = serde_json::from_slice(request.body()).ok()?;
    if body.get("type")?.as_str()? != "url_verification" {
        return None;
    }
    let challenge = body.get("challenge")?.as_str()?;
    Some(serde_json::json!({ "challenge": challenge }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Headers, Unverified};

    fn verified(body: &str) -> Request<Verified> {
        Request::<Unverified>::new("t", "s", Headers::new(), body.as_bytes().to_vec().into(), 0)
            .into_verified("k".into())
    }

    #[test]
    fn slack_url_verification_is_answered_and_events_are_not() {
        let challenge =
            verified(r#"{"token":"x","challenge":"3eZbrw1a","type":"url_verification"}"#);
        assert_eq!(
            answer("slack", &challenge),
            Some(serde_json::json!({"challenge": "3eZbrw1a"}))
        );
        assert_eq!(answer("github", &challenge), None);
        assert_eq!(
            answer(
                "slack",
                &verified(r#"{"type":"event_callback","event":{}}"#)
            ),
            None
        );
        assert_eq!(answer("slack", &verified("not json")), None);
    }
}
