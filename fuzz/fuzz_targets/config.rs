//! Configuration parsing and validation from TOML text (`Config::parse_str`, `problems`), then
//! what `hookstream check-config` and the ingest build from a file that validates
//! (`SourceConfig::rules`, `ingest::check_sources`).
//!
//! Invariants: nothing panics on any text; validation is deterministic; a configuration that
//! validates has rules for every source; and no problem message, from validation or from
//! building the verifiers, ever contains a secret. For the last one every secret value is
//! replaced by a marker of the same kind (a `whsec_` secret by another `whsec_` secret, base64
//! by base64, empty stays empty) and the messages are searched for the markers.
//! Configurations with a secret from `env` or `file` stop after parsing: the fuzzer must not
//! read arbitrary files (`/dev/zero`) or the environment.

#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use schemas::config::{Config, Scheme, SecretRef};
use secrecy::{ExposeSecret, SecretString};

const MARKER: &str = "hsfuzzsecret";

fn reads_outside(secret: &SecretRef) -> bool {
    secret.env.is_some() || secret.file.is_some()
}

/// A stand-in for `value` that validation and the verifiers treat the same way.
fn marker(value: &str, scheme: Option<Scheme>, n: usize) -> String {
    if value.is_empty() {
        return String::new();
    }
    let plain = format!("{MARKER}{n:04}");
    let encoded = value.strip_prefix("whsec_").unwrap_or(value);
    let decodes = B64.decode(encoded).is_ok();
    let whsec = value.starts_with("whsec_");
    match scheme {
        Some(Scheme::Standard | Scheme::Svix) if decodes => {
            let text = B64.encode(plain.as_bytes());
            if whsec {
                format!("whsec_{text}")
            } else {
                text
            }
        }
        Some(Scheme::Standard | Scheme::Svix) => format!("{plain}!"),
        _ if whsec && value.len() > "whsec_".len() => format!("whsec_{plain}"),
        _ if whsec => "whsec_".to_owned(),
        _ => plain,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains(MARKER) || text.contains("aHNmdXp6c2VjcmV0") {
        return; // the markers must not come from the input itself
    }
    let Ok(mut config) = Config::parse_str(text) else {
        return;
    };
    let secrets = config
        .tenants
        .iter()
        .flat_map(|t| t.sources.iter())
        .flat_map(|s| s.secrets.iter())
        .chain(config.admin.token.iter());
    if secrets.into_iter().any(reads_outside) {
        return;
    }
    let problems = config.problems();
    assert_eq!(
        problems,
        config.problems(),
        "validation is not deterministic"
    );
    let _ = config.topics();

    let mut n = 0;
    for tenant in &mut config.tenants {
        for source in &mut tenant.sources {
            for secret in &mut source.secrets {
                if let Some(value) = &secret.value {
                    let stand_in = marker(value.expose_secret(), Some(source.scheme), n);
                    secret.value = Some(SecretString::from(stand_in));
                    n += 1;
                }
            }
        }
    }
    if let Some(token) = &mut config.admin.token {
        if let Some(value) = &token.value {
            token.value = Some(SecretString::from(marker(value.expose_secret(), None, n)));
        }
    }
    let leaks = |messages: &[String]| {
        messages
            .iter()
            .find(|m| m.contains(MARKER) || m.contains("aHNmdXp6c2VjcmV0"))
            .cloned()
    };
    let marked = config.problems();
    assert_eq!(
        marked.len(),
        problems.len(),
        "{problems:?} became {marked:?}"
    );
    assert_eq!(leaks(&marked), None, "a problem shows a secret");
    if marked.is_empty() {
        for tenant in &config.tenants {
            for source in &tenant.sources {
                if let Err(e) = source.rules() {
                    panic!("a valid config's source `{}` has no rules: {e}", source.id);
                }
            }
        }
        let build = ingest::check_sources(&config);
        assert_eq!(leaks(&build), None, "building the sources shows a secret");
        for message in &build {
            assert!(message.starts_with("tenant `"), "{message}");
        }
    }
});
