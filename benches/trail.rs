//! Trail lookups with millions of events in the index: `Index::event` (what
//! `GET /v1/trail/{tenant}/{source}/{event_id}` runs) against a bare RocksDB point read of
//! the same store, in the same run.
//!
//! Fills a fresh index through `Index::apply` (the indexer's own write path) with
//! `HOOKSTREAM_BENCH_EVENTS` events (default 10 000 000 with `--bench`, 20 000 under
//! `cargo test`), each with two facts (appended to `raw`, emitted to `events`) over
//! 100 tenants and 1 000 000 entities, then looks up 20 000 random events and prints the
//! latency percentiles and the ratio to the point read. No broker: reading 10 M records
//! through Tansu would only measure the broker; the indexer's reading is the e2e test's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use trail::fact::{Fact, Stage};
use trail::index::Index;

fn facts(i: u64) -> [Fact; 2] {
    let tenant = format!("tenant-{}", i % 100);
    let fact = |stage, topic: &str, at| Fact {
        stage,
        tenant: tenant.clone(),
        source: Some("stripe".into()),
        event_id: Some(format!("evt_{i:016x}")),
        entity: Some(format!("cus_{}", i % 1_000_000)),
        at,
        topic: topic.into(),
        partition: (i % 12) as i32,
        offset: (i / 12) as i64,
        detail: "key id k1".into(),
        body_sha256: None,
        raw_offset: None,
    };
    let at = 1_795_000_000_000 + i as i64;
    [
        fact(Stage::Appended, "raw", at),
        fact(Stage::Emitted, "events", at + 5),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let events: u64 = std::env::var("HOOKSTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 10_000_000 } else { 20_000 });
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(20_000);
    for i in 0..events {
        batch.extend(facts(i));
        if batch.len() >= 20_000 || i + 1 == events {
            index.apply(&batch, &HashMap::new()).unwrap();
            batch.clear();
        }
        if measuring && i > 0 && i % 1_000_000 == 0 {
            eprintln!("{i} events indexed in {:.0?}", started.elapsed());
        }
    }
    let filled = started.elapsed();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % events
    };
    let lookups = 20_000;
    let (mut trail, mut point) = (Vec::with_capacity(lookups), Vec::with_capacity(lookups));
    for _ in 0..lookups {
        let i = next();
        let tenant = format!("tenant-{}", i % 100);
        let id = format!("evt_{i:016x}");
        let t = Instant::now();
        let found = index.event(&tenant, "stripe", &id, trail::LIMIT).unwrap();
        trail.push(t.elapsed());
        assert_eq!(found.len(), 2, "{tenant}/{id}");
        let t = Instant::now();
        let offset = index.next_offset("raw", (i % 12) as i32).unwrap();
        point.push(t.elapsed());
        assert!(offset.is_none());
    }
    trail.sort();
    point.sort();
    println!(
        "{events} events ({} facts) indexed in {:.1} s ({:.0} events/s)",
        events * 2,
        filled.as_secs_f64(),
        events as f64 / filled.as_secs_f64()
    );
    println!("| lookup | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (name, sorted) in [
        ("trail of an event (`Index::event`)", &trail),
        ("baseline: RocksDB point read", &point),
    ] {
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms |",
            percentile(sorted, 0.5).as_secs_f64() * 1e3,
            percentile(sorted, 0.99).as_secs_f64() * 1e3,
            sorted.last().unwrap().as_secs_f64() * 1e3
        );
    }
    println!(
        "p99 trail / point read: {:.1}×; target p99 ≤ 50 ms: {}",
        percentile(&trail, 0.99).as_secs_f64() / percentile(&point, 0.99).as_secs_f64(),
        if percentile(&trail, 0.99) <= Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        }
    );
}
