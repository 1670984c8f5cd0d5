//! The access log: one line per request, at info level on target `access`, in Envoy's shape:
//!
//! ```text
//! [START_TIME] "METHOD PATH PROTOCOL" STATUS FLAGS BYTES_IN BYTES_OUT DURATION_MS UPSTREAM_HOST "AUTHORITY" "X-REQUEST-ID"
//! ```
//!
//! [`Pending`] is made when the request arrives (counting request body bytes as the handler
//! reads them), and only when the `access` target is enabled: a disabled log costs the hot path
//! one filter check, not a record's allocations and formatting. [`Pending::respond`] wraps the
//! response body, which counts what is sent and writes the line when hyper drops it, after the
//! last byte (Envoy's `%DURATION%`). The flag is the [`ResponseFlag`] the proxy's own answers
//! carry as an extension, `-` otherwise; the upstream host is the [`UpstreamHost`] extension the
//! forwarding code sets. Requests hyper refuses before a handler runs (malformed, header section
//! too large) are logged by [`log_refused`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tracing::info;

use crate::error::ResponseFlag;
use crate::http::{Body, BoxError, X_REQUEST_ID};

/// The endpoint a response came from (response extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamHost(pub SocketAddr);

/// A request being served: what the line will say, and its received bytes so far.
#[derive(Debug)]
pub struct Pending {
    listener: &'static str,
    start_time: SystemTime,
    started: Instant,
    request_line: String,
    authority: String,
    request_id: String,
    bytes_in: Arc<AtomicU64>,
}

impl Pending {
    /// Starts the record of `req` (after its `x-request-id` is set) and counts its body; `None`
    /// (and `req` untouched) when the access log is off.
    pub fn start(listener: &'static str, req: Request<Body>) -> (Option<Self>, Request<Body>) {
        if !enabled() {
            return (None, req);
        }
        let bytes_in = Arc::new(AtomicU64::new(0));
        let path = req.uri().path_and_query().map_or_else(|| req.uri().to_string(), |p| p.to_string());
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("-")
            .to_owned();
        let request_id =
            req.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let pending = Pending {
            listener,
            start_time: SystemTime::now(),
            started: Instant::now(),
            request_line: format!("{} {} {}", req.method(), path, protocol(req.version())),
            authority,
            request_id,
            bytes_in: Arc::clone(&bytes_in),
        };
        let req = req.map(|inner| Body::new(Counted { inner, bytes: bytes_in }));
        (Some(pending), req)
    }

    /// Wraps `response`'s body so the line is written once it has been sent (or dropped).
    pub fn respond(self, response: Response<Body>) -> Response<Body> {
        let status = response.status();
        let flag = response.extensions().get::<ResponseFlag>().copied();
        let upstream = response.extensions().get::<UpstreamHost>().copied();
        response.map(|inner| {
            Body::new(Logged {
                inner,
                bytes_out: 0,
                record: Some(Record { pending: self, status, flag, upstream }),
            })
        })
    }
}

/// Notes the endpoint `response` came from for its line; nothing when the log is off, as an
/// extension costs the response an allocated map.
pub fn note_upstream<B>(response: &mut Response<B>, host: SocketAddr) {
    if enabled() {
        response.extensions_mut().insert(UpstreamHost(host));
    }
}

/// Whether access lines are written (the `access` target at info level).
fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Logs a request hyper answered itself (400 for a malformed request, 431 for a header section
/// over the limit) from the connection's error.
pub fn log_refused(listener: &'static str, status: StatusCode) {
    info!(
        target: "access",
        listener,
        "[{}] \"- - HTTP/1.1\" {} {} 0 0 0 - \"-\" \"-\"",
        humantime::format_rfc3339_millis(SystemTime::now()),
        status.as_u16(),
        ResponseFlag::DownstreamProtocolError
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
    status: StatusCode,
    flag: Option<ResponseFlag>,
    upstream: Option<UpstreamHost>,
}

impl Record {
    fn write(self, bytes_out: u64) {
        let p = &self.pending;
        let flag = self.flag.map_or("-", ResponseFlag::as_str);
        let upstream = self.upstream.map_or_else(|| "-".to_owned(), |u| u.0.to_string());
        info!(
            target: "access",
            listener = p.listener,
            "[{}] \"{}\" {} {} {} {} {} {} \"{}\" \"{}\"",
            humantime::format_rfc3339_millis(p.start_time),
            p.request_line,
            self.status.as_u16(),
            flag,
            p.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            p.started.elapsed().as_millis(),
            upstream,
            p.authority,
            p.request_id
        );
    }
}

/// A request body counting its data bytes.
struct Counted {
    inner: Body,
    bytes: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body counting its data bytes, writing the access log line when dropped.
struct Logged {
    inner: Body,
    bytes_out: u64,
    record: Option<Record>,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes_out += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.write(self.bytes_out);
        }
    }
}

#[cfg(test)]
mod tests {
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
            let (pending, req) = Pending::start("outbound", request());
            assert!(pending.is_none());
            assert_eq!(req.body().size_hint().exact(), Some(5), "the body is not wrapped");
        });
    }

    #[test]
    fn a_record_of_the_request_when_the_access_log_is_on() {
        let on = tracing_subscriber::fmt().with_env_filter(EnvFilter::new("access=info")).finish();
        tracing::subscriber::with_default(on, || {
            let (pending, _) = Pending::start("outbound", request());
            let pending = pending.expect("a record when access is enabled");
            assert_eq!(pending.request_line, "GET /pay?x=1 HTTP/1.1");
        });
    }
}
