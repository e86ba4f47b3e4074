//! Per-endpoint circuit breakers: an endpoint that keeps failing stops costing attempts (and
//! the time they take) until it may have recovered.
//!
//! * **Closed**: requests go out. [`FAILURES_TO_OPEN`] failures in a row (timeouts,
//!   connection failures, 5xx, 408, 429 without `Retry-After`) open it, and so does a
//!   failure ratio of at least half over the last [`RATIO_WINDOW`] (with at least
//!   [`RATIO_MIN_ATTEMPTS`] attempts in it): an endpoint failing every other request is as
//!   unhealthy as one failing five in a row.
//! * **Open** for a cooldown (the endpoint's `breaker_cooldown_secs`, [`COOLDOWN`] by default,
//!   doubling with each reopening up to [`MAX_COOLDOWN`] or the cooldown, the longer): no request goes out; each delivery waits in a retry tier until the
//!   cooldown ends, without using up an attempt.
//! * **Half-open** after the cooldown: one probe goes out; its success closes the breaker,
//!   its failure opens it again.
//!
//! A **pause** the endpoint asked for (429/503 with `Retry-After`) gates it the same way
//! until it ends, whatever the breaker's phase.
//!
//! An answer that is the endpoint speaking (2xx, 3xx, other 4xx) counts as a success here:
//! the endpoint is up. The state is per process (wall clock), not part of any replay.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FAILURES_TO_OPEN: u32 = 5;
pub const COOLDOWN: Duration = Duration::from_secs(30);
pub const MAX_COOLDOWN: Duration = Duration::from_secs(600);
pub const RATIO_WINDOW: Duration = Duration::from_secs(60);
pub const RATIO_MIN_ATTEMPTS: usize = 20;
/// Outcomes remembered for the ratio, at most.
const RATIO_MAX_ATTEMPTS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone)]
struct Breaker {
    phase: Phase,
    failures: u32,
    /// Openings since it was last closed.
    opened: u32,
    /// The endpoint asked to wait (429/503 with `Retry-After`) until then.
    paused_until: Option<Instant>,
    /// Recent outcomes (when, failed), for the failure ratio.
    recent: std::collections::VecDeque<(Instant, bool)>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            phase: Phase::Closed,
            failures: 0,
            opened: 0,
            paused_until: None,
            recent: std::collections::VecDeque::new(),
        }
    }
}

/// What the breaker says about sending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Send,
    /// Do not send before this long.
    Wait(Duration),
}

impl Breaker {
    fn gate(&mut self, now: Instant) -> Gate {
        if let Some(until) = self.paused_until.filter(|until| now < *until) {
            return Gate::Wait(until - now);
        }
        match self.phase {
            Phase::Closed => Gate::Send,
            Phase::Open { until } if now < until => Gate::Wait(until - now),
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                self.phase = Phase::HalfOpen { probing: true };
                Gate::Send
            }
            Phase::HalfOpen { probing: true } => Gate::Wait(Duration::from_secs(1)),
        }
    }

    fn record(&mut self, failed: bool, cooldown: Duration, now: Instant) -> bool {
        self.recent.push_back((now, failed));
        while self.recent.len() > RATIO_MAX_ATTEMPTS
            || self
                .recent
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > RATIO_WINDOW)
        {
            self.recent.pop_front();
        }
        if !failed {
            let probed = matches!(self.phase, Phase::HalfOpen { .. });
            let recent = if probed {
                Default::default() // a recovered endpoint starts a new window
            } else {
                std::mem::take(&mut self.recent)
            };
            *self = Breaker {
                paused_until: self.paused_until,
                recent,
                ..Breaker::default()
            };
            return false;
        }
        self.failures += 1;
        let reopen = matches!(self.phase, Phase::HalfOpen { .. });
        let failing = self.recent.iter().filter(|(_, failed)| *failed).count();
        let ratio = self.recent.len() >= RATIO_MIN_ATTEMPTS && failing * 2 >= self.recent.len();
        let closed = self.phase == Phase::Closed;
        if reopen || (closed && (self.failures >= FAILURES_TO_OPEN || ratio)) {
            let cooldown = cooldown
                .saturating_mul(1 << self.opened.min(10))
                .min(MAX_COOLDOWN.max(cooldown));
            self.opened += 1;
            self.phase = Phase::Open {
                until: now + cooldown,
            };
            return true;
        }
        false
    }
}

/// The breakers of every endpoint, by (tenant, endpoint).
#[derive(Default)]
pub struct Breakers {
    by_endpoint: Mutex<HashMap<(String, String), Breaker>>,
}

impl Breakers {
    pub fn gate(&self, tenant: &str, endpoint: &str, now: Instant) -> Gate {
        let mut all = self.by_endpoint.lock().expect("breakers lock");
        all.entry((tenant.to_owned(), endpoint.to_owned()))
            .or_default()
            .gate(now)
    }

    /// How long the endpoint is closed to requests (open breaker or pause), without
    /// changing its state.
    pub fn closed_for(&self, tenant: &str, endpoint: &str, now: Instant) -> Option<Duration> {
        let all = self.by_endpoint.lock().expect("breakers lock");
        let breaker = all.get(&(tenant.to_owned(), endpoint.to_owned()))?;
        let open = match breaker.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        };
        [open, breaker.paused_until]
            .into_iter()
            .flatten()
            .filter(|until| *until > now)
            .max()
            .map(|until| until - now)
    }

    /// The endpoint asked for a pause (`Retry-After`): no request to it before `until`.
    pub fn pause(&self, tenant: &str, endpoint: &str, until: Instant) {
        let mut all = self.by_endpoint.lock().expect("breakers lock");
        let breaker = all
            .entry((tenant.to_owned(), endpoint.to_owned()))
            .or_default();
        breaker.paused_until = breaker.paused_until.max(Some(until));
    }

    /// Records an attempt's result; returns whether the breaker opened (for `cooldown`).
    pub fn record(
        &self,
        tenant: &str,
        endpoint: &str,
        failed: bool,
        cooldown: Duration,
        now: Instant,
    ) -> bool {
        let mut all = self.by_endpoint.lock().expect("breakers lock");
        let opened = all
            .entry((tenant.to_owned(), endpoint.to_owned()))
            .or_default()
            .record(failed, cooldown, now);
        let open = matches!(
            all[&(tenant.to_owned(), endpoint.to_owned())].phase,
            Phase::Open { .. }
        );
        metrics::gauge!("hookstream_deliver_breaker_open", "tenant" => tenant.to_owned(), "endpoint" => endpoint.to_owned())
            .set(if open { 1.0 } else { 0.0 });
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_ratio_of_half_opens_it_without_failures_in_a_row() {
        let t0 = Instant::now();
        let breakers = Breakers::default();
        let mut opened_at = None;
        for i in 0..RATIO_MIN_ATTEMPTS {
            let at = t0 + Duration::from_millis(i as u64);
            if breakers.record("t", "e", i % 2 == 1, COOLDOWN, at) {
                opened_at = Some(i);
            }
        }
        assert_eq!(
            opened_at,
            Some(RATIO_MIN_ATTEMPTS - 1),
            "on the 20th attempt"
        );
        let healthy = Breakers::default();
        for i in 0..100 {
            let at = t0 + Duration::from_millis(i);
            assert!(
                !healthy.record("t", "e", i % 3 == 0, COOLDOWN, at),
                "a third failing"
            );
        }
        let slow = Breakers::default();
        for i in 0..40 {
            let at = t0 + Duration::from_secs(i * 4);
            assert!(
                !slow.record("t", "e", i % 2 == 1, COOLDOWN, at),
                "at most 15 attempts a minute: below the minimum"
            );
        }
    }

    #[test]
    fn opens_after_failures_in_a_row_probes_after_the_cooldown_and_backs_off() {
        let t0 = Instant::now();
        let breakers = Breakers::default();
        for i in 0..FAILURES_TO_OPEN {
            assert_eq!(breakers.gate("t", "e", t0), Gate::Send);
            let opened = breakers.record("t", "e", true, COOLDOWN, t0);
            assert_eq!(opened, i + 1 == FAILURES_TO_OPEN);
        }
        assert_eq!(breakers.gate("t", "e", t0), Gate::Wait(COOLDOWN));
        assert_eq!(breakers.gate("t", "other", t0), Gate::Send, "per endpoint");
        let later = t0 + COOLDOWN;
        assert_eq!(breakers.gate("t", "e", later), Gate::Send, "the probe");
        assert!(
            matches!(breakers.gate("t", "e", later), Gate::Wait(_)),
            "one probe at a time"
        );
        assert!(
            breakers.record("t", "e", true, COOLDOWN, later),
            "a failed probe reopens"
        );
        assert_eq!(breakers.gate("t", "e", later), Gate::Wait(COOLDOWN * 2));
        let probe = later + COOLDOWN * 2;
        assert_eq!(breakers.gate("t", "e", probe), Gate::Send);
        breakers.record("t", "e", false, COOLDOWN, probe);
        assert_eq!(breakers.gate("t", "e", probe), Gate::Send, "closed again");
        breakers.record("t", "e", true, COOLDOWN, probe);
        assert_eq!(
            breakers.gate("t", "e", probe),
            Gate::Send,
            "one failure does not open"
        );
    }

    #[test]
    fn successes_in_between_keep_it_closed() {
        let t0 = Instant::now();
        let breakers = Breakers::default();
        for _ in 0..10 {
            for _ in 0..FAILURES_TO_OPEN - 1 {
                breakers.record("t", "e", true, COOLDOWN, t0);
            }
            breakers.record("t", "e", false, COOLDOWN, t0);
        }
        assert_eq!(breakers.gate("t", "e", t0), Gate::Send);
    }
}
