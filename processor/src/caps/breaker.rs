//! The loop/spike breaker: counts a tenant's arrivals per entity and for the whole tenant
//! over the last minute (per-second buckets, in the stream time passed in), and defers
//! events while a breaker is open.
//!
//! * **Closed** → **Open** when the minute's count goes over the threshold: the entity's
//!   `entity_per_minute` (a loop), or for the tenant the lower of `tenant_per_minute` and
//!   `spike_multiple` × its baseline (a spike). Opening emits one alert, and the event that
//!   tripped it is deferred.
//! * **Open** defers every event for `cooldown_secs`; the first event after that is a probe:
//!   it is admitted and the breaker turns **HalfOpen**.
//! * **HalfOpen** admits events while those since the probe stay within the threshold; going
//!   over re-opens it (silently: the same incident), a quiet minute closes it.
//!
//! An entity's breaker defers only that entity's events (an entity lives on one partition).
//! The tenant's breaker counts **tenant-wide**: its own arrivals plus every other partition's,
//! as their last budget shares report them ([`OtherShares::arrivals_since`]); so, like the
//! caps, it can let through at most the other partitions' arrivals during the shares'
//! propagation delay. A partition that opens the tenant's breaker while another partition's
//! is already open does so silently (one `spike_suspected` per incident). Each partition
//! keeps a baseline of its own arrivals, an exponentially weighted average of its events per
//! completed minute (integer arithmetic, so restores on any machine decide alike), and
//! publishes it with its share; the tenant's baseline is the sum over partitions, never taken
//! below `spike_min_baseline_per_minute`. (Summing per-partition baselines, rather than
//! folding the others' arrivals into one partition's minutes, keeps a partition that rarely
//! sees the tenant from judging the tenant's usual traffic a spike.)
//! The entity tracks are a working set: the task keeps each in a store key of its own, puts
//! the tracks of the entities it observes in [`BreakerState::entities`] just before, and
//! forgets a track once it is idle and holds nothing back ([`EntityTrack::evictable_at`]).

use std::collections::{BTreeMap, VecDeque};

use schemas::config::BreakerConfig;
use schemas::records::AlertRecord;
use schemas::time::Millis;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::alerts::breaker_opened;
use super::budget::OtherShares;

const MINUTE_MS: Millis = 60_000;
/// Baseline fixed point: thousandths of an event per minute; decay in millionths.
const MILLI: u64 = 1_000;
const PPM: u64 = 1_000_000;

/// Arrivals per second over the last minute.
///
/// In JSON (the `budget` topic) a meter is `{"seconds": [[second, arrivals], …]}`; in binary
/// forms (the store) it is the first second and then every second's count up to the newest,
/// zeros included: at most 60 small numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meter {
    /// (second, arrivals), ascending, only the last 60 seconds.
    seconds: VecDeque<(i64, u64)>,
}

#[derive(Serialize, Deserialize)]
struct Pairs {
    seconds: VecDeque<(i64, u64)>,
}

impl Serialize for Meter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let pairs = Pairs {
                seconds: self.seconds.clone(),
            };
            return pairs.serialize(serializer);
        }
        let first = self.seconds.front().map_or(0, |&(s, _)| s);
        let mut counts = Vec::with_capacity(60);
        for &(second, n) in &self.seconds {
            counts.resize((second - first) as usize, 0);
            counts.push(n);
        }
        (first, counts).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Meter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let Pairs { seconds } = Pairs::deserialize(deserializer)?;
            return Ok(Meter { seconds });
        }
        let (first, counts) = <(i64, Vec<u64>)>::deserialize(deserializer)?;
        if counts.len() > 60 {
            return Err(serde::de::Error::invalid_length(
                counts.len(),
                &"at most 60 seconds",
            ));
        }
        let seconds = (first..).zip(counts).filter(|&(_, n)| n > 0).collect();
        Ok(Meter { seconds })
    }
}

impl Meter {
    /// Counts an arrival; one older than the newest second by a minute or more is ignored.
    pub fn record(&mut self, at: Millis) {
        let second = at.div_euclid(1000);
        let horizon = second.max(self.newest_second().unwrap_or(second)) - 59;
        self.forget_before(horizon);
        if second < horizon {
            return;
        }
        match self.seconds.binary_search_by_key(&second, |&(s, _)| s) {
            Ok(i) => self.seconds[i].1 += 1,
            Err(i) => self.seconds.insert(i, (second, 1)),
        }
    }

    /// Arrivals in the minute ending with `at`'s second.
    pub fn per_minute(&self, at: Millis) -> u64 {
        self.since(Millis::MIN, at)
    }

    /// Arrivals from `from`'s second to `at`'s second, within the last minute.
    pub fn since(&self, from: Millis, at: Millis) -> u64 {
        let (from, to) = (from.div_euclid(1000), at.div_euclid(1000));
        let from = from.max(to - 59);
        self.seconds
            .iter()
            .filter(|&&(s, _)| from <= s && s <= to)
            .map(|&(_, n)| n)
            .sum()
    }

    fn newest_second(&self) -> Option<i64> {
        self.seconds.back().map(|&(s, _)| s)
    }

    fn forget_before(&mut self, second: i64) {
        while self.seconds.front().is_some_and(|&(s, _)| s < second) {
            self.seconds.pop_front();
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Closed,
    Open {
        until: Millis,
    },
    HalfOpen {
        since: Millis,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Pass,
    Hold,
    Opened,
}

/// Moves a breaker on at `at`; `arrivals(from)` counts the arrivals from `from` to `at`
/// within the last minute.
fn step(
    phase: &mut Phase,
    arrivals: impl Fn(Millis) -> u64,
    threshold: u64,
    at: Millis,
    cooldown: Millis,
) -> Step {
    let open = Phase::Open {
        until: at.saturating_add(cooldown),
    };
    match *phase {
        Phase::Closed if arrivals(Millis::MIN) > threshold => {
            *phase = open;
            Step::Opened
        }
        Phase::Closed => Step::Pass,
        Phase::Open { until } if at < until => Step::Hold,
        Phase::Open { .. } => {
            *phase = Phase::HalfOpen { since: at };
            Step::Pass
        }
        Phase::HalfOpen { since } if arrivals(since) > threshold => {
            *phase = open;
            Step::Hold
        }
        Phase::HalfOpen { since } if at >= since.saturating_add(MINUTE_MS) => {
            *phase = Phase::Closed;
            Step::Pass
        }
        Phase::HalfOpen { .. } => Step::Pass,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityTrack {
    pub meter: Meter,
    pub phase: Phase,
    pub last_seen: Millis,
}

impl EntityTrack {
    /// From when forgetting the track changes nothing: it has been idle for a minute (its
    /// meter is empty, a half-open breaker would close) and an open breaker's cooldown is over.
    pub fn evictable_at(&self) -> Millis {
        let idle = self.last_seen.saturating_add(MINUTE_MS);
        match self.phase {
            Phase::Open { until } => idle.max(until),
            Phase::Closed | Phase::HalfOpen { .. } => idle,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantTrack {
    pub meter: Meter,
    pub phase: Phase,
    /// Thousandths of an event per minute.
    pub baseline_milli: u64,
    /// The minute being counted (None before the first event) and its arrivals.
    pub minute: Option<i64>,
    pub minute_count: u64,
}

impl TenantTrack {
    /// Counts an arrival here (and this partition's baseline).
    fn record(&mut self, config: &BreakerConfig, at: Millis) {
        let minute = at.div_euclid(MINUTE_MS);
        match self.minute {
            Some(current) if minute > current => {
                let keep = decay_ppm(config.baseline_half_life_mins);
                let blend = |baseline: u64, count: u64| {
                    ((baseline as u128 * keep as u128
                        + count as u128 * MILLI as u128 * (PPM - keep) as u128)
                        / PPM as u128) as u64
                };
                self.baseline_milli = blend(self.baseline_milli, self.minute_count);
                // Quiet minutes in between decay the baseline; it reaches 0 in a bounded count.
                for _ in 1..(minute - current).min(100_000) {
                    if self.baseline_milli == 0 {
                        break;
                    }
                    self.baseline_milli = blend(self.baseline_milli, 0);
                }
                self.minute = Some(minute);
                self.minute_count = 0;
            }
            None => self.minute = Some(minute),
            Some(_) => {}
        }
        self.minute_count += 1;
        self.meter.record(at);
    }

    /// The tenant's threshold in events per minute, if it has one; `others_baseline_milli`:
    /// the other partitions' baselines.
    pub fn threshold(&self, config: &BreakerConfig, others_baseline_milli: u64) -> Option<u64> {
        let spike = config.spike_multiple.map(|multiple| {
            let floor = config.spike_min_baseline_per_minute.saturating_mul(MILLI);
            let tenant = self.baseline_milli.saturating_add(others_baseline_milli);
            let baseline = tenant.max(floor) as f64 / MILLI as f64;
            (multiple * baseline).ceil() as u64
        });
        match (config.tenant_per_minute, spike) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The share of the baseline kept per minute, in millionths: 0.5^(1 / half-life).
fn decay_ppm(half_life_mins: u64) -> u64 {
    let keep = 0.5f64.powf(1.0 / half_life_mins.max(1) as f64);
    (keep * PPM as f64).round() as u64
}

/// What held an event back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The entity's breaker is open (`loop_suspected`).
    Entity,
    /// The tenant's breaker is open (`spike_suspected`).
    Tenant,
}

/// One tenant's breakers, kept with its state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    pub tenant: TenantTrack,
    /// The tracks of the entities being observed (stored under keys of their own; read only
    /// from stores written before that layout).
    #[serde(default)]
    pub entities: BTreeMap<String, EntityTrack>,
}

impl BreakerState {
    /// Counts one arrival on `entity` at `at`; returns what holds it back (None: admit) and
    /// the alerts of breakers that opened. `others`: the other partitions' last shares.
    pub fn observe(
        &mut self,
        config: &BreakerConfig,
        tenant: &str,
        entity: &str,
        at: Millis,
        others: &OtherShares,
    ) -> (Option<Held>, Vec<AlertRecord>) {
        let cooldown = (config.cooldown_secs.saturating_mul(1000)).min(i64::MAX as u64) as Millis;
        let mut alerts = Vec::new();
        let track = self.entities.entry(entity.to_owned()).or_default();
        track.meter.record(at);
        track.last_seen = track.last_seen.max(at);
        let threshold = config.entity_per_minute;
        let meter = &track.meter;
        let entity_step = step(
            &mut track.phase,
            |from| meter.since(from, at),
            threshold,
            at,
            cooldown,
        );
        if entity_step == Step::Opened {
            let rate = track.meter.per_minute(at);
            alerts.push(breaker_opened(tenant, Some(entity), threshold, rate, at));
        }
        self.tenant.record(config, at);
        let tenant_step = match self.tenant.threshold(config, others.baseline_milli()) {
            Some(threshold) => {
                let t = &mut self.tenant;
                let meter = &t.meter;
                let arrivals = |from| meter.since(from, at) + others.arrivals_since(from, at);
                let s = step(&mut t.phase, arrivals, threshold, at, cooldown);
                if s == Step::Opened && !others.breaker_open(at) {
                    let rate = arrivals(Millis::MIN);
                    alerts.push(breaker_opened(tenant, None, threshold, rate, at));
                }
                s
            }
            None => Step::Pass,
        };
        let held = if entity_step != Step::Pass {
            Some(Held::Entity)
        } else if tenant_step != Step::Pass {
            Some(Held::Tenant)
        } else {
            None
        };
        (held, alerts)
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
