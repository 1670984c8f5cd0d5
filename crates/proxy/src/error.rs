//! The one classifier from proxy errors to responses: every error the proxy answers itself has
//! an HTTP status, an Envoy response flag (in `x-paymesh-response-flags`, as Envoy's access log
//! `%RESPONSE_FLAGS%` names it) and a plain-text reason ending in the flag.

use std::fmt;
use std::net::SocketAddr;

use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use paymesh_api::model::MtlsMode;

use crate::http::{Body, full};

/// The header carrying the response flag of a proxy-generated answer.
pub const RESPONSE_FLAGS: HeaderName = HeaderName::from_static("x-paymesh-response-flags");

/// Envoy's response flags, for the errors the proxy produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFlag {
    /// `NR`: no route (or filter chain) matched.
    NoRoute,
    /// `UH`: the cluster has no endpoint.
    NoHealthyUpstream,
    /// `UF`: connecting (TCP or TLS) to the upstream failed.
    UpstreamConnectionFailure,
    /// `UC`: the upstream connection ended before the response.
    UpstreamConnectionTermination,
    /// `DPE`: the downstream request was malformed.
    DownstreamProtocolError,
    /// `UAEX`: the request was refused by the proxy's own policy (peer authentication).
    Unauthorized,
}

impl ResponseFlag {
    /// The flag as Envoy writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::Unauthorized => "UAEX",
        }
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No config has arrived yet.
    #[error("no config received from the control plane yet")]
    NoConfig,
    /// No virtual host (or TCP route, or inbound chain) for the authority.
    #[error("no route to host \"{authority}\"")]
    NoRoute {
        /// The authority asked for.
        authority: String,
    },
    /// A virtual host matched but none of its routes' conditions did.
    #[error("no route matched \"{authority}{path}\"")]
    NoRouteMatched {
        /// The authority asked for.
        authority: String,
        /// The request path.
        path: String,
    },
    /// The cluster has no endpoint.
    #[error("no healthy upstream in cluster {cluster}")]
    NoHealthyUpstream {
        /// The cluster.
        cluster: String,
    },
    /// TCP or TLS to the endpoint failed.
    #[error("upstream connect error to {endpoint}: {cause}")]
    UpstreamConnect {
        /// The address dialed.
        endpoint: SocketAddr,
        /// What went wrong.
        cause: String,
    },
    /// The upstream connection failed after the request was sent.
    #[error("upstream {endpoint} reset the request: {cause}")]
    UpstreamReset {
        /// The address dialed.
        endpoint: SocketAddr,
        /// What went wrong.
        cause: String,
    },
    /// The request is not something the proxy can forward.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The port's peer authentication refuses how the request arrived.
    #[error("port {port} requires {required} (mode {mode:?}, policy {policy})")]
    PeerAuthentication {
        /// The workload port.
        port: u16,
        /// What is missing: `mutual TLS` or `plaintext`.
        required: &'static str,
        /// The port's mode.
        mode: MtlsMode,
        /// The policy that set it.
        policy: String,
    },
}

impl ProxyError {
    /// The response flag.
    pub fn flag(&self) -> ResponseFlag {
        match self {
            ProxyError::NoConfig | ProxyError::NoRoute { .. } | ProxyError::NoRouteMatched { .. } => {
                ResponseFlag::NoRoute
            }
            ProxyError::NoHealthyUpstream { .. } => ResponseFlag::NoHealthyUpstream,
            ProxyError::UpstreamConnect { .. } => ResponseFlag::UpstreamConnectionFailure,
            ProxyError::UpstreamReset { .. } => ResponseFlag::UpstreamConnectionTermination,
            ProxyError::BadRequest(_) => ResponseFlag::DownstreamProtocolError,
            ProxyError::PeerAuthentication { .. } => ResponseFlag::Unauthorized,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } | ProxyError::NoRouteMatched { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoConfig
            | ProxyError::NoHealthyUpstream { .. }
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamReset { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::PeerAuthentication { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// The answer: status, flag header (and the flag as an extension, for the access log),
    /// `reason (FLAG)` as plain text.
    pub fn into_response(self) -> Response<Body> {
        let flag = self.flag();
        let body = format!("{self} ({flag})");
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(RESPONSE_FLAGS, HeaderValue::from_static(flag.as_str()));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response.extensions_mut().insert(flag);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_route_reads_like_envoy() {
        let response = ProxyError::NoRoute { authority: "foo:80".to_owned() }.into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[RESPONSE_FLAGS], "NR");
    }

    #[test]
    fn every_error_has_a_flag_and_status() {
        let endpoint: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let cases = [
            (ProxyError::NoHealthyUpstream { cluster: "c".into() }, 503, "UH"),
            (ProxyError::UpstreamConnect { endpoint, cause: "refused".into() }, 503, "UF"),
            (ProxyError::UpstreamReset { endpoint, cause: "closed".into() }, 503, "UC"),
            (ProxyError::BadRequest("no authority".into()), 400, "DPE"),
        ];
        for (error, status, flag) in cases {
            assert_eq!((error.status().as_u16(), error.flag().as_str()), (status, flag), "{error}");
        }
    }
}
