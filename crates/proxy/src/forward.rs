//! The forward step of the outbound side (the sidecar's outbound listener and the gateway): a
//! routed request goes through one ordered stack of stages, each a function here.
//!
//! ```text
//! route (route.rs) ─▶ retry ─▶ endpoint choice ─▶ transport (transport.rs)
//!                      │         round robin on     mutual TLS HTTP/2 or HTTP/1.1 to a peer
//!                      │         the cluster's      sidecar, plaintext to the rest; typed
//!                      │         state (store.rs)   errors, unsent requests given back
//!                      └─ another attempt, on the next endpoint, while the error allows it
//! ```
//!
//! Retry follows Istio's default policy (when a route sets none): a request the upstream never
//! saw (connect failure, a pooled connection closed under it) is sent again; so is a gRPC call
//! refused (`REFUSED_STREAM`) or answered `cancelled` or `unavailable` when its body was kept
//! ([`crate::replay`], up to 1 MiB; hyper does not give a refused request back, and only gRPC
//! bodies are kept) — at most [`DEFAULT_RETRIES`] times, on the next endpoint,
//! after a jittered backoff from 25 ms (Envoy's); exhausting them adds `URX`. Anything else
//! that was (or may have been) written is not resent. Each stage records what it decided in
//! the request's context.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::CONTENT_TYPE;
use http::uri::Authority as UriAuthority;
use http::{HeaderName, HeaderValue, Request, Response};

use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::flags::ResponseFlag;
use crate::http::{Authority, Body, full};
use crate::index::{ClusterEntry, EndpointEntry, RouteTable};
use crate::replay::Replay;
use crate::route::{Decision, route};
use crate::transport::{self, Failed, Sent, Tunnel};

/// The gRPC status of a trailers-only answer.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Retries after the first attempt (Istio's default `attempts: 2`).
pub const DEFAULT_RETRIES: u32 = 2;

/// The first retry's backoff bound (Envoy's `base_interval`); each retry doubles it.
const BASE_BACKOFF: Duration = Duration::from_millis(25);

/// The largest backoff bound (Envoy's default: ten times the base).
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// The forwarding side of a proxy: dials from the pod IP.
pub struct Forward {
    source: IpAddr,
}

impl Forward {
    /// Forwarding from `source` (the pod IP).
    pub fn new(source: IpAddr) -> Self {
        Forward { source }
    }

    /// The pod IP.
    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// Routes `req` with `table` and carries out the decision, applying the route's response
    /// header edits to the answer.
    pub async fn routed(
        &self,
        table: &RouteTable,
        authority: &Authority,
        mut req: Request<Body>,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let mut response = match route(table, authority, &mut req, ctx)? {
            Decision::Forward(cluster) => self.request(cluster, authority.uri(), req, ctx).await?,
            Decision::Direct { status, body } => {
                ctx.details = "direct_response";
                let mut response = Response::new(full(body));
                *response.status_mut() = status;
                response
            }
        };
        if let Some(route) = ctx.route() {
            route.headers.response.apply(response.headers_mut());
        }
        Ok(response)
    }

    /// The retry stage: attempts `req` on `cluster`'s endpoints until one answers with a
    /// response the policy accepts, or the failure forbids another attempt.
    pub async fn request(
        &self,
        cluster: &ClusterEntry,
        authority: &UriAuthority,
        req: Request<Body>,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        // Only gRPC answers can ask for a retry of a sent request: keep only their bodies.
        let (mut req, replay) = if is_grpc(&req) {
            let (req, replay) = Replay::wrap(req);
            (req, Some(replay))
        } else {
            (req, None)
        };
        loop {
            let endpoint = choose(cluster, ctx)?;
            ctx.attempts += 1;
            let retries_left = ctx.attempts <= DEFAULT_RETRIES;
            let failed = match transport::send(&endpoint.transport, endpoint.address, authority, req).await {
                Ok(Sent { response, connected }) => {
                    ctx.answered(connected);
                    let again = grpc_retryable(&response).then(|| replay.as_ref().and_then(Replay::request));
                    match again {
                        Some(Some(again)) if retries_left => {
                            tracing::debug!(cluster = %cluster.name, attempt = ctx.attempts, "retrying a gRPC answer");
                            tokio::time::sleep(backoff(ctx.attempts)).await;
                            req = again;
                            continue;
                        }
                        Some(Some(_)) => ctx.flag(ResponseFlag::UpstreamRetryLimitExceeded),
                        _ => {}
                    }
                    return Ok(response);
                }
                Err(failed) => failed,
            };
            let Failed { error, request } = failed;
            // A refused stream was never processed, but hyper has consumed the request: a kept
            // body can stand in for it.
            let request = request.or_else(|| {
                let refused = matches!(error, transport::UpstreamError::RefusedStream { .. });
                if refused { replay.as_ref().and_then(Replay::request) } else { None }
            });
            match request {
                Some(unsent) if error.is_retryable() && retries_left => {
                    tracing::debug!(cluster = %cluster.name, %error, attempt = ctx.attempts, "retrying");
                    if !matches!(error, transport::UpstreamError::Unsent { .. }) {
                        tokio::time::sleep(backoff(ctx.attempts)).await;
                    }
                    req = unsent;
                }
                Some(_) if error.is_retryable() => {
                    ctx.flag(ResponseFlag::UpstreamRetryLimitExceeded);
                    return Err(error.into());
                }
                _ => return Err(error.into()),
            }
        }
    }

    /// A byte stream to the next endpoint of `cluster` (CONNECT).
    pub async fn tunnel(
        &self,
        cluster: &Arc<ClusterEntry>,
        ctx: &mut RequestContext,
    ) -> Result<Pin<Box<dyn Tunnel>>, ProxyError> {
        ctx.set_cluster(cluster);
        let endpoint = choose(cluster, ctx)?;
        ctx.attempts += 1;
        let tunnel = transport::tunnel(&endpoint.transport, endpoint.address, self.source).await?;
        ctx.answered(Instant::now());
        Ok(tunnel)
    }
}

/// Whether `req` is a gRPC call (`content-type: application/grpc[+proto|...]`).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers().get(CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// Whether a response is a gRPC status Istio's default policy retries: `cancelled` (1) or
/// `unavailable` (14), in the headers of a trailers-only answer.
fn grpc_retryable<B>(response: &Response<B>) -> bool {
    matches!(response.headers().get(GRPC_STATUS).map(HeaderValue::as_bytes), Some(b"1" | b"14"))
}

/// The endpoint choice stage: the cluster's next endpoint, recorded in `ctx`.
fn choose<'a>(cluster: &'a ClusterEntry, ctx: &mut RequestContext) -> Result<&'a EndpointEntry, ProxyError> {
    let no_endpoint = || ProxyError::NoHealthyUpstream { cluster: cluster.name.clone() };
    let index = cluster.pick().ok_or_else(no_endpoint)?;
    ctx.set_endpoint(index);
    cluster.endpoint(index).ok_or_else(no_endpoint)
}

/// The pause before retry `attempt` (1-based): uniform in `[0, min(25 ms × 2^(attempt-1),
/// 250 ms))`, Envoy's fully jittered exponential backoff.
fn backoff(attempt: u32) -> Duration {
    let bound = BASE_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..millis.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_a_doubling_bound_capped_at_250ms() {
        for (attempt, bound) in [(1, 25), (2, 50), (3, 100), (4, 200), (5, 250), (40, 250)] {
            for _ in 0..200 {
                assert!(backoff(attempt) < Duration::from_millis(bound), "attempt {attempt}");
            }
        }
    }
}
