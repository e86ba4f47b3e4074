//! Delivery throughput: `hookstream deliver` against the same HTTP client without Kafka.
//!
//! Starts a Tansu broker (the memory engine, so the broker is not the limit;
//! `HOOKSTREAM_BENCH_ENGINE=sqlite` for the durable one) and an HTTP receiver on loopback
//! that answers 200 after a fixed delay (0 ms, then 50 ms). For each delay it measures, in
//! the same run:
//!
//! - **baseline**: reqwest (the client `deliver` uses, one per endpoint, redirects off)
//!   POSTing the same signed bodies straight to the receiver, with as many requests in
//!   flight per endpoint as `deliver` allows (`max_in_flight`);
//! - **deliver**: `events` pre-filled with the same events, then the release `hookstream
//!   deliver` from start until every delivery reached the receiver (timed from the first
//!   arrival to the last, so start-up and group join are not counted);
//! - **deliver beside a failing endpoint**: the same, with one more endpoint of the tenant
//!   that hangs past its timeout on every request; the healthy endpoints' throughput.
//!
//! It prints deliveries per second and the ratios. Run with
//! `TANSU_BIN=… cargo bench --bench deliver`; `HOOKSTREAM_BENCH_EVENTS` sets the events per
//! case (default 10 000 at 0 ms, 1 500 at 50 ms; each goes to every endpoint),
//! `HOOKSTREAM_BENCH_VERBOSE` prints arrivals per 250 ms and spill counters,
//! `HOOKSTREAM_BENCH_DELAYS` the receiver
//! delays in ms (default `0,50`). Under `cargo test` it makes a smoke run of 40 events.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::broker::Engine;
use harness::{Broker, Service, Settings, TestConfig};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Healthy endpoints of the tenant.
const ENDPOINTS: usize = 4;
const IN_FLIGHT: usize = 8;

/// Arrivals at the receiver's healthy endpoints: count, first and last.
#[derive(Default)]
struct Arrivals {
    count: AtomicUsize,
    span: Mutex<Option<(Instant, Instant)>>,
    /// Arrivals per 250 ms since the first (with HOOKSTREAM_BENCH_VERBOSE).
    timeline: Mutex<Vec<usize>>,
}

impl Arrivals {
    fn arrived(&self) {
        let now = Instant::now();
        let mut span = self.span.lock().unwrap();
        *span = Some(span.map_or((now, now), |(first, _)| (first, now)));
        let bucket = (now - span.unwrap().0).as_millis() as usize / 250;
        let mut timeline = self.timeline.lock().unwrap();
        if timeline.len() <= bucket {
            timeline.resize(bucket + 1, 0);
        }
        timeline[bucket] += 1;
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        *self.span.lock().unwrap() = None;
        self.timeline.lock().unwrap().clear();
    }

    fn elapsed(&self) -> Duration {
        let (first, last) = self.span.lock().unwrap().expect("arrivals");
        last - first
    }
}

/// An actix-web receiver: `/hang` answers after 5 s, the others after `delay`.
fn receiver(delay: Duration, arrivals: Arc<Arrivals>) -> u16 {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || {
                let arrivals = arrivals.clone();
                actix_web::App::new().default_service(actix_web::web::to(
                    move |request: actix_web::HttpRequest, _body: actix_web::web::Bytes| {
                        let arrivals = arrivals.clone();
                        async move {
                            if request.path() == "/hang" {
                                actix_web::rt::time::sleep(Duration::from_secs(5)).await;
                            } else {
                                actix_web::rt::time::sleep(delay).await;
                                arrivals.arrived();
                            }
                            actix_web::HttpResponse::Ok().body("ok")
                        }
                    },
                ))
            })
            .workers(2)
            .bind("127.0.0.1:0")
            .unwrap();
            port_tx.send(server.addrs()[0].port()).unwrap();
            server.run().await.unwrap();
        });
    });
    port_rx.recv().unwrap()
}

fn event(i: usize) -> String {
    serde_json::json!({
        "tenant": "agents", "source": "calls", "event_id": format!("e{i}"),
        "event_type": "call.ended", "entity": format!("call-{}", i % 97),
        "occurred_at": "2026-11-24T10:00:00.000Z", "late": false,
        "payload": {"id": i, "transcript": "x".repeat(1024)}
    })
    .to_string()
}

fn endpoints(port: u16, failing: bool) -> String {
    let mut toml = String::new();
    let mut add = |id: &str| {
        toml.push_str(&format!(
            "[[tenants.endpoints]]\nid = \"{id}\"\nurl = \"http://127.0.0.1:{port}/{id}\"\nallow_http = true\ntimeout_ms = 2000\nmax_in_flight = {IN_FLIGHT}\nsecrets = [{{ id = \"k\", value = \"{SECRET}\" }}]\n"
        ));
    };
    for e in 0..ENDPOINTS {
        add(&format!("e{e}"));
    }
    if failing {
        add("hang");
    }
    toml.push_str("[tenants.delivery]\nallow_networks = [\"127.0.0.0/8\"]\n");
    toml
}

/// Deliveries per second of `hookstream deliver` to the healthy endpoints.
fn deliver(
    broker: &Broker,
    name: &str,
    port: u16,
    events: usize,
    failing: bool,
    arrivals: &Arrivals,
) -> f64 {
    let tenants = format!(
        "\n[[tenants]]\nid = \"agents\"\n[[tenants.sources]]\nid = \"calls\"\nscheme = \"hmac\"\nsecrets = [{{ id = \"k1\", value = \"s\" }}]\n{}",
        endpoints(port, failing)
    );
    let settings = Settings {
        tenants,
        ..Settings::default()
    };
    let config = TestConfig::write_with(broker, name, &settings);
    harness::create_topics(&config);
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let topic = config.topic("events");
    runtime.block_on(async {
        let sends: Vec<_> = (0..events)
            .map(|i| {
                let value = event(i);
                let key = format!("agents/call-{}", i % 97);
                let producer = producer.clone();
                let topic = topic.clone();
                async move {
                    let record = rdkafka::producer::FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&value);
                    producer
                        .send(record, Duration::from_secs(60))
                        .await
                        .unwrap();
                }
            })
            .collect();
        futures::future::join_all(sends).await;
    });
    arrivals.reset();
    let service = Service::deliver(&config.path);
    let expected = events * ENDPOINTS;
    let deadline = Instant::now() + Duration::from_secs(600);
    while arrivals.count.load(Ordering::SeqCst) < expected {
        assert!(
            Instant::now() < deadline,
            "deliver did not finish: {}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(20)); // polling the counter
    }
    if std::env::var_os("HOOKSTREAM_BENCH_VERBOSE").is_some() {
        let (_, metrics) = harness::http::get(&format!("{}/metrics", service.base_url()));
        for line in metrics.lines().filter(|l| {
            !l.starts_with('#')
                && ["overflow", "breaker_deferred", "parked", "backlog"]
                    .iter()
                    .any(|m| l.contains(m))
        }) {
            eprintln!("{line}");
        }
        eprintln!(
            "arrivals per 250 ms: {:?}",
            arrivals.timeline.lock().unwrap()
        );
    }
    expected as f64 / arrivals.elapsed().as_secs_f64()
}

/// Requests per second of the bare client: the same signed requests, the same concurrency.
fn baseline(port: u16, events: usize, arrivals: &Arrivals) -> f64 {
    arrivals.reset();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let webhook = Arc::new(standardwebhooks::Webhook::new(SECRET).unwrap());
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for e in 0..ENDPOINTS {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}/e{e}");
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..IN_FLIGHT {
                let (client, url, next, webhook) =
                    (client.clone(), url.clone(), next.clone(), webhook.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= events {
                            return;
                        }
                        let body = event(i);
                        let id = format!("e{i}");
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs() as i64;
                        let signature = webhook.sign(&id, now, body.as_bytes()).unwrap();
                        let response = client
                            .post(&url)
                            .timeout(Duration::from_secs(2))
                            .header("content-type", "application/json")
                            .header("webhook-id", id)
                            .header("webhook-timestamp", now.to_string())
                            .header("webhook-signature", signature)
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        response.bytes().await.unwrap();
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    (events * ENDPOINTS) as f64 / arrivals.elapsed().as_secs_f64()
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let fixed: Option<usize> = std::env::var("HOOKSTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok());
    // Each case runs for seconds, not a fraction of one: 10 000 events at 0 ms, 1 500 at
    // 50 ms (a minute of requests per run at max_in_flight).
    let events_for = |delay: Duration| match (fixed, measuring) {
        (Some(events), _) => events,
        (None, false) => 40,
        (None, true) if delay.is_zero() => 10_000,
        (None, true) => 1_500,
    };
    // The memory engine when measuring, so the broker is not the limit; sqlite for the
    // smoke run of the test suite. HOOKSTREAM_BENCH_ENGINE=sqlite|memory chooses.
    let engine = Engine::from_env(if measuring {
        Engine::Memory
    } else {
        Engine::Sqlite
    });
    let broker = Broker::start_on(engine);
    println!(
        "{ENDPOINTS} endpoints, max_in_flight {IN_FLIGHT}; Tansu {} engine",
        engine.name()
    );
    println!("| receiver | events | baseline (bare client) | deliver | deliver / baseline | deliver beside a failing endpoint | beside / alone |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let delays: Vec<Duration> = std::env::var("HOOKSTREAM_BENCH_DELAYS")
        .unwrap_or_else(|_| "0,50".into())
        .split(',')
        .map(|ms| Duration::from_millis(ms.trim().parse().expect("delays in ms: 0,50")))
        .collect();
    for (i, delay) in delays.into_iter().enumerate() {
        let events = events_for(delay);
        let arrivals = Arc::new(Arrivals::default());
        let port = receiver(delay, arrivals.clone());
        let bare = baseline(port, events, &arrivals);
        let alone = deliver(
            &broker,
            &format!("bench{i}"),
            port,
            events,
            false,
            &arrivals,
        );
        let beside = deliver(
            &broker,
            &format!("bench{i}f"),
            port,
            events,
            true,
            &arrivals,
        );
        println!(
            "| {} ms | {events} | {bare:.0}/s | {alone:.0}/s | {:.2} | {beside:.0}/s | {:.2} |",
            delay.as_millis(),
            alone / bare,
            beside / alone
        );
    }
}
