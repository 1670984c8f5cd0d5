//! HTTP plumbing shared by every listener: the body type, the server settings (limits and
//! timeouts that protect the proxy from slow or hostile clients), hop-by-hop header handling,
//! request ids, and authorities.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::Authority as UriAuthority;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::access;

/// Any error a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request and response the proxy handles.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The largest request header section accepted; larger ones get 431 (hyper's read buffer limit,
/// which is the header limit because headers must fit in it).
pub const MAX_HEADER_BYTES: usize = 60 * 1024;

/// How long a client may take to send a complete request header section.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Envoy's and Istio's request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers that belong to one connection and never travel further (RFC 9110 §7.6.1); as
/// `HeaderName`s, so removing them hashes but never parses a name.
static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Whether `name` is one of [`HOP_BY_HOP`] or `te`: a match on the text, which compiles to a
/// length switch and one compare, where comparing against each constant costs nine.
fn is_hop_by_hop_or_te(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "te"
    )
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A received body, streamed on.
pub fn incoming(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed_unsync()
}

/// Maps a received request's body to [`Body`].
pub fn boxed_request(req: Request<Incoming>) -> Request<Body> {
    req.map(incoming)
}

/// Maps a received response's body to [`Body`].
pub fn boxed_response(res: Response<Incoming>) -> Response<Body> {
    res.map(incoming)
}

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

/// Serves one connection of `listener` with `handler` (upgrades allowed, for CONNECT), watched
/// by `watcher` so shutdown can drain it. Every request gets an `x-request-id` (when it has
/// none) and an access log line; so do the requests hyper refuses itself.
pub async fn serve_connection<I, F, Fut>(listener: &'static str, io: I, handler: F, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Body>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let mut req = boxed_request(req);
        add_request_id(req.headers_mut());
        let (pending, req) = access::Pending::start(listener, req);
        // Boxed: hyper moves the returned future several times, and ours is kilobytes.
        let response = Box::pin(handler(req));
        async move {
            let response = response.await;
            Ok::<_, Infallible>(match pending {
                Some(pending) => pending.respond(response),
                None => response,
            })
        }
    });
    let builder = server();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        match error.downcast_ref::<hyper::Error>() {
            Some(error) if error.is_parse_too_large() => {
                access::log_refused(listener, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            Some(error) if error.is_parse() => {
                access::log_refused(listener, StatusCode::BAD_REQUEST);
            }
            _ => {}
        }
        debug!(listener, %error, "connection ended with an error");
    }
}

/// Removes hop-by-hop headers, and the headers `Connection` names; `te: trailers` survives, as
/// gRPC needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none of these, and removing a name
    // that is absent still hashes it (nine hashes per message per proxy).
    if !headers.keys().any(is_hop_by_hop_or_te) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    let trailers = headers.get(TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(TE);
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Adds `x-request-id` (a random UUID) when the client sent none.
///
/// Looked up before inserting: `HeaderMap::entry` reserves room first, which regrows a map
/// decoded to its exact size even when the header is already there (the inbound side's case).
pub fn add_request_id(headers: &mut HeaderMap) {
    if headers.contains_key(X_REQUEST_ID) {
        return;
    }
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    if let Ok(id) = HeaderValue::from_str(id) {
        headers.insert(X_REQUEST_ID, id);
    }
}

/// Marks `x-request-id` as never indexed for HPACK: its value is new with every request, so
/// indexing it only fills the connection's table, evicts the values that do repeat, and makes
/// the encoder walk every earlier id of that name on each request.
pub fn never_index_request_id(headers: &mut HeaderMap) {
    if let Some(id) = headers.get_mut(X_REQUEST_ID) {
        id.set_sensitive(true);
    }
}

/// Adds `x-forwarded-proto` when the client sent none (`x-request-id` is already there:
/// [`serve_connection`] adds it to every request).
pub fn add_forwarding_headers(headers: &mut HeaderMap, proto: &'static str) {
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
}

/// A request's authority: `host[:port]` as the client wrote it, lowercased, parsed once: routing
/// reads it as text and forwarding reuses it as the upstream request's `:authority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    parsed: UriAuthority,
    /// Where the host ends in the text (a `:port` or nothing follows).
    host_len: usize,
    port: u16,
}

impl Authority {
    /// The authority of `req`: the URI's (absolute-form, HTTP/2 `:authority`, CONNECT), else
    /// `Host`. `None` when there is none or it is not `host[:port]`.
    pub fn of<B>(req: &Request<B>, default_port: u16) -> Option<Self> {
        match req.uri().authority() {
            Some(authority) => Self::from_parsed(authority.clone(), default_port),
            None => Self::parse(req.headers().get(HOST)?.to_str().ok()?, default_port),
        }
    }

    /// Parses `host[:port]`.
    pub fn parse(text: &str, default_port: u16) -> Option<Self> {
        Self::from_parsed(text.parse().ok()?, default_port)
    }

    /// Checks and splits an authority `http` has already parsed, in one pass over its bytes
    /// (its own `host()` and `port()` rescan the text on every call).
    fn from_parsed(parsed: UriAuthority, default_port: u16) -> Option<Self> {
        let text = parsed.as_str().as_bytes();
        let mut uppercase = false;
        for &byte in text {
            if byte == b'@' {
                return None;
            }
            uppercase |= byte.is_ascii_uppercase();
        }
        let host_len = match text.first() {
            Some(b'[') => text.iter().position(|&b| b == b']')? + 1,
            _ => text.iter().rposition(|&b| b == b':').unwrap_or(text.len()),
        };
        let port = match text[host_len..] {
            [] => default_port,
            [b':', ref digits @ ..] => parse_port(digits)?,
            _ => return None,
        };
        if host_len == 0 {
            return None;
        }
        let parsed = if uppercase { parsed.as_str().to_ascii_lowercase().parse().ok()? } else { parsed };
        Some(Authority { parsed, host_len, port })
    }

    /// The text, lowercased (virtual host domains are lowercase).
    pub fn text(&self) -> &str {
        self.parsed.as_str()
    }

    /// The host part (IPv6 with its brackets).
    pub fn host(&self) -> &str {
        &self.parsed.as_str()[..self.host_len]
    }

    /// The port, or the default port when the authority has none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// As a URI authority (a reference-counted clone away from a request's).
    pub fn uri(&self) -> &UriAuthority {
        &self.parsed
    }
}

/// A port: one or more ASCII digits, at most 65535.
fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_named_ones_go() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("close, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "traceparent"]);
        headers.insert(TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut headers);
        assert!(!headers.contains_key(TE));
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_found_and_others_are_left_alone() {
        for name in HOP_BY_HOP.iter().chain([&TE]) {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("x"));
            headers.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut headers);
            assert_eq!(headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"], "{name}");
        }
        let mut plain = HeaderMap::new();
        plain.insert(HOST, HeaderValue::from_static("a"));
        plain.append("accept", HeaderValue::from_static("*/*"));
        plain.append("accept", HeaderValue::from_static("text/plain"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn request_ids_are_made_once_and_never_indexed_towards_a_peer() {
        let mut headers = HeaderMap::new();
        add_request_id(&mut headers);
        let id = headers[X_REQUEST_ID].clone();
        assert!(uuid::Uuid::parse_str(id.to_str().expect("ascii")).is_ok(), "{id:?}");
        assert!(!id.is_sensitive());
        add_request_id(&mut headers);
        assert_eq!(headers.get_all(X_REQUEST_ID).iter().collect::<Vec<_>>(), [&id]);
        never_index_request_id(&mut headers);
        assert!(headers[X_REQUEST_ID].is_sensitive());
        assert_eq!(headers[X_REQUEST_ID], id);
    }

    #[test]
    fn authorities_parse_with_default_ports() {
        let a = Authority::parse("Account-Service:8083", 80).expect("valid");
        assert_eq!((a.text(), a.host(), a.port()), ("account-service:8083", "account-service", 8083));
        let b = Authority::parse("foo", 80).expect("valid");
        assert_eq!((b.host(), b.port()), ("foo", 80));
        let v6 = Authority::parse("[::1]:80", 0).expect("valid");
        assert_eq!((v6.host(), v6.port(), v6.uri().as_str()), ("[::1]", 80, "[::1]:80"));
        assert!(Authority::parse("user@foo:80", 80).is_none());
        assert!(Authority::parse("foo:bar", 80).is_none());
        assert!(Authority::parse("", 80).is_none());
        assert!(Authority::parse("foo:", 80).is_none());
        let bare_v6 = Authority::parse("[::1]", 443).expect("valid");
        assert_eq!((bare_v6.host(), bare_v6.port()), ("[::1]", 443));
        let max = Authority::parse("a.b:65535", 80).expect("valid");
        assert_eq!((max.host(), max.port()), ("a.b", 65535));
        for hostile in ["foo:+80", "foo:65536", "foo:-1", ":80", "[::1]x", "[::1]:", "a:80:90", "foo:8 0"] {
            assert!(Authority::parse(hostile, 80).is_none(), "{hostile} accepted");
        }
    }
}
