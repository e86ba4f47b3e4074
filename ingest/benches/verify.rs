//! Criterion benchmark of every verifier on a 2 KiB body, against a baseline in the same run:
//! one bare HMAC-SHA256 over the same body (the least any scheme must do). After the run it
//! prints each verifier's time as a ratio of the baseline's.
//!
//! `cargo bench -p hookstream-ingest --bench verify`

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion};
use hmac::{Hmac, Mac};
use ingest::request::{Headers, Request, Target, Unverified};
use ingest::verify::{sign, Verifier};
use schemas::config::{Config, Encoding};

const NOW: i64 = 1_700_000_000;
const URL: &str = "https://hooks.example.com/v1/hooks/t/s";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const GROUP: &str = "verify_2KiB";

fn verifier(scheme: &str, secret: &str, extra: &str) -> Verifier {
    let toml = format!(
        "[[tenants]]\nid = \"t\"\n[[tenants.sources]]\nid = \"s\"\nscheme = \"{scheme}\"\n\
         secrets = [{{ id = \"k\", value = \"{secret}\" }}]\n{extra}"
    );
    Verifier::build(&Config::parse_str(&toml).unwrap().tenants[0].sources[0]).unwrap()
}

fn body() -> Vec<u8> {
    let mut body = br#"{"id":"evt_1","type":"call.transcript","data":{"id":"call_1"},"created":1700000000,"text":""#.to_vec();
    body.resize(2040, b'a');
    body.extend_from_slice(br#""}"#);
    body
}

type Case = (&'static str, Verifier, Vec<(&'static str, String)>, Vec<u8>);

fn cases() -> Vec<Case> {
    let json = body();
    let form: Vec<u8> = format!(
        "CallSid=CA1&CallStatus=completed&Transcript={}",
        "a".repeat(1990)
    )
    .into_bytes();
    let ts = NOW.to_string();
    vec![
        (
            "standard",
            verifier("standard", WHSEC, ""),
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts.clone()),
                (
                    "webhook-signature",
                    sign::standard(WHSEC, "msg_1", NOW, &json),
                ),
            ],
            json.clone(),
        ),
        (
            "hmac",
            verifier(
                "hmac",
                "secret",
                "hmac = { header = \"x-sig\", prefix = \"sha256=\" }",
            ),
            vec![(
                "x-sig",
                sign::hmac("secret", "sha256=", Encoding::Hex, None, &json),
            )],
            json.clone(),
        ),
        (
            "stripe",
            verifier("stripe", "whsec_s", ""),
            vec![("stripe-signature", sign::stripe("whsec_s", NOW, &json))],
            json.clone(),
        ),
        (
            "github",
            verifier("github", "g", ""),
            vec![("x-hub-signature-256", sign::github("g", &json))],
            json.clone(),
        ),
        (
            "slack",
            verifier("slack", "s", ""),
            vec![
                ("x-slack-signature", sign::slack("s", NOW, &json)),
                ("x-slack-request-timestamp", ts.clone()),
            ],
            json.clone(),
        ),
        (
            "shopify",
            verifier("shopify", "s", ""),
            vec![("x-shopify-hmac-sha256", sign::shopify("s", &json))],
            json.clone(),
        ),
        (
            "paddle",
            verifier("paddle", "p", "tolerance_secs = 300"),
            vec![("paddle-signature", sign::paddle("p", NOW, &json))],
            json.clone(),
        ),
        (
            "hubspot",
            verifier("hubspot", "h", ""),
            vec![
                (
                    "x-hubspot-signature-v3",
                    sign::hubspot("h", "POST", URL, &json, NOW * 1000),
                ),
                ("x-hubspot-request-timestamp", (NOW * 1000).to_string()),
            ],
            json.clone(),
        ),
        (
            "twilio",
            verifier("twilio", "tok", ""),
            vec![
                (
                    "x-twilio-signature",
                    sign::twilio(
                        "tok",
                        URL,
                        &[
                            ("CallSid", "CA1"),
                            ("CallStatus", "completed"),
                            ("Transcript", &"a".repeat(1990)),
                        ],
                    ),
                ),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
            form,
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let json = body();
    group.bench_function(BenchmarkId::from_parameter("baseline_hmac_sha256"), |b| {
        b.iter(|| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"secret").unwrap();
            mac.update(std::hint::black_box(&json));
            mac.finalize()
        })
    });
    for (name, verifier, headers, body) in cases() {
        let body = Bytes::from(body);
        let mut hs = Headers::new();
        for (k, v) in &headers {
            hs.push(k, v.as_bytes());
        }
        let target = Target {
            method: "POST".into(),
            url: URL.into(),
        };
        let check = Request::<Unverified>::new("t", "s", hs.clone(), body.clone(), NOW * 1000)
            .with_target(target.clone())
            .verify(&verifier, NOW * 1000);
        assert!(check.is_ok(), "{name}: {:?}", check.err());
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                Request::<Unverified>::new("t", "s", hs.clone(), body.clone(), NOW * 1000)
                    .with_target(target.clone())
                    .verify(&verifier, NOW * 1000)
                    .is_ok()
            })
        });
    }
    group.finish();
}

/// Reads criterion's estimates of this run and prints each verifier against the baseline.
fn print_ratios() {
    // Criterion writes under <target>/criterion; this executable is <target>/release/deps/….
    let root = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            let exe = std::env::current_exe().expect("bench executable path");
            exe.ancestors()
                .nth(3)
                .expect("<target>/release/deps/exe")
                .to_owned()
        });
    let mean = |name: &str| -> Option<f64> {
        let path = root
            .join("criterion")
            .join(GROUP)
            .join(name)
            .join("new/estimates.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        json["mean"]["point_estimate"].as_f64()
    };
    let Some(baseline) = mean("baseline_hmac_sha256") else {
        return;
    };
    println!(
        "\nverifier        mean      × baseline (one HMAC-SHA256 of 2 KiB = {baseline:.0} ns)"
    );
    for (name, ..) in cases() {
        if let Some(m) = mean(name) {
            println!("{name:<14} {m:>7.0} ns  {:>5.2}×", m / baseline);
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
}
