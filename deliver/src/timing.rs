//! How long a new connection took to set up: its name lookup (`dns_ms`) and its TCP connect
//! with the TLS handshake (`connect_ms`), for the attempt log.
//!
//! The HTTP client pools connections, so most requests set none up; their attempt records
//! carry null for both. A connection's times are measured by a connector layer
//! ([`TimedConnect`]) around the client's connector, with the lookup timed by the guarded
//! resolver (which runs inside it) through a task-local. They are kept by the connection's
//! local address and handed to the first response that arrives over that connection
//! ([`ConnectTimes::take`]), so each new connection's times appear in exactly one record: the
//! attempt that used it first.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::{Connection, HttpInfo};

/// Connections set up but not yet used by a response, at most (older ones are forgotten).
const UNCLAIMED: usize = 1024;

tokio::task_local! {
    static LOOKUP: Cell<Option<Duration>>;
}

/// Called by the resolver with its lookup's duration; a no-op outside [`TimedConnect`].
pub fn record_lookup(took: Duration) {
    let _ = LOOKUP.try_with(|cell| cell.set(Some(took)));
}

/// A connection's set-up times, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Setup {
    /// The name lookup; none for an IP literal.
    pub dns_ms: Option<u64>,
    /// TCP connect and TLS handshake, after the lookup.
    pub connect_ms: u64,
}

/// The set-up times of connections not yet claimed by a response, by local address.
#[derive(Debug, Clone, Default)]
pub struct ConnectTimes(Arc<Mutex<HashMap<SocketAddr, Setup>>>);

impl ConnectTimes {
    fn put(&self, local: SocketAddr, setup: Setup) {
        let mut unclaimed = self.0.lock().expect("connect times lock");
        if unclaimed.len() >= UNCLAIMED {
            unclaimed.clear();
        }
        unclaimed.insert(local, setup);
    }

    /// The set-up of the connection `response` came over, if this is its first response.
    pub fn take(&self, response: &reqwest::Response) -> Option<Setup> {
        let local = response.extensions().get::<HttpInfo>()?.local_addr();
        self.0.lock().expect("connect times lock").remove(&local)
    }

    pub fn layer(&self) -> TimedConnectLayer {
        TimedConnectLayer(self.clone())
    }
}

#[derive(Clone)]
pub struct TimedConnectLayer(ConnectTimes);

impl<S> tower_layer::Layer<S> for TimedConnectLayer {
    type Service = TimedConnect<S>;

    fn layer(&self, inner: S) -> TimedConnect<S> {
        TimedConnect {
            inner,
            times: self.0.clone(),
        }
    }
}

/// The client's connector, timed.
#[derive(Clone)]
pub struct TimedConnect<S> {
    inner: S,
    times: ConnectTimes,
}

impl<S, R> tower_service::Service<R> for TimedConnect<S>
where
    S: tower_service::Service<R>,
    S::Response: Connection,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let connecting = self.inner.call(request);
        let times = self.times.clone();
        Box::pin(LOOKUP.scope(Cell::new(None), async move {
            let started = Instant::now();
            let connection = connecting.await?;
            let total = started.elapsed();
            let lookup = LOOKUP.with(Cell::get);
            let mut extras = http::Extensions::new();
            connection.connected().get_extras(&mut extras);
            if let Some(info) = extras.get::<HttpInfo>() {
                times.put(
                    info.local_addr(),
                    Setup {
                        dns_ms: lookup.map(|d| d.as_millis() as u64),
                        connect_ms: total.saturating_sub(lookup.unwrap_or_default()).as_millis()
                            as u64,
                    },
                );
            }
            Ok(connection)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{Guard, GuardedResolver};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A keep-alive HTTP/1.1 server that answers every request `200`.
    async fn server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 4096];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if socket.write_all(ok).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn client(times: &ConnectTimes) -> reqwest::Client {
        let guard = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver(Arc::new(guard))))
            .connector_layer(times.layer())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn only_the_request_that_opens_a_connection_gets_its_set_up_times() {
        let port = server().await;
        let times = ConnectTimes::default();
        let client = client(&times);
        let by_name = format!("http://localhost:{port}/");
        let first = client.get(&by_name).send().await.unwrap();
        let setup = times.take(&first).expect("a new connection's times");
        assert!(setup.dns_ms.is_some(), "{setup:?}");
        assert_eq!(times.take(&first), None, "claimed once");
        first.bytes().await.unwrap();
        let pooled = client.get(&by_name).send().await.unwrap();
        assert_eq!(times.take(&pooled), None, "a pooled connection has none");

        let literal = ConnectTimes::default();
        let response = client_for_literal(&literal, port).await;
        let setup = literal.take(&response).expect("a new connection's times");
        assert_eq!(setup.dns_ms, None, "no lookup for an IP literal");
    }

    async fn client_for_literal(times: &ConnectTimes, port: u16) -> reqwest::Response {
        client(times)
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap()
    }
}
