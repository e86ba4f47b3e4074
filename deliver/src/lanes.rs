//! Priority lanes: the instance's requests in flight (`[deliver] max_in_flight`) are shared
//! by two lanes, `urgent` and `routine` (each endpoint is in one), and capped for retries.
//!
//! * When both lanes wait, a freed permit goes to `urgent` [`URGENT_WEIGHT`] times out of
//!   `URGENT_WEIGHT + 1`: urgent first, routine never starved.
//! * Retries (attempt 2 and later) and redriven dead letters hold at most
//!   `retry_share` of the permits, so a recovery surge cannot starve fresh traffic; a fresh
//!   delivery waiting is served before a retry when the retries hold their share.
//!
//! The per-endpoint limits ([`crate::worker`]) apply first; a lane permit is the last gate
//! before the request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use schemas::config::Lane;
use tokio::sync::oneshot;

/// Urgent permits per routine permit when both lanes wait.
pub const URGENT_WEIGHT: u32 = 3;

#[derive(Debug)]
struct Waiter {
    retry: bool,
    grant: oneshot::Sender<()>,
}

#[derive(Debug)]
struct State {
    capacity: usize,
    retry_cap: usize,
    held: usize,
    retries_held: usize,
    /// Urgent grants since the last routine one.
    urgent_run: u32,
    urgent: VecDeque<Waiter>,
    routine: VecDeque<Waiter>,
}

impl State {
    /// The next waiter to grant, if a permit is free.
    fn next(&mut self) -> Option<Waiter> {
        if self.held >= self.capacity {
            return None;
        }
        let retry_room = self.retries_held < self.retry_cap;
        let eligible = |queue: &VecDeque<Waiter>| queue.iter().position(|w| !w.retry || retry_room);
        let urgent = eligible(&self.urgent);
        let routine = eligible(&self.routine);
        let take_urgent = match (urgent, routine) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(_), Some(_)) => self.urgent_run < URGENT_WEIGHT,
        };
        let waiter = if take_urgent {
            self.urgent_run += 1;
            self.urgent.remove(urgent.expect("eligible"))
        } else {
            self.urgent_run = 0;
            self.routine.remove(routine.expect("eligible"))
        }?;
        self.held += 1;
        if waiter.retry {
            self.retries_held += 1;
        }
        Some(waiter)
    }

    fn grant_all(&mut self) {
        while let Some(waiter) = self.next() {
            let retry = waiter.retry;
            if waiter.grant.send(()).is_err() {
                // Gave up waiting: the permit is free again.
                self.held -= 1;
                if retry {
                    self.retries_held -= 1;
                }
            }
        }
    }
}

/// The instance's lanes.
#[derive(Debug, Clone)]
pub struct Lanes {
    state: Arc<Mutex<State>>,
}

/// A request's permit; freed when dropped.
#[derive(Debug)]
pub struct Permit {
    state: Arc<Mutex<State>>,
    retry: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("lanes lock");
        state.held -= 1;
        if self.retry {
            state.retries_held -= 1;
        }
        state.grant_all();
    }
}

impl Lanes {
    pub fn new(capacity: usize, retry_share: f64) -> Self {
        let capacity = capacity.max(1);
        let retry_cap = ((capacity as f64 * retry_share).floor() as usize).max(1);
        Self {
            state: Arc::new(Mutex::new(State {
                capacity,
                retry_cap,
                held: 0,
                retries_held: 0,
                urgent_run: 0,
                urgent: VecDeque::new(),
                routine: VecDeque::new(),
            })),
        }
    }

    /// Waits for a permit in `lane`.
    pub async fn acquire(&self, lane: Lane, retry: bool) -> Permit {
        let (grant, granted) = oneshot::channel();
        {
            let mut state = self.state.lock().expect("lanes lock");
            let waiter = Waiter { retry, grant };
            match lane {
                Lane::Urgent => state.urgent.push_back(waiter),
                Lane::Routine => state.routine.push_back(waiter),
            }
            state.grant_all();
        }
        // The sender lives in the state until granted; it is never dropped ungranted.
        let _ = granted.await;
        Permit {
            state: self.state.clone(),
            retry,
        }
    }

    /// Permits held (all, retries).
    pub fn held(&self) -> (usize, usize) {
        let state = self.state.lock().expect("lanes lock");
        (state.held, state.retries_held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds the only permit, queues `waiting` acquisitions, then passes the permit on one
    /// grant at a time and returns the order in which the waiting ones were served.
    async fn served(share: f64, waiting: &[(Lane, bool, &'static str)]) -> Vec<&'static str> {
        let lanes = Lanes::new(1, share);
        let mut current = Some(lanes.acquire(Lane::Routine, false).await);
        let mut tasks = Vec::new();
        for &(lane, retry, name) in waiting {
            let lanes = lanes.clone();
            tasks.push(tokio::spawn(async move {
                (name, lanes.acquire(lane, retry).await)
            }));
            tokio::task::yield_now().await;
        }
        let mut order = Vec::new();
        while !tasks.is_empty() {
            drop(current.take());
            let (done, left): (Vec<_>, Vec<_>) = loop {
                tokio::task::yield_now().await;
                if tasks.iter().any(|t| t.is_finished()) {
                    break std::mem::take(&mut tasks)
                        .into_iter()
                        .partition(|t| t.is_finished());
                }
            };
            assert_eq!(done.len(), 1, "one permit, one grant");
            tasks = left;
            for task in done {
                let (name, permit) = task.await.unwrap();
                order.push(name);
                current = Some(permit);
            }
        }
        order
    }

    #[tokio::test]
    async fn urgent_goes_first_three_to_one_and_routine_is_never_starved() {
        let waiting: Vec<(Lane, bool, &str)> = vec![
            (Lane::Routine, false, "r1"),
            (Lane::Routine, false, "r2"),
            (Lane::Urgent, false, "u1"),
            (Lane::Urgent, false, "u2"),
            (Lane::Urgent, false, "u3"),
            (Lane::Urgent, false, "u4"),
            (Lane::Urgent, false, "u5"),
        ];
        let order = served(0.5, &waiting).await;
        assert_eq!(order, ["u1", "u2", "u3", "r1", "u4", "u5", "r2"]);
    }

    #[tokio::test]
    async fn retries_hold_at_most_their_share() {
        let lanes = Lanes::new(4, 0.25);
        let first = lanes.acquire(Lane::Routine, true).await;
        assert_eq!(lanes.held(), (1, 1));
        let waiting = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.acquire(Lane::Routine, true).await })
        };
        let fresh = lanes.acquire(Lane::Routine, false).await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a second retry waits for the first");
        assert_eq!(lanes.held(), (2, 1), "fresh traffic still gets permits");
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!(lanes.held(), (2, 1));
        drop((second, fresh));
        assert_eq!(lanes.held(), (0, 0));
    }
}
