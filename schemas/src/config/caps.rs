//! Per-tenant caps (`[tenants.caps]`) and the loop/spike breaker (`[tenants.breaker]`).
//!
//! ```toml
//! [tenants.caps]
//! events_per_hour = 10000
//! tokens_per_day = 2000000
//! cost_per_day = "12.50"            # decimal string, in the tenant's billing currency
//! timezone = "Europe/Paris"         # windows start at local midnight / top of the hour
//! on_window_reset = "release"       # or "keep" (deferred events wait for a manual redrive)
//! [[tenants.caps.estimates]]        # admission estimates; the most specific match wins
//! source = "twilio"
//! event_type = "completed"
//! fixed_tokens = 1500
//! tokens_per_kib = 40
//! cost_per_1k_tokens = "0.003"
//! [tenants.breaker]
//! entity_per_minute = 300
//! tenant_per_minute = 20000
//! spike_multiple = 10.0
//! cooldown_secs = 300
//! ```
//!
//! The file keeps what was written (decimal strings, zone names); [`CapsConfig::resolve`]
//! turns it into [`CapLimits`] (integer micro-units, a parsed [`Tz`]) or lists every
//! problem, which is what [`Config::problems`](super::Config::problems) reports.

use std::collections::HashSet;
use std::str::FromStr;

use chrono_tz::Tz;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Deserialize;

/// Micro-units per currency unit: costs are integers so sums are exact.
pub const MICROS_PER_UNIT: u64 = 1_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsConfig {
    /// Events admitted per hour window (none: no cap). 0 defers every event.
    #[serde(default)]
    pub events_per_hour: Option<u64>,
    /// Tokens (estimated, corrected by usage reports) per day window.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    /// Cost per day window, a decimal string in currency units (`"12.50"`).
    #[serde(default)]
    pub cost_per_day: Option<String>,
    /// IANA time zone the windows align to.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub on_window_reset: OnWindowReset,
    #[serde(default)]
    pub estimates: Vec<EstimateConfig>,
}

/// What happens to events deferred by a cap when its window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnWindowReset {
    /// Re-admit them, in order, through the caps again.
    #[default]
    Release,
    /// Leave them in `deferred` for a manual redrive.
    Keep,
}

/// One admission estimate: tokens = `fixed_tokens` + `tokens_per_kib` × body KiB (rounded
/// up), cost = tokens × `cost_per_1k_tokens` / 1000 (rounded up, in micro-units).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateConfig {
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub fixed_tokens: u64,
    #[serde(default)]
    pub tokens_per_kib: u64,
    /// Decimal string in currency units.
    #[serde(default)]
    pub cost_per_1k_tokens: Option<String>,
}

/// The caps of one tenant, checked and in integer units.
#[derive(Debug, Clone, PartialEq)]
pub struct CapLimits {
    pub events_per_hour: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub cost_per_day_micros: Option<u64>,
    pub timezone: Tz,
    pub on_window_reset: OnWindowReset,
    pub estimates: Vec<Estimate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub source: Option<String>,
    pub event_type: Option<String>,
    pub fixed_tokens: u64,
    pub tokens_per_kib: u64,
    pub cost_per_1k_tokens_micros: u64,
}

impl CapsConfig {
    /// The checked limits, or every problem as `key: message` (keys relative to the
    /// `caps` table, e.g. `estimates[1].cost_per_1k_tokens: …`).
    pub fn resolve(&self) -> Result<CapLimits, Vec<String>> {
        let mut problems = Vec::new();
        let cost_per_day_micros = match &self.cost_per_day {
            None => None,
            Some(text) => parse_micros(text)
                .map_err(|e| problems.push(format!("cost_per_day: {e}")))
                .ok(),
        };
        let timezone = Tz::from_str(self.timezone.trim())
            .map_err(|_| {
                problems.push(format!(
                    "timezone: `{}` is not an IANA time zone name (e.g. `UTC`, `Europe/Paris`)",
                    self.timezone
                ))
            })
            .unwrap_or(Tz::UTC);
        let mut estimates = Vec::new();
        let mut seen = HashSet::new();
        for (i, rule) in self.estimates.iter().enumerate() {
            let scope = (rule.source.as_deref(), rule.event_type.as_deref());
            if !seen.insert(scope) {
                problems.push(format!(
                    "estimates[{i}]: another estimate has the same source and event_type"
                ));
            }
            let cost = match &rule.cost_per_1k_tokens {
                None => Ok(0),
                Some(text) => parse_micros(text),
            };
            match cost {
                Ok(cost_per_1k_tokens_micros) => estimates.push(Estimate {
                    source: rule.source.clone(),
                    event_type: rule.event_type.clone(),
                    fixed_tokens: rule.fixed_tokens,
                    tokens_per_kib: rule.tokens_per_kib,
                    cost_per_1k_tokens_micros,
                }),
                Err(e) => problems.push(format!("estimates[{i}].cost_per_1k_tokens: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(CapLimits {
                events_per_hour: self.events_per_hour,
                tokens_per_day: self.tokens_per_day,
                cost_per_day_micros,
                timezone,
                on_window_reset: self.on_window_reset,
                estimates,
            })
        } else {
            Err(problems)
        }
    }
}

/// Reads a non-negative decimal amount with at most 6 decimals (`"12.50"`, `"0.003"`, `"7"`)
/// into micro-units. No sign, exponent, separator or surrounding text is accepted.
pub fn parse_micros(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("`{text}` is negative"));
    }
    let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (t.contains('.') && !digits(fraction)) {
        return Err(format!(
            "`{text}` is not a decimal amount like \"12.50\" (digits, optionally a `.` and up to 6 decimals)"
        ));
    }
    if fraction.len() > 6 {
        return Err(format!(
            "`{text}` has more than 6 decimals (amounts are kept in millionths)"
        ));
    }
    Decimal::from_str_exact(t)
        .ok()
        .and_then(|d| d.checked_mul(Decimal::from(MICROS_PER_UNIT)))
        .and_then(|micros| micros.to_u64())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The loop/spike breaker of one tenant: events per minute (in stream time) beyond a
/// threshold open it, deferring events, until `cooldown_secs` later a probe is let through.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Events per minute on one entity that open that entity's breaker (a loop).
    #[serde(default = "default_entity_per_minute")]
    pub entity_per_minute: u64,
    /// Events per minute on the whole tenant that open the tenant's breaker (none: no limit).
    #[serde(default)]
    pub tenant_per_minute: Option<u64>,
    /// Open the tenant's breaker when its rate exceeds this multiple of its baseline.
    #[serde(default)]
    pub spike_multiple: Option<f64>,
    /// The baseline (events per minute) is never taken below this floor.
    #[serde(default = "default_min_baseline")]
    pub spike_min_baseline_per_minute: u64,
    /// Half-life of the exponentially weighted baseline, in minutes.
    #[serde(default = "default_half_life")]
    pub baseline_half_life_mins: u64,
    /// How long an open breaker defers before it lets a probe through (half-open).
    #[serde(default = "default_cooldown")]
    pub cooldown_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            entity_per_minute: default_entity_per_minute(),
            tenant_per_minute: None,
            spike_multiple: None,
            spike_min_baseline_per_minute: default_min_baseline(),
            baseline_half_life_mins: default_half_life(),
            cooldown_secs: default_cooldown(),
        }
    }
}

impl BreakerConfig {
    /// Every problem as `key: message`, keys relative to the `breaker` table.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let positive = [
            ("entity_per_minute", Some(self.entity_per_minute)),
            ("tenant_per_minute", self.tenant_per_minute),
            (
                "spike_min_baseline_per_minute",
                Some(self.spike_min_baseline_per_minute),
            ),
            (
                "baseline_half_life_mins",
                Some(self.baseline_half_life_mins),
            ),
            ("cooldown_secs", Some(self.cooldown_secs)),
        ];
        for (key, value) in positive {
            if value == Some(0) {
                p.push(format!("{key}: must be positive"));
            }
        }
        if let Some(multiple) = self.spike_multiple {
            if !(multiple.is_finite() && multiple > 1.0) {
                p.push(format!(
                    "spike_multiple: {multiple} (use a number above 1, e.g. 10.0)"
                ));
            }
        }
        p
    }
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_entity_per_minute() -> u64 {
    300
}
fn default_min_baseline() -> u64 {
    60
}
fn default_half_life() -> u64 {
    60
}
fn default_cooldown() -> u64 {
    300
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_to_micros() {
        assert_eq!(parse_micros("12.50"), Ok(12_500_000));
        assert_eq!(parse_micros("7"), Ok(7_000_000));
        assert_eq!(parse_micros(" 0.000001 "), Ok(1));
        assert_eq!(parse_micros("0"), Ok(0));
        assert_eq!(parse_micros("18446744073709.551615"), Ok(u64::MAX));
    }

    #[test]
    fn bad_amounts_say_why() {
        for (text, why) in [
            ("-1", "negative"),
            ("1.0000001", "more than 6 decimals"),
            ("abc", "not a decimal amount"),
            ("", "not a decimal amount"),
            (".5", "not a decimal amount"),
            ("5.", "not a decimal amount"),
            ("1e3", "not a decimal amount"),
            ("+1", "not a decimal amount"),
            ("1_000", "not a decimal amount"),
            ("1.2.3", "not a decimal amount"),
            ("18446744073710", "too large"),
            ("99999999999999999999999999999999", "too large"),
        ] {
            let err = parse_micros(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    fn caps(toml_text: &str) -> CapsConfig {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(toml_text))
            .extract()
            .unwrap()
    }

    #[test]
    fn resolve_converts_units_and_defaults_to_utc_release() {
        let limits = caps(
            r#"
            events_per_hour = 100
            cost_per_day = "12.50"
            [[estimates]]
            source = "twilio"
            fixed_tokens = 10
            cost_per_1k_tokens = "0.003"
            "#,
        )
        .resolve()
        .unwrap();
        assert_eq!(limits.events_per_hour, Some(100));
        assert_eq!(limits.tokens_per_day, None);
        assert_eq!(limits.cost_per_day_micros, Some(12_500_000));
        assert_eq!(limits.timezone, Tz::UTC);
        assert_eq!(limits.on_window_reset, OnWindowReset::Release);
        assert_eq!(limits.estimates[0].cost_per_1k_tokens_micros, 3_000);
    }

    #[test]
    fn resolve_lists_every_problem_with_its_key() {
        let problems = caps(
            r#"
            cost_per_day = "-3"
            timezone = "Mars/Olympus"
            on_window_reset = "keep"
            [[estimates]]
            event_type = "x"
            cost_per_1k_tokens = "lots"
            [[estimates]]
            event_type = "x"
            "#,
        )
        .resolve()
        .unwrap_err()
        .join("\n");
        for expected in [
            "cost_per_day: `-3` is negative",
            "timezone: `Mars/Olympus` is not an IANA",
            "estimates[0].cost_per_1k_tokens: `lots`",
            "estimates[1]: another estimate has the same source and event_type",
        ] {
            assert!(
                problems.contains(expected),
                "missing `{expected}`:\n{problems}"
            );
        }
    }

    #[test]
    fn breaker_defaults_are_valid_and_zeroes_are_not() {
        assert!(BreakerConfig::default().problems().is_empty());
        let bad = BreakerConfig {
            entity_per_minute: 0,
            cooldown_secs: 0,
            spike_multiple: Some(0.5),
            ..BreakerConfig::default()
        };
        let problems = bad.problems().join("\n");
        assert!(problems.contains("entity_per_minute: must be positive"));
        assert!(problems.contains("cooldown_secs: must be positive"));
        assert!(problems.contains("spike_multiple: 0.5"));
    }
}
