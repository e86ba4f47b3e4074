//! `GET /metrics` (Prometheus text) and `GET /healthz` of a running `deliver`, on the address
//! `hookstream deliver --listen` names (port 0: a free one).

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::error::DeliverError;

pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

pub struct MetricsServer {
    pub addrs: Vec<SocketAddr>,
    handle: ServerHandle,
}

impl MetricsServer {
    pub fn start(listen: &str, render: Render) -> Result<Self, DeliverError> {
        let render = web::Data::new(render);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(render.clone())
                .route("/metrics", web::get().to(metrics))
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().body("ok") }),
                )
        })
        .workers(1)
        .disable_signals()
        .bind(listen)
        .map_err(|e| DeliverError::Config(format!("--listen `{listen}`: {e}")))?;
        let addrs = server.addrs();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self { addrs, handle })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let handle = self.handle.clone();
            runtime.spawn(async move { handle.stop(true).await });
        }
    }
}

async fn metrics(render: web::Data<Render>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body((render.get_ref())())
}
