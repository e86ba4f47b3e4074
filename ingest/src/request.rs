//! A webhook request as the ingest sees it, typed by verification state: only a
//! `Request<Verified>` can be turned into a `raw` record, so unverified bytes cannot reach the
//! producer by construction.

use bytes::Bytes;
use schemas::time::Millis;

/// Request headers with lowercase names, in arrival order. Values that are not valid UTF-8
/// are kept as bytes and read as absent by text accessors.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.0.push((name.to_ascii_lowercase(), value.to_vec()));
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.push(name, value.as_bytes());
        self
    }

    /// The first value of `name` as text.
    /// Every header as received: lowercase name, value bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// The request line as the provider addressed it: method and full public URL (scheme, host,
/// path and query), reconstructed behind proxies from the configured public base URL or the
/// forwarded headers. Twilio and HubSpot sign it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub method: String,
    pub url: String,
}

/// Marker: signature not yet checked.
#[derive(Debug)]
pub struct Unverified;

/// Marker: signature checked against the secret with id `key_id`.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key_id: String,
}

#[derive(Debug)]
pub struct Request<S> {
    tenant: String,
    source: String,
    headers: Headers,
    body: Bytes,
    received_at: Millis,
    target: Target,
    state: S,
}

impl Request<Unverified> {
    pub fn new(
        tenant: impl Into<String>,
        source: impl Into<String>,
        headers: Headers,
        body: Bytes,
        received_at: Millis,
    ) -> Self {
        Self {
            tenant: tenant.into(),
            source: source.into(),
            headers,
            body,
            received_at,
            target: Target::default(),
            state: Unverified,
        }
    }

    /// The method and public URL the provider addressed (signed by Twilio and HubSpot).
    pub fn with_target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// A `scheme = "none"` request its source's admission let in: verified by what admitted
    /// it (the token's id, or `allow_ips`) instead of a signature. Only [`crate::admit`]
    /// makes an [`crate::admit::Admitted`].
    pub(crate) fn admitted(self, admitted: crate::admit::Admitted) -> Request<Verified> {
        let key_id = admitted.key_id().to_owned();
        self.into_verified(key_id)
    }

    /// Only the verifiers in this crate can mark a request verified.
    pub(crate) fn into_verified(self, key_id: String) -> Request<Verified> {
        Request {
            tenant: self.tenant,
            source: self.source,
            headers: self.headers,
            body: self.body,
            received_at: self.received_at,
            target: self.target,
            state: Verified { key_id },
        }
    }
}

impl Request<Verified> {
    /// A request this ingest verified earlier and kept (a `dlq` record it wrote as
    /// unreadable), read back for re-extraction on redrive. Crate-private like
    /// [`Request::into_verified`]: only ingest code that reads its own dead letters uses it.
    pub(crate) fn kept(
        tenant: impl Into<String>,
        source: impl Into<String>,
        headers: Headers,
        body: Bytes,
        received_at: Millis,
        key_id: String,
    ) -> Self {
        Request::<Unverified>::new(tenant, source, headers, body, received_at).into_verified(key_id)
    }
}

impl<S> Request<S> {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn headers(&self) -> &Headers {
        &self.headers
    }
    pub fn body(&self) -> &Bytes {
        &self.body
    }
    pub fn received_at(&self) -> Millis {
        self.received_at
    }
    pub fn target(&self) -> &Target {
        &self.target
    }
}

impl Request<Verified> {
    pub fn key_id(&self) -> &str {
        &self.state.key_id
    }
}
