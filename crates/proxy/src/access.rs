//! The access log: one line per request, at info level on target `access`, in Istio's default
//! text format, with paymesh's additions at the end:
//!
//! ```text
//! [START_TIME] "METHOD PATH PROTOCOL" RESPONSE_CODE RESPONSE_FLAGS RESPONSE_CODE_DETAILS
//!   CONNECTION_TERMINATION_DETAILS "UPSTREAM_TRANSPORT_FAILURE_REASON" BYTES_RECEIVED BYTES_SENT
//!   DURATION UPSTREAM_SERVICE_TIME "X-FORWARDED-FOR" "USER-AGENT" "X-REQUEST-ID" "AUTHORITY"
//!   "UPSTREAM_HOST" UPSTREAM_CLUSTER UPSTREAM_LOCAL_ADDRESS DOWNSTREAM_LOCAL_ADDRESS
//!   DOWNSTREAM_REMOTE_ADDRESS REQUESTED_SERVER_NAME ROUTE_NAME
//!   DOWNSTREAM_PEER_URI_SAN UPSTREAM_PEER_URI_SAN UPSTREAM_POD VIRTUAL_SERVICE ATTEMPTS
//! ```
//!
//! (one line; `-` where a value is missing). Everything after the request's own headers comes
//! from the [`RequestContext`]. [`Pending`] keeps the request's text fields and counts its body
//! bytes, and is made only when the `access` target is enabled: a disabled log costs the hot
//! path one filter check, not a record's allocations and formatting. [`Pending::respond`]
//! watches the response body, counting what is sent and writing the line when hyper drops it,
//! after the last byte (Envoy's `%DURATION%`). Requests hyper refuses before a handler runs
//! (malformed, header section too large) are logged by [`log_refused`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Frame;
use tracing::info;

use crate::context::{Downstream, RequestContext};
use crate::flags::ResponseFlag;
use crate::http::{Body, BoxError, Watch, Watched, X_FORWARDED_FOR, X_REQUEST_ID};

/// A request being served: its text fields, and its received bytes so far.
#[derive(Debug)]
pub struct Pending {
    request_line: String,
    authority: String,
    request_id: String,
    user_agent: String,
    forwarded_for: String,
    bytes_in: Arc<AtomicU64>,
}

impl Pending {
    /// Starts the record of `req` (after its `x-request-id` is set) and counts its body; `None`
    /// (and `req` untouched) when the access log is off.
    pub fn start(req: Request<Body>) -> (Option<Self>, Request<Body>) {
        if !enabled() {
            return (None, req);
        }
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let bytes_in = Arc::new(AtomicU64::new(0));
        let path = req.uri().path_and_query().map_or_else(|| req.uri().to_string(), |p| p.to_string());
        let authority = match req.uri().authority() {
            Some(authority) => authority.as_str().to_owned(),
            None => header(HOST),
        };
        let pending = Pending {
            request_line: format!("{} {} {}", req.method(), path, protocol(req.version())),
            authority,
            request_id: header(X_REQUEST_ID),
            user_agent: header(USER_AGENT),
            forwarded_for: header(X_FORWARDED_FOR),
            bytes_in: Arc::clone(&bytes_in),
        };
        let req = req.map(|inner| Body::new(Watched::new(inner, CountIn(bytes_in))));
        (Some(pending), req)
    }

    /// Wraps `response`'s body so the line is written, from `ctx`, once it has been sent (or
    /// dropped).
    pub fn respond(self, response: Response<Body>, ctx: RequestContext) -> Response<Body> {
        let status = response.status();
        let record = Some(Record { pending: self, ctx, status });
        response.map(|inner| Body::new(Watched::new(inner, LogAtEnd { bytes_out: 0, record })))
    }
}

/// Whether access lines are written (the `access` target at info level).
fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Logs a request hyper answered itself (400 for a malformed request, 431 for a header section
/// over the limit) from the connection's error.
pub fn log_refused(downstream: &Downstream, status: StatusCode) {
    info!(
        target: "access",
        listener = downstream.listener.as_str(),
        "[{}] \"- - HTTP/1.1\" {} {} codec_error - \"-\" 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\" - - {} {} - - {} - - - 0",
        humantime::format_rfc3339_millis(SystemTime::now()),
        status.as_u16(),
        ResponseFlag::DownstreamProtocolError,
        downstream.local,
        downstream.remote,
        Dash(downstream.peer.identity()),
    );
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

struct Record {
    pending: Pending,
    ctx: RequestContext,
    status: StatusCode,
}

impl Record {
    fn write(self, bytes_out: u64) {
        let (p, ctx) = (&self.pending, &self.ctx);
        // Envoy's `x-envoy-upstream-service-time`: from the request going out to the head coming back.
        let service_time = ctx.first_byte.zip(ctx.connected).map(|(first, sent)| (first - sent).as_millis());
        let meta = ctx.endpoint_meta();
        info!(
            target: "access",
            listener = ctx.downstream.listener.as_str(),
            "[{}] \"{}\" {} {} {} - \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} - {} {} {} {} {} {}",
            humantime::format_rfc3339_millis(ctx.start_time()),
            p.request_line,
            self.status.as_u16(),
            ctx.flags,
            ctx.details,
            Dash(ctx.failure.as_deref()),
            p.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            ctx.started.elapsed().as_millis(),
            Dash(service_time),
            p.forwarded_for,
            p.user_agent,
            p.request_id,
            p.authority,
            Dash(ctx.upstream_host()),
            Dash(ctx.cluster_name()),
            ctx.downstream.local,
            ctx.downstream.remote,
            Dash(ctx.route().map(|route| &route.name)),
            Dash(ctx.downstream.peer.identity()),
            Dash(meta.map(|endpoint| &endpoint.identity)),
            Dash(meta.map(|endpoint| &endpoint.pod)),
            Dash(ctx.route().and_then(|route| route.virtual_service.as_ref())),
            ctx.attempts,
        );
    }
}

/// A value, or `-` when there is none.
struct Dash<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Dash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Counts a request body's data bytes.
struct CountIn(Arc<AtomicU64>);

impl Watch for CountIn {
    fn polled(&mut self, frame: Option<&Result<Frame<Bytes>, BoxError>>, _ended: bool) {
        if let Some(Ok(frame)) = frame
            && let Some(data) = frame.data_ref()
        {
            self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Counts a response body's data bytes and writes the access line when the body is dropped.
struct LogAtEnd {
    bytes_out: u64,
    record: Option<Record>,
}

impl Watch for LogAtEnd {
    fn polled(&mut self, frame: Option<&Result<Frame<Bytes>, BoxError>>, _ended: bool) {
        if let Some(Ok(frame)) = frame
            && let Some(data) = frame.data_ref()
        {
            self.bytes_out += data.len() as u64;
        }
    }
}

impl Drop for LogAtEnd {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.write(self.bytes_out);
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::body::Body as _;
    use tracing_subscriber::EnvFilter;

    use super::*;
    use crate::http::full;

    fn request() -> Request<Body> {
        Request::builder().uri("/pay?x=1").body(full("12345")).expect("valid request")
    }

    #[test]
    fn no_record_and_the_request_untouched_when_the_access_log_is_off() {
        let off = tracing_subscriber::fmt().with_env_filter(EnvFilter::new("warn")).finish();
        tracing::subscriber::with_default(off, || {
            let (pending, req) = Pending::start(request());
            assert!(pending.is_none());
            assert_eq!(req.body().size_hint().exact(), Some(5), "the body is not wrapped");
        });
    }

    #[test]
    fn a_record_of_the_request_when_the_access_log_is_on() {
        let on = tracing_subscriber::fmt().with_env_filter(EnvFilter::new("access=info")).finish();
        tracing::subscriber::with_default(on, || {
            let (pending, _) = Pending::start(request());
            let pending = pending.expect("a record when access is enabled");
            assert_eq!(pending.request_line, "GET /pay?x=1 HTTP/1.1");
        });
    }
}
