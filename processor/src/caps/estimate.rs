//! Admission estimates: what an event is expected to cost before any usage is reported.
//!
//! The configured estimate that matches an event most specifically wins: source and event
//! type > source only > event type only > neither (the default). Without a match the
//! estimate is zero tokens and zero cost (the event still counts against events/hour).

use schemas::config::{CapLimits, Estimate};

use super::Usage;

/// The most specific estimate for an event of `source` and `event_type`.
pub fn matching_rule<'a>(
    limits: &'a CapLimits,
    source: &str,
    event_type: &str,
) -> Option<&'a Estimate> {
    limits
        .estimates
        .iter()
        .filter(|rule| {
            rule.source.as_deref().is_none_or(|s| s == source)
                && rule.event_type.as_deref().is_none_or(|t| t == event_type)
        })
        .max_by_key(|rule| (rule.source.is_some(), rule.event_type.is_some()))
}

/// tokens = fixed + per-KiB × ⌈body / 1024⌉; cost = ⌈tokens × cost per 1k / 1000⌉.
pub fn estimate(limits: &CapLimits, source: &str, event_type: &str, body_len: usize) -> Usage {
    let Some(rule) = matching_rule(limits, source, event_type) else {
        return Usage::default();
    };
    let kib = (body_len as u128).div_ceil(1024);
    let tokens = (rule.fixed_tokens as u128).saturating_add(rule.tokens_per_kib as u128 * kib);
    let cost = (tokens * rule.cost_per_1k_tokens_micros as u128).div_ceil(1000);
    Usage {
        tokens: tokens.min(u64::MAX as u128) as u64,
        cost_micros: cost.min(u64::MAX as u128) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::config::OnWindowReset;

    fn rule(source: Option<&str>, event_type: Option<&str>, fixed: u64) -> Estimate {
        Estimate {
            source: source.map(Into::into),
            event_type: event_type.map(Into::into),
            fixed_tokens: fixed,
            tokens_per_kib: 0,
            cost_per_1k_tokens_micros: 0,
        }
    }

    fn limits(estimates: Vec<Estimate>) -> CapLimits {
        CapLimits {
            events_per_hour: None,
            tokens_per_day: None,
            cost_per_day_micros: None,
            timezone: chrono_tz::Tz::UTC,
            on_window_reset: OnWindowReset::Release,
            estimates,
        }
    }

    #[test]
    fn the_most_specific_rule_wins_whatever_the_order() {
        let l = limits(vec![
            rule(None, None, 1),
            rule(None, Some("call"), 2),
            rule(Some("twilio"), None, 3),
            rule(Some("twilio"), Some("call"), 4),
        ]);
        let fixed = |s, t| matching_rule(&l, s, t).unwrap().fixed_tokens;
        assert_eq!(fixed("twilio", "call"), 4);
        assert_eq!(fixed("twilio", "sms"), 3);
        assert_eq!(fixed("stripe", "call"), 2);
        assert_eq!(fixed("stripe", "charge"), 1);
        let no_default = limits(vec![rule(Some("twilio"), None, 3)]);
        assert!(matching_rule(&no_default, "stripe", "x").is_none());
        assert_eq!(estimate(&no_default, "stripe", "x", 10), Usage::default());
    }

    #[test]
    fn tokens_grow_per_started_kib_and_cost_rounds_up() {
        let l = limits(vec![Estimate {
            tokens_per_kib: 40,
            cost_per_1k_tokens_micros: 3_000, // 0.003 per 1k tokens
            ..rule(None, None, 1_500)
        }]);
        assert_eq!(estimate(&l, "s", "t", 0).tokens, 1_500);
        assert_eq!(estimate(&l, "s", "t", 1).tokens, 1_540);
        assert_eq!(estimate(&l, "s", "t", 1024).tokens, 1_540);
        assert_eq!(estimate(&l, "s", "t", 1025).tokens, 1_580);
        // 1540 tokens × 3000 µ / 1000 = 4620 µ exactly; 1 token costs 3 µ.
        assert_eq!(estimate(&l, "s", "t", 1).cost_micros, 4_620);
        let tiny = limits(vec![Estimate {
            cost_per_1k_tokens_micros: 1,
            ..rule(None, None, 1)
        }]);
        assert_eq!(estimate(&tiny, "s", "t", 0).cost_micros, 1);
    }
}
