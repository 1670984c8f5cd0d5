//! The monitoring port (istiod's 15014): `/ready`, `/metrics`, `/debug/syncz`,
//! `/debug/configz`, and `POST /debug/bootstrap-token`, with which the supervisor gets each
//! sidecar's single-use CA token.
//!
//! The token endpoint is the one that hands out power, so it checks the admin secret first, in
//! constant time (an HMAC of the presented value against the expected one), caps the body at
//! [`MAX_BODY_BYTES`], and answers every refusal with a JSON `{"error": reason}` (an
//! oversized body too: 413). The port is bounded by [`listener`]: a connection cap and a read
//! deadline for headers and bodies.

pub mod listener;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use paymesh_tls::Identity;
use ring::hmac;
use ring::rand::SystemRandom;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::ca::{Ca, PodName};
use crate::config_store::ConfigStore;
use crate::discovery::{Metrics, SyncStatus};

/// Largest request body accepted (the token request is a few dozen bytes).
pub const MAX_BODY_BYTES: usize = 4096;

/// The admin secret, kept only as an HMAC tag under a random key.
pub struct AdminToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl AdminToken {
    /// Remembers `secret` (surrounding whitespace, such as a file's final newline, is ignored).
    pub fn new(secret: &str) -> Result<Self, ring::error::Unspecified> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())?;
        let tag = hmac::sign(&key, secret.trim().as_bytes());
        Ok(AdminToken { key, tag })
    }

    /// Whether `presented` is the secret, in time independent of where it differs.
    fn matches(&self, presented: &[u8]) -> bool {
        hmac::verify(&self.key, presented, self.tag.as_ref()).is_ok()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(...)")
    }
}

/// What the monitoring handlers read.
pub struct MonitoringState {
    /// The CA, for bootstrap tokens.
    pub ca: Arc<Ca>,
    /// The config store.
    pub config: Arc<ConfigStore>,
    /// Per-proxy sync status.
    pub status: Arc<SyncStatus>,
    /// Push counters.
    pub metrics: Arc<Metrics>,
    /// The admin secret.
    pub admin_token: AdminToken,
    /// Set once the config is loaded and both servers listen.
    pub ready: AtomicBool,
}

/// The monitoring routes.
pub fn router(state: Arc<MonitoringState>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/debug/syncz", get(syncz))
        .route("/debug/configz", get(configz))
        .route("/debug/bootstrap-token", post(bootstrap_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener::BoundedListener::new(listener), router.into_make_service())
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(state): State<Arc<MonitoringState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn syncz(State(state): State<Arc<MonitoringState>>) -> Response {
    Json(state.status.snapshot()).into_response()
}

async fn configz(State(state): State<Arc<MonitoringState>>) -> Response {
    let rejected = state.config.rejection().map(|r| {
        json!({
            "at": humantime::format_rfc3339_seconds(r.at).to_string(),
            "messages": r.messages,
        })
    });
    let current = state.config.current();
    Json(json!({
        "version": current.version.to_string(),
        "rejected": rejected,
        "unsupported": current.unsupported,
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<MonitoringState>>) -> Response {
    let m = &state.metrics;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: i128| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    metric(
        "pilot_xds_pushes",
        "counter",
        "Config snapshots pushed to proxies.",
        m.pushes.load(Ordering::Relaxed).into(),
    );
    for (name, help, value) in [
        ("paymesh_xds_full_pushes_total", "Full config snapshots pushed.", &m.full_pushes),
        ("paymesh_xds_delta_pushes_total", "Delta config snapshots pushed.", &m.delta_pushes),
        ("paymesh_xds_full_bytes_total", "Bytes of config_json in full snapshots pushed.", &m.full_bytes),
        ("paymesh_xds_delta_bytes_total", "Bytes of delta_json in delta snapshots pushed.", &m.delta_bytes),
    ] {
        metric(name, "counter", help, value.load(Ordering::Relaxed).into());
    }
    metric(
        "pilot_total_xds_rejects",
        "counter",
        "Snapshots proxies refused (NACK).",
        m.nacks.load(Ordering::Relaxed).into(),
    );
    metric("pilot_xds", "gauge", "Proxies connected now.", m.connected.load(Ordering::Relaxed).into());
    metric(
        "paymesh_config_rejections_total",
        "counter",
        "Config changes refused by validation or analysis.",
        state.config.rejections_total().into(),
    );
    metric(
        "paymesh_config_version",
        "gauge",
        "Config changes accepted since the control plane started (the `n` of version `<boot>-<n>`).",
        state.config.current().version.n.into(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// `POST /debug/bootstrap-token` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TokenRequest {
    namespace: String,
    service_account: String,
    pod: String,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": reason.into() }))).into_response()
}

async fn bootstrap_token(
    State(state): State<Arc<MonitoringState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return refuse(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer <admin token>`");
    };
    let presented = value.as_bytes().strip_prefix(b"Bearer ").map(<[u8]>::trim_ascii);
    match presented {
        None => return refuse(StatusCode::UNAUTHORIZED, "`Authorization` is not `Bearer <admin token>`"),
        Some(token) if !state.admin_token.matches(token) => {
            return refuse(StatusCode::UNAUTHORIZED, "the admin token is not valid");
        }
        Some(_) => {}
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {MAX_BODY_BYTES} bytes"));
        }
        Err(rejection) => return refuse(rejection.status(), rejection.body_text()),
    };
    let request: TokenRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("body must be JSON {{\"namespace\", \"serviceAccount\", \"pod\"}}: {e}"),
            );
        }
    };
    if request.pod.is_empty() || request.pod.len() > 253 {
        return refuse(StatusCode::BAD_REQUEST, "pod must be 1 to 253 characters");
    }
    let identity =
        match Identity::new(state.ca.trust_domain().clone(), &request.namespace, &request.service_account) {
            Ok(identity) => identity,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
        };
    match state.ca.issue_bootstrap_token(&identity, &PodName::new(&request.namespace, &request.pod)) {
        Ok(token) => Json(json!({ "token": token.expose() })).into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
