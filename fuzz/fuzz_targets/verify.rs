//! Every signature scheme through the ingest's public verify API. The first input byte picks
//! the scheme (13 variants), the second the mode:
//!
//! * **sign then mutate** (even): a request built from fuzzed body, ids, form fields and
//!   timestamp is signed as the provider signs it; it must verify with the configured key, and
//!   one fuzzed mutation of its body, a signed header or (for schemes that sign it) its URL
//!   must make it fail — except mutations that leave the signed content the same by the
//!   scheme's definition (hex digit case, Twilio's concatenated form fields).
//! * **arbitrary request** (odd): fuzzed headers, body and URL. Nothing may panic, and a
//!   request that verifies must fail against a verifier of the same scheme with other
//!   secrets: acceptance must depend on the key.

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use ingest::request::{Headers, Request, Target, Unverified};
use ingest::verify::{sign, Verifier, VerifyError};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use schemas::config::{Config, Encoding};

const NOW_SECS: i64 = 1_700_000_000;
const URL: &str = "https://hooks.example.com/v1/hooks/acme/src?x=1";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WHSEC_OTHER: &str = "whsec_b3RoZXItdGVuYW50LXNlY3JldC0xMjM0NTY=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Standard,
    Svix,
    HmacHexTs,
    HmacBase64,
    Stripe,
    Github,
    GithubSha1,
    Slack,
    Shopify,
    Paddle,
    Hubspot,
    TwilioForm,
    TwilioJson,
}

const KINDS: [Kind; 13] = [
    Kind::Standard,
    Kind::Svix,
    Kind::HmacHexTs,
    Kind::HmacBase64,
    Kind::Stripe,
    Kind::Github,
    Kind::GithubSha1,
    Kind::Slack,
    Kind::Shopify,
    Kind::Paddle,
    Kind::Hubspot,
    Kind::TwilioForm,
    Kind::TwilioJson,
];

/// Every header name any scheme reads, for the arbitrary mode.
const NAMES: [&str; 22] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "x-sig",
    "x-ts",
    "stripe-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-shopify-hmac-sha256",
    "paddle-signature",
    "x-hubspot-signature-v3",
    "x-hubspot-request-timestamp",
    "x-twilio-signature",
    "content-type",
    "i-twilio-idempotency-token",
    "x-github-delivery",
    "x-shopify-topic",
];

impl Kind {
    /// (scheme, secret of key `k`, the same scheme's secret in another tenant, extra TOML)
    fn config(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Kind::Standard => ("standard", WHSEC, WHSEC_OTHER, ""),
            Kind::Svix => ("svix", WHSEC, WHSEC_OTHER, ""),
            Kind::HmacHexTs => (
                "hmac",
                "plain-secret",
                "other-secret",
                "hmac = { header = \"x-sig\", prefix = \"sha256=\", timestamp_header = \"x-ts\" }",
            ),
            Kind::HmacBase64 => (
                "hmac",
                "plain-secret",
                "other-secret",
                "hmac = { header = \"x-sig\", encoding = \"base64\" }",
            ),
            Kind::Stripe => ("stripe", "whsec_stripe-secret", "whsec_other", ""),
            Kind::Github => ("github", "gh-secret", "gh-other", ""),
            Kind::GithubSha1 => ("github", "gh-secret", "gh-other", "allow_sha1 = true"),
            Kind::Slack => ("slack", "slack-secret", "slack-other", ""),
            Kind::Shopify => ("shopify", "shopify-secret", "shopify-other", ""),
            Kind::Paddle => ("paddle", "pdl_ntfset_secret", "pdl_ntfset_other", ""),
            Kind::Hubspot => ("hubspot", "hubspot-secret", "hubspot-other", ""),
            Kind::TwilioForm | Kind::TwilioJson => ("twilio", "twilio-token", "twilio-other", ""),
        }
    }

    /// Headers whose signatures are hex: switching the case of a letter keeps their meaning.
    fn hex_signature_header(self) -> Option<&'static str> {
        match self {
            Kind::HmacHexTs => Some("x-sig"),
            Kind::Stripe => Some("stripe-signature"),
            Kind::Github => Some("x-hub-signature-256"),
            Kind::GithubSha1 => Some("x-hub-signature"),
            Kind::Slack => Some("x-slack-signature"),
            Kind::Paddle => Some("paddle-signature"),
            _ => None,
        }
    }

    fn signs_url(self) -> bool {
        matches!(self, Kind::Hubspot | Kind::TwilioForm | Kind::TwilioJson)
    }
}

fn build(scheme: &str, secret: &str, old: &str, extra: &str) -> Verifier {
    let toml = format!(
        "[[tenants]]\nid = \"t\"\n[[tenants.sources]]\nid = \"s\"\nscheme = \"{scheme}\"\n\
         secrets = [{{ id = \"old\", value = \"{old}\" }}, {{ id = \"k\", value = \"{secret}\" }}]\n{extra}\n"
    );
    let config = Config::parse_str(&toml).expect("fuzz config parses");
    Verifier::build(&config.tenants[0].sources[0]).expect("fuzz verifier builds")
}

/// Per kind: the verifier with the signing key (and an older rotated one), and one of the same
/// scheme whose keys are all different.
fn verifiers() -> &'static Vec<(Verifier, Verifier)> {
    static VERIFIERS: OnceLock<Vec<(Verifier, Verifier)>> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        KINDS
            .iter()
            .map(|kind| {
                let (scheme, secret, other, extra) = kind.config();
                let (old, old_other) = match kind {
                    Kind::Standard | Kind::Svix => ("whsec_b2xkLXNlY3JldA==", "whsec_b2xkLW90aGVy"),
                    Kind::Stripe => ("whsec_old-secret", "whsec_old-other"),
                    _ => ("old-secret", "old-other"),
                };
                (
                    build(scheme, secret, old, extra),
                    build(scheme, other, old_other, extra),
                )
            })
            .collect()
    })
}

struct Case {
    headers: Vec<(String, Vec<u8>)>,
    /// Headers covered by the signature.
    signed: Vec<&'static str>,
    body: Vec<u8>,
    url: String,
}

fn check(
    verifier: &Verifier,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    url: &str,
) -> Result<String, VerifyError> {
    let mut hs = Headers::new();
    for (name, value) in headers {
        hs.push(name, value);
    }
    Request::<Unverified>::new("t", "s", hs, Bytes::copy_from_slice(body), NOW_SECS * 1000)
        .with_target(Target {
            method: "POST".into(),
            url: url.into(),
        })
        .verify(verifier, NOW_SECS * 1000)
        .map(|r| r.key_id().to_owned())
}

/// Text as it can travel in an HTTP header: visible ASCII, no list separators.
fn token(u: &mut Unstructured<'_>) -> ArbResult<String> {
    let len = u.int_in_range(1..=24)?;
    let mut text = String::with_capacity(len);
    for _ in 0..len {
        let b = u.int_in_range(0x21u8..=0x7e)?;
        text.push(if b == b',' || b == b';' {
            '_'
        } else {
            b as char
        });
    }
    Ok(text)
}

fn signed_case(kind: Kind, u: &mut Unstructured<'_>) -> ArbResult<Case> {
    let (_, secret, _, _) = kind.config();
    let ts = NOW_SECS + i64::from(u.int_in_range(-4i8..=4)?);
    let h = |pairs: Vec<(&str, String)>| -> Vec<(String, Vec<u8>)> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect()
    };
    if kind == Kind::TwilioForm {
        let n = u.int_in_range(0..=6)?;
        let mut params = Vec::with_capacity(n);
        for _ in 0..n {
            params.push((u.arbitrary::<String>()?, u.arbitrary::<String>()?));
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish()
            .into_bytes();
        let refs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        return Ok(Case {
            headers: h(vec![
                ("x-twilio-signature", sign::twilio(secret, URL, &refs)),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ]),
            signed: vec!["x-twilio-signature"],
            body,
            url: URL.into(),
        });
    }
    let body: Vec<u8> = u.arbitrary()?;
    let mut url = URL.to_owned();
    let (headers, signed) = match kind {
        Kind::Standard | Kind::Svix => {
            let names = if kind == Kind::Standard {
                ["webhook-id", "webhook-timestamp", "webhook-signature"]
            } else {
                ["svix-id", "svix-timestamp", "svix-signature"]
            };
            let id = token(u)?;
            let signature = sign::standard(secret, &id, ts, &body);
            (
                h(vec![
                    (names[0], id),
                    (names[1], ts.to_string()),
                    (names[2], signature),
                ]),
                names.to_vec(),
            )
        }
        Kind::HmacHexTs => (
            h(vec![
                (
                    "x-sig",
                    sign::hmac(secret, "sha256=", Encoding::Hex, Some(ts), &body),
                ),
                ("x-ts", ts.to_string()),
            ]),
            vec!["x-sig", "x-ts"],
        ),
        Kind::HmacBase64 => (
            h(vec![(
                "x-sig",
                sign::hmac(secret, "", Encoding::Base64, None, &body),
            )]),
            vec!["x-sig"],
        ),
        Kind::Stripe => (
            h(vec![("stripe-signature", sign::stripe(secret, ts, &body))]),
            vec!["stripe-signature"],
        ),
        Kind::Github => (
            h(vec![("x-hub-signature-256", sign::github(secret, &body))]),
            vec!["x-hub-signature-256"],
        ),
        Kind::GithubSha1 => (
            h(vec![("x-hub-signature", sign::github_sha1(secret, &body))]),
            vec!["x-hub-signature"],
        ),
        Kind::Slack => (
            h(vec![
                ("x-slack-signature", sign::slack(secret, ts, &body)),
                ("x-slack-request-timestamp", ts.to_string()),
            ]),
            vec!["x-slack-signature", "x-slack-request-timestamp"],
        ),
        Kind::Shopify => (
            h(vec![(
                "x-shopify-hmac-sha256",
                sign::shopify(secret, &body),
            )]),
            vec!["x-shopify-hmac-sha256"],
        ),
        Kind::Paddle => (
            h(vec![("paddle-signature", sign::paddle(secret, ts, &body))]),
            vec!["paddle-signature"],
        ),
        Kind::Hubspot => (
            h(vec![
                (
                    "x-hubspot-signature-v3",
                    sign::hubspot(secret, "POST", URL, &body, ts * 1000),
                ),
                ("x-hubspot-request-timestamp", (ts * 1000).to_string()),
            ]),
            vec!["x-hubspot-signature-v3", "x-hubspot-request-timestamp"],
        ),
        Kind::TwilioJson => {
            url = sign::twilio_json_url(URL, &body);
            (
                h(vec![
                    ("x-twilio-signature", sign::twilio(secret, &url, &[])),
                    ("content-type", "application/json".into()),
                ]),
                vec!["x-twilio-signature"],
            )
        }
        Kind::TwilioForm => unreachable!(),
    };
    Ok(Case {
        headers,
        signed,
        body,
        url,
    })
}

/// What Twilio signs of a form body: the fields sorted, each name then value, no separators.
/// So `=` (one empty field) signs as no field, and `a=bc` as `ab=c`: a property of Twilio's
/// scheme that no receiver can change (docs/fuzzing.md).
fn form_signed(body: &[u8]) -> String {
    let mut fields: Vec<_> = form_urlencoded::parse(body).into_owned().collect();
    fields.sort();
    fields.into_iter().flat_map(|(k, v)| [k, v]).collect()
}

fn sign_then_mutate(kind: Kind, verifier: &Verifier, u: &mut Unstructured<'_>) -> ArbResult<()> {
    let case = signed_case(kind, u)?;
    assert_eq!(
        check(verifier, &case.headers, &case.body, &case.url),
        Ok("k".to_owned()),
        "{kind:?}: a request signed as the provider signs it must verify"
    );
    let (mut headers, mut body, mut url) =
        (case.headers.clone(), case.body.clone(), case.url.clone());
    let signed = case.signed[u.choose_index(case.signed.len())?];
    let position = headers.iter().position(|(k, _)| k == signed).unwrap();
    let what = match u.int_in_range(0u8..=6)? {
        0 if !body.is_empty() => {
            let i = u.choose_index(body.len())?;
            body[i] ^= 1 << u.int_in_range(0u8..=7)?;
            "flip a body bit"
        }
        1 => {
            let i = u.int_in_range(0..=body.len())?;
            body.insert(i, u.arbitrary()?);
            "insert a body byte"
        }
        2 if !body.is_empty() => {
            body.truncate(u.choose_index(body.len())?);
            "truncate the body"
        }
        3 => {
            let value = &mut headers[position].1;
            let i = u.choose_index(value.len())?;
            let before = value[i];
            value[i] ^= 1 << u.int_in_range(0u8..=6)?;
            let after = value[i];
            // Header values travel as visible ASCII; a separator makes a different list.
            if !after.is_ascii_graphic() || after == b',' || after == b';' {
                return Ok(());
            }
            if kind.hex_signature_header() == Some(signed)
                && before.eq_ignore_ascii_case(&after)
                && before.is_ascii_hexdigit()
            {
                return Ok(()); // the same hex digit
            }
            "flip a signed header's bit"
        }
        4 => {
            headers.remove(position);
            "drop a signed header"
        }
        5 => {
            let len = headers[position].1.len();
            headers[position].1.truncate(u.choose_index(len)?);
            "truncate a signed header"
        }
        6 if kind.signs_url() => {
            let i = 8 + u.choose_index(url.len() - 8)?;
            let letter = u.int_in_range(b'a'..=b'z')? as char;
            if url.as_bytes()[i] as char == letter || !url.is_char_boundary(i) {
                return Ok(());
            }
            url.replace_range(i..i + 1, &letter.to_string());
            "change the URL"
        }
        _ => return Ok(()),
    };
    if kind == Kind::TwilioForm
        && headers == case.headers
        && url == case.url
        && form_signed(&body) == form_signed(&case.body)
    {
        return Ok(()); // Twilio signs the parsed fields: `a=1&&b=2` is `a=1&b=2`.
    }
    let result = check(verifier, &headers, &body, &url);
    assert!(
        result.is_err(),
        "{kind:?} accepted a request after `{what}` of `{signed}`: {result:?}\n\
         body {:?} → {:?}\nheaders {:?} → {:?}\nurl {} → {url}",
        String::from_utf8_lossy(&case.body),
        String::from_utf8_lossy(&body),
        case.headers,
        headers,
        case.url,
    );
    Ok(())
}

fn arbitrary_request(
    kind: Kind,
    verifier: &Verifier,
    other: &Verifier,
    u: &mut Unstructured<'_>,
) -> ArbResult<()> {
    let n = u.int_in_range(0..=6)?;
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let name = if u.ratio(7u8, 8)? {
            NAMES[u.choose_index(NAMES.len())?].to_owned()
        } else {
            u.arbitrary::<String>()?
        };
        headers.push((name, u.arbitrary::<Vec<u8>>()?));
    }
    let url = if u.arbitrary()? {
        URL.to_owned()
    } else {
        u.arbitrary::<String>()?
    };
    let body: Vec<u8> = u.arbitrary()?;
    let result = check(verifier, &headers, &body, &url);
    if let Ok(key) = &result {
        assert!(
            key == "k" || key == "old",
            "{kind:?}: unknown key id `{key}`"
        );
        let elsewhere = check(other, &headers, &body, &url);
        assert!(
            elsewhere.is_err(),
            "{kind:?}: accepted under two unrelated sets of keys ({key}, {elsewhere:?})"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(selector) = u.arbitrary::<u8>() else {
        return;
    };
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    let index = usize::from(selector) % KINDS.len();
    let kind = KINDS[index];
    let (verifier, other) = &verifiers()[index];
    let _ = if mode % 2 == 0 {
        sign_then_mutate(kind, verifier, &mut u)
    } else {
        arbitrary_request(kind, verifier, other, &mut u)
    };
});
