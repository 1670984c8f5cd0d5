//! The admin (`POD_IP:15000`) and readiness (`POD_IP:15021`) servers. They run on the control
//! runtime, away from the data path, and read the same snapshots the listeners use.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /config_dump`: JSON with the running `version`, the model's `listeners`, `routes`,
//!   `clusters`, `endpoints`, and the `certificate` (`identity`, `serial`, `notAfter`, `rotations`).
//! - `GET /healthz/ready` (readiness port): 200 once the first certificate and the first config
//!   are in, else 503 naming what is pending.

use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use crate::drain::{Acceptor, Shutdown};
use crate::http::{Body, full, server};
use crate::identity::CertStatus;
use crate::index::Index;
use crate::readiness::Readiness;

/// What the admin server reads.
#[derive(Clone)]
pub struct AdminState {
    /// The running config.
    pub index: Arc<ArcSwapOption<Index>>,
    /// The current certificate.
    pub cert: watch::Receiver<Option<CertStatus>>,
    /// Startup tasks still pending.
    pub readiness: Readiness,
}

/// Which endpoints a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// 15000: `/healthz`, `/config_dump`.
    Admin,
    /// 15021: `/healthz/ready`.
    Readiness,
}

/// Serves `port`'s endpoints on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, port: Port, state: AdminState, shutdown: Shutdown) {
    let name = match port {
        Port::Admin => "admin",
        Port::Readiness => "readiness",
    };
    let mut acceptor = Acceptor::new(name, listener, shutdown);
    while let Some((tcp, _)) = acceptor.next().await {
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = answer(port, &state, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = server().serve_connection(TokioIo::new(tcp), service).await {
                debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn answer(port: Port, state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
    }
    match (port, req.uri().path()) {
        (Port::Admin, "/healthz") => text(StatusCode::OK, "ok\n".to_owned()),
        (Port::Admin, "/config_dump") => json_response(config_dump(state)),
        (Port::Readiness, "/healthz/ready") => {
            let pending = state.readiness.pending();
            if pending.is_empty() {
                text(StatusCode::OK, "ready\n".to_owned())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: waiting for {}\n", pending.join(", ")),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

/// The `/config_dump` document.
pub fn config_dump(state: &AdminState) -> Value {
    let index = state.index.load_full();
    let certificate = state.cert.borrow().as_ref().map(|cert| {
        json!({
            "identity": cert.identity.to_string(),
            "serial": cert.serial,
            "notAfter": humantime::format_rfc3339_seconds(cert.not_after).to_string(),
            "rotations": cert.rotations,
        })
    });
    match index {
        Some(index) => {
            let config = index.config();
            json!({
                "version": config.version,
                "node": config.node,
                "mesh": config.mesh,
                "listeners": config.listeners,
                "routes": config.routes,
                "clusters": config.clusters,
                "endpoints": config.endpoints,
                "certificate": certificate,
            })
        }
        None => json!({ "version": Value::Null, "certificate": certificate }),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn json_response(value: Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
