//! An endpoint's worker: its deliveries, how many requests it has in flight, and in what
//! order an entity's events go out.
//!
//! * **Concurrency** ([`Throttle`]): up to the endpoint's `max_in_flight` requests at once,
//!   adaptive: each 429 or 503 halves the limit (at least 1), each success grows it by one
//!   per round of successes (additive increase, multiplicative decrease, as TCP does).
//! * **Rate**: at most `rate_per_sec` requests started per second (a GCRA limiter).
//! * **Lane**: then a permit of the endpoint's lane ([`crate::lanes`]), instance-wide.
//! * **Ordering** ([`Entities`], `ordering = "per_entity"`): one request in flight per
//!   entity; while an entity's delivery waits in a retry tier, its later deliveries are
//!   *parked* (back to a tier, no attempt used up) and go out after it, in their order;
//!   other entities of the endpoint go on.
//!
//! The endpoint's queue and retry tiers are co-partitioned (key `tenant/endpoint`, range
//! assignment), so one instance holds all of an endpoint's deliveries and this state is
//! the endpoint's, not a share of it.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};
use schemas::config::Ordering;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::attempt::{Attempted, Prepared, Step};
use crate::error::DeliverError;
use crate::run::{now_ms, Deliverer, Done, Job};
use crate::schedule::TIERS;

/// The adaptive limit on an endpoint's requests in flight.
#[derive(Debug, Clone)]
pub struct Throttle {
    limit: f64,
    max: f64,
    in_flight: u32,
}

impl Throttle {
    pub fn new(max: u32) -> Self {
        let max = f64::from(max.max(1));
        Self {
            limit: max,
            max,
            in_flight: 0,
        }
    }

    pub fn has_room(&self) -> bool {
        f64::from(self.in_flight) < self.limit.floor().max(1.0)
    }

    pub fn limit(&self) -> u32 {
        self.limit.floor().max(1.0) as u32
    }

    pub fn started(&mut self) {
        self.in_flight += 1;
    }

    pub fn finished(&mut self, attempted: &Attempted) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if attempted.throttled {
            self.limit = (self.limit / 2.0).max(1.0);
        } else if attempted.delivered {
            self.limit = (self.limit + 1.0 / self.limit).min(self.max);
        }
    }
}

/// What per-entity ordering says about a delivery now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    Start,
    /// Stay queued here: the entity has a request in flight.
    Hold,
    /// Back to a retry tier for this long: an earlier delivery of the entity is waiting.
    Park(Duration),
}

#[derive(Debug, Default)]
struct Entity {
    in_flight: bool,
    /// An earlier delivery waiting in a retry tier, and when it is due.
    blocker: Option<(String, i64)>,
    /// Deliveries parked behind it, in their order.
    parked: VecDeque<String>,
}

/// Per-entity ordering state of one endpoint.
#[derive(Debug, Default)]
pub struct Entities {
    by_entity: HashMap<String, Entity>,
}

impl Entities {
    pub fn turn(&mut self, entity: &str, delivery_id: &str, now: i64) -> Turn {
        let Some(state) = self.by_entity.get_mut(entity) else {
            return Turn::Start;
        };
        if state.in_flight {
            return Turn::Hold;
        }
        let park = |state: &mut Entity, wait_ms: i64| {
            if !state.parked.iter().any(|id| id == delivery_id) {
                state.parked.push_back(delivery_id.to_owned());
            }
            Turn::Park(Duration::from_millis(wait_ms.max(0) as u64).max(TIERS[0]))
        };
        match &state.blocker {
            Some((blocker, _)) if blocker == delivery_id => {
                state.blocker = None;
                Turn::Start
            }
            Some((_, due)) => {
                let wait = due - now;
                park(state, wait)
            }
            None => match state.parked.front() {
                Some(head) if head == delivery_id => {
                    state.parked.pop_front();
                    Turn::Start
                }
                Some(_) => park(state, 0),
                None => Turn::Start,
            },
        }
    }

    pub fn started(&mut self, entity: &str) {
        self.by_entity
            .entry(entity.to_owned())
            .or_default()
            .in_flight = true;
    }

    /// The entity's request is over; `waiting_until`: its delivery went back to a tier.
    pub fn finished(&mut self, entity: &str, delivery_id: &str, waiting_until: Option<i64>) {
        let Some(state) = self.by_entity.get_mut(entity) else {
            return;
        };
        state.in_flight = false;
        state.blocker = waiting_until.map(|due| (delivery_id.to_owned(), due));
        if state.blocker.is_none() && state.parked.is_empty() {
            self.by_entity.remove(entity);
        }
    }
}

/// A request slot of an endpoint's worker: released with the endpoint's answer (so writing
/// the outcome to Kafka does not hold it), or when dropped without one.
pub struct Slot {
    answers: Option<mpsc::UnboundedSender<Attempted>>,
    /// The instance-wide permit of its lane.
    permit: Option<crate::lanes::Permit>,
}

impl Slot {
    pub fn release(&mut self, answered: Attempted) {
        self.permit.take();
        if let Some(answers) = self.answers.take() {
            let _ = answers.send(answered);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release(Attempted::default());
    }
}

/// Deliveries an endpoint's worker holds beyond its channel.
const HELD: usize = 256;

/// Requests prepared (intent journaled) ahead of the request slots, per slot.
pub const AHEAD: usize = 2;

/// What a finished task of the worker reports.
struct Over {
    job_origin: crate::run::Origin,
    entity: Option<(String, String)>,
    attempted: Option<Attempted>,
    result: Result<(), DeliverError>,
}

/// A task of the worker: preparing a delivery, or its request.
enum Task {
    Over(Over),
    Ready {
        prepared: Box<Prepared>,
        origin: crate::run::Origin,
        entity: Option<(String, String)>,
        retry: bool,
    },
}

/// Runs an endpoint's worker until its channel closes. A delivery goes held → prepared
/// (turn taken, intent journaled; up to [`AHEAD`] per request slot) → ready → requested
/// (in a slot: the adaptive limit, the rate limit, a lane permit) → over.
pub(crate) async fn run(
    deliverer: Arc<Deliverer>,
    (tenant, endpoint): (String, String),
    mut jobs: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    let labels = [("tenant", tenant.clone()), ("endpoint", endpoint.clone())];
    let backlog = metrics::gauge!("hookstream_deliver_backlog", &labels);
    let oldest = metrics::gauge!("hookstream_deliver_oldest_pending_seconds", &labels);
    let limit_gauge = metrics::gauge!("hookstream_deliver_concurrency_limit", &labels);
    let parked_total = metrics::counter!("hookstream_deliver_parked_total", &labels);
    let config = deliverer
        .endpoints
        .get(&tenant, &endpoint)
        .map(|e| e.config.clone());
    let ordered = config
        .as_ref()
        .is_some_and(|c| c.ordering == Ordering::PerEntity);
    let mut throttle = Throttle::new(config.as_ref().map_or(1, |c| c.max_in_flight));
    let lane = config
        .as_ref()
        .map_or(schemas::config::Lane::Routine, |c| c.lane);
    let limiter: Option<DefaultDirectRateLimiter> = config
        .as_ref()
        .and_then(|c| c.rate_per_sec)
        .and_then(NonZeroU32::new)
        .map(|rate| governor::RateLimiter::direct(Quota::per_second(rate)));
    let mut entities = Entities::default();
    let mut held: VecDeque<Job> = VecDeque::new();
    let mut ready: VecDeque<Task> = VecDeque::new();
    // Prepared in parallel, requested in queue order: each preparation has a sequence
    // number, and a prepared request waits in `prepared` until those before it are done.
    let mut preparing: JoinSet<(u64, Task)> = JoinSet::new();
    let mut prepared: std::collections::BTreeMap<u64, Option<Task>> = Default::default();
    let (mut next_seq, mut next_ready) = (0u64, 0u64);
    let mut requesting: JoinSet<Over> = JoinSet::new();
    let (answers, mut answered) = mpsc::unbounded_channel::<Attempted>();
    let mut closed = false;
    loop {
        // Prepare ahead: take each held delivery's turn, journal its intent.
        let ahead = throttle.limit() as usize * AHEAD;
        let mut i = 0;
        while i < held.len() && preparing.len() + prepared.len() + ready.len() < ahead {
            let entity = held[i].delivery.entity.clone().filter(|_| ordered);
            let turn = match &entity {
                Some(entity) => entities.turn(entity, &held[i].delivery.delivery_id, now_ms()),
                None => Turn::Start,
            };
            let job = match turn {
                Turn::Hold => {
                    i += 1;
                    continue;
                }
                Turn::Park(wait) => {
                    let job = held.remove(i).expect("in range");
                    parked_total.increment(1);
                    let this = deliverer.clone();
                    let seq = next_seq;
                    next_seq += 1;
                    preparing.spawn(async move {
                        let result = this.defer(job.delivery, wait).await.map(|_| ());
                        let over = Over {
                            job_origin: job.origin,
                            entity: None,
                            attempted: None,
                            result,
                        };
                        (seq, Task::Over(over))
                    });
                    continue;
                }
                Turn::Start => held.remove(i).expect("in range"),
            };
            if let Some(entity) = &entity {
                entities.started(entity);
            }
            let this = deliverer.clone();
            let entity = entity.map(|e| (e, job.delivery.delivery_id.clone()));
            let retry = job.delivery.attempt > 1 || job.delivery.redriven;
            let seq = next_seq;
            next_seq += 1;
            preparing.spawn(async move {
                let task = match this.prepare(job.delivery).await {
                    Ok(Step::Ready(prepared)) => Task::Ready {
                        prepared,
                        origin: job.origin,
                        entity,
                        retry,
                    },
                    Ok(Step::Over(attempted)) => Task::Over(Over {
                        job_origin: job.origin,
                        entity,
                        attempted: Some(attempted),
                        result: Ok(()),
                    }),
                    Err(error) => Task::Over(Over {
                        job_origin: job.origin,
                        entity,
                        attempted: None,
                        result: Err(error),
                    }),
                };
                (seq, task)
            });
        }
        // Request what is ready, within the endpoint's limits.
        let mut wake: Option<Duration> = None;
        while throttle.has_room() && !ready.is_empty() {
            if let Some(limiter) = &limiter {
                if let Err(not_until) = limiter.check() {
                    let clock = governor::clock::DefaultClock::default();
                    wake = Some(not_until.wait_time_from(governor::clock::Clock::now(&clock)));
                    break;
                }
            }
            let Some(Task::Ready {
                prepared,
                origin,
                entity,
                retry,
            }) = ready.pop_front()
            else {
                continue;
            };
            throttle.started();
            let this = deliverer.clone();
            let mut slot = Slot {
                answers: Some(answers.clone()),
                permit: None,
            };
            requesting.spawn(async move {
                slot.permit = Some(this.lanes.acquire(lane, retry).await);
                let outcome = this.request(prepared, slot).await;
                let (attempted, result) = match outcome {
                    Ok(attempted) => (Some(attempted), Ok(())),
                    Err(error) => (None, Err(error)),
                };
                Over {
                    job_origin: origin,
                    entity,
                    attempted,
                    result,
                }
            });
        }
        let pending =
            held.len() + preparing.len() + prepared.len() + ready.len() + requesting.len();
        backlog.set((pending + jobs.len()) as f64);
        limit_gauge.set(f64::from(throttle.limit()));
        if let Some(job) = held.front() {
            oldest.set((now_ms() - job.delivery.due_at).max(0) as f64 / 1000.0);
        } else if pending == 0 {
            oldest.set(0.0);
            if closed {
                return;
            }
        }
        let over = tokio::select! {
            job = jobs.recv(), if !closed && held.len() < HELD => {
                match job {
                    Some(job) => held.push_back(job),
                    None => closed = true,
                }
                continue;
            }
            Some(task) = preparing.join_next() => {
                let Ok((seq, task)) = task else { continue };
                let over = match task {
                    Task::Over(over) => {
                        prepared.insert(seq, None);
                        Some(over)
                    }
                    ready_task => {
                        prepared.insert(seq, Some(ready_task));
                        None
                    }
                };
                while let Some(task) = prepared.remove(&next_ready) {
                    next_ready += 1;
                    ready.extend(task);
                }
                match over {
                    Some(over) => over,
                    None => continue,
                }
            }
            Some(over) = requesting.join_next() => match over {
                Ok(over) => over,
                Err(_) => continue,
            },
            Some(answer) = answered.recv() => {
                throttle.finished(&answer);
                continue;
            }
            _ = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600))), if wake.is_some() => continue,
        };
        if let Some((entity, id)) = &over.entity {
            let waiting = over.attempted.as_ref().and_then(|a| a.waiting_until);
            entities.finished(entity, id, waiting);
        }
        if done.send((over.job_origin, over.result)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(throttled: bool, delivered: bool) -> Attempted {
        Attempted {
            requested: true,
            throttled,
            delivered,
            waiting_until: None,
        }
    }

    #[test]
    fn overload_halves_the_limit_and_successes_grow_it_back() {
        let mut t = Throttle::new(8);
        for _ in 0..8 {
            assert!(t.has_room());
            t.started();
        }
        assert!(!t.has_room());
        t.finished(&answered(true, false));
        assert_eq!(t.limit(), 4);
        assert!(!t.has_room(), "7 in flight, limit 4");
        for _ in 0..4 {
            t.finished(&answered(true, false));
        }
        assert_eq!(t.limit(), 1, "never below one");
        t.finished(&answered(false, true));
        t.finished(&answered(false, true));
        assert_eq!(t.limit(), 2);
        for _ in 0..100 {
            t.started();
            t.finished(&answered(false, true));
        }
        assert_eq!(t.limit(), 8, "never above max_in_flight");
    }

    #[test]
    fn an_entity_has_one_request_in_flight_and_parks_behind_a_waiting_retry() {
        let mut e = Entities::default();
        assert_eq!(e.turn("x", "d1", 0), Turn::Start);
        e.started("x");
        assert_eq!(e.turn("x", "d2", 0), Turn::Hold);
        assert_eq!(e.turn("y", "d9", 0), Turn::Start, "other entities go on");
        e.finished("x", "d1", Some(30_000)); // d1 waits in a tier until 30 s
        assert_eq!(
            e.turn("x", "d2", 1_000),
            Turn::Park(Duration::from_secs(29))
        );
        assert_eq!(
            e.turn("x", "d3", 1_000),
            Turn::Park(Duration::from_secs(29))
        );
        assert_eq!(e.turn("x", "d3", 30_000), Turn::Park(TIERS[0]), "d1 first");
        assert_eq!(e.turn("x", "d1", 30_000), Turn::Start);
        e.started("x");
        e.finished("x", "d1", None);
        assert_eq!(e.turn("x", "d3", 31_000), Turn::Park(TIERS[0]), "d2 first");
        assert_eq!(e.turn("x", "d2", 31_000), Turn::Start);
        e.started("x");
        e.finished("x", "d2", None);
        assert_eq!(e.turn("x", "d3", 32_000), Turn::Start);
        e.started("x");
        e.finished("x", "d3", None);
        assert!(e.by_entity.is_empty(), "forgotten when nothing waits");
    }
}
