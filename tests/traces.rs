//! One trace per webhook, end to end: a request's `traceparent` is continued by the ingest
//! (into `raw`), the processor (into `events`) and `deliver` (to the endpoint), and the three
//! spans reach an OTLP/HTTP collector the test runs.

mod harness;

use std::collections::BTreeMap;

use harness::http::post;
use harness::kafka::read_until;
use harness::signing::{orders_signature, ORDERS_SECRET};
use harness::sink::Sink;
use harness::{wait_until, Broker, Service, Settings, TestConfig};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as the collector received it (OTLP/JSON: ids in hex).
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
}

fn spans(collector: &Sink) -> Vec<Span> {
    let mut spans = Vec::new();
    for request in collector.requests() {
        assert_eq!(request.path, "/v1/traces");
        let export: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_else(|e| {
            panic!(
                "OTLP/JSON body ({e}): {}",
                String::from_utf8_lossy(&request.body)
            )
        });
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let text = |k: &str| span[k].as_str().unwrap_or_default().to_lowercase();
                    spans.push(Span {
                        service: service.clone(),
                        name: text("name"),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent: text("parentSpanId"),
                    });
                }
            }
        }
    }
    spans
}

fn traceparent_fields(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{value}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[test]
fn one_trace_spans_ingest_processor_and_delivery() {
    let broker = Broker::start();
    let collector = Sink::start();
    let endpoint = Sink::start();
    let settings = Settings {
        tenants: format!(
            "[tenants.delivery]\nallow_networks = [\"127.0.0.0/8\"]\n[[tenants.endpoints]]\nid = \"sink\"\nurl = \"{}/hooks\"\nallow_http = true\nsecrets = [{{ id = \"k1\", value = \"whsec_dGVzdC1lbmRwb2ludC1zZWNyZXQtMzItYnl0ZXMh\" }}]\n",
            endpoint.url
        ),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "traces", &settings);
    // The endpoint in the file; the protocol and a short batch delay as OpenTelemetry's
    // variables give them.
    let text = std::fs::read_to_string(&config.path).unwrap();
    let text = format!("[telemetry]\notlp_endpoint = \"{}\"\n{text}", collector.url);
    std::fs::write(&config.path, text).unwrap();
    let otel = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let ingest = Service::ingest_with_env(&config.path, &otel);
    let _processor = Service::processor_with_env(&config.path, &otel);
    let _deliver = Service::deliver_with_env(&config.path, &otel);

    let hooks = format!("{}/v1/hooks/acme/orders", ingest.base_url());
    // A webhook of entity `o-<n>`, signed, with the given `traceparent` if any.
    let send = |id: &str, n: u32, traceparent: Option<&str>| {
        let body = format!(
            r#"{{"id":"{id}","type":"t","order_id":"o-{n}","occurred_at":"2026-11-25T00:00:00Z"}}"#
        );
        let mut headers = vec![(
            "x-signature".to_owned(),
            orders_signature(ORDERS_SECRET, body.as_bytes()),
        )];
        headers.extend(traceparent.map(|t| ("traceparent".to_owned(), t.to_owned())));
        assert_eq!(post(&hooks, &headers, body.as_bytes()).status, 202);
    };
    send("t1", 1, Some(&format!("00-{TRACE_ID}-{CALLER_SPAN}-01")));
    send("t2", 2, None);
    // A hostile traceparent (upper-case hex, an all-zero trace, garbage) is no reason to
    // refuse: the request starts a trace of its own.
    send(
        "t3",
        3,
        Some("00-00000000000000000000000000000000-00F067AA0BA902B7-zz"),
    );

    // The headers: raw (the ingest's span), events (the processor's), the endpoint's request
    // (the attempt's), all of the caller's trace.
    let raw = read_until(&config.brokers, &config.topic("raw"), |r| r.len() == 3);
    let events = read_until(&config.brokers, &config.topic("events"), |r| r.len() == 3);
    let by_event = |records: &[harness::kafka::Record]| -> BTreeMap<String, (String, String)> {
        records
            .iter()
            .map(|r| {
                let id = r.header("hs-event-id").unwrap().to_owned();
                (
                    id,
                    traceparent_fields(r.header("traceparent").expect("traceparent")),
                )
            })
            .collect()
    };
    let (raw, events) = (by_event(&raw), by_event(&events));
    let (ingest_trace, ingest_span) = raw["t1"].clone();
    assert_eq!(ingest_trace, TRACE_ID);
    assert_ne!(ingest_span, CALLER_SPAN);
    let (process_trace, process_span) = events["t1"].clone();
    assert_eq!(process_trace, TRACE_ID);
    assert_ne!(process_span, ingest_span);
    let (new_trace, _) = raw["t2"].clone();
    assert_ne!(
        new_trace, TRACE_ID,
        "a request without traceparent starts a trace"
    );
    assert_eq!(events["t2"].0, new_trace);
    let (hostile_trace, _) = raw["t3"].clone();
    assert!(![
        TRACE_ID,
        new_trace.as_str(),
        "00000000000000000000000000000000"
    ]
    .contains(&hostile_trace.as_str()));
    assert_eq!(events["t3"].0, hostile_trace);

    wait_until(|| endpoint.requests().len() >= 3).expect("every event delivered");
    let sent = endpoint
        .requests()
        .into_iter()
        .find(|r| r.headers.get("webhook-id").is_some_and(|id| id == "t1"))
        .expect("t1 delivered");
    let (deliver_trace, deliver_span) = traceparent_fields(&sent.headers["traceparent"]);
    assert_eq!(deliver_trace, TRACE_ID);

    // The spans, as exported: one trace, parent to child across the three services.
    let chain = || {
        let spans = spans(&collector);
        let find = |span_id: &str| spans.iter().find(|s| s.span_id == span_id).cloned();
        Some((
            find(&ingest_span)?,
            find(&process_span)?,
            find(&deliver_span)?,
        ))
    };
    wait_until(|| chain().is_some()).unwrap_or_else(|| {
        panic!(
            "the three spans reach the collector; it has: {:#?}",
            spans(&collector)
        )
    });
    let (ingest, process, deliver) = chain().unwrap();
    for span in [&ingest, &process, &deliver] {
        assert_eq!(span.trace_id, TRACE_ID, "{span:?}");
    }
    assert_eq!(
        (
            ingest.name.as_str(),
            ingest.service.as_str(),
            ingest.parent.as_str()
        ),
        ("hookstream.ingest", "hookstream-ingest", CALLER_SPAN)
    );
    assert_eq!(
        (
            process.name.as_str(),
            process.service.as_str(),
            process.parent.as_str()
        ),
        (
            "hookstream.process",
            "hookstream-processor",
            ingest_span.as_str()
        )
    );
    assert_eq!(
        (
            deliver.name.as_str(),
            deliver.service.as_str(),
            deliver.parent.as_str()
        ),
        (
            "hookstream.deliver",
            "hookstream-deliver",
            process_span.as_str()
        )
    );
}
