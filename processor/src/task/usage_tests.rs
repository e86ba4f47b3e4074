//! `usage` reports as a task applies them: from its stored position, exactly once, each in
//! the day it was written.

use schemas::records::UsageRecord;

use super::tests::{open, received, reports, run};
use super::*;
use crate::caps::{Caps, TenantRules, TenantState};
use crate::catalog::SourceCatalog;
use crate::usage_view::Report;

const DAY: i64 = 86_400_000;
/// Noon, a week after a UTC midnight.
const NOW: i64 = 1_700_006_400_000 + 7 * DAY + DAY / 2;

fn settings() -> TaskSettings {
    let mut limits = crate::caps::test_support::caps(None, Some(1_000_000), None);
    limits.on_window_reset = schemas::config::OnWindowReset::Keep;
    let rules = TenantRules {
        caps: Some(limits),
        breaker: None,
    };
    TaskSettings {
        caps: Some(Arc::new(Caps::from_rules([("acme".into(), rules)], 0, 1))),
        ..TaskSettings::default()
    }
}

fn report(event_id: &str, tokens: u64) -> UsageRecord {
    UsageRecord {
        tenant: "acme".into(),
        event_id: event_id.into(),
        tokens,
        cost_micros: 0,
        source: Some("orders".into()),
    }
}

fn absorb(task: &mut PartitionTask, reports: &[Report]) {
    let mut out = Vec::new();
    let pending = task
        .absorb(0, &[], reports, &SourceCatalog::empty(), &mut out)
        .unwrap();
    task.commit(&pending).unwrap();
}

fn tokens_today(task: &PartitionTask) -> u64 {
    let mut txn = crate::store::Txn::new(&task.store);
    let state: TenantState = crate::admission::stored::load(&mut txn, "acme").unwrap().0;
    state.ledger.used().tokens
}

/// Reports read again (the task reopened and its view re-read from the stored position, or
/// before it) count nothing: the position moved with the step that applied them, even for
/// reports whose usage entries have since expired.
#[test]
fn reports_are_applied_once_by_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, settings());
    run(&mut task, vec![received(0, "a", "o1", NOW, "{}")]);
    let first = reports(0, [report("a", 40), report("unknown", 7)]);
    absorb(&mut task, &first);
    assert_eq!(tokens_today(&task), 47);
    assert_eq!(task.usage_next().unwrap(), 2);
    absorb(&mut task, &first);
    let overlapping = reports(1, [report("unknown", 7), report("late", 3)]);
    absorb(&mut task, &overlapping);
    assert_eq!(tokens_today(&task), 50);
    assert_eq!(task.usage_next().unwrap(), 3);
    let undecodable = Report {
        usage: None,
        ..reports(3, [report("x", 1)]).remove(0)
    };
    absorb(&mut task, &[undecodable]);
    assert_eq!((tokens_today(&task), task.usage_next().unwrap()), (50, 4));
}

/// A week of reports of events this store never saw (a new store reading `usage` from the
/// beginning, or reports read late) charges nothing to today: each counts in the day it was
/// written. Today's reports and ones stamped in the future count today.
#[test]
fn a_week_of_old_reports_leaves_todays_usage_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, settings());
    run(&mut task, vec![received(0, "a", "o1", NOW, "{}")]);
    let week: Vec<Report> = (0..7 * 24)
        .map(|hour| Report {
            timestamp: Some(NOW - 8 * DAY + hour * 3_600_000),
            ..reports(hour, [report(&format!("old-{hour}"), 1_000)]).remove(0)
        })
        .filter(|r| r.timestamp.unwrap() < NOW - NOW % DAY)
        .collect();
    let n = week.len() as i64;
    absorb(&mut task, &week);
    assert_eq!(tokens_today(&task), 0);
    let today = Report {
        timestamp: Some(NOW - 1),
        ..reports(n, [report("a", 40)]).remove(0)
    };
    let future = Report {
        timestamp: Some(i64::MAX),
        ..reports(n + 1, [report("b", 2)]).remove(0)
    };
    absorb(&mut task, &[today, future]);
    assert_eq!(tokens_today(&task), 42);
}
