//! Admission: the checks of a request that need neither its body nor a signature, made
//! before the body is read. A signed source may add them as a second layer; a source with
//! `scheme = "none"` relies on them alone, and only an [`Admitted`] (which only
//! [`Gate::admit`] makes) lets such a request become a `Request<Verified>`.
//!
//! * **Client address** (`allow_ips`): the TCP peer, or behind `ingest.trusted_proxies` the
//!   right-most untrusted `X-Forwarded-For` hop ([`crate::client_ip`]); 403 `ip_not_allowed`.
//! * **Client certificate** (`client_certificates`): the TLS client certificate, verified
//!   against `ingest.tls.client_ca` at the handshake ([`crate::tls`]), must have one of the
//!   names; 401 `missing_client_certificate`, 403 `certificate_not_allowed`.
//! * **Shared token** (`[tenants.sources.token]`): the last path segment
//!   (`/v1/hooks/{tenant}/{source}/{token}`), a query parameter or a header. Each configured
//!   token is kept as its SHA-256 digest, and the presented token's digest is compared with
//!   every one in constant time (`subtle`), so neither the token's bytes nor its length nor
//!   which secret matched shows in the timing. 401 `missing_token` / `invalid_token`. The
//!   token never reaches a log, an error message, `rejected` or a topic: the header that
//!   carries it is not copied into a dead letter, and the id of the matching secret (not
//!   the token) travels on as `hs-key-id`.

use std::net::IpAddr;

use actix_web::HttpRequest;
use schemas::config::{SourceConfig, TokenCarrier};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::client_ip::{self, Networks};
use crate::error::IngestError;
use crate::tls::ClientCertificate;

/// What let a request in; the key id a `scheme = "none"` request carries as `hs-key-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    key_id: String,
}

impl Admitted {
    /// The matching token's id, else `client_certificate` or `allow_ips` (or `open` for a
    /// source with no gate).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

/// A source's shared token: where it is carried and the digests of the accepted ones.
#[derive(Debug)]
struct TokenGate {
    carrier: TokenCarrier,
    /// The query parameter, or the lowercase header name.
    name: String,
    digests: Vec<(String, [u8; 32])>,
}

impl TokenGate {
    /// The id of the token `presented` matches, comparing with every one.
    fn matches(&self, presented: &[u8]) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for (id, expected) in &self.digests {
            if bool::from(expected.ct_eq(&digest)) && found.is_none() {
                found = Some(id.as_str());
            }
        }
        found
    }

    /// Where the sender is told to put the token, for error messages.
    fn place(&self) -> String {
        match self.carrier {
            TokenCarrier::Path => "as the URL's last path segment".to_owned(),
            TokenCarrier::Query => format!("in the query parameter `{}`", self.name),
            TokenCarrier::Header => format!("in the header `{}`", self.name),
        }
    }
}

/// A source's admission checks.
#[derive(Debug, Default)]
pub struct Gate {
    allow_ips: Networks,
    /// `client_certificates`: names one of which the client's verified certificate has.
    client_certificates: Vec<String>,
    token: Option<TokenGate>,
}

impl Gate {
    /// Resolves the source's token secrets into digests; errors name the secret, never its
    /// value.
    pub fn build(source: &SourceConfig) -> Result<Self, String> {
        let allow_ips =
            Networks::parse(&source.allow_ips).map_err(|e| format!("allow_ips: {e}"))?;
        let token = match &source.token {
            None => None,
            Some(config) => {
                let mut digests = Vec::with_capacity(config.secrets.len());
                for secret in &config.secrets {
                    let value = secret
                        .resolve()
                        .map_err(|e| format!("token secret `{}`: {e}", secret.id))?;
                    let digest: [u8; 32] = Sha256::digest(value.expose_secret().as_bytes()).into();
                    digests.push((secret.id.clone(), digest));
                }
                let name = config.name.clone().unwrap_or_default();
                let name = match config.carrier {
                    TokenCarrier::Header => name.to_ascii_lowercase(),
                    _ => name,
                };
                Some(TokenGate {
                    carrier: config.carrier,
                    name,
                    digests,
                })
            }
        };
        Ok(Self {
            allow_ips,
            client_certificates: source.client_certificates.clone(),
            token,
        })
    }

    /// Whether the source takes its token as the URL's last path segment.
    pub fn wants_path_token(&self) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| t.carrier == TokenCarrier::Path)
    }

    /// The header that carries the token, if one does: never copied anywhere.
    pub fn token_header(&self) -> Option<&str> {
        self.token
            .as_ref()
            .filter(|t| t.carrier == TokenCarrier::Header)
            .map(|t| t.name.as_str())
    }

    /// Checks the client address, then the token (`path_token`: the route's last segment).
    pub fn admit(
        &self,
        http: &HttpRequest,
        path_token: Option<&str>,
        trusted_proxies: &Networks,
    ) -> Result<Admitted, IngestError> {
        let mut key_id = "open";
        if !self.allow_ips.is_empty() {
            let peer = http
                .peer_addr()
                .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
            let forwarded = http
                .headers()
                .get_all("x-forwarded-for")
                .map(|v| v.as_bytes());
            let client = client_ip::client_address(peer, forwarded, trusted_proxies);
            if !self.allow_ips.contains(client) {
                return Err(IngestError::IpNotAllowed {
                    client,
                    peer: client_ip::canonical(peer),
                });
            }
            key_id = "allow_ips";
        }
        if !self.client_certificates.is_empty() {
            match http.conn_data::<ClientCertificate>() {
                None => return Err(IngestError::MissingClientCertificate),
                Some(cert) if !self.client_certificates.iter().any(|r| cert.matches(r)) => {
                    return Err(IngestError::CertificateNotAllowed {
                        names: cert.names.join(", "),
                    })
                }
                Some(_) => key_id = "client_certificate",
            }
        }
        let Some(token) = &self.token else {
            return match path_token {
                // A path segment the source does not expect: no such route.
                Some(_) => Err(IngestError::NotFound),
                None => Ok(Admitted {
                    key_id: key_id.to_owned(),
                }),
            };
        };
        if path_token.is_some() && token.carrier != TokenCarrier::Path {
            return Err(IngestError::NotFound);
        }
        let presented: Option<Vec<u8>> = match token.carrier {
            TokenCarrier::Path => path_token.map(|t| t.as_bytes().to_vec()),
            TokenCarrier::Query => form_urlencoded::parse(http.query_string().as_bytes())
                .find(|(name, _)| name == token.name.as_str())
                .map(|(_, value)| value.as_bytes().to_vec()),
            TokenCarrier::Header => http
                .headers()
                .get(token.name.as_str())
                .map(|v| v.as_bytes().to_vec()),
        };
        let place = token.place();
        match presented.filter(|p| !p.is_empty()) {
            None => Err(IngestError::InvalidToken {
                missing: true,
                place,
            }),
            Some(presented) => match token.matches(&presented) {
                Some(id) => Ok(Admitted {
                    key_id: id.to_owned(),
                }),
                None => Err(IngestError::InvalidToken {
                    missing: false,
                    place,
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const TOKEN: &str = "tok_3f9a2c7e1b8d4a60";
    const OLD: &str = "tok_old_5e1d2c3b4a59";

    fn source(token: &str) -> SourceConfig {
        let toml = format!(
            "[[tenants]]\nid = \"t\"\n[[tenants.sources]]\nid = \"s\"\nscheme = \"none\"\n{token}"
        );
        let config = schemas::config::Config::parse_str(&toml).unwrap();
        config.tenants[0].sources[0].clone()
    }

    fn gate(carrier: &str, name: Option<&str>) -> Gate {
        let name = name.map_or(String::new(), |n| format!("name = \"{n}\"\n"));
        Gate::build(&source(&format!(
            "[tenants.sources.token]\nin = \"{carrier}\"\n{name}secrets = [{{ id = \"new\", value = \"{TOKEN}\" }}, {{ id = \"old\", value = \"{OLD}\" }}]\n"
        )))
        .unwrap()
    }

    fn code(result: Result<Admitted, IngestError>) -> String {
        match result {
            Ok(admitted) => admitted.key_id,
            Err(error) => error.code().to_owned(),
        }
    }

    #[test]
    fn a_path_token_admits_by_the_matching_secret_only() {
        let gate = gate("path", None);
        let http = TestRequest::default().to_http_request();
        let none = Networks::default();
        assert_eq!(code(gate.admit(&http, Some(TOKEN), &none)), "new");
        assert_eq!(code(gate.admit(&http, Some(OLD), &none)), "old");
        assert_eq!(
            code(gate.admit(&http, Some("tok_3f9a2c7e1b8d4a6"), &none)),
            "invalid_token"
        );
        assert_eq!(code(gate.admit(&http, Some(""), &none)), "missing_token");
        assert_eq!(code(gate.admit(&http, None, &none)), "missing_token");
    }

    #[test]
    fn a_query_or_header_token_is_read_from_its_place_only() {
        let none = Networks::default();
        let query = gate("query", Some("token"));
        let with = |uri: &str| TestRequest::default().uri(uri).to_http_request();
        assert_eq!(
            code(query.admit(&with(&format!("/x?a=1&token={TOKEN}")), None, &none)),
            "new"
        );
        assert_eq!(
            code(query.admit(&with("/x?token=wrong"), None, &none)),
            "invalid_token"
        );
        assert_eq!(
            code(query.admit(&with("/x?tokens=1"), None, &none)),
            "missing_token"
        );
        assert_eq!(
            code(query.admit(&with("/x"), Some(TOKEN), &none)),
            "not_found",
            "a path segment the source does not take"
        );
        let header = gate("header", Some("X-Goog-Channel-Token"));
        let http = TestRequest::default()
            .insert_header(("x-goog-channel-token", OLD))
            .to_http_request();
        assert_eq!(code(header.admit(&http, None, &none)), "old");
        let http = TestRequest::default()
            .insert_header((
                "x-goog-channel-token",
                actix_web::http::header::HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap(),
            ))
            .to_http_request();
        assert_eq!(code(header.admit(&http, None, &none)), "invalid_token");
        assert_eq!(header.token_header(), Some("x-goog-channel-token"));
    }

    #[test]
    fn errors_name_the_place_never_the_token() {
        let gate = gate("query", Some("token"));
        let http = TestRequest::default()
            .uri(&format!("/x?token={TOKEN}x"))
            .to_http_request();
        let error = gate.admit(&http, None, &Networks::default()).unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(text.contains("query parameter `token`"), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }

    #[test]
    fn addresses_are_checked_before_the_token() {
        let gate = Gate::build(&source(&format!(
            "allow_ips = [\"203.0.113.0/24\"]\n[tenants.sources.token]\nin = \"path\"\nsecrets = [{{ id = \"new\", value = \"{TOKEN}\" }}]\n"
        )))
        .unwrap();
        let none = Networks::default();
        let from = |ip: &str| {
            TestRequest::default()
                .peer_addr(format!("{ip}:5000").parse().unwrap())
                .to_http_request()
        };
        assert_eq!(
            code(gate.admit(&from("203.0.113.9"), Some(TOKEN), &none)),
            "new"
        );
        assert_eq!(
            code(gate.admit(&from("198.51.100.1"), Some(TOKEN), &none)),
            "ip_not_allowed"
        );
        assert_eq!(
            code(gate.admit(&from("203.0.113.9"), Some("nope"), &none)),
            "invalid_token"
        );
        let ips_only = Gate::build(&source("allow_ips = [\"203.0.113.0/24\"]\n")).unwrap();
        assert_eq!(
            code(ips_only.admit(&from("203.0.113.9"), None, &none)),
            "allow_ips"
        );
    }
}
