//! Reconcile: the pure function `(state, event) -> state'` that keeps the latest state of an
//! entity. Events are ordered by (event time, event id); the greatest wins. A delete-type
//! event leaves a tombstone (`deleted = true`, no payload) that keeps its time, so an update
//! older than the delete cannot resurrect the entity, while a newer one can re-create it.
//! An event ordered before the current state is *late*: it does not change the state.

use schemas::records::Payload;
use schemas::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The reconciled state of one entity, as kept in the state store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityState {
    pub version: u64,
    pub updated_at: Millis,
    pub last_event_id: String,
    pub last_event_type: String,
    pub deleted: bool,
    pub state: Option<Box<RawValue>>,
    pub state_base64: Option<String>,
}

impl PartialEq for EntityState {
    fn eq(&self, o: &Self) -> bool {
        (
            self.version,
            self.updated_at,
            &self.last_event_id,
            &self.last_event_type,
            self.deleted,
        ) == (
            o.version,
            o.updated_at,
            &o.last_event_id,
            &o.last_event_type,
            o.deleted,
        ) && self.state.as_ref().map(|s| s.get()) == o.state.as_ref().map(|s| s.get())
            && self.state_base64 == o.state_base64
    }
}

/// What reconcile needs to know of an event.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub occurred_at: Millis,
    pub is_delete: bool,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The event is the newest: this is the entity's new state.
    Applied(EntityState),
    /// The event is older than the current state, which stays as it is.
    Late,
}

pub fn reconcile(current: Option<&EntityState>, change: &Change<'_>) -> Outcome {
    if let Some(current) = current {
        let newer = (change.occurred_at, change.event_id)
            > (current.updated_at, current.last_event_id.as_str());
        if !newer {
            return Outcome::Late;
        }
    }
    let (state, state_base64) = if change.is_delete {
        (None, None)
    } else {
        let payload = Payload::from_body(change.body);
        (payload.payload, payload.payload_base64)
    };
    Outcome::Applied(EntityState {
        version: current.map_or(0, |c| c.version) + 1,
        updated_at: change.occurred_at,
        last_event_id: change.event_id.to_owned(),
        last_event_type: change.event_type.to_owned(),
        deleted: change.is_delete,
        state,
        state_base64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change<'a>(id: &'a str, at: Millis, is_delete: bool, body: &'a [u8]) -> Change<'a> {
        Change {
            event_id: id,
            event_type: if is_delete { "x.deleted" } else { "x.updated" },
            occurred_at: at,
            is_delete,
            body,
        }
    }

    fn applied(outcome: Outcome) -> EntityState {
        match outcome {
            Outcome::Applied(state) => state,
            Outcome::Late => panic!("expected the event to apply"),
        }
    }

    #[test]
    fn newest_event_time_wins_and_versions_count_applied_events() {
        let s1 = applied(reconcile(None, &change("a", 10, false, br#"{"n":1}"#)));
        assert_eq!((s1.version, s1.updated_at), (1, 10));
        let s2 = applied(reconcile(Some(&s1), &change("b", 20, false, br#"{"n":2}"#)));
        assert_eq!(s2.version, 2);
        assert_eq!(s2.state.as_ref().unwrap().get(), r#"{"n":2}"#);
        assert_eq!(
            reconcile(Some(&s2), &change("c", 15, false, b"{}")),
            Outcome::Late
        );
    }

    #[test]
    fn ties_on_event_time_are_broken_by_event_id() {
        let s = applied(reconcile(None, &change("b", 10, false, b"{}")));
        assert_eq!(
            reconcile(Some(&s), &change("a", 10, false, b"{}")),
            Outcome::Late
        );
        assert_eq!(
            reconcile(Some(&s), &change("b", 10, false, b"{}")),
            Outcome::Late
        );
        assert!(matches!(
            reconcile(Some(&s), &change("c", 10, false, b"{}")),
            Outcome::Applied(_)
        ));
    }

    #[test]
    fn a_tombstone_blocks_older_updates_but_not_newer_ones() {
        let live = applied(reconcile(None, &change("a", 10, false, b"{}")));
        let dead = applied(reconcile(Some(&live), &change("d", 30, true, b"{}")));
        assert!(dead.deleted && dead.state.is_none());
        assert_eq!(
            reconcile(Some(&dead), &change("late", 20, false, b"{}")),
            Outcome::Late
        );
        let reborn = applied(reconcile(Some(&dead), &change("n", 40, false, b"{}")));
        assert!(!reborn.deleted && reborn.version == 3);
    }

    #[test]
    fn the_same_input_gives_the_same_state() {
        let a = reconcile(None, &change("a", 10, false, br#"{"k": [1, 2]}"#));
        let b = reconcile(None, &change("a", 10, false, br#"{"k": [1, 2]}"#));
        assert_eq!(a, b);
    }
}
