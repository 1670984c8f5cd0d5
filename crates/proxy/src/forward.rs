//! The forward step of the outbound side (the sidecar's outbound listener and the gateway): a
//! routed request goes through one ordered stack of stages, each a function here or in the
//! module named.
//!
//! ```text
//! route ─▶ fault ─▶ timeout ─▶ circuit breaker ─▶ retry ─▶ endpoint choice ─▶ transport
//! route.rs  fault.rs  the route's  breaker.rs       retry.rs  balance.rs,        transport.rs
//!                     `timeout`    (admission, UO)  per-try   outlier.rs
//!                                                   timeout
//!                              └─ another attempt, on another endpoint, while the policy allows
//! ```
//!
//! The route's `timeout` bounds everything after the fault stage (every attempt and backoff)
//! until the response head: past it, 504 `UT`. The retry stage follows the route's policy
//! ([`crate::retry`]; Istio's default when the route sets none): a request is resent only when
//! it was never written, or when its whole body was kept ([`crate::replay`], up to 1 MiB), after
//! a jittered backoff, to an endpoint not tried yet when there is one, never once a response
//! went downstream, and only while `maxRetries` leaves room; running out adds `URX`. Every
//! attempt's outcome feeds outlier detection. Each stage records what it decided in the
//! request's context.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::SET_COOKIE;
use http::uri::Authority as UriAuthority;
use http::{HeaderMap, HeaderValue, Request, Response};
use paymesh_api::model::{RetryPolicy, RoutePolicy};

use crate::balance::{HashInput, Tried};
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::fault;
use crate::flags::ResponseFlag;
use crate::http::{Authority, Body, cookie, full};
use crate::index::cors::Verdict;
use crate::index::{ClusterEntry, EndpointEntry, RouteTable};
use crate::mirror;
use crate::outlier::{self, Outcome as Observed, ejection_allowed, now_ms};
use crate::replay::Replay;
use crate::retry::{self, Outcome, backoff, needs_replay};
use crate::route::{Decision, route};
use crate::transport::{self, Failed, Sent, Tunnel, UpstreamError};

/// The mirrors a request is copied to, and how long each copy may take.
pub struct Mirrors {
    to: Vec<Arc<ClusterEntry>>,
    limit: Duration,
}

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
            Decision::Forward { cluster, policy, authority: rewritten, mirrors, cors } => {
                let verdict = cors.map(|cors| cors.verdict(req.method(), req.headers()));
                if let Some(Verdict::Answer(status, headers)) = verdict {
                    ctx.details = "direct_response";
                    let mut response = Response::new(full(Bytes::new()));
                    *response.status_mut() = status;
                    *response.headers_mut() = headers;
                    return Ok(response);
                }
                let upstream_authority = rewritten.unwrap_or(authority.uri());
                let mut response =
                    self.forward(cluster, upstream_authority, req, policy, mirrors, ctx).await?;
                if let (Some(cors), Some(Verdict::Allowed(origin))) = (cors, verdict) {
                    cors.decorate(origin, response.headers_mut());
                }
                response
            }
            Decision::Direct { status, body } => {
                ctx.details = "direct_response";
                let mut response = Response::new(full(body));
                *response.status_mut() = status;
                response
            }
            Decision::Redirect { status, location } => {
                ctx.details = "direct_response";
                let mut response = Response::new(full(Bytes::new()));
                *response.status_mut() = status;
                if let Ok(location) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(http::header::LOCATION, location);
                }
                response
            }
        };
        if let Some(route) = ctx.route() {
            route.headers.response.apply(response.headers_mut());
        }
        Ok(response)
    }

    /// The fault and timeout stages, then the rest of the stack.
    async fn forward(
        &self,
        cluster: &ClusterEntry,
        authority: &UriAuthority,
        req: Request<Body>,
        policy: &RoutePolicy,
        mirrors: &[(Arc<ClusterEntry>, u32)],
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        if let Some(fault) = &policy.fault {
            fault::inject(fault, ctx).await?;
        }
        let timeout = policy.timeout_ms.map(Duration::from_millis);
        let mirrors =
            Mirrors { to: mirror::drawn(mirrors), limit: timeout.unwrap_or(mirror::MIRROR_TIMEOUT) };
        let Some(limit) = timeout else {
            return self.request(cluster, authority, req, &policy.retries, mirrors, ctx).await;
        };
        let request = self.request(cluster, authority, req, &policy.retries, mirrors, ctx);
        match tokio::time::timeout(limit, request).await {
            Ok(result) => result,
            Err(_) => {
                // The attempt in flight timed out: a local-origin failure of its endpoint, as
                // Envoy reports it.
                if ctx.first_byte.is_none()
                    && let Some(index) = ctx.endpoint_index()
                {
                    observe(cluster, index, Observed::LocalFailure);
                }
                Err(ProxyError::Timeout { cluster: cluster.name.clone(), after: limit, per_try: false })
            }
        }
    }

    /// The circuit breaker, retry, endpoint choice and transport stages: attempts `req` on
    /// `cluster`'s endpoints until one answers with a response `policy` accepts, or the failure
    /// forbids another attempt; then a copy to each of `mirrors`.
    async fn request(
        &self,
        cluster: &ClusterEntry,
        authority: &UriAuthority,
        req: Request<Body>,
        policy: &RetryPolicy,
        mirrors: Mirrors,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        if let Some(breaker) = &cluster.state.breaker {
            let admission = breaker.admit().await.map_err(|overflow| ProxyError::Overflow {
                cluster: cluster.name.clone(),
                limit: overflow.limit(),
            })?;
            ctx.held.admission = Some(admission);
        }
        let (req, replay) = if needs_replay(policy) || !mirrors.to.is_empty() {
            let (req, replay) = Replay::wrap(req);
            (req, Some(replay))
        } else {
            (req, None)
        };
        let result = self.attempts(cluster, authority, req, policy, replay.as_ref(), ctx).await;
        for mirror in mirrors.to {
            if let Some(copy) = replay.as_ref().and_then(Replay::request) {
                mirror::send(mirror, authority, copy, self.source, mirrors.limit);
            }
        }
        result
    }

    /// The retry loop of [`Forward::request`].
    async fn attempts(
        &self,
        cluster: &ClusterEntry,
        authority: &UriAuthority,
        mut req: Request<Body>,
        policy: &RetryPolicy,
        replay: Option<&Replay>,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let cookie = generated_cookie(cluster, &req);
        let per_try = policy.per_try_timeout_ms.map(Duration::from_millis);
        let mut tried = Tried::default();
        // Held while a retry is in flight (`maxRetries`).
        let mut _retry_slot = None;
        loop {
            let mut pause = true;
            let generated = cookie.as_ref().map(|(value, _)| value.as_str());
            let (index, endpoint) = choose(cluster, req.headers(), req.uri().query(), generated, tried, ctx)?;
            tried.insert(index);
            ctx.attempts += 1;
            ctx.held.active = Some(endpoint.state.begin());
            let retries_left = ctx.attempts <= policy.attempts;
            let attempt = transport::send(&endpoint.transport, endpoint.address, authority, req);
            let sent = match per_try {
                Some(limit) => tokio::time::timeout(limit, attempt).await.ok(),
                None => Some(attempt.await),
            };
            let (again, failure) = match sent {
                Some(Ok(Sent { mut response, connected })) => {
                    ctx.answered(connected);
                    observe(cluster, index, Observed::Answered(response.status().as_u16()));
                    if !retry::retries(policy, Outcome::Answered(&response)) {
                        if let Some((_, set_cookie)) = cookie {
                            response.headers_mut().append(SET_COOKIE, set_cookie);
                        }
                        return Ok(response);
                    }
                    (replay.and_then(Replay::request), Ok(response))
                }
                Some(Err(Failed { error, request })) => {
                    let unsent = matches!(error, UpstreamError::Unsent { .. });
                    if !unsent {
                        observe(cluster, index, Observed::LocalFailure);
                    }
                    if !retry::retries(policy, Outcome::Failed(&error)) {
                        return Err(error.into());
                    }
                    pause = !unsent;
                    (request.or_else(|| replay.and_then(Replay::request)), Err(error.into()))
                }
                None => {
                    observe(cluster, index, Observed::LocalFailure);
                    let timeout = ProxyError::Timeout {
                        cluster: cluster.name.clone(),
                        after: per_try.unwrap_or_default(),
                        per_try: true,
                    };
                    if !retry::retries(policy, Outcome::TimedOut) {
                        return Err(timeout);
                    }
                    (replay.and_then(Replay::request), Err(timeout))
                }
            };
            let slot = cluster.state.breaker.as_ref().map_or(Some(None), |breaker| breaker.retry());
            match (again, slot) {
                (Some(again), Some(slot)) if retries_left => {
                    tracing::debug!(cluster = %cluster.name, attempt = ctx.attempts, "retrying");
                    // A request that never left needs no pause: nothing upstream saw it.
                    if pause {
                        tokio::time::sleep(backoff(ctx.attempts)).await;
                    }
                    _retry_slot = slot;
                    req = again;
                }
                (Some(_), None) if retries_left => {
                    // `maxRetries` retries are in flight already (Envoy: retry overflow).
                    ctx.flag(ResponseFlag::UpstreamOverflow);
                    return failure;
                }
                _ => {
                    if policy.attempts > 0 && !retries_left {
                        ctx.flag(ResponseFlag::UpstreamRetryLimitExceeded);
                    }
                    return failure;
                }
            }
        }
    }

    /// A byte stream to the next endpoint of `cluster` (CONNECT).
    pub async fn tunnel(
        &self,
        cluster: &Arc<ClusterEntry>,
        headers: &HeaderMap,
        ctx: &mut RequestContext,
    ) -> Result<Pin<Box<dyn Tunnel>>, ProxyError> {
        ctx.set_cluster(cluster);
        let (index, endpoint) = choose(cluster, headers, None, None, Tried::default(), ctx)?;
        ctx.attempts += 1;
        ctx.held.active = Some(endpoint.state.begin());
        let connect_timeout = Duration::from_millis(cluster.config.connection_pool.connect_timeout_ms);
        let tunnel = match transport::tunnel(
            &endpoint.transport,
            endpoint.address,
            self.source,
            connect_timeout,
        )
        .await
        {
            Ok(tunnel) => tunnel,
            Err(error) => {
                observe(cluster, index, Observed::LocalFailure);
                return Err(error.into());
            }
        };
        ctx.answered(Instant::now());
        Ok(tunnel)
    }
}

/// The endpoint choice stage: the endpoint for the next attempt of a request (a consistent hash
/// reads its headers and query, or the `cookie` about to be set), recorded in `ctx`.
fn choose<'a>(
    cluster: &'a ClusterEntry,
    headers: &HeaderMap,
    query: Option<&str>,
    cookie: Option<&str>,
    tried: Tried,
    ctx: &mut RequestContext,
) -> Result<(usize, &'a EndpointEntry), ProxyError> {
    let input = HashInput { headers, query, source: ctx.downstream.remote.ip(), generated_cookie: cookie };
    let no_endpoint = || ProxyError::NoHealthyUpstream { cluster: cluster.name.clone() };
    let index = cluster.pick(&input, tried).ok_or_else(no_endpoint)?;
    ctx.set_endpoint(index);
    Ok((index, cluster.endpoint(index).ok_or_else(no_endpoint)?))
}

/// A hash cookie to set on the response, with its value, when the cluster hashes on a cookie
/// with a TTL and the request has none (Envoy generates it the same way).
fn generated_cookie(cluster: &ClusterEntry, req: &Request<Body>) -> Option<(String, HeaderValue)> {
    let (name, path, ttl) = cluster.balancer.cookie_to_generate()?;
    if cookie(req.headers(), name).is_some() {
        return None;
    }
    let value = format!("{:016x}", fastrand::u64(..));
    let path = if path.is_empty() { String::new() } else { format!("; Path={path}") };
    let header = HeaderValue::from_str(&format!("{name}={value}; Max-Age={ttl}{path}; HttpOnly")).ok()?;
    Some((value, header))
}

/// Feeds one attempt's outcome to the cluster's outlier detection, ejecting the endpoint when it
/// crossed a threshold and the cluster's cap has room.
fn observe(cluster: &ClusterEntry, index: usize, outcome: Observed) {
    let Some(policy) = cluster.balancer.outlier() else { return };
    let Some(endpoint) = cluster.endpoint(index) else { return };
    if !endpoint.state.record(policy, outcome) {
        return;
    }
    let _deciding = cluster.state.ejecting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = now_ms();
    let states: Vec<&outlier::EndpointState> = cluster.states().collect();
    let ejected = states.iter().filter(|state| state.is_ejected(now)).count();
    let allowed = ejection_allowed(states.len(), ejected, policy.max_ejection_percent);
    if endpoint.state.eject(policy, now, allowed) {
        tracing::info!(cluster = %cluster.name, endpoint = %endpoint.address, "outlier detection ejected the endpoint");
    }
}
