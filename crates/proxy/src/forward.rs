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
//! Retry follows Istio's default policy where it needs no buffering: a request the upstream
//! never saw (connect failure, refused stream, a pooled connection closed under it) is sent
//! again, at most [`DEFAULT_RETRIES`] times, after a jittered backoff from 25 ms (Envoy's), and
//! a failure that exhausts them adds `URX` to its flag. A request that was (or may have been)
//! written is not resent. Each stage records what it decided in the request's context.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Authority as UriAuthority;
use http::{Request, Response};

use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::flags::ResponseFlag;
use crate::http::{Authority, Body, full};
use crate::index::{ClusterEntry, EndpointEntry, RouteTable};
use crate::route::{Decision, route};
use crate::transport::{self, Failed, Tunnel};

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
            Decision::Forward(cluster) => self.request(&cluster, authority.uri(), req, ctx).await?,
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

    /// The retry stage: attempts `req` on `cluster`'s endpoints until one answers or the
    /// failure forbids another attempt.
    pub async fn request(
        &self,
        cluster: &ClusterEntry,
        authority: &UriAuthority,
        mut req: Request<Body>,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        loop {
            let endpoint = choose(cluster, ctx)?;
            ctx.attempts += 1;
            ctx.sent = Some(Instant::now());
            let Failed { error, request } =
                match transport::send(&endpoint.transport, endpoint.address, authority, req).await {
                    Ok(response) => {
                        ctx.first_byte = Some(Instant::now());
                        ctx.details = "via_upstream";
                        return Ok(response);
                    }
                    Err(failed) => failed,
                };
            match request {
                Some(unsent) if error.is_retryable() && ctx.attempts <= DEFAULT_RETRIES => {
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
        ctx.sent = Some(Instant::now());
        let tunnel = transport::tunnel(&endpoint.transport, endpoint.address, self.source).await?;
        ctx.first_byte = Some(Instant::now());
        ctx.details = "via_upstream";
        Ok(tunnel)
    }
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
