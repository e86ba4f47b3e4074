//! When to try a delivery again, and what an attempt's outcome means: pure, so every
//! instance (and every replay of the retry topics) decides alike.
//!
//! Retries wait in **delay topics**, one per tier of the schedule (5 s, 30 s, 2 min, 10 min,
//! 30 min, 1 h, 3 h, 6 h, 12 h, 24 h: about two days in all): within a tier every record
//! waits the same time, so records come due in the order they were written and a tier's
//! reader never waits behind a later one. A retry's due time carries a deterministic jitter
//! (up to a tenth of the tier's delay, from the delivery id and the attempt), so a burst of
//! failures does not come back as a burst.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// The delay before attempt `n + 2`, for `n` = 0, 1, …: the tiers of the retry topics.
pub const TIERS: [Duration; 10] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1_800),
    Duration::from_secs(3_600),
    Duration::from_secs(3 * 3_600),
    Duration::from_secs(6 * 3_600),
    Duration::from_secs(12 * 3_600),
    Duration::from_secs(24 * 3_600),
];

/// Attempts a client error (4xx other than 408, 410, 429) gets before it is dead-lettered.
pub const CLIENT_ERROR_ATTEMPTS: u32 = 3;

/// The suffix of tier `i`'s topic (`delivery-retry-5s`, …).
pub fn tier_name(i: usize) -> String {
    let secs = TIERS[i].as_secs();
    match secs {
        s if s % 3_600 == 0 => format!("delivery-retry-{}h", s / 3_600),
        s if s % 60 == 0 => format!("delivery-retry-{}m", s / 60),
        s => format!("delivery-retry-{s}s"),
    }
}

/// The tier that holds a delivery before its attempt `next` (2, 3, …), if the schedule has one.
pub fn tier_before(next: u32) -> Option<usize> {
    let i = next.checked_sub(2)? as usize;
    (i < TIERS.len()).then_some(i)
}

/// The jitter added to tier `tier`'s delay for `delivery_id`'s attempt `attempt`.
pub fn jitter(delivery_id: &str, attempt: u32, tier: usize) -> Duration {
    let digest = Sha256::new()
        .chain_update(delivery_id.as_bytes())
        .chain_update(attempt.to_be_bytes())
        .finalize();
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let span = TIERS[tier].as_millis() as u64 / 10;
    Duration::from_millis(if span == 0 { 0 } else { n % span })
}

/// What came back from one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Status {
        code: u16,
        /// `Retry-After`, in seconds, when the answer had one.
        retry_after: Option<u64>,
    },
    Timeout,
    /// The connection failed (DNS, refused, reset, TLS).
    Connection,
    /// No request was made: the endpoint resolves to an address of this class that the
    /// tenant does not allow ([`crate::guard`]).
    Refused(&'static str),
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again per the schedule (the attempt counts).
    Retry,
    /// The endpoint asked to wait (429, 503 with `Retry-After`): try again after that long
    /// (clamped), without using up an attempt.
    Wait(Duration),
    /// The endpoint is gone (410): disable it; the delivery is dead-lettered.
    Disable,
    /// Give up: dead-letter the delivery.
    Dead,
}

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// Decides after attempt `attempt` (1, 2, …) answered `response`.
pub fn verdict(response: &Response, attempt: u32) -> Verdict {
    let exhausted = tier_before(attempt + 1).is_none();
    let retry = if exhausted {
        Verdict::Dead
    } else {
        Verdict::Retry
    };
    match *response {
        Response::Refused(_) => Verdict::Dead,
        Response::Status { code, .. } if (200..300).contains(&code) => Verdict::Delivered,
        Response::Status { code: 410, .. } => Verdict::Disable,
        Response::Status {
            code: 429 | 503,
            retry_after: Some(secs),
        } => {
            Verdict::Wait(Duration::from_secs(secs).clamp(Duration::from_secs(1), MAX_RETRY_AFTER))
        }
        Response::Status { code, .. }
            if (400..500).contains(&code) && code != 408 && code != 429 =>
        {
            if attempt >= CLIENT_ERROR_ATTEMPTS {
                Verdict::Dead
            } else {
                retry
            }
        }
        // 3xx (redirects are not followed), 408, 429 and 5xx without a wait, timeouts,
        // connection failures: the schedule.
        _ => retry,
    }
}

/// Where a wait the endpoint asked for (`Retry-After`) is queued, and how long it lasts: the
/// longest tier not longer than the wait, so the records of a tier stay (almost: within a
/// later record's jitter, or the wait's excess over the tier) in the order they come due. A
/// wait shorter than the first tier lasts the first tier.
pub fn wait_tier(wait: Duration) -> (usize, Duration) {
    match TIERS.iter().rposition(|t| *t <= wait) {
        Some(tier) => (tier, wait),
        None => (0, TIERS[0]),
    }
}

/// The same attempt of `delivery` again after `wait` (from `now`, ms): its tier
/// ([`wait_tier`]) and the delivery as it waits there.
pub fn later(
    delivery: crate::record::Delivery,
    wait: Duration,
    now: i64,
) -> (usize, crate::record::Delivery) {
    let (tier, wait) = wait_tier(wait);
    let due_at = now + wait.as_millis() as i64;
    (tier, crate::record::Delivery { due_at, ..delivery })
}

/// Whether a response counts against the endpoint's circuit breaker: no answer, or an
/// answer saying it cannot serve (5xx, 408, 429) without asking for a wait. Other answers
/// show the endpoint up.
pub fn is_failure(response: &Response) -> bool {
    match *response {
        Response::Timeout | Response::Connection => true,
        Response::Refused(_) => false,
        Response::Status {
            code: 429 | 503,
            retry_after: Some(_),
        } => false,
        Response::Status { code, .. } => code >= 500 || code == 408 || code == 429,
    }
}

/// The dead-letter reason of a response.
pub fn reason(response: &Response) -> String {
    match response {
        Response::Status { code, .. } => format!("http_{code}"),
        Response::Timeout => "timeout".into(),
        Response::Connection => "connection".into(),
        Response::Refused(class) => format!("ssrf_{class}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Response {
        Response::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn tiers_are_named_by_their_delay_and_follow_the_attempts() {
        let names: Vec<String> = (0..TIERS.len()).map(tier_name).collect();
        assert_eq!(names[0], "delivery-retry-5s");
        assert_eq!(names[2], "delivery-retry-2m");
        assert_eq!(names[9], "delivery-retry-24h");
        assert_eq!(tier_before(1), None);
        assert_eq!(tier_before(2), Some(0));
        assert_eq!(tier_before(11), Some(9));
        assert_eq!(tier_before(12), None);
    }

    #[test]
    fn statuses_decide_as_documented() {
        assert_eq!(verdict(&status(204), 1), Verdict::Delivered);
        assert_eq!(verdict(&status(410), 1), Verdict::Disable);
        assert_eq!(verdict(&status(500), 1), Verdict::Retry);
        assert_eq!(verdict(&status(302), 1), Verdict::Retry);
        assert_eq!(verdict(&status(408), 5), Verdict::Retry);
        assert_eq!(verdict(&Response::Timeout, 10), Verdict::Retry);
        assert_eq!(verdict(&Response::Connection, 11), Verdict::Dead);
        assert_eq!(verdict(&status(400), 1), Verdict::Retry);
        assert_eq!(verdict(&status(403), 3), Verdict::Dead);
        let wait = |code, secs| Response::Status {
            code,
            retry_after: Some(secs),
        };
        assert_eq!(
            verdict(&wait(429, 7), 11),
            Verdict::Wait(Duration::from_secs(7))
        );
        assert_eq!(
            verdict(&wait(503, 0), 1),
            Verdict::Wait(Duration::from_secs(1))
        );
        assert_eq!(
            verdict(&wait(503, u64::MAX), 1),
            Verdict::Wait(MAX_RETRY_AFTER)
        );
        assert_eq!(verdict(&status(429), 1), Verdict::Retry);
    }

    #[test]
    fn failures_for_the_breaker_are_the_endpoint_not_answering() {
        assert!(is_failure(&Response::Timeout) && is_failure(&Response::Connection));
        assert!(is_failure(&status(500)) && is_failure(&status(408)) && is_failure(&status(429)));
        let wait = Response::Status {
            code: 503,
            retry_after: Some(3),
        };
        assert!(!is_failure(&wait));
        assert!(
            !is_failure(&status(404)) && !is_failure(&status(302)) && !is_failure(&status(200))
        );
    }

    #[test]
    fn waits_go_to_the_longest_tier_not_longer() {
        assert_eq!(
            wait_tier(Duration::from_secs(2)),
            (0, Duration::from_secs(5))
        );
        assert_eq!(
            wait_tier(Duration::from_secs(6)),
            (0, Duration::from_secs(6))
        );
        assert_eq!(
            wait_tier(Duration::from_secs(30)),
            (1, Duration::from_secs(30))
        );
        assert_eq!(wait_tier(MAX_RETRY_AFTER), (5, MAX_RETRY_AFTER));
    }

    #[test]
    fn jitter_is_deterministic_and_within_a_tenth() {
        for (tier, delay) in TIERS.iter().enumerate() {
            let j = jitter("d1", 3, tier);
            assert_eq!(j, jitter("d1", 3, tier));
            assert!(j < *delay / 10);
        }
        assert_ne!(jitter("d1", 3, 5), jitter("d2", 3, 5));
    }
}
