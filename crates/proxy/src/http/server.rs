//! The HTTP server every listener runs, with the limits and timeouts that protect the proxy from
//! slow or hostile clients.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::{Body, add_request_id, boxed_request};
use crate::access;
use crate::context::{Downstream, RequestContext};

/// The largest request header section accepted; larger ones get 431 (hyper's read buffer limit,
/// which is the header limit because headers must fit in it).
pub const MAX_HEADER_BYTES: usize = 60 * 1024;

/// How long a client may take to send a complete request header section.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The server every HTTP listener runs: HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) on one
/// port, with the header size limit and the header read timeout.
pub fn server() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
    builder
}

/// Serves one connection from `downstream` with `handler` (upgrades allowed, for CONNECT),
/// watched by `watcher` so shutdown can drain it. Every request gets an `x-request-id` (when it
/// has none) and a [`RequestContext`], which the handler fills and hands back with the response
/// for the access log; the requests hyper refuses itself are logged too.
pub async fn serve_connection<I, F, Fut>(downstream: Arc<Downstream>, io: I, handler: F, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Body>, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (Response<Body>, RequestContext)> + Send + 'static,
{
    let connection = Arc::clone(&downstream);
    let service = service_fn(move |req: Request<Incoming>| {
        let mut req = boxed_request(req);
        add_request_id(req.headers_mut());
        let ctx = RequestContext::new(Arc::clone(&connection));
        let (pending, req) = access::Pending::start(req);
        // Boxed: hyper moves the returned future several times, and ours is kilobytes.
        let response = Box::pin(handler(req, ctx));
        async move {
            let (response, ctx) = response.await;
            Ok::<_, Infallible>(match pending {
                Some(pending) => pending.respond(response, ctx),
                None => response,
            })
        }
    });
    let builder = server();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
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
