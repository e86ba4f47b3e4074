//! Timestamps: milliseconds since the Unix epoch inside hookstream, RFC 3339 UTC with
//! millisecond precision (`2026-11-22T10:00:00.123Z`) wherever a person or another system
//! reads them.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

pub fn to_rfc3339(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|d| d.timestamp_millis())
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z): later times could not
/// round-trip through the `raw` headers.
pub const MAX_EVENT_TIME: Millis = 253_402_300_799_999;

/// Reads a provider's event time: RFC 3339, or a Unix timestamp in seconds or milliseconds
/// (numbers above 10^11 are taken as milliseconds; 10^11 s is the year 5138). Times after
/// the year 9999 are not event times.
pub fn parse_event_time(value: &serde_json::Value) -> Option<Millis> {
    match value {
        serde_json::Value::String(s) => {
            parse_rfc3339(s).or_else(|| s.trim().parse::<f64>().ok().and_then(from_unix_number))
        }
        serde_json::Value::Number(n) => n.as_f64().and_then(from_unix_number),
        _ => None,
    }
}

fn from_unix_number(n: f64) -> Option<Millis> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let ms = if n >= 1e11 { n } else { n * 1000.0 };
    (ms <= MAX_EVENT_TIME as f64).then_some(ms as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_time_accepts_rfc3339_seconds_and_millis() {
        let expected = 1_700_000_000_000;
        assert_eq!(
            parse_event_time(&json!("2023-11-14T22:13:20Z")),
            Some(expected)
        );
        assert_eq!(
            parse_event_time(&json!("2023-11-14T23:13:20+01:00")),
            Some(expected)
        );
        assert_eq!(parse_event_time(&json!(1_700_000_000)), Some(expected));
        assert_eq!(
            parse_event_time(&json!(1_700_000_000_000i64)),
            Some(expected)
        );
        assert_eq!(parse_event_time(&json!("1700000000")), Some(expected));
        assert_eq!(parse_event_time(&json!("yesterday")), None);
        assert_eq!(parse_event_time(&json!(-5)), None);
        assert_eq!(
            parse_event_time(&json!(MAX_EVENT_TIME)),
            Some(MAX_EVENT_TIME)
        );
        assert_eq!(parse_event_time(&json!(999_999_999_999_999i64)), None);
        assert_eq!(
            parse_rfc3339(&to_rfc3339(MAX_EVENT_TIME)),
            Some(MAX_EVENT_TIME),
            "every accepted time round-trips through the raw headers"
        );
        assert_eq!(parse_event_time(&json!(null)), None);
    }

    #[test]
    fn rfc3339_round_trips_with_millis() {
        let ms = 1_700_000_000_123;
        assert_eq!(to_rfc3339(ms), "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_rfc3339(&to_rfc3339(ms)), Some(ms));
    }
}
