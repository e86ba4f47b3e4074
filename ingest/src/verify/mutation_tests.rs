//! Property tests across every scheme: a valid request verifies, and no random mutation of
//! its body, its signed headers or its URL does.

use bytes::Bytes;
use proptest::prelude::*;
use schemas::config::{Config, Encoding};

use super::{sign, Verifier};
use crate::request::{Headers, Request, Target, Unverified};

const NOW_SECS: i64 = 1_700_000_000;
const URL: &str = "https://hooks.example.com/v1/hooks/acme/src?x=1";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Case {
    scheme: &'static str,
    verifier: Verifier,
    headers: Vec<(String, String)>,
    /// Headers covered by the signature (mutating them must break it).
    signed: Vec<&'static str>,
    body: Vec<u8>,
    url: String,
}

fn verifier(scheme: &str, secret: &str, extra: &str) -> Verifier {
    let toml = format!(
        "[[tenants]]\nid = \"t\"\n[[tenants.sources]]\nid = \"s\"\nscheme = \"{scheme}\"\n\
         secrets = [{{ id = \"old\", value = \"whsec_b2xkLXNlY3JldA==\" }}, {{ id = \"k\", value = \"{secret}\" }}]\n{extra}"
    );
    let config = Config::parse_str(&toml).unwrap();
    Verifier::build(&config.tenants[0].sources[0]).unwrap()
}

fn h(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn cases() -> Vec<Case> {
    let json = br#"{"id":"evt_1","type":"thing.updated","data":{"id":"x1"},"created":1700000000}"#
        .to_vec();
    let form = b"CallSid=CA1&CallStatus=completed&From=%2B15550001".to_vec();
    let ts = NOW_SECS.to_string();
    let mut cases = vec![
        Case {
            scheme: "standard",
            verifier: verifier("standard", WHSEC, ""),
            headers: h(&[
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts.clone()),
                (
                    "webhook-signature",
                    sign::standard(WHSEC, "msg_1", NOW_SECS, &json),
                ),
            ]),
            signed: vec!["webhook-id", "webhook-timestamp", "webhook-signature"],
            body: json.clone(),
            url: URL.into(),
        },
        Case {
            scheme: "hmac",
            verifier: verifier(
                "hmac",
                "plain-secret",
                "hmac = { header = \"x-sig\", prefix = \"sha256=\", timestamp_header = \"x-ts\" }",
            ),
            headers: h(&[
                (
                    "x-sig",
                    sign::hmac(
                        "plain-secret",
                        "sha256=",
                        Encoding::Hex,
                        Some(NOW_SECS),
                        &json,
                    ),
                ),
                ("x-ts", ts.clone()),
            ]),
            signed: vec!["x-sig", "x-ts"],
            body: json.clone(),
            url: URL.into(),
        },
        Case {
            scheme: "stripe",
            verifier: verifier("stripe", "whsec_stripe-secret", ""),
            headers: h(&[(
                "stripe-signature",
                sign::stripe("whsec_stripe-secret", NOW_SECS, &json),
            )]),
            signed: vec!["stripe-signature"],
            body: json.clone(),
            url: URL.into(),
        },
        Case {
            scheme: "github",
            verifier: verifier("github", "gh-secret", ""),
            headers: h(&[("x-hub-signature-256", sign::github("gh-secret", &json))]),
            signed: vec!["x-hub-signature-256"],
            body: json.clone(),
            url: URL.into(),
        },
        Case {
            scheme: "slack",
            verifier: verifier("slack", "slack-secret", ""),
            headers: h(&[
                (
                    "x-slack-signature",
                    sign::slack("slack-secret", NOW_SECS, &json),
                ),
                ("x-slack-request-timestamp", ts.clone()),
            ]),
            signed: vec!["x-slack-signature", "x-slack-request-timestamp"],
            body: json.clone(),
            url: URL.into(),
        },
        Case {
            scheme: "shopify",
            verifier: verifier("shopify", "shopify-secret", ""),
            headers: h(&[(
                "x-shopify-hmac-sha256",
                sign::shopify("shopify-secret", &json),
            )]),
            signed: vec!["x-shopify-hmac-sha256"],
            body: json.clone(),
            url: URL.into(),
        },
        Case {
            scheme: "paddle",
            verifier: verifier("paddle", "pdl_ntfset_secret", ""),
            headers: h(&[(
                "paddle-signature",
                sign::paddle("pdl_ntfset_secret", NOW_SECS, &json),
            )]),
            signed: vec!["paddle-signature"],
            body: json.clone(),
            url: URL.into(),
        },
        Case {
            scheme: "hubspot",
            verifier: verifier("hubspot", "hubspot-secret", ""),
            headers: h(&[
                (
                    "x-hubspot-signature-v3",
                    sign::hubspot("hubspot-secret", "POST", URL, &json, NOW_SECS * 1000),
                ),
                ("x-hubspot-request-timestamp", (NOW_SECS * 1000).to_string()),
            ]),
            signed: vec!["x-hubspot-signature-v3", "x-hubspot-request-timestamp"],
            body: json.clone(),
            url: URL.into(),
        },
    ];
    cases.push(Case {
        scheme: "twilio",
        verifier: verifier("twilio", "twilio-token", ""),
        headers: h(&[
            (
                "x-twilio-signature",
                sign::twilio(
                    "twilio-token",
                    URL,
                    &[
                        ("CallSid", "CA1"),
                        ("CallStatus", "completed"),
                        ("From", "+15550001"),
                    ],
                ),
            ),
            ("content-type", "application/x-www-form-urlencoded".into()),
        ]),
        signed: vec!["x-twilio-signature"],
        body: form,
        url: URL.into(),
    });
    cases
}

fn check(
    case: &Case,
    headers: &[(String, String)],
    body: &[u8],
    url: &str,
) -> Result<String, super::VerifyError> {
    let mut hs = Headers::new();
    for (k, v) in headers {
        hs.push(k, v.as_bytes());
    }
    let request =
        Request::<Unverified>::new("t", "s", hs, Bytes::copy_from_slice(body), NOW_SECS * 1000)
            .with_target(Target {
                method: "POST".into(),
                url: url.into(),
            });
    request
        .verify(&case.verifier, NOW_SECS * 1000)
        .map(|r| r.key_id().to_owned())
}

#[test]
fn every_scheme_verifies_its_valid_request_with_the_rotated_key() {
    for case in cases() {
        assert_eq!(
            check(&case, &case.headers, &case.body, &case.url),
            Ok("k".into()),
            "{}",
            case.scheme
        );
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBodyBit {
        index: prop::sample::Index,
        bit: u8,
    },
    InsertBodyByte {
        index: prop::sample::Index,
        byte: u8,
    },
    TruncateBody {
        keep: prop::sample::Index,
    },
    FlipHeaderBit {
        header: prop::sample::Index,
        index: prop::sample::Index,
        bit: u8,
    },
    DropHeader {
        header: prop::sample::Index,
    },
    TruncateHeader {
        header: prop::sample::Index,
        keep: prop::sample::Index,
    },
    ChangeUrl {
        index: prop::sample::Index,
        byte: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8)
            .prop_map(|(index, bit)| Mutation::FlipBodyBit { index, bit }),
        (any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(index, byte)| Mutation::InsertBodyByte { index, byte }),
        any::<prop::sample::Index>().prop_map(|keep| Mutation::TruncateBody { keep }),
        // Bit 5 (0x20) is skipped: it only switches the case of hex digits, which decode the same.
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop::sample::select(vec![0u8, 1, 2, 3, 4, 6])
        )
            .prop_map(|(header, index, bit)| Mutation::FlipHeaderBit {
                header,
                index,
                bit
            }),
        any::<prop::sample::Index>().prop_map(|header| Mutation::DropHeader { header }),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(header, keep)| Mutation::TruncateHeader { header, keep }),
        (any::<prop::sample::Index>(), b'a'..=b'z')
            .prop_map(|(index, byte)| Mutation::ChangeUrl { index, byte }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_mutation_of_a_valid_request_verifies(scheme in 0usize..9, mutation in mutation()) {
        let all = cases();
        let case = &all[scheme];
        let mut headers = case.headers.clone();
        let mut body = case.body.clone();
        let mut url = case.url.clone();
        let signed = |i: &prop::sample::Index| case.signed[i.index(case.signed.len())];
        let position = |name: &str| headers.iter().position(|(k, _)| k == name).unwrap();
        match &mutation {
            Mutation::FlipBodyBit { index, bit } => {
                let i = index.index(body.len());
                body[i] ^= 1 << bit;
            }
            Mutation::InsertBodyByte { index, byte } => {
                let i = index.index(body.len() + 1);
                body.insert(i, *byte);
            }
            Mutation::TruncateBody { keep } => body.truncate(keep.index(body.len())),
            Mutation::FlipHeaderBit { header, index, bit } => {
                let p = position(signed(header));
                let mut bytes = headers[p].1.clone().into_bytes();
                let i = index.index(bytes.len());
                bytes[i] ^= 1 << bit;
                // Header values must stay visible ASCII to be sent at all.
                prop_assume!(bytes[i].is_ascii_graphic() && bytes[i] != b',' && bytes[i] != b';');
                headers[p].1 = String::from_utf8(bytes).unwrap();
            }
            Mutation::DropHeader { header } => {
                let p = position(signed(header));
                headers.remove(p);
            }
            Mutation::TruncateHeader { header, keep } => {
                let p = position(signed(header));
                let len = headers[p].1.len();
                headers[p].1.truncate(keep.index(len));
            }
            Mutation::ChangeUrl { index, byte } => {
                prop_assume!(matches!(case.scheme, "hubspot" | "twilio"));
                let i = index.index(url.len() - 8) + 8;
                prop_assume!(url.as_bytes()[i] != *byte);
                url.replace_range(i..i + 1, &(*byte as char).to_string());
            }
        }
        if case.scheme == "twilio" {
            // Twilio signs the parsed form fields, not the bytes: a body that parses to the
            // same fields (`a=1&&b=2`) is the same request by its definition.
            let fields = |b: &[u8]| { let mut f: Vec<_> = form_urlencoded::parse(b).into_owned().collect(); f.sort(); f };
            prop_assume!(fields(&body) != fields(&case.body) || headers != case.headers || url != case.url);
        }
        let result = check(case, &headers, &body, &url);
        prop_assert!(result.is_err(), "{} accepted {:?}", case.scheme, mutation);
    }
}
