//! The one classifier from proxy errors to responses: every error the proxy answers itself has
//! an HTTP status, an Envoy response flag and response code details, recorded in the request's
//! context; the answer carries the context's flags (in `x-paymesh-response-flags`, as Envoy's
//! access log `%RESPONSE_FLAGS%` writes them) and a plain-text reason ending in them.

use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use paymesh_api::model::{AbortError, MtlsMode};

use crate::context::{Listener, RequestContext};
use crate::flags::ResponseFlag;
use crate::http::{Body, ENVOY_OVERLOADED, GRPC_MESSAGE, GRPC_STATUS, full};
use crate::transport::UpstreamError;

/// The header carrying the response flags of a proxy-generated answer.
pub const RESPONSE_FLAGS: HeaderName = HeaderName::from_static("x-paymesh-response-flags");

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
    /// Every attempt upstream failed; the last one's error.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The cluster's circuit breaker is open: a `connectionPool` limit is reached.
    #[error("upstream overflow: cluster {cluster} is at its {limit} limit")]
    Overflow {
        /// The cluster.
        cluster: String,
        /// The limit reached.
        limit: &'static str,
    },
    /// No response head within the route's timeout, or the last attempt's per-try timeout.
    #[error("upstream request timeout: no response from cluster {cluster} within {after:?}{}", if *per_try { " (per try)" } else { "" })]
    Timeout {
        /// The cluster.
        cluster: String,
        /// The timeout.
        after: std::time::Duration,
        /// Whether it was the per-try timeout.
        per_try: bool,
    },
    /// The route's fault injection aborted the request.
    #[error("fault filter abort")]
    FaultAbort {
        /// The answer the fault asks for.
        error: AbortError,
    },
    /// The request is not something the proxy can forward.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The port's peer authentication refuses how the request arrived (Envoy finds no filter
    /// chain for it).
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
            ProxyError::NoConfig
            | ProxyError::NoRoute { .. }
            | ProxyError::NoRouteMatched { .. }
            | ProxyError::PeerAuthentication { .. } => ResponseFlag::NoRoute,
            ProxyError::NoHealthyUpstream { .. } => ResponseFlag::NoHealthyUpstream,
            ProxyError::Upstream(error) => error.flag(),
            ProxyError::Overflow { .. } => ResponseFlag::UpstreamOverflow,
            ProxyError::Timeout { .. } => ResponseFlag::UpstreamRequestTimeout,
            ProxyError::FaultAbort { .. } => ResponseFlag::FaultInjected,
            ProxyError::BadRequest(_) => ResponseFlag::DownstreamProtocolError,
        }
    }

    /// Envoy's response code details (`%RESPONSE_CODE_DETAILS%`).
    pub fn details(&self) -> &'static str {
        match self {
            ProxyError::NoConfig | ProxyError::NoRoute { .. } | ProxyError::NoRouteMatched { .. } => {
                "route_not_found"
            }
            ProxyError::NoHealthyUpstream { .. } => "no_healthy_upstream",
            ProxyError::Upstream(error) => error.details(),
            ProxyError::Overflow { .. } => "upstream_reset_before_response_started{overflow}",
            ProxyError::Timeout { per_try: false, .. } => "upstream_response_timeout",
            ProxyError::Timeout { per_try: true, .. } => "upstream_per_try_timeout",
            ProxyError::FaultAbort { .. } => "fault_filter_abort",
            ProxyError::BadRequest(_) => "invalid_authority",
            ProxyError::PeerAuthentication { .. } => "filter_chain_not_found",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } | ProxyError::NoRouteMatched { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoConfig
            | ProxyError::NoHealthyUpstream { .. }
            | ProxyError::Upstream(_)
            | ProxyError::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::FaultAbort { error } => abort_status(*error),
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::PeerAuthentication { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// What an outside client is told: the kind of failure, with no internal detail (addresses,
    /// cluster names, identities, TLS errors), which stays in the access log.
    pub fn public_reason(&self) -> &'static str {
        match self {
            ProxyError::NoConfig => "service unavailable",
            ProxyError::NoRoute { .. } | ProxyError::NoRouteMatched { .. } => "no route",
            ProxyError::NoHealthyUpstream { .. } => "no healthy upstream",
            ProxyError::Upstream(_) => "upstream connect error or disconnect/reset before headers",
            ProxyError::Overflow { .. } => "upstream overflow",
            ProxyError::Timeout { .. } => "upstream request timeout",
            ProxyError::FaultAbort { .. } => "fault filter abort",
            ProxyError::BadRequest(_) => "bad request",
            ProxyError::PeerAuthentication { .. } => "forbidden",
        }
    }

    /// The answer, recorded in `ctx` (flag, details, the upstream failure): status, the
    /// context's flags as a header, `reason (FLAGS)` as plain text. A gateway's outside clients
    /// get [`ProxyError::public_reason`] and the request id instead of the full reason.
    pub fn into_response(self, ctx: &mut RequestContext) -> Response<Body> {
        ctx.flag(self.flag());
        ctx.details = self.details();
        if let ProxyError::Upstream(error) = &self {
            ctx.failure = Some(error.cause().into());
        }
        let flags = ctx.flags.to_string();
        let body = match (&ctx.downstream.listener, &ctx.request_id) {
            (Listener::Gateway, Some(id)) => {
                format!(
                    "{} ({flags}) request id {}",
                    self.public_reason(),
                    String::from_utf8_lossy(id.as_bytes())
                )
            }
            (Listener::Gateway, None) => format!("{} ({flags})", self.public_reason()),
            _ => format!("{self} ({flags})"),
        };
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        if let Ok(flags) = HeaderValue::from_str(&flags) {
            headers.insert(RESPONSE_FLAGS, flags);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        match self {
            ProxyError::Overflow { .. } => {
                headers.insert(ENVOY_OVERLOADED, HeaderValue::from_static("true"));
            }
            ProxyError::FaultAbort { error: AbortError::GrpcStatus(code) } => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert(GRPC_STATUS, HeaderValue::from(code));
                headers.insert(GRPC_MESSAGE, HeaderValue::from_static("fault filter abort"));
            }
            _ => {}
        }
        response
    }
}

/// The HTTP status a fault abort answers with (gRPC aborts answer 200 with a `grpc-status`).
fn abort_status(error: AbortError) -> StatusCode {
    match error {
        AbortError::HttpStatus(status) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        }
        AbortError::GrpcStatus(_) => StatusCode::OK,
    }
}

/// A handler's answer with its context handed back: the response, or the error's.
pub fn answer(
    result: Result<Response<Body>, ProxyError>,
    mut ctx: RequestContext,
) -> (Response<Body>, RequestContext) {
    let response = result.unwrap_or_else(|error| error.into_response(&mut ctx));
    (response, ctx)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::context::{Downstream, Listener, Peer};

    #[test]
    fn no_route_reads_like_envoy_and_is_recorded_in_the_context() {
        let mut ctx = test_context();
        let response = ProxyError::NoRoute { authority: "foo:80".to_owned() }.into_response(&mut ctx);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[RESPONSE_FLAGS], "NR");
        assert_eq!((ctx.flags.to_string(), ctx.details), ("NR".to_owned(), "route_not_found"));
    }

    #[test]
    fn a_response_carries_every_flag_of_its_context() {
        let mut ctx = test_context();
        ctx.flag(ResponseFlag::UpstreamRetryLimitExceeded);
        let endpoint: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let error = UpstreamError::Connect { endpoint, cause: "connection refused".into() };
        let response = ProxyError::Upstream(error).into_response(&mut ctx);
        assert_eq!(response.headers()[RESPONSE_FLAGS], "UF,URX");
        assert_eq!(ctx.failure.as_deref(), Some("connection refused"));
    }

    fn test_context() -> RequestContext {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let downstream =
            Downstream { listener: Listener::Outbound, remote: addr, local: addr, peer: Peer::Plaintext };
        RequestContext::new(std::sync::Arc::new(downstream))
    }

    #[test]
    fn outside_clients_of_the_gateway_get_no_internal_detail() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let downstream =
            Downstream { listener: Listener::Gateway, remote: addr, local: addr, peer: Peer::Plaintext };
        let mut ctx = RequestContext::new(std::sync::Arc::new(downstream));
        ctx.request_id = Some(HeaderValue::from_static("req-1"));
        let endpoint: SocketAddr = "10.1.2.3:15006".parse().expect("addr");
        let error =
            UpstreamError::Connect { endpoint, cause: "TLS handshake (expecting spiffe://x): bad".into() };
        let response = ProxyError::Upstream(error).into_response(&mut ctx);
        assert_eq!(response.headers()[RESPONSE_FLAGS], "UF");
        let body = futures_body(response);
        assert_eq!(body, "upstream connect error or disconnect/reset before headers (UF) request id req-1");
        assert_eq!(
            ctx.failure.as_deref(),
            Some("TLS handshake (expecting spiffe://x): bad"),
            "kept for the log"
        );
    }

    fn futures_body(response: Response<Body>) -> String {
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(http_body_util::BodyExt::collect(response.into_body()))
            .expect("body");
        String::from_utf8_lossy(&body.to_bytes()).into_owned()
    }

    #[test]
    fn every_error_has_a_flag_and_status() {
        let endpoint: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let cases: [(ProxyError, u16, &str); 4] = [
            (ProxyError::NoHealthyUpstream { cluster: "c".into() }, 503, "UH"),
            (UpstreamError::Connect { endpoint, cause: "refused".into() }.into(), 503, "UF"),
            (UpstreamError::Reset { endpoint, cause: "closed".into() }.into(), 503, "UC"),
            (ProxyError::BadRequest("no authority".into()), 400, "DPE"),
        ];
        for (error, status, flag) in cases {
            assert_eq!((error.status().as_u16(), error.flag().as_str()), (status, flag), "{error}");
        }
    }
}
