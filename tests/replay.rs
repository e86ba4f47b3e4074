//! `hookstream replay`, `hookstream tail` and `hookstream admin` against a real Tansu broker,
//! with a real `hookstream process` as the live pipeline: rebuilds equal the live run and
//! start exactly where asked, a redrive is processed once per redrive id, dead letters come
//! back with one more attempt, and the admin API runs, lists and cancels jobs behind its token.

mod harness;
mod workload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use harness::http::call;
use harness::kafka::{read_until, stream_until, wait_caught_up, Watermarks};
use harness::process::run_ok;
use harness::{Broker, Service, Settings, TestConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use workload::{check_state, final_state, produce, reference, wait_for_events, Input};

/// `count` distinct events of `tenant` over 40 entities, in event-time order from `from`.
fn events(tenant: &str, count: usize, from: i64) -> Vec<Input> {
    (0..count)
        .map(|i| Input {
            tenant: tenant.into(),
            entity: format!("{tenant}-o{}", i % 40),
            event_id: format!("{tenant}-e{i}"),
            event_type: "order.updated".into(),
            occurred_at: from + i as i64 * 10,
            body: format!(r#"{{"n":{i},"tenant":"{tenant}"}}"#),
        })
        .collect()
}

fn assert_same_state(
    rebuilt: &BTreeMap<String, serde_json::Value>,
    live: &BTreeMap<String, serde_json::Value>,
) {
    let keys: HashSet<&String> = rebuilt.keys().chain(live.keys()).collect();
    let differ: Vec<_> = keys
        .into_iter()
        .filter(|k| rebuilt.get(*k) != live.get(*k))
        .take(5)
        .map(|k| (k, rebuilt.get(k), live.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "(entity, rebuilt, live) differ: {differ:#?}"
    );
    assert_eq!(rebuilt.len(), live.len());
}

fn high_watermarks(brokers: &str, topic: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..3)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .unwrap();
            (p, high)
        })
        .collect()
}

/// Every record of `topic` (it must hold at least `count`).
fn all_records(brokers: &str, topic: &str, count: i64) -> Vec<harness::kafka::Record> {
    Watermarks::new(brokers, topic).wait_for(count, Duration::from_secs(120));
    let total = Watermarks::new(brokers, topic).count() as usize;
    read_until(brokers, topic, |records| records.len() >= total)
}

#[test]
fn a_rebuild_equals_the_live_run_and_one_from_a_time_starts_exactly_there() {
    let broker = Broker::start();
    // No wall-clock flush in the middle of the live run (it would make some events late there
    // and not in the rebuild): the live result is then a function of the log alone.
    let settings = Settings {
        idle_flush_ms: 5_000,
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "rebuild", &settings);
    let path = config.path.to_str().unwrap();
    let (brokers, raw) = (config.brokers.clone(), config.topic("raw"));
    let _live = Service::processor(&config.path);
    let before = workload::stream(3_000);
    produce(&brokers, &raw, &before, 0);
    let boundary = high_watermarks(&brokers, &raw);
    // The records of `after` are created after `cut` (record time has millisecond resolution).
    let cut = schemas::time::now_millis() + 1;
    while schemas::time::now_millis() <= cut {
        std::hint::spin_loop();
    }
    let after = events("globex", 1_000, 1_763_900_000_000);
    produce(&brokers, &raw, &after, 0);
    let all: Vec<Input> = before.iter().chain(&after).cloned().collect();
    wait_for_events(&brokers, &config.topic("events"), &all);
    let live = final_state(&brokers, &config.topic("state"));
    check_state(&live, &reference(&all));

    let (stdout, _) = run_ok(&[
        "replay",
        "--config",
        path,
        "--rebuild",
        "--into",
        "t.rebuild.rb1.",
        "--id",
        "rb1",
    ]);
    assert!(stdout.contains("rebuild rb1: 4000 records of `t.rebuild.raw` processed by group `processor-rebuild-rebuild-rb1`"), "{stdout}");
    let rebuilt = final_state(&brokers, "t.rebuild.rb1.state");
    assert_same_state(&rebuilt, &live);

    let cut_text = schemas::time::to_rfc3339(cut);
    let (stdout, _) = run_ok(&[
        "replay",
        "--config",
        path,
        "--rebuild",
        "--into",
        "t.rebuild.rb2.",
        "--id",
        "rb2",
        "--start",
        &cut_text,
        "--json",
    ]);
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for (partition, first) in &boundary {
        assert_eq!(
            result["ranges"][partition.to_string()]["start"], *first,
            "partition {partition}: the rebuild from {cut_text} starts at the first record after it: {result}"
        );
    }
    let rebuilt = all_records(&brokers, "t.rebuild.rb2.events", after.len() as i64);
    assert_eq!(
        rebuilt.len(),
        after.len(),
        "one event per record after the cut"
    );
    // `events` are keyed like `raw`, so an event lands in its raw record's partition number.
    let mut offsets: HashMap<i32, HashSet<i64>> = HashMap::new();
    for record in &rebuilt {
        let offset = record.json()["raw_offset"].as_i64().unwrap();
        assert!(
            offset >= boundary[&record.partition],
            "{offset} is before the cut"
        );
        assert!(record.header("hs-event-id").unwrap().starts_with("globex-"));
        offsets.entry(record.partition).or_default().insert(offset);
    }
    let end = high_watermarks(&brokers, &raw);
    for (partition, set) in offsets {
        let expected: HashSet<i64> = (boundary[&partition]..end[&partition]).collect();
        assert_eq!(
            set, expected,
            "partition {partition}: exactly the offsets after the cut"
        );
    }
}

/// Appends `count` records without an event id (the processor dead-letters them).
fn produce_undecodable(brokers: &str, topic: &str, count: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for i in 0..count {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "hs-version",
                    value: Some("1"),
                })
                .insert(Header {
                    key: "hs-tenant",
                    value: Some("initech"),
                });
            let key = format!("initech/broken{i}");
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload("{}")
                .headers(headers);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .unwrap();
        }
    });
}

fn redriven(brokers: &str, topic: &str, id: &str, count: usize) -> Vec<harness::kafka::Record> {
    let mut found = Vec::new();
    stream_until(brokers, topic, Duration::from_secs(120), |record| {
        if record.header("hs-redrive-id") == Some(id) {
            found.push(record.clone());
        }
        found.len() >= count
    });
    found
}

#[test]
fn a_redrive_is_processed_once_per_id_and_dead_letters_return_with_one_more_attempt() {
    let broker = Broker::start();
    let config = TestConfig::write(&broker, "redrive");
    let path = config.path.to_str().unwrap();
    let (brokers, raw, events_topic) = (
        config.brokers.clone(),
        config.topic("raw"),
        config.topic("events"),
    );
    let _live = Service::processor(&config.path);
    let acme = events("acme", 1_000, 1_763_800_000_000);
    let globex = events("globex", 500, 1_763_800_000_000);
    produce(&brokers, &raw, &acme, 0);
    produce(&brokers, &raw, &globex, 0);
    produce_undecodable(&brokers, &raw, 3);
    let all: Vec<Input> = acme.iter().chain(&globex).cloned().collect();
    wait_for_events(&brokers, &events_topic, &all);
    Watermarks::new(&brokers, &config.topic("dlq")).wait_for(3, Duration::from_secs(60));

    // Dry run: counts, nothing written.
    let (table, _) = run_ok(&["replay", "--config", path, "--dry-run", "--tenant", "acme"]);
    assert!(
        table.contains("acme                                       1000"),
        "{table}"
    );
    assert!(
        table.contains("1000 of 1503 records of `t.redrive.raw` match (dry run: nothing written)"),
        "{table}"
    );
    let (json, _) = run_ok(&[
        "replay",
        "--config",
        path,
        "--dry-run",
        "--tenant",
        "acme",
        "--json",
    ]);
    let counts: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(counts["mode"], "dry_run");
    assert_eq!(counts["matched"], 1000);
    assert_eq!(counts["scanned"], 1503);
    let per_partition: u64 = counts["partitions"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["matched"].as_u64().unwrap())
        .sum();
    assert_eq!(per_partition, 1000);
    assert_eq!(counts["tenants"], serde_json::json!({"acme": 1000}));
    assert_eq!(
        Watermarks::new(&brokers, &raw).count(),
        1503,
        "a dry run writes nothing"
    );

    // Redrive acme's 1 000 events: each is processed once more, marked with the redrive id.
    let (stdout, _) = run_ok(&[
        "replay",
        "--config",
        path,
        "--redrive",
        "--tenant",
        "acme",
        "--id",
        "r1",
    ]);
    assert!(stdout.contains("redrive r1: 1000 of 1000 selected records of `t.redrive.raw` appended to `t.redrive.raw`"), "{stdout}");
    let first = redriven(&brokers, &events_topic, "r1", 1000);
    let ids: HashSet<String> = first
        .iter()
        .map(|r| r.header("hs-event-id").unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        acme.iter()
            .map(|i| i.event_id.clone())
            .collect::<HashSet<_>>()
    );

    // The same redrive again, and a plain redelivery: nothing is processed twice.
    run_ok(&[
        "replay",
        "--config",
        path,
        "--redrive",
        "--tenant",
        "acme",
        "--id",
        "r1",
    ]);
    produce(&brokers, &raw, &acme[..1], 0);
    wait_caught_up(&brokers, "processor-redrive", &raw);
    let records = all_records(&brokers, &events_topic, 2500);
    let r1 = records
        .iter()
        .filter(|r| r.header("hs-redrive-id") == Some("r1"))
        .count();
    assert_eq!(r1, 1000, "the second run of redrive r1 was processed again");
    let plain = records
        .iter()
        .filter(|r| {
            r.header("hs-event-id") == Some("acme-e0") && r.header("hs-redrive-id").is_none()
        })
        .count();
    assert_eq!(plain, 1, "a plain redelivery passed dedupe");
    assert_eq!(records.len(), 2500);

    // Dead letters redriven fail again and come back with their attempt count incremented.
    let (stdout, _) = run_ok(&[
        "replay",
        "--config",
        path,
        "--from-topic",
        "dlq",
        "--error",
        "missing header `hs-source`",
        "--redrive",
        "--id",
        "d1",
    ]);
    assert!(
        stdout.contains("3 of 3 selected records of `t.redrive.dlq`"),
        "{stdout}"
    );
    let again = redriven(&brokers, &config.topic("dlq"), "d1", 3);
    for record in &again {
        assert_eq!(record.header("hs-attempt"), Some("2"), "{record:?}");
        assert!(
            record.header("hs-error").unwrap().contains("hs-source"),
            "{record:?}"
        );
        assert!(record
            .header("hs-redrive-from")
            .unwrap()
            .starts_with("t.redrive.dlq/"));
    }

    // tail --error: dead letters by their `hs-error`, as replay selects them.
    let (lines, _) = run_ok(&[
        "tail",
        "--config",
        path,
        "dlq",
        "--error",
        "hs-sou.ce",
        "--format",
        "json",
    ]);
    let errors: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|l| l["headers"]["hs-error"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        errors.len(),
        6,
        "the 3 dead letters and their 3 redrives: {lines}"
    );
    assert!(errors.iter().all(|e| e.contains("hs-source")), "{errors:?}");
    let (none, _) = run_ok(&[
        "tail",
        "--config",
        path,
        "dlq",
        "--error",
        "^no such error$",
    ]);
    assert_eq!(none.trim(), "", "{none}");
    let bad = harness::process::run(&["tail", "--config", path, "dlq", "--error", "("]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("--error `(`"), "{stderr}");

    // tail: JSON lines for pipes, and a readable form.
    let (lines, _) = run_ok(&[
        "tail", "--config", path, "events", "--tenant", "globex", "--format", "json", "-n", "5",
    ]);
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for line in &lines {
        assert_eq!(line["topic"], "t.redrive.events");
        assert_eq!(line["value"]["tenant"], "globex");
        assert!(line["key"].as_str().unwrap().starts_with("globex/globex-o"));
        assert!(line["headers"]["hs-event-id"]
            .as_str()
            .unwrap()
            .starts_with("globex-e"));
    }
    let (pretty, _) = run_ok(&[
        "tail",
        "--config",
        path,
        "raw",
        "--entity",
        "globex-o7",
        "-n",
        "3",
    ]);
    assert_eq!(
        pretty.matches("key=globex/globex-o7").count(),
        3,
        "{pretty}"
    );
    assert!(pretty.contains("  hs-entity: globex-o7"), "{pretty}");
    assert!(pretty.contains("\"tenant\": \"globex\""), "{pretty}");
    assert!(!pretty.contains("globex-o8"), "{pretty}");
}

#[test]
fn the_admin_api_runs_lists_and_cancels_jobs_behind_its_token() {
    let broker = Broker::start();
    let settings = Settings {
        // A rebuild cannot finish while its last events wait for an idle flush: cancellable.
        idle_flush_ms: 600_000,
        tenants: "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = { value = \"s3cret-admin\" }\n".into(),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "admin", &settings);
    let (brokers, raw) = (config.brokers.clone(), config.topic("raw"));
    harness::create_topics(&config);
    produce(&brokers, &raw, &events("acme", 300, 1_763_800_000_000), 0);
    let admin = Service::admin(&config.path);
    let url = |path: &str| format!("{}{path}", admin.base_url());
    let token = Some("s3cret-admin");

    for wrong in [None, Some("s3cret-admiN"), Some("")] {
        let (status, body) = call("GET", &url("/v1/jobs"), wrong, None);
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "unauthorized");
    }
    let (status, body) = call(
        "POST",
        &url("/v1/jobs"),
        token,
        Some(r#"{"mode":"sideways"}"#),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = call(
        "POST",
        &url("/v1/jobs"),
        token,
        Some(r#"{"mode":"dry_run","start":"soon"}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("`soon`"),
        "{body}"
    );
    let (status, _) = call("GET", &url("/v1/jobs/nope"), token, None);
    assert_eq!(status, 404);

    let (status, job) = call(
        "POST",
        &url("/v1/jobs"),
        token,
        Some(r#"{"mode":"dry_run","id":"count1","tenants":["acme"]}"#),
    );
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["id"], "count1");
    let done = wait_for_state(&url("/v1/jobs/count1"), token, |job| {
        job["state"] != "running"
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["matched"], 300, "{done}");
    assert_eq!(done["progress"]["read"], 300, "{done}");

    let body = r#"{"mode":"rebuild","id":"rb","into":"t.admin.rb."}"#;
    let (status, job) = call("POST", &url("/v1/jobs"), token, Some(body));
    assert_eq!(status, 201, "{job}");
    let (status, _) = call("POST", &url("/v1/jobs"), token, Some(body));
    assert_eq!(status, 409, "the same job while it runs");
    let running = wait_for_state(&url("/v1/jobs/rb"), token, |job| {
        job["progress"]["read"] == 300
    });
    assert_eq!(
        running["state"], "running",
        "its last events wait for an idle flush: {running}"
    );
    let (status, _) = call("DELETE", &url("/v1/jobs/rb"), token, None);
    assert_eq!(status, 202);
    let cancelled = wait_for_state(&url("/v1/jobs/rb"), token, |job| job["state"] != "running");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["result"]["cancelled"], true, "{cancelled}");

    let (status, list) = call("GET", &url("/v1/jobs"), token, None);
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["count1", "rb"]);
    assert!(
        !admin.log().contains("s3cret-admin"),
        "the token reached the log"
    );

    // The CLI stops cleanly on Ctrl-C, says how to resume and exits 130 (not done).
    let child = std::process::Command::new(harness::process::binary())
        .args([
            "replay",
            "--config",
            config.path.to_str().unwrap(),
            "--rebuild",
        ])
        .args(["--into", "t.admin.cli.", "--id", "cli"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_caught_up(&brokers, "processor-admin-rebuild-cli", &raw);
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "interrupted: {stderr}");
    assert!(
        stderr.contains("stopped before the end; resume with the same command and `--id cli`")
            && stderr.contains("--id cli --resume"),
        "{stderr}"
    );
}

fn wait_for_state(
    url: &str,
    token: Option<&str>,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, job) = call("GET", url, token, None);
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job did not get there: {job}");
        std::thread::sleep(Duration::from_millis(100)); // polling interval
    }
}
