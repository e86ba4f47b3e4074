//! Operations, end to end against a real broker: live configuration reload under load, rate
//! limits shared by two ingest replicas, the separate metrics listener, JSON logs and the
//! admin API's health route.

mod harness;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use harness::http::{get, metric, post};
use harness::signing::{orders_signature, ORDERS_SECRET};
use harness::{wait_until, Broker, Pipeline, Service, Settings, TestConfig};

fn order(id: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"t","order_id":"o-{id}","occurred_at":"2026-11-25T10:00:00Z"}}"#
    )
    .into_bytes()
}

/// Posts event `id` of acme's entity `o-1` (so every such event lands on one partition),
/// signed; it must be accepted.
fn post_to_one_entity(hooks: &str, id: &str) {
    let body = format!(
        r#"{{"id":"{id}","type":"t","order_id":"o-1","occurred_at":"2026-11-25T00:10:00Z"}}"#
    );
    let body = body.as_bytes();
    assert_eq!(post(hooks, &signed(ORDERS_SECRET, body), body).status, 202);
}

fn signed(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![("x-signature".into(), orders_signature(secret, body))]
}

const GLOBEX: &str = r#"
[[tenants]]
id = "globex"
[[tenants.sources]]
id = "orders"
scheme = "hmac"
secrets = [{ id = "g1", value = "globex-secret-1" }]
hmac = { header = "x-signature", prefix = "sha256=", encoding = "hex" }
extract = { entity = "/order_id", occurred_at = "/occurred_at" }
"#;

/// Rewrites the configuration file whole (as a deploy tool or ConfigMap update does).
fn rewrite(config: &TestConfig, edit: impl Fn(String) -> String) {
    let text = std::fs::read_to_string(&config.path).unwrap();
    let next = edit(text);
    let staged = config.dir().join("hookstream.toml.next");
    std::fs::write(&staged, next).unwrap();
    std::fs::rename(&staged, &config.path).unwrap();
}

fn reloads(url: &str, which: &str) -> f64 {
    metric(url, which, &[("service", "ingest")]).unwrap_or(-1.0)
}

#[test]
fn tenants_and_secrets_reload_under_load_and_a_bad_file_changes_nothing() {
    let pipeline = Pipeline::start("reload", false);
    let hooks = pipeline.url("/v1/hooks/acme/orders");
    let metrics = pipeline.url("/metrics");
    assert_eq!(reloads(&metrics, "hookstream_config_reloads_total"), 0.0);

    // Load: requests signed with a secret every configuration below accepts.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let load: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, sent, failures, hooks) =
                (stop.clone(), sent.clone(), failures.clone(), hooks.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = order(&format!("load-{worker}-{n}"));
                    let reply = post(&hooks, &signed(ORDERS_SECRET, &body), &body);
                    if reply.status != 202 {
                        failures.lock().unwrap().push((reply.status, reply.json));
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    let load_running = |at_least: usize| {
        let from = sent.load(Ordering::Relaxed);
        wait_until(|| sent.load(Ordering::Relaxed) >= from + at_least)
            .expect("the load keeps being answered");
    };
    load_running(20);

    let globex = pipeline.url("/v1/hooks/globex/orders");
    let body = order("g-before");
    assert_eq!(
        post(&globex, &signed("globex-secret-1", &body), &body).status,
        404
    );
    let rotated = order("rotated");
    assert_eq!(
        post(&hooks, &signed("orders-rotated", &rotated), &rotated).status,
        401,
        "a secret not configured yet is refused"
    );

    // 1. The file changes: a tenant is added and acme's orders secret rotated (the new
    //    secret first, the current one kept for the overlap).
    rewrite(&pipeline.config, |text| {
        let text = text.replacen(
            "secrets = [{ id = \"k-new\"",
            "secrets = [{ id = \"k-rotated\", value = \"orders-rotated\" }, { id = \"k-new\"",
            1,
        );
        format!("{text}\n{GLOBEX}")
    });
    let mut first_accepted = 0;
    wait_until(|| {
        first_accepted += 1;
        let body = order(&format!("g-{first_accepted}"));
        post(&globex, &signed("globex-secret-1", &body), &body).status == 202
    })
    .expect("the new tenant is served without a restart");
    for n in 0..20 {
        let body = order(&format!("g-after-{n}"));
        let reply = post(&globex, &signed("globex-secret-1", &body), &body);
        assert_eq!(
            reply.status, 202,
            "once served, the new tenant stays served: {:?}",
            reply.json
        );
    }
    assert_eq!(
        post(&hooks, &signed("orders-rotated", &rotated), &rotated).status,
        202
    );
    assert_eq!(reloads(&metrics, "hookstream_config_reloads_total"), 1.0);
    load_running(20);

    // 2. A bad file: nothing changes, the failure is counted and logged.
    rewrite(&pipeline.config, |text| {
        text.replace("scheme = \"standard\"", "scheme = \"no-such-scheme\"")
    });
    wait_until(|| reloads(&metrics, "hookstream_config_reload_failures_total") == 1.0)
        .expect("the bad file is refused and counted");
    assert_eq!(
        metric(
            &metrics,
            "hookstream_config_last_reload_successful",
            &[("service", "ingest")]
        ),
        Some(0.0)
    );
    let body = order("g-during-bad");
    assert_eq!(
        post(&globex, &signed("globex-secret-1", &body), &body).status,
        202
    );
    assert!(pipeline
        .ingest
        .log()
        .contains("configuration reload refused"));
    load_running(20);

    // 3. SIGHUP re-reads the file and its secret files: the `file` secret of acme's orders
    //    is rotated in place (the configuration text itself is fixed back first).
    rewrite(&pipeline.config, |text| {
        text.replace("scheme = \"no-such-scheme\"", "scheme = \"standard\"")
    });
    wait_until(|| reloads(&metrics, "hookstream_config_reloads_total") == 2.0)
        .expect("the mended file is taken in");
    std::fs::write(
        pipeline.config.dir().join("orders-old.secret"),
        "orders-from-file-2",
    )
    .unwrap();
    let from_file = order("from-file");
    assert_eq!(
        post(
            &hooks,
            &signed("orders-from-file-2", &from_file),
            &from_file
        )
        .status,
        401,
        "a changed secret file is read on a reload, not before"
    );
    pipeline.ingest.hangup();
    wait_until(|| reloads(&metrics, "hookstream_config_reloads_total") == 3.0)
        .expect("SIGHUP reloads");
    assert_eq!(
        post(
            &hooks,
            &signed("orders-from-file-2", &from_file),
            &from_file
        )
        .status,
        202
    );
    load_running(20);

    // 4. A secret file that disappears: the reload is refused whole; the running secrets
    //    (read from it before) stay.
    std::fs::remove_file(pipeline.config.dir().join("orders-old.secret")).unwrap();
    pipeline.ingest.hangup();
    wait_until(|| reloads(&metrics, "hookstream_config_reload_failures_total") == 2.0)
        .expect("a missing secret file is refused");
    let again = order("from-file-again");
    let reply = post(&hooks, &signed("orders-from-file-2", &again), &again);
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let log = pipeline.ingest.log();
    assert!(
        log.contains("orders-old.secret"),
        "the problem names the file"
    );
    for secret in [
        ORDERS_SECRET,
        "orders-rotated",
        "orders-from-file-2",
        "globex-secret-1",
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    load_running(20);

    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests valid under every configuration failed: {:?}",
        failures.len(),
        sent.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn two_replicas_share_a_tenants_rate_limit() {
    let broker = Broker::start();
    let settings = Settings {
        ingest: "replicas = 2".into(),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "replicas", &settings);
    // One token a second, bursts of 10, for the tenant across both replicas.
    let text = std::fs::read_to_string(&config.path).unwrap().replacen(
        "id = \"acme\"\n",
        "id = \"acme\"\nrate_limit = { per_second = 1, burst = 10 }\n",
        1,
    );
    std::fs::write(&config.path, text).unwrap();
    let replicas = [Service::ingest(&config.path), Service::ingest(&config.path)];
    let mut accepted = [0, 0];
    for round in 0..10 {
        for (r, replica) in replicas.iter().enumerate() {
            let body = order(&format!("r{r}-{round}"));
            let url = format!("{}/v1/hooks/acme/orders", replica.base_url());
            let reply = post(&url, &signed(ORDERS_SECRET, &body), &body);
            match reply.status {
                202 => accepted[r] += 1,
                429 => assert!(reply.retry_after.is_some(), "429 says when to retry"),
                other => panic!("unexpected {other}: {:?}", reply.json),
            }
        }
    }
    // Each replica allows half the burst at once (5), plus what refills at its share of the
    // rate (1 a second, rounded up) while the 20 requests are sent; a replica enforcing the
    // whole limit would have allowed all 10 of its requests.
    let total = accepted[0] + accepted[1];
    assert!(
        (5..=8).contains(&accepted[0]) && (5..=8).contains(&accepted[1]) && total < 20,
        "accepted per replica: {accepted:?}"
    );
}

/// The base URL of the ingest's `metrics_listen`, as it prints it.
fn operator_listener(ingest: &mut Service) -> String {
    let line = ingest.wait_for_line("ingest metrics on http://");
    let after = line.split("metrics on ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn metrics_on_their_own_listener_json_logs_and_admin_health() {
    let broker = Broker::start();
    let settings = Settings {
        ingest: "metrics_listen = \"127.0.0.1:0\"".into(),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "operator", &settings);
    let text = std::fs::read_to_string(&config.path).unwrap();
    let text = format!(
        "[log]\nformat = \"json\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ value = \"admin-token\" }}\n{text}"
    );
    std::fs::write(&config.path, text).unwrap();

    let mut ingest = Service::ingest(&config.path);
    let operator = operator_listener(&mut ingest);
    let body = order("m1");
    let hooks = format!("{}/v1/hooks/acme/orders", ingest.base_url());
    assert_eq!(
        post(&hooks, &signed(ORDERS_SECRET, &body), &body).status,
        202
    );

    let (status, _) = get(&format!("{}/metrics", ingest.base_url()));
    assert_eq!(
        status, 404,
        "no metrics (with tenant ids) on the public listener"
    );
    let accepted = metric(
        &format!("{operator}/metrics"),
        "hookstream_ingest_requests_total",
        &[
            ("tenant", "acme"),
            ("source", "orders"),
            ("outcome", "accepted"),
        ],
    );
    assert_eq!(accepted, Some(1.0));
    assert_eq!(get(&format!("{operator}/healthz")).0, 200);
    assert_eq!(get(&format!("{operator}/readyz")).0, 200);

    let log = ingest.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            entry.get("level").is_some() && entry.get("fields").is_some(),
            "{line}"
        );
    }

    let admin = Service::admin(&config.path);
    let (status, text) = get(&format!("{}/healthz", admin.base_url()));
    assert_eq!((status, text.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, _) = get(&format!("{}/v1/jobs", admin.base_url()));
    assert_eq!(status, 401, "everything else still needs the token");

    // A refused reload is reported by the admin API too, with the key it concerns.
    let config_url = format!("{}/v1/config", admin.base_url());
    let (status, before) = harness::http::call("GET", &config_url, Some("admin-token"), None);
    assert_eq!((status, before["failures"].as_u64()), (200, Some(0)));
    rewrite(&config, |text| {
        text.replace("batch_max = 100", "batch_max = 0")
    });
    wait_until(|| {
        let (_, now) = harness::http::call("GET", &config_url, Some("admin-token"), None);
        now["failures"].as_u64() == Some(1)
    })
    .expect("the admin API reports the refused file");
    let (_, after) = harness::http::call("GET", &config_url, Some("admin-token"), None);
    let refused = after["refused"].to_string();
    assert!(refused.contains("processor.batch_max"), "{after}");
    assert_eq!(
        after["tenants"].as_u64(),
        Some(1),
        "the running configuration stays"
    );
}

/// Every `hookstream_*` metric a dashboard or an alert rule queries (histogram and summary
/// suffixes removed).
fn queried_metrics() -> std::collections::BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("compose");
    let mut files = vec![root.join("prometheus/alerts.yml")];
    for entry in std::fs::read_dir(root.join("grafana/dashboards")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if file.extension().is_some_and(|e| e == "json") {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("hookstream_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(base.to_owned());
            rest = &tail[end..];
        }
    }
    assert!(names.len() > 20, "{names:?}");
    names
}

/// The metric names a Prometheus text exposition holds.
fn exported(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_a_dashboard_or_alert_rule_queries_is_exported() {
    let broker = Broker::start();
    let endpoint = harness::sink::Sink::start();
    let settings = Settings {
        ingest: "metrics_listen = \"127.0.0.1:0\"".into(),
        processor: "listen = \"127.0.0.1:0\"".into(),
        // acme (the last tenant): one event an hour, a breaker, an endpoint; alerts forwarded.
        tenants: format!(
            "[tenants.caps]\nevents_per_hour = 1\n[tenants.breaker]\ntenant_per_minute = 1000\n[tenants.delivery]\nallow_networks = [\"127.0.0.0/8\"]\n[[tenants.endpoints]]\nid = \"sink\"\nurl = \"{0}/hooks\"\nallow_http = true\nsecrets = [{{ id = \"k1\", value = \"whsec_dGVzdC1lbmRwb2ludC1zZWNyZXQtMzItYnl0ZXMh\" }}]\n[[alerts.forward]]\nid = \"am\"\nurl = \"{0}/api/v2/alerts\"\nformat = \"alertmanager\"\nallow_http = true\n",
            endpoint.url
        ),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "exported", &settings);
    let mut ingest = Service::ingest(&config.path);
    let ingest_metrics = format!("{}/metrics", operator_listener(&mut ingest));
    let processor = Service::processor(&config.path);
    let deliver = Service::deliver(&config.path);

    // Two events of one entity of acme (one partition): the first admitted, emitted and
    // delivered; the second deferred by the cap of one an hour.
    let hooks = format!("{}/v1/hooks/acme/orders", ingest.base_url());
    for id in ["e1", "e2"] {
        post_to_one_entity(&hooks, id);
    }
    let processor_metrics = format!("{}/metrics", processor.base_url());
    let deliver_metrics = format!("{}/metrics", deliver.base_url());
    wait_until(|| {
        metric(
            &processor_metrics,
            "hookstream_caps_deferred_total",
            &[("tenant", "acme")],
        )
        .is_some()
    })
    .expect("the second event is deferred by the cap");
    wait_until(|| {
        metric(
            &deliver_metrics,
            "hookstream_deliver_attempts_total",
            &[("tenant", "acme")],
        )
        .is_some()
    })
    .expect("the first event is delivered");
    wait_until(|| {
        metric(
            &processor_metrics,
            "hookstream_processor_consumer_lag_records",
            &[],
        )
        .is_some()
    })
    .expect("librdkafka's statistics report the lag");

    let mut all = std::collections::BTreeSet::new();
    for url in [&ingest_metrics, &processor_metrics, &deliver_metrics] {
        let (status, text) = get(url);
        assert_eq!(status, 200, "{url}");
        all.extend(exported(&text));
    }
    let missing: Vec<_> = queried_metrics().difference(&all).cloned().collect();
    assert!(
        missing.is_empty(),
        "queried by compose/grafana or compose/prometheus but exported by no service: {missing:?}\nexported: {all:?}"
    );
}

const ALERT_SECRET: &str = "whsec_dGVzdC1hbGVydC1mb3J3YXJkLXNlY3JldC0zMiE=";

/// Checks a Standard Webhooks signature as a receiver would.
fn signed_by(secret: &str, request: &harness::sink::Seen) -> bool {
    use base64::Engine;
    use hmac::Mac;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    let (id, timestamp) = (
        &request.headers["webhook-id"],
        &request.headers["webhook-timestamp"],
    );
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", engine.encode(mac.finalize().into_bytes()));
    request.headers["webhook-signature"]
        .split(' ')
        .any(|signature| signature == expected)
}

#[test]
fn alerts_reach_a_signed_webhook_and_an_alertmanager() {
    let broker = Broker::start();
    let (oncall, alertmanager) = (harness::sink::Sink::start(), harness::sink::Sink::start());
    // A receiver that refuses (400: not retried) is given up on without holding the others.
    let refusing = harness::sink::Sink::answering(400);
    let settings = Settings {
        // acme (the last tenant): one event an hour, so its second event raises cap_reached.
        tenants: format!(
            "[tenants.caps]\nevents_per_hour = 1\n\n[[alerts.forward]]\nid = \"oncall\"\nurl = \"{}/alerts\"\nallow_http = true\nfrom = \"earliest\"\nsecrets = [{{ id = \"a1\", value = \"{ALERT_SECRET}\" }}]\n\n[[alerts.forward]]\nid = \"am\"\nurl = \"{}/api/v2/alerts\"\nformat = \"alertmanager\"\nallow_http = true\nfrom = \"earliest\"\nkinds = [\"cap_reached\"]\n\n[[alerts.forward]]\nid = \"refusing\"\nurl = \"{}/hooks\"\nallow_http = true\nfrom = \"earliest\"\nsecrets = [{{ id = \"a1\", value = \"{ALERT_SECRET}\" }}]\n",
            oncall.url, alertmanager.url, refusing.url
        ),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "alerts", &settings);
    let ingest = Service::ingest(&config.path);
    let _processor = Service::processor(&config.path);
    let deliver = Service::deliver(&config.path);
    let hooks = format!("{}/v1/hooks/acme/orders", ingest.base_url());
    for id in ["a1", "a2"] {
        post_to_one_entity(&hooks, id);
    }

    wait_until(|| !oncall.requests().is_empty()).expect("the cap alert reaches the webhook");
    let sent = oncall.requests().remove(0);
    assert!(
        sent.headers["webhook-id"].starts_with("alerts/"),
        "{sent:?}"
    );
    assert!(
        signed_by(ALERT_SECRET, &sent),
        "a valid Standard Webhooks signature"
    );
    let alert: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        (alert["tenant"].as_str(), alert["kind"].as_str()),
        (Some("acme"), Some("cap_reached"))
    );

    wait_until(|| !alertmanager.requests().is_empty()).expect("and the Alertmanager");
    let posted = alertmanager.requests().remove(0);
    assert_eq!(
        (posted.method.as_str(), posted.path.as_str()),
        ("POST", "/api/v2/alerts")
    );
    let alerts: serde_json::Value = serde_json::from_slice(&posted.body).unwrap();
    let labels = &alerts[0]["labels"];
    assert_eq!(labels["alertname"], "HookstreamCapReached");
    assert_eq!(
        (labels["tenant"].as_str(), labels["cap"].as_str()),
        (Some("acme"), Some("events_per_hour"))
    );
    assert!(alerts[0]["startsAt"].is_string());
    let deliver_metrics = format!("{}/metrics", deliver.base_url());
    assert_eq!(
        metric(
            &deliver_metrics,
            "hookstream_alerts_forwarded_total",
            &[("forward", "am")]
        ),
        Some(1.0)
    );
    wait_until(|| {
        metric(
            &deliver_metrics,
            "hookstream_alerts_forward_failures_total",
            &[("forward", "refusing")],
        ) >= Some(1.0)
    })
    .expect("the refusing receiver is given up on, and counted");
    assert_eq!(
        refusing.requests().len() as f64,
        metric(
            &deliver_metrics,
            "hookstream_alerts_forward_failures_total",
            &[("forward", "refusing")]
        )
        .unwrap(),
        "a 400 is not retried"
    );
}

fn endpoint(id: &str, url: &str) -> String {
    format!(
        "[[tenants.endpoints]]\nid = \"{id}\"\nurl = \"{url}/hooks\"\nallow_http = true\nsecrets = [{{ id = \"k1\", value = \"whsec_dGVzdC1lbmRwb2ludC1zZWNyZXQtMzItYnl0ZXMh\" }}]\n"
    )
}

#[test]
fn delivery_endpoints_reload_without_a_restart() {
    let broker = Broker::start();
    let (first, moved, added) = (
        harness::sink::Sink::start(),
        harness::sink::Sink::start(),
        harness::sink::Sink::start(),
    );
    let settings = Settings {
        tenants: format!(
            "[tenants.delivery]\nallow_networks = [\"127.0.0.0/8\"]\n{}",
            endpoint("crm", &first.url)
        ),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "endpoints", &settings);
    let ingest = Service::ingest(&config.path);
    let _processor = Service::processor(&config.path);
    let deliver = Service::deliver(&config.path);
    let hooks = format!("{}/v1/hooks/acme/orders", ingest.base_url());
    let send = |id: &str| {
        let body = order(id);
        assert_eq!(
            post(&hooks, &signed(ORDERS_SECRET, &body), &body).status,
            202
        );
    };
    let got = |sink: &harness::sink::Sink, id: &str| {
        sink.requests()
            .iter()
            .any(|r| r.headers.get("webhook-id").is_some_and(|h| h == id))
    };
    send("before");
    wait_until(|| got(&first, "before")).expect("delivered to the first URL");

    // `crm` moves to another URL and `audit` is added.
    rewrite(&config, |text| {
        format!(
            "{}{}",
            text.replace(
                &format!("{}/hooks", first.url),
                &format!("{}/hooks", moved.url)
            ),
            endpoint("audit", &added.url)
        )
    });
    let deliver_metrics = format!("{}/metrics", deliver.base_url());
    wait_until(|| {
        metric(
            &deliver_metrics,
            "hookstream_config_reloads_total",
            &[("service", "deliver")],
        ) == Some(1.0)
    })
    .expect("deliver takes the file in");
    send("after");
    wait_until(|| got(&moved, "after") && got(&added, "after"))
        .expect("delivered to the moved and the added endpoint");
    assert!(!got(&first, "after"), "nothing goes to the old URL");
}

#[test]
fn a_raised_cap_applies_without_restarting_the_processor() {
    let broker = Broker::start();
    let settings = Settings {
        processor: "listen = \"127.0.0.1:0\"".into(),
        tenants: "[tenants.caps]\nevents_per_hour = 1\n".into(),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "capreload", &settings);
    let ingest = Service::ingest(&config.path);
    let processor = Service::processor(&config.path);
    let status = format!("{}/metrics", processor.base_url());
    let hooks = format!("{}/v1/hooks/acme/orders", ingest.base_url());
    let send = |id: &str| post_to_one_entity(&hooks, id);
    let ids = |topic: &str, count: usize| -> Vec<String> {
        harness::kafka::read_until(&config.brokers, &config.topic(topic), |r| r.len() >= count)
            .iter()
            .map(|r| r.header("hs-event-id").unwrap().to_owned())
            .collect()
    };
    send("c1");
    send("c2");
    assert_eq!(ids("events", 1), ["c1"]);
    assert_eq!(ids("deferred", 1), ["c2"], "one event an hour");

    rewrite(&config, |text| {
        text.replace("events_per_hour = 1\n", "events_per_hour = 100\n")
    });
    wait_until(|| {
        metric(
            &status,
            "hookstream_config_reloads_total",
            &[("service", "processor")],
        ) == Some(1.0)
    })
    .expect("the processor takes the file in");
    // The running window keeps its count (2 so far: one admitted, one deferred); the next
    // events of the hour are admitted under the raised cap, with no restart.
    send("c3");
    assert_eq!(ids("events", 2), ["c1", "c3"]);
    assert_eq!(
        metric(
            &status,
            "hookstream_caps_limit",
            &[("tenant", "acme"), ("cap", "events_per_hour")]
        ),
        Some(100.0)
    );
}

/// A request whose body is still arriving when a reload removes the secret it is signed
/// with finishes under the configuration it started with (202); a new request with that
/// secret is refused (401).
#[test]
fn a_request_in_flight_finishes_with_the_configuration_it_started_with() {
    use std::io::{Read, Write};
    let pipeline = Pipeline::start("inflight", false);
    let metrics = pipeline.url("/metrics");
    let body = order("in-flight");
    let head = format!(
        "POST /v1/hooks/acme/orders HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\nx-signature: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        orders_signature(ORDERS_SECRET, &body),
        body.len()
    );
    let address = pipeline
        .ingest
        .base_url()
        .trim_start_matches("http://")
        .to_owned();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..10]).unwrap();
    stream.flush().unwrap();

    let secret = format!("{{ id = \"k-new\", value = \"{ORDERS_SECRET}\" }}, ");
    rewrite(&pipeline.config, |text| {
        assert!(text.contains(&secret));
        text.replace(&secret, "")
    });
    wait_until(|| reloads(&metrics, "hookstream_config_reloads_total") == 1.0)
        .expect("the secret is removed");
    let fresh = order("after-removal");
    assert_eq!(
        post(
            &pipeline.url("/v1/hooks/acme/orders"),
            &signed(ORDERS_SECRET, &fresh),
            &fresh
        )
        .status,
        401
    );

    stream.write_all(&body[10..]).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
}
