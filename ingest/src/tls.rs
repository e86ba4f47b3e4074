//! TLS and mutual TLS on the ingest's listener (`[ingest.tls]`), through rustls.
//!
//! * **Certificate and key** (PEM files) are read at start and again on `SIGHUP`: new
//!   handshakes use the new pair, connections already open keep theirs, nothing is dropped.
//!   A pair that does not load (missing file, bad PEM, a key that does not match) leaves the
//!   old one in place, logged and counted (`hookstream_ingest_tls_reloads_total{outcome}`).
//! * **Client certificates** (`client_ca`): verified against the CA bundle during the
//!   handshake; `client_auth = "optional"` (default) lets clients without one in (sources
//!   that do not ask for one), `"required"` refuses them at the handshake. A certificate
//!   that does not chain to the bundle fails the handshake either way. The CA bundle is read
//!   at start only.
//! * **Per source** (`client_certificates`): the verified certificate's names, taken once per
//!   connection ([`ClientCertificate`]), must match one rule (`CN=…`, `DNS:…`, `URI:…`,
//!   `EMAIL:…`); see [`crate::admit`].

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use schemas::config::{ClientAuth, TlsConfig};

/// The names of a verified client certificate: `CN=…` for each common name of its subject,
/// `DNS:…`, `URI:…` and `EMAIL:…` for its subject alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    pub names: Vec<String>,
}

impl ClientCertificate {
    /// The names of a DER certificate (none if it does not parse: it cannot match a rule).
    pub fn from_der(der: &[u8]) -> Self {
        use x509_parser::extensions::GeneralName;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Self::default();
        };
        let mut names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(|cn| format!("CN={cn}"))
            .collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.push(format!("DNS:{dns}")),
                    GeneralName::URI(uri) => names.push(format!("URI:{uri}")),
                    GeneralName::RFC822Name(email) => names.push(format!("EMAIL:{email}")),
                    _ => {}
                }
            }
        }
        Self { names }
    }

    /// Whether a rule (`CN=…`, `DNS:…`, `URI:…`, `EMAIL:…`) names this certificate: DNS
    /// names and e-mail addresses compare without case, the others exactly.
    pub fn matches(&self, rule: &str) -> bool {
        let folded = rule.starts_with("DNS:") || rule.starts_with("EMAIL:");
        self.names.iter().any(|name| {
            if folded {
                name.eq_ignore_ascii_case(rule)
            } else {
                name == rule
            }
        })
    }
}

/// The server certificate in use, swapped on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

/// Reloads the certificate and key files into the running listener.
#[derive(Debug, Clone)]
pub struct Reloader {
    current: Arc<Current>,
    settings: TlsConfig,
    provider: Arc<CryptoProvider>,
}

impl Reloader {
    /// Reads the files again; on failure the old pair stays.
    pub fn reload(&self) -> Result<(), String> {
        let result = load_key(&self.settings, &self.provider);
        let outcome = if result.is_ok() { "reloaded" } else { "failed" };
        metrics::counter!("hookstream_ingest_tls_reloads_total", "outcome" => outcome).increment(1);
        let key = result?;
        *self.current.0.write().expect("certificate lock") = Arc::new(key);
        Ok(())
    }
}

fn load_key(settings: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let certs = read_certs(&settings.cert)?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", settings.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| format!("{}: not a PEM private key ({e})", settings.key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: {e}", settings.key.display()))?;
    let key = CertifiedKey::new(certs, signing);
    key.keys_match()
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(key)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: not PEM certificates ({e})", path.display()))
}

/// The listener's rustls configuration, and what reloads its certificate.
pub fn server_config(settings: &TlsConfig) -> Result<(ServerConfig, Reloader), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let current = Arc::new(Current(RwLock::new(Arc::new(load_key(
        settings, &provider,
    )?))));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match settings.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_cert_resolver(current.clone());
    Ok((
        config,
        Reloader {
            current,
            settings: settings.clone(),
            provider,
        },
    ))
}

/// For `HttpServer::on_connect`: the verified client certificate's names, once per
/// connection, for [`crate::admit`] to read with `HttpRequest::conn_data`.
pub fn on_connect(connection: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let Some(tls) = connection.downcast_ref::<Tls>() else {
        return;
    };
    let (_, session) = tls.get_ref();
    if let Some(end_entity) = session.peer_certificates().and_then(|c| c.first()) {
        data.insert(ClientCertificate::from_der(end_entity));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_named_by_its_common_name_and_alternative_names() {
        let mut params =
            rcgen::CertificateParams::new(vec!["Hooks.Carrier.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "carrier");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://carrier/hooks".try_into().unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let names = ClientCertificate::from_der(cert.der());
        assert_eq!(
            names.names,
            [
                "CN=carrier",
                "DNS:Hooks.Carrier.example",
                "URI:spiffe://carrier/hooks"
            ]
        );
        assert!(names.matches("DNS:hooks.carrier.example"));
        assert!(names.matches("CN=carrier"));
        assert!(
            !names.matches("CN=Carrier"),
            "a common name compares exactly"
        );
        assert!(!names.matches("DNS:carrier.example"));
        assert!(names.matches("URI:spiffe://carrier/hooks"));
        assert_eq!(
            ClientCertificate::from_der(b"not a certificate")
                .names
                .len(),
            0
        );
    }
}
