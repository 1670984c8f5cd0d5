//! Forwarding to upstreams, shared by the outbound listener, the inbound listener (towards the
//! app) and the gateway: route lookup (virtual host → first route → weighted cluster →
//! round-robin endpoint), then the request over the endpoint's transport, or a TCP tunnel.
//!
//! Mesh endpoints get mutual TLS to their sidecar's inbound port, carrying the original
//! authority: an HTTP port's requests stay HTTP/1.1 on pooled keep-alive connections ([`h1`];
//! Istio's default), while HTTP/2 and gRPC ports, and HTTP ports whose DestinationRule says
//! `h2UpgradePolicy: UPGRADE`, go as HTTP/2 multiplexed on one pooled connection; CONNECT
//! tunnels always ride that HTTP/2 connection as HTTP/2 CONNECT to `POD_IP:targetPort` (HBONE's
//! shape). Endpoints without a sidecar get plaintext HTTP/1.1 (keep-alive pools) or h2c. Every
//! socket binds the pod IP as source.

pub mod h1;
pub mod pool;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority as UriAuthority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access;
use crate::error::ProxyError;
use crate::http::{Authority, Body, boxed_response, empty, full, never_index_request_id, strip_hop_by_hop};
use crate::index::{Action, ClusterEntry, EndpointEntry, Plain, RequestView, RouteTable, Transport};
use h1::H1Pool;
use pool::{H2Pool, connect_tcp};

/// Proxy-to-proxy header naming the endpoint's target (container) port, so the peer's inbound
/// picks the chain the endpoint was chosen for even when the authority has no port (Istio
/// carries this as the original destination of the connection). Only trusted over mutual TLS,
/// and never forwarded to an app.
pub const TARGET_PORT: HeaderName = HeaderName::from_static("x-paymesh-target-port");

/// A byte stream to an upstream (plain TCP or an HTTP/2 CONNECT stream).
pub trait Tunnel: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Tunnel for T {}

/// The upstream side of the proxy: dials from the pod IP.
pub struct Upstream {
    source: IpAddr,
}

impl Upstream {
    /// Upstream connections from `source` (the pod IP).
    pub fn new(source: IpAddr) -> Self {
        Upstream { source }
    }

    /// The pod IP.
    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// Routes `req` with `table` (virtual host by `authority`, then the first route whose
    /// conditions hold), applies the route's header edits and forwards it.
    pub async fn route(
        &self,
        table: &RouteTable,
        authority: &Authority,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let vhost = table
            .virtual_host(authority)
            .ok_or_else(|| ProxyError::NoRoute { authority: authority.text().to_owned() })?;
        let view = RequestView { method: req.method(), path: req.uri().path(), headers: req.headers() };
        let route = vhost.route_for(&view).ok_or_else(|| ProxyError::NoRouteMatched {
            authority: authority.text().to_owned(),
            path: req.uri().path().to_owned(),
        })?;
        route.headers.request.apply(req.headers_mut());
        let mut response = match &route.action {
            Action::Direct { status, body } => {
                let mut response = Response::new(full(body.clone()));
                *response.status_mut() = *status;
                response
            }
            Action::Forward(clusters) => self.forward(clusters.pick(), authority, req).await?,
        };
        route.headers.response.apply(response.headers_mut());
        Ok(response)
    }

    /// The cluster the first route of `authority`'s virtual host forwards to (CONNECT to an
    /// HTTP service port), picked by weight.
    pub fn cluster_of<'a>(table: &'a RouteTable, authority: &Authority) -> Option<&'a Arc<ClusterEntry>> {
        match &table.virtual_host(authority)?.routes.first()?.action {
            Action::Forward(clusters) => Some(clusters.pick()),
            Action::Direct { .. } => None,
        }
    }

    /// Sends `req` to the next endpoint of `cluster`, keeping `authority`.
    pub async fn forward(
        &self,
        cluster: &ClusterEntry,
        authority: &Authority,
        req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let endpoint = pick(cluster)?;
        let mut req = req;
        let mut response = match &endpoint.transport {
            Transport::Mesh { h2, http1 } => {
                // Replaces any the client sent.
                req.headers_mut().insert(TARGET_PORT, HeaderValue::from(endpoint.address.port()));
                match http1 {
                    Some(pool) => send_h1(pool, authority.uri(), req).await,
                    None => send_h2(h2, authority.uri(), req).await,
                }
            }
            Transport::Plain(plain) => {
                req.headers_mut().remove(TARGET_PORT);
                send_plain(plain, authority.uri(), req).await
            }
        }?;
        access::note_upstream(&mut response, endpoint.address);
        Ok(response)
    }

    /// A byte stream to the next endpoint of `cluster`: HTTP/2 CONNECT over the mesh
    /// connection, or TCP.
    pub async fn tunnel(&self, cluster: &ClusterEntry) -> Result<Pin<Box<dyn Tunnel>>, ProxyError> {
        let endpoint = pick(cluster)?;
        match &endpoint.transport {
            Transport::Mesh { h2, .. } => connect_h2(h2, endpoint.address).await,
            Transport::Plain(_) => Ok(Box::pin(connect_tcp(self.source, endpoint.address).await?)),
        }
    }
}

fn pick(cluster: &ClusterEntry) -> Result<&EndpointEntry, ProxyError> {
    cluster.pick().ok_or_else(|| ProxyError::NoHealthyUpstream { cluster: cluster.name.clone() })
}

/// To a plaintext upstream, with `authority` as its `Host` or `:authority`.
pub async fn send_plain(
    plain: &Plain,
    authority: &UriAuthority,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    match plain {
        Plain::H1(pool) => send_h1(pool, authority, req).await,
        Plain::H2(pool) => send_h2(pool, authority, req).await,
    }
}

/// HTTP/1.1 to `pool`'s address: origin-form target, `Host` = `host`.
async fn send_h1(
    pool: &Arc<H1Pool>,
    host: &UriAuthority,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    parts.uri = match parts.uri.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    };
    parts.version = Version::HTTP_11;
    let host = HeaderValue::from_str(host.as_str())
        .map_err(|_| ProxyError::BadRequest(format!("invalid authority {host}")))?;
    parts.headers.insert(HOST, host);
    strip_hop_by_hop(&mut parts.headers);
    Ok(clean(pool.send(Request::from_parts(parts, body)).await?))
}

/// HTTP/2 to `pool`'s address with `:authority` = `authority`.
pub async fn send_h2(
    pool: &H2Pool,
    authority: &UriAuthority,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    parts.uri = rewrite_uri(&parts.uri, authority.clone())?;
    parts.version = Version::HTTP_2;
    parts.headers.remove(HOST);
    strip_hop_by_hop(&mut parts.headers);
    never_index_request_id(&mut parts.headers);
    let mut sender = pool.sender().await?;
    let reset =
        |error: hyper::Error| ProxyError::UpstreamReset { endpoint: pool.addr(), cause: error_chain(&error) };
    sender.ready().await.map_err(reset)?;
    let response = sender.send_request(Request::from_parts(parts, body)).await.map_err(reset)?;
    Ok(clean(boxed_response(response)))
}

async fn connect_h2(pool: &H2Pool, target: SocketAddr) -> Result<Pin<Box<dyn Tunnel>>, ProxyError> {
    let mut sender = pool.sender().await?;
    let fail = |cause: String| ProxyError::UpstreamConnect { endpoint: pool.addr(), cause };
    let uri = Uri::builder()
        .authority(target.to_string())
        .build()
        .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    let mut connect = Request::new(empty());
    *connect.method_mut() = Method::CONNECT;
    *connect.uri_mut() = uri;
    *connect.version_mut() = Version::HTTP_2;
    sender.ready().await.map_err(|e| fail(error_chain(&e)))?;
    let response = sender.send_request(connect).await.map_err(|e| fail(error_chain(&e)))?;
    if response.status() != StatusCode::OK {
        return Err(fail(format!("peer refused CONNECT {target}: {}", response.status())));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| fail(error_chain(&e)))?;
    Ok(Box::pin(TokioIo::new(upgraded)))
}

/// `addr` as a URI authority.
pub fn endpoint_authority(addr: SocketAddr) -> Result<UriAuthority, ProxyError> {
    addr.to_string().parse().map_err(|_| ProxyError::BadRequest(format!("invalid authority {addr}")))
}

/// `http://authority/path?query`, the form HTTP/2 and hyper's client need.
fn rewrite_uri(uri: &Uri, authority: UriAuthority) -> Result<Uri, ProxyError> {
    let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| ProxyError::BadRequest(e.to_string()))
}

fn clean(mut response: Response<Body>) -> Response<Body> {
    strip_hop_by_hop(response.headers_mut());
    response
}

/// An error with its sources, `: `-separated (hyper's top-level messages are terse).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
