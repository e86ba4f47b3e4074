//! Helpers shared by the caps tests.

use chrono_tz::Tz;
use schemas::config::{CapLimits, OnWindowReset};
use schemas::raw::RawMeta;
use schemas::time::{parse_rfc3339, Millis};

/// Limits with the given caps, UTC windows, release on reset, no estimates.
pub fn caps(events: Option<u64>, tokens: Option<u64>, cost: Option<u64>) -> CapLimits {
    CapLimits {
        events_per_hour: events,
        tokens_per_day: tokens,
        cost_per_day_micros: cost,
        timezone: Tz::UTC,
        on_window_reset: OnWindowReset::Release,
        estimates: Vec::new(),
    }
}

pub fn at(text: &str) -> Millis {
    parse_rfc3339(text).unwrap()
}

pub fn meta(tenant: &str, entity: &str, event_id: &str) -> RawMeta {
    RawMeta {
        tenant: tenant.into(),
        source: "orders".into(),
        scheme: "hmac".into(),
        event_id: event_id.into(),
        event_type: "order.updated".into(),
        entity: entity.into(),
        occurred_at: 0,
        received_at: 0,
        content_type: "application/json".into(),
        key_id: "k1".into(),
        event_id_derived: false,
        redrive_id: None,
    }
}
