//! Header handling every listener shares: hop-by-hop headers, request ids, forwarding headers.

use http::header::{
    CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Envoy's and Istio's request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The chain of client addresses a request came through.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Envoy's mark on an answer a circuit breaker made.
pub const ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");

/// The status of a gRPC call (in the trailers, or the headers of a trailers-only answer).
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The message of a gRPC status.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

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
/// `serve_connection` adds it to every request).
pub fn add_forwarding_headers(headers: &mut HeaderMap, proto: &'static str) {
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use http::header::HOST;

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
}
