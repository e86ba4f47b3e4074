//! Cap windows: the hour or the day, in a tenant's time zone, that an instant falls into.
//!
//! A window is the longest stretch of time around an instant over which its *key* stays the
//! same: for a day the local date, for an hour the local top of the hour *as an instant*
//! (the local hour taken back to UTC with the offset in force). So a day starts at local
//! midnight and lasts 23 or 25 hours across a DST change (or starts at the first instant of
//! the date when midnight itself is skipped), and an hour starts at the local top of the
//! hour, with the repeated hour of a fall-back being two windows of one hour each. Both keys
//! only grow with time, so windows tile the time line: every instant is in exactly one, and
//! each window ends where the next begins. Boundaries are found by binary search over the
//! key, to the millisecond.

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;
use schemas::time::Millis;
use serde::{Deserialize, Serialize};

const HOUR_MS: Millis = 3_600_000;
/// Instants are clamped to years 1..=9999, where chrono (and the zone database) answer.
const EARLIEST: Millis = -62_135_596_800_000;
const LATEST: Millis = 253_402_300_799_999;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WindowKind {
    Hour,
    Day,
}

impl WindowKind {
    /// Longer than any window of this kind, with room on both sides.
    fn search_span(self) -> Millis {
        match self {
            WindowKind::Hour => 3 * HOUR_MS,
            WindowKind::Day => 50 * HOUR_MS,
        }
    }
}

/// `[start_ms, end_ms)`, milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: Millis,
    pub end_ms: Millis,
}

impl Window {
    /// A window that every instant is past, for state that has seen no time yet.
    pub const NONE: Window = Window {
        start_ms: Millis::MIN,
        end_ms: Millis::MIN,
    };

    pub fn contains(&self, at: Millis) -> bool {
        self.start_ms <= at && at < self.end_ms
    }
}

/// The window of `kind` in `tz` that contains `at` (clamped to years 1 to 9999).
pub fn window_of(kind: WindowKind, tz: Tz, at: Millis) -> Window {
    let at = at.clamp(EARLIEST, LATEST);
    let here = key(kind, tz, at);
    let span = kind.search_span();
    let start = first_at_or_after(EARLIEST.max(at - span), at, |t| key(kind, tz, t) >= here);
    let end = first_at_or_after(at + 1, LATEST.min(at + span), |t| key(kind, tz, t) > here)
        .unwrap_or(LATEST + 1);
    Window {
        start_ms: start.unwrap_or(at),
        end_ms: end,
    }
}

/// A number that only grows with time and changes exactly at the window boundaries.
fn key(kind: WindowKind, tz: Tz, at: Millis) -> i64 {
    let local = local_time(tz, at);
    match kind {
        WindowKind::Day => local.date_naive().num_days_from_ce() as i64,
        WindowKind::Hour => {
            let offset_ms = local.offset().fix().local_minus_utc() as i64 * 1000;
            let naive = local.naive_local();
            let top = naive
                .with_minute(0)
                .and_then(|t| t.with_second(0))
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(naive);
            naive_millis(top) - offset_ms
        }
    }
}

fn local_time(tz: Tz, at: Millis) -> DateTime<Tz> {
    let utc = DateTime::from_timestamp_millis(at).unwrap_or_default();
    tz.from_utc_datetime(&utc.naive_utc())
}

fn naive_millis(naive: NaiveDateTime) -> Millis {
    naive.and_utc().timestamp_millis()
}

/// The first `t` in `[lo, hi]` where the monotone predicate holds.
fn first_at_or_after(lo: Millis, hi: Millis, holds: impl Fn(Millis) -> bool) -> Option<Millis> {
    if lo > hi || !holds(hi) {
        return None;
    }
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if holds(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use schemas::time::parse_rfc3339;

    fn ms(text: &str) -> Millis {
        parse_rfc3339(text).unwrap()
    }

    fn hours(w: Window) -> f64 {
        (w.end_ms - w.start_ms) as f64 / HOUR_MS as f64
    }

    #[test]
    fn utc_days_and_hours_align_to_midnight_and_the_top_of_the_hour() {
        let at = ms("2026-11-22T17:42:05.123Z");
        let day = window_of(WindowKind::Day, Tz::UTC, at);
        assert_eq!(day.start_ms, ms("2026-11-22T00:00:00Z"));
        assert_eq!(day.end_ms, ms("2026-11-23T00:00:00Z"));
        let hour = window_of(WindowKind::Hour, Tz::UTC, at);
        assert_eq!(hour.start_ms, ms("2026-11-22T17:00:00Z"));
        assert_eq!(hour.end_ms, ms("2026-11-22T18:00:00Z"));
        assert!(hour.contains(hour.start_ms) && !hour.contains(hour.end_ms));
    }

    #[test]
    fn a_zone_windows_are_local() {
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        let at = ms("2026-11-22T17:42:05Z"); // 23:12 local
        let hour = window_of(WindowKind::Hour, kolkata, at);
        assert_eq!(hour.start_ms, ms("2026-11-22T17:30:00Z"));
        let day = window_of(WindowKind::Day, kolkata, at);
        assert_eq!(day.start_ms, ms("2026-11-21T18:30:00Z"));
        assert_eq!(day.end_ms, ms("2026-11-22T18:30:00Z"));
    }

    #[test]
    fn dst_days_last_23_and_25_hours() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let spring = window_of(WindowKind::Day, ny, ms("2024-03-10T12:00:00Z"));
        assert_eq!(spring.start_ms, ms("2024-03-10T05:00:00Z"));
        assert_eq!(hours(spring), 23.0);
        let autumn = window_of(WindowKind::Day, ny, ms("2024-11-03T12:00:00Z"));
        assert_eq!(autumn.start_ms, ms("2024-11-03T04:00:00Z"));
        assert_eq!(hours(autumn), 25.0);
    }

    #[test]
    fn the_repeated_hour_of_a_fall_back_is_two_windows() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 01:30 EDT, then 01:30 EST an hour later.
        let first = window_of(WindowKind::Hour, ny, ms("2024-11-03T05:30:00Z"));
        let second = window_of(WindowKind::Hour, ny, ms("2024-11-03T06:30:00Z"));
        assert_eq!(first.start_ms, ms("2024-11-03T05:00:00Z"));
        assert_eq!(first.end_ms, second.start_ms);
        assert_eq!((hours(first), hours(second)), (1.0, 1.0));
    }

    #[test]
    fn a_skipped_midnight_starts_the_day_at_the_transition() {
        // Santiago moved clocks from 00:00 to 01:00 on 2023-09-03 (UTC-4 to UTC-3).
        let santiago: Tz = "America/Santiago".parse().unwrap();
        let day = window_of(WindowKind::Day, santiago, ms("2023-09-03T12:00:00Z"));
        assert_eq!(day.start_ms, ms("2023-09-03T04:00:00Z"));
        assert_eq!(hours(day), 23.0);
    }

    #[test]
    fn a_half_hour_shift_makes_a_half_hour_window() {
        // Lord Howe: 02:00 standard (+10:30) becomes 02:30 summer time (+11).
        let lord_howe: Tz = "Australia/Lord_Howe".parse().unwrap();
        let shift = ms("2023-09-30T15:30:00Z");
        let before = window_of(WindowKind::Hour, lord_howe, shift - 1);
        let after = window_of(WindowKind::Hour, lord_howe, shift);
        assert_eq!(before.end_ms, shift);
        assert_eq!(after.start_ms, shift);
        assert_eq!(hours(after), 0.5);
    }

    #[test]
    fn extreme_instants_are_clamped() {
        let w = window_of(WindowKind::Day, Tz::UTC, Millis::MAX);
        assert!(w.start_ms <= LATEST && w.end_ms > LATEST);
        let w = window_of(WindowKind::Hour, Tz::UTC, Millis::MIN);
        assert_eq!(w.start_ms, EARLIEST);
    }

    const ZONES: [&str; 10] = [
        "UTC",
        "America/New_York",
        "Europe/Paris",
        "Europe/London",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Pacific/Apia",
        "America/St_Johns",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn windows_tile_time(
            zone in 0..ZONES.len(),
            day in any::<bool>(),
            // 1970 to 2100
            at in 0i64..4_102_444_800_000,
        ) {
            let tz: Tz = ZONES[zone].parse().unwrap();
            let kind = if day { WindowKind::Day } else { WindowKind::Hour };
            let w = window_of(kind, tz, at);
            prop_assert!(w.contains(at));
            // Every instant of the window maps to this window, the next one starts at its end.
            prop_assert_eq!(window_of(kind, tz, w.start_ms), w);
            prop_assert_eq!(window_of(kind, tz, w.end_ms - 1), w);
            prop_assert_eq!(window_of(kind, tz, w.start_ms + (w.end_ms - w.start_ms) / 2), w);
            prop_assert_eq!(window_of(kind, tz, w.end_ms).start_ms, w.end_ms);
            prop_assert_eq!(window_of(kind, tz, w.start_ms - 1).end_ms, w.start_ms);
            let longest = if day { 26 * HOUR_MS } else { HOUR_MS };
            prop_assert!(w.end_ms - w.start_ms <= longest, "{:?} lasts {} h", w, hours(w));
        }
    }
}
