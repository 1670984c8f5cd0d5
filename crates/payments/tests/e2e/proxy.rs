//! A forward HTTP proxy standing in for the sidecar: apps send it absolute-form requests
//! (`POST http://account-service:8083/v1/... HTTP/1.1`) through `HTTP_PROXY`; it resolves the
//! service name from its table, records what it saw (URI and propagated headers), and can
//! inject faults on requests whose path contains a pattern: a delay, or an error status.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// What to do with a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward after this delay.
    Delay(Duration),
    /// Answer this status without forwarding.
    Status(u16),
    /// Forward (the request applies), then answer this status instead of the real answer:
    /// the caller cannot know that its request succeeded.
    ForwardThenStatus(u16),
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request target as received (absolute form when sent through a proxy).
    pub uri: String,
    /// Its headers.
    pub headers: HeaderMap,
}

#[derive(Clone, Default)]
struct Shared {
    routes: Arc<Mutex<Vec<(String, SocketAddr)>>>,
    faults: Arc<Mutex<Vec<(String, Fault)>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    http: reqwest::Client,
}

/// The running proxy (stops with the test's runtime).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Shared,
}

impl FaultProxy {
    /// Starts the proxy with an empty routing table.
    pub async fn start() -> Self {
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let shared = Shared { http, ..Shared::default() };
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, shared }
    }

    /// Routes requests for `authority` (`account-service:8083`) to `addr`.
    pub fn route(&self, authority: &str, addr: SocketAddr) {
        self.shared.routes.lock().expect("routes lock").push((authority.to_owned(), addr));
    }

    /// `http://addr` for HTTP_PROXY.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to requests whose path contains `pattern` (replacing earlier faults).
    pub fn set_fault(&self, pattern: &str, fault: Fault) {
        let mut faults = self.shared.faults.lock().expect("faults lock");
        faults.retain(|(p, _)| p != pattern);
        faults.push((pattern.to_owned(), fault));
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().expect("faults lock").clear();
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("seen lock").clone()
    }
}

async fn forward(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.seen.lock().expect("seen lock").push(Seen { uri: uri.to_string(), headers: headers.clone() });
    let Some(authority) = uri.authority().map(|a| a.as_str().to_owned()) else {
        return (StatusCode::BAD_REQUEST, "not an absolute-form request").into_response();
    };
    let target = shared
        .routes
        .lock()
        .expect("routes lock")
        .iter()
        .find(|(name, _)| *name == authority)
        .map(|(_, a)| *a);
    let Some(target) = target else {
        return (StatusCode::BAD_GATEWAY, format!("no route to {authority}")).into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let fault = shared
        .faults
        .lock()
        .expect("faults lock")
        .iter()
        .find(|(p, _)| path.contains(p.as_str()))
        .map(|(_, f)| f.clone());
    let injected = |code: u16| {
        let status = StatusCode::from_u16(code).expect("valid status");
        let body =
            serde_json::json!({"code": "injected_fault", "message": "fault injected by the test proxy"});
        (status, axum::Json(body)).into_response()
    };
    match fault {
        Some(Fault::Status(code)) => return injected(code),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::ForwardThenStatus(_)) | None => {}
    }
    let mut request = shared.http.request(method, format!("http://{target}{path}")).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "proxy-connection" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await;
    if let (Ok(_), Some(Fault::ForwardThenStatus(code))) = (&answer, &fault) {
        return injected(*code);
    }
    match answer {
        Ok(response) => {
            let status = response.status();
            let content_type = response.headers().get("content-type").cloned();
            let bytes = response.bytes().await.unwrap_or_default();
            let mut out = (status, bytes).into_response();
            if let Some(ct) = content_type {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
