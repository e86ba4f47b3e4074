//! An HTTP server that answers every request `200 {}` (or another fixed status) and records
//! it: the endpoint of a delivery, an alert receiver, or an OTLP/HTTP collector
//! (`POST /v1/traces`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

pub struct Sink {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Sink {
    /// Starts on a free loopback port, on its own thread, for the rest of the test process.
    pub fn start() -> Self {
        Self::answering(200)
    }

    /// [`Self::start`], answering every request with `status`.
    pub fn answering(status: u16) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = actix_web::HttpServer::new(move || {
                    let log = log.clone();
                    actix_web::App::new()
                        .app_data(actix_web::web::PayloadConfig::new(16 << 20))
                        .default_service(actix_web::web::to(
                            move |request: actix_web::HttpRequest, body: actix_web::web::Bytes| {
                                let log = log.clone();
                                async move {
                                    log.lock().unwrap().push(Seen {
                                        method: request.method().to_string(),
                                        path: request.path().to_owned(),
                                        headers: request
                                            .headers()
                                            .iter()
                                            .map(|(k, v)| {
                                                (
                                                    k.as_str().to_owned(),
                                                    String::from_utf8_lossy(v.as_bytes())
                                                        .into_owned(),
                                                )
                                            })
                                            .collect(),
                                        body: body.to_vec(),
                                    });
                                    let status =
                                        actix_web::http::StatusCode::from_u16(status).unwrap();
                                    actix_web::HttpResponse::build(status)
                                        .content_type("application/json")
                                        .body("{}")
                                }
                            },
                        ))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .unwrap();
                port_tx.send(server.addrs()[0].port()).unwrap();
                server.run().await.unwrap();
            });
        });
        let port = port_rx.recv().unwrap();
        Self {
            url: format!("http://127.0.0.1:{port}"),
            seen,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}
