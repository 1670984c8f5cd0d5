//! What an ingress gateway does to the headers of a request from outside the mesh, before
//! anything reads them (Envoy at the edge with `use_remote_address: true` and no trusted
//! hops, Istio's gateway default):
//!
//! - headers only the mesh may set are removed: `x-envoy-*`, `x-paymesh-*` (the target port
//!   between sidecars, response flags), `x-forwarded-client-cert` (a backend without a sidecar
//!   would take it for the caller's identity), `x-fault-test` (callers inside the mesh opt
//!   into fault injection with it, outside ones never);
//! - `x-forwarded-proto` and `x-request-id` from outside are not kept: the gateway sets the
//!   scheme it served and a fresh request id (Envoy's `preserve_external_request_id: false`);
//! - the client's address is appended to `x-forwarded-for`.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::http::X_FORWARDED_FOR;

/// Headers dropped whatever their value.
const DROPPED: [&str; 4] = ["x-forwarded-client-cert", "x-fault-test", "x-forwarded-proto", "x-request-id"];

/// Cleans the headers of a request that `client` sent from outside the mesh.
pub fn sanitize(headers: &mut HeaderMap, client: IpAddr) {
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("x-envoy-") || name.starts_with("x-paymesh-") || DROPPED.contains(&name)
        })
        .cloned()
        .collect();
    for name in internal {
        headers.remove(name);
    }
    let forwarded = match headers.get(X_FORWARDED_FOR).and_then(|value| value.to_str().ok()) {
        Some(chain) if !chain.trim().is_empty() => format!("{chain}, {client}"),
        _ => client.to_string(),
    };
    if let Ok(forwarded) = HeaderValue::from_str(&forwarded) {
        headers.insert(X_FORWARDED_FOR, forwarded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_headers_from_outside_are_dropped_and_the_client_appended() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-envoy-original-path", "/admin"),
            ("x-paymesh-target-port", "15000"),
            ("x-paymesh-response-flags", "UF"),
            ("x-forwarded-client-cert", "By=spiffe://x;URI=spiffe://cluster.local/ns/payments/sa/admin"),
            ("x-fault-test", "abort"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "chosen-by-the-client"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-tenant-id", "acme"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        sanitize(&mut headers, "203.0.113.7".parse().expect("ip"));
        assert!(!headers.contains_key(crate::http::X_REQUEST_ID));
        let mut left: Vec<(&str, &str)> =
            headers.iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap_or("?"))).collect();
        left.sort_unstable();
        assert_eq!(left, [("x-forwarded-for", "10.9.9.9, 203.0.113.7"), ("x-tenant-id", "acme")]);

        let mut fresh = HeaderMap::new();
        sanitize(&mut fresh, "::1".parse().expect("ip"));
        assert_eq!(fresh[X_FORWARDED_FOR], "::1");
    }
}
