//! What every service does the same way: where it listens, `/health` and `/ready`, request
//! logs with the request id, the 1 MiB body limit, JSON 404/405s, and graceful shutdown.
//!
//! Lifecycle: `bind` → print `<service> listening on <addr>` on stdout (tests and
//! supervisors read the real port from it) → serve. On SIGTERM/SIGINT the service turns
//! not-ready, stops accepting, and lets in-flight requests finish for `SHUTDOWN_GRACE`;
//! then it returns anyway. A second signal exits at once.

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::propagation::{REQUEST_ID, TENANT_ID};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Where a service listens and how long it drains (clap args, read from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct ListenConfig {
    /// Address to listen on: an IP, or IP:PORT. Takes precedence over POD_IP.
    #[arg(long, env = "BIND_ADDR")]
    pub bind_addr: Option<String>,
    /// The pod's own IP (set by `paymesh up` and by Kubernetes); listened on when BIND_ADDR is unset.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<IpAddr>,
    /// Port to listen on (0 picks a free one); each service has its own default.
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// How long in-flight work may take to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl ListenConfig {
    /// The socket address: BIND_ADDR (IP or IP:PORT), else POD_IP, else 0.0.0.0; PORT, else
    /// the service's default port.
    pub fn addr(&self, default_port: u16) -> anyhow::Result<SocketAddr> {
        let port = self.port.unwrap_or(default_port);
        match self.bind_addr.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => {
                if let Ok(addr) = s.parse::<SocketAddr>() {
                    return Ok(self.port.map_or(addr, |p| SocketAddr::new(addr.ip(), p)));
                }
                let ip: IpAddr =
                    s.parse().with_context(|| format!("BIND_ADDR {s:?} is not an IP or IP:PORT"))?;
                Ok(SocketAddr::new(ip, port))
            }
            None => Ok(SocketAddr::new(self.pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port)),
        }
    }
}

/// Resolves once shutdown has been requested; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Listens for SIGTERM and SIGINT. The first starts the graceful shutdown; a second one
    /// exits the process at once.
    pub fn on_signals() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::info!("shutdown requested: draining");
            tx.send_replace(true);
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        });
        Ok(Self(rx))
    }

    /// Waits until shutdown is requested.
    pub async fn requested(&self) {
        let mut rx = self.0.clone();
        // An error means the sender is gone: nobody can request shutdown any more, so wait forever.
        if rx.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// True once shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Whether the service should receive traffic: not draining, and its own check passes
/// (for the stateful services: the database answers).
#[derive(Clone)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
    check: Check,
}

impl Readiness {
    /// Ready whenever not draining.
    pub fn always() -> Self {
        Self::with_check(|| async { Ok(()) })
    }

    /// Ready when not draining and `check` succeeds.
    pub fn with_check<F, Fut>(check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self { draining: Arc::new(AtomicBool::new(false)), check: Arc::new(move || Box::pin(check())) }
    }

    async fn status(&self) -> Result<(), ApiError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", "shutting down"));
        }
        (self.check)()
            .await
            .map_err(|reason| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason))
    }
}

/// A service ready to serve: its name, routes and readiness.
pub struct Service {
    /// The service name, e.g. `account-service`.
    pub name: &'static str,
    /// The service's own routes.
    pub router: Router,
    /// Its readiness check.
    pub readiness: Readiness,
}

/// Binds `addr`, announces the bound address, serves until `shutdown`, then drains for at
/// most `grace`.
pub async fn serve(
    service: Service,
    addr: SocketAddr,
    shutdown: Shutdown,
    grace: Duration,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("{} binds {addr}", service.name))?;
    let local = listener.local_addr().context("read the bound address")?;
    // Supervisors and tests read the port from this line; a closed stdout is not an error.
    let _ = writeln!(std::io::stdout(), "{} listening on {local}", service.name);
    tracing::info!(service = service.name, addr = %local, "listening");
    let readiness = service.readiness.clone();
    let app = app(service);
    let drain = shutdown.clone();
    let graceful = async move {
        drain.requested().await;
        readiness.draining.store(true, Ordering::Relaxed);
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let deadline = async {
        shutdown.requested().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result.context("serve")?,
        () = deadline => tracing::warn!(grace = ?grace, "grace period over: closing remaining connections"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The full router: the service's routes, health, readiness, fallbacks, body limit, logs.
pub fn app(service: Service) -> Router {
    let name = service.name;
    service
        .router
        .route(
            "/health",
            get(move || async move { axum::Json(serde_json::json!({"status": "ok", "service": name})) }),
        )
        .route("/ready", get(ready).with_state(service.readiness))
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(observe))
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    match readiness.status().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Gives every request an `x-request-id` (kept when the caller sent one), runs it inside a
/// span carrying that id and the tenant, echoes the id on the response and logs the outcome.
async fn observe(mut req: Request, next: Next) -> Response {
    let request_id = match req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_owned(),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            if let Ok(v) = HeaderValue::from_str(&id) {
                req.headers_mut().insert(REQUEST_ID, v);
            }
            id
        }
    };
    let tenant = req.headers().get(TENANT_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let quiet = path == "/health" || path == "/ready";
    let span = tracing::info_span!("request", %method, %path, request_id = %request_id, tenant = %tenant);
    let start = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let status = response.status().as_u16();
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        if quiet {
            tracing::debug!(status, micros, "served");
        } else if status >= 500 {
            tracing::warn!(status, micros, "served");
        } else {
            tracing::info!(status, micros, "served");
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(bind: Option<&str>, pod: Option<&str>, port: Option<u16>) -> ListenConfig {
        ListenConfig {
            bind_addr: bind.map(str::to_owned),
            pod_ip: pod.map(|p| p.parse().expect("valid in test")),
            port,
            shutdown_grace: Duration::from_secs(1),
        }
    }

    #[test]
    fn listen_address_precedence() {
        assert_eq!(
            listen(None, None, None).addr(8081).expect("valid in test"),
            "0.0.0.0:8081".parse().expect("valid in test")
        );
        assert_eq!(
            listen(None, Some("127.0.0.7"), None).addr(8081).expect("valid in test"),
            "127.0.0.7:8081".parse().expect("valid in test")
        );
        assert_eq!(
            listen(Some("127.0.0.1"), Some("127.0.0.7"), Some(0)).addr(8081).expect("valid in test"),
            "127.0.0.1:0".parse().expect("valid in test")
        );
        assert_eq!(
            listen(Some("127.0.0.1:9000"), None, None).addr(8081).expect("valid in test"),
            "127.0.0.1:9000".parse().expect("valid in test")
        );
        assert!(listen(Some("nope"), None, None).addr(8081).is_err());
    }
}
