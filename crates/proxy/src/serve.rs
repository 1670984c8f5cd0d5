//! Serving one downstream connection: the HTTP server of [`crate::http::server()`], a
//! [`RequestContext`] and an `x-request-id` for every request (after a gateway has cleaned an
//! outside request's headers, [`crate::edge`]), and the access log around the handler. What a
//! request holds upstream (circuit-breaker slots, an endpoint's in-flight count) lives in its
//! context and is released when the response body ends.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tracing::debug;

use crate::access;
use crate::context::{Downstream, Listener, RequestContext};
use crate::edge;
use crate::http::{Body, HEADER_READ_TIMEOUT, Watched, X_REQUEST_ID, add_request_id, boxed_request, server};

/// Serves one connection from `downstream` with `handler` (upgrades allowed, for CONNECT),
/// watched by `watcher` so shutdown can drain it. Every request gets an `x-request-id` (when it
/// has none) and a [`RequestContext`], which the handler fills and hands back with the response
/// for the access log; the requests hyper refuses itself are logged too. A connection whose
/// first request head has not arrived within [`HEADER_READ_TIMEOUT`] of this call is closed:
/// hyper's own header timeout starts only once it has told HTTP/1.1 from HTTP/2, so a client
/// that never speaks (or stops in the middle of its first bytes) would otherwise hold the
/// connection for good.
pub async fn serve_connection<I, F, Fut>(downstream: Arc<Downstream>, io: I, handler: F, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Body>, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (Response<Body>, RequestContext)> + Send + 'static,
{
    let connection = Arc::clone(&downstream);
    let first = Arc::new(FirstRequest::default());
    let seen = Arc::clone(&first);
    let service = service_fn(move |req: Request<Incoming>| {
        seen.arrived();
        let mut req = boxed_request(req);
        if connection.listener == Listener::Gateway {
            edge::sanitize(req.headers_mut(), connection.remote.ip());
        }
        add_request_id(req.headers_mut());
        let mut ctx = RequestContext::new(Arc::clone(&connection));
        if connection.listener == Listener::Gateway {
            ctx.request_id = req.headers().get(X_REQUEST_ID).cloned();
        }
        let (pending, req) = access::Pending::start(req);
        // Boxed: hyper moves the returned future several times, and ours is kilobytes.
        let response = Box::pin(handler(req, ctx));
        async move {
            let (response, mut ctx) = response.await;
            Ok::<_, Infallible>(match pending {
                Some(pending) => pending.respond(response, ctx),
                None if ctx.held.is_empty() => response,
                // Upstream slots are given back when the body ends, not with the head.
                None => {
                    let held = std::mem::take(&mut ctx.held);
                    response.map(|body| Body::new(Watched::new(body, held)))
                }
            })
        }
    });
    let builder = server();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(watcher.watch(connection.into_owned()));
    let served = tokio::select! {
        served = &mut connection => served,
        () = first.notify.notified() => connection.await,
        () = tokio::time::sleep(HEADER_READ_TIMEOUT) => {
            return debug!(listener = downstream.listener.as_str(), remote = %downstream.remote,
                "no request head within {HEADER_READ_TIMEOUT:?} of the connection; closing it");
        }
    };
    if let Err(error) = served {
        match error.downcast_ref::<hyper::Error>() {
            Some(error) if error.is_parse_too_large() => {
                access::log_refused(&downstream, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            Some(error) if error.is_parse() => access::log_refused(&downstream, StatusCode::BAD_REQUEST),
            _ => {}
        }
        debug!(listener = downstream.listener.as_str(), %error, "connection ended with an error");
    }
}

/// Whether a connection has had its first request head, told once.
#[derive(Default)]
struct FirstRequest {
    seen: AtomicBool,
    notify: Notify,
}

impl FirstRequest {
    /// A request head arrived: the first one wakes the connection's deadline, later ones cost a
    /// load.
    fn arrived(&self) {
        if !self.seen.load(Ordering::Relaxed) && !self.seen.swap(true, Ordering::Relaxed) {
            self.notify.notify_one();
        }
    }
}
