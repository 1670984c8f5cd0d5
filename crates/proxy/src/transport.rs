//! The last stage: carrying one attempt of a request to one endpoint, or opening a byte stream
//! to it.
//!
//! Mesh endpoints get mutual TLS to their sidecar's inbound port, carrying the original
//! authority: an HTTP port's requests stay HTTP/1.1 on pooled keep-alive connections ([`h1`];
//! Istio's default), while HTTP/2 and gRPC ports, and HTTP ports whose DestinationRule says
//! `h2UpgradePolicy: UPGRADE`, go as HTTP/2 multiplexed on one pooled connection ([`pool`]);
//! CONNECT tunnels always ride that HTTP/2 connection as HTTP/2 CONNECT to `POD_IP:targetPort`
//! (HBONE's shape). Endpoints without a
//! sidecar, and the app behind an inbound chain, get plaintext HTTP/1.1 or h2c. Every socket
//! binds the pod IP as source.
//!
//! Failures are typed ([`UpstreamError`]) and say whether the request was never sent
//! ([`Failed::request`] gives it back): that is what lets the retry stage resend it safely.

pub mod h1;
pub mod pool;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::uri::{Authority as UriAuthority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::flags::ResponseFlag;
use crate::http::{Body, boxed_response, empty, never_index_request_id, strip_hop_by_hop};
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

/// How requests reach an endpoint.
pub enum Transport {
    /// Mutual TLS to the endpoint's sidecar (its tunnel port), with the original authority.
    Mesh {
        /// HTTP/2: every request of an upgrading cluster, and CONNECT (naming `address`).
        h2: Arc<H2Pool>,
        /// HTTP/1.1 for the requests of a cluster that does not upgrade.
        http1: Option<Arc<H1Pool>>,
    },
    /// Plaintext to `address`.
    Plain(Plain),
}

/// A plaintext upstream: an endpoint without a sidecar, or the app behind an inbound chain.
pub enum Plain {
    /// HTTP/1.1 over pooled keep-alive connections.
    H1(Arc<H1Pool>),
    /// h2c over one multiplexed connection (HTTP/2 and gRPC ports).
    H2(Arc<H2Pool>),
}

/// Why an attempt to an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP or TLS to the endpoint failed (Envoy's `connect-failure`).
    #[error("upstream connect error to {endpoint}: {cause}")]
    Connect {
        /// The address dialed.
        endpoint: SocketAddr,
        /// What went wrong.
        cause: String,
    },
    /// The HTTP/2 peer refused the stream before processing it (`refused-stream`).
    #[error("upstream {endpoint} refused the stream: {cause}")]
    RefusedStream {
        /// The address dialed.
        endpoint: SocketAddr,
        /// What went wrong.
        cause: String,
    },
    /// The connection closed before the request was written (a keep-alive race).
    #[error("upstream {endpoint} closed the connection before the request was sent: {cause}")]
    Unsent {
        /// The address dialed.
        endpoint: SocketAddr,
        /// What went wrong.
        cause: String,
    },
    /// The connection failed after the request was sent, before the response head (`reset`).
    #[error("upstream {endpoint} reset the request: {cause}")]
    Reset {
        /// The address dialed.
        endpoint: SocketAddr,
        /// What went wrong.
        cause: String,
    },
}

impl UpstreamError {
    /// Whether another attempt is safe: the upstream never processed the request.
    pub fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::RefusedStream { .. }
            | UpstreamError::Unsent { .. } => true,
            UpstreamError::Reset { .. } => false,
        }
    }

    /// The response flag.
    pub fn flag(&self) -> ResponseFlag {
        match self {
            UpstreamError::Connect { .. } => ResponseFlag::UpstreamConnectionFailure,
            UpstreamError::RefusedStream { .. }
            | UpstreamError::Unsent { .. }
            | UpstreamError::Reset { .. } => ResponseFlag::UpstreamConnectionTermination,
        }
    }

    /// Envoy's response code details.
    pub fn details(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "upstream_reset_before_response_started{connection_failure}",
            UpstreamError::RefusedStream { .. } => {
                "upstream_reset_before_response_started{remote_refused_stream_reset}"
            }
            UpstreamError::Unsent { .. } | UpstreamError::Reset { .. } => {
                "upstream_reset_before_response_started{connection_termination}"
            }
        }
    }

    /// What went wrong, without the address.
    pub fn cause(&self) -> &str {
        match self {
            UpstreamError::Connect { cause, .. }
            | UpstreamError::RefusedStream { cause, .. }
            | UpstreamError::Unsent { cause, .. }
            | UpstreamError::Reset { cause, .. } => cause,
        }
    }
}

/// A failed attempt, with the request when it was never sent.
#[derive(Debug)]
pub struct Failed {
    /// Why.
    pub error: UpstreamError,
    /// The request, untouched, when no byte of it reached the upstream.
    pub request: Option<Request<Body>>,
}

impl Failed {
    /// A failure before the request was handed to any connection.
    pub fn unsent(error: UpstreamError, request: Request<Body>) -> Self {
        Failed { error, request: Some(request) }
    }

    /// A failure after the request was (or may have been) written.
    pub fn sent(error: UpstreamError) -> Self {
        Failed { error, request: None }
    }
}

/// An answered attempt.
#[derive(Debug)]
pub struct Sent {
    /// The response head (the body streams on).
    pub response: Response<Body>,
    /// When a connection was ready to take the request (Envoy's connection pool ready time).
    pub connected: Instant,
}

/// What an attempt returns.
pub type Attempt = Result<Sent, Failed>;

/// Sends `req` over `transport` to the endpoint at `address`, keeping `authority`.
pub async fn send(
    transport: &Transport,
    address: SocketAddr,
    authority: &UriAuthority,
    mut req: Request<Body>,
) -> Attempt {
    match transport {
        Transport::Mesh { h2, http1 } => {
            // Replaces any the client sent.
            req.headers_mut().insert(TARGET_PORT, HeaderValue::from(address.port()));
            match http1 {
                Some(pool) => send_h1(pool, authority, req).await,
                None => send_h2(h2, authority, req).await,
            }
        }
        Transport::Plain(plain) => {
            req.headers_mut().remove(TARGET_PORT);
            send_plain(plain, authority, req).await
        }
    }
}

/// To a plaintext upstream, with `authority` as its `Host` or `:authority`.
pub async fn send_plain(plain: &Plain, authority: &UriAuthority, req: Request<Body>) -> Attempt {
    match plain {
        Plain::H1(pool) => send_h1(pool, authority, req).await,
        Plain::H2(pool) => send_h2(pool, authority, req).await,
    }
}

/// A byte stream over `transport` to the endpoint at `address`: HTTP/2 CONNECT over the mesh
/// connection, or TCP from `source` within `connect_timeout`.
pub async fn tunnel(
    transport: &Transport,
    address: SocketAddr,
    source: std::net::IpAddr,
    connect_timeout: std::time::Duration,
) -> Result<Pin<Box<dyn Tunnel>>, UpstreamError> {
    match transport {
        Transport::Mesh { h2, .. } => connect_h2(h2, address).await,
        Transport::Plain(_) => Ok(Box::pin(connect_tcp(source, address, connect_timeout).await?)),
    }
}

/// HTTP/1.1 to `pool`'s address: origin-form target, `Host` = `host`.
async fn send_h1(pool: &Arc<H1Pool>, host: &UriAuthority, req: Request<Body>) -> Attempt {
    let (mut parts, body) = req.into_parts();
    parts.uri = match parts.uri.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    };
    parts.version = Version::HTTP_11;
    // First: a client's `Connection: host` must not remove the Host set next.
    strip_hop_by_hop(&mut parts.headers);
    // An `http::uri::Authority` is always a valid header value.
    if let Ok(host) = HeaderValue::from_str(host.as_str()) {
        parts.headers.insert(HOST, host);
    }
    let sent = pool.send(Request::from_parts(parts, body)).await?;
    Ok(Sent { response: clean(sent.response), ..sent })
}

/// HTTP/2 to `pool`'s address with `:authority` = `authority`.
async fn send_h2(pool: &H2Pool, authority: &UriAuthority, req: Request<Body>) -> Attempt {
    let (mut parts, body) = req.into_parts();
    parts.uri = with_authority(&parts.uri, authority.clone());
    parts.version = Version::HTTP_2;
    parts.headers.remove(HOST);
    strip_hop_by_hop(&mut parts.headers);
    never_index_request_id(&mut parts.headers);
    let req = Request::from_parts(parts, body);
    let mut sender = match pool.sender().await {
        Ok(sender) => sender,
        Err(error) => return Err(Failed::unsent(error, req)),
    };
    if let Err(error) = sender.ready().await {
        let error = UpstreamError::Unsent { endpoint: pool.addr(), cause: error_chain(&error) };
        return Err(Failed::unsent(error, req));
    }
    let connected = Instant::now();
    match sender.try_send_request(req).await {
        Ok(response) => Ok(Sent { response: clean(boxed_response(response)), connected }),
        Err(error) => Err(classify(pool.addr(), error)),
    }
}

/// An HTTP/1.1 or HTTP/2 send failure, typed: unsent when hyper gives the request back, refused
/// when the peer said `REFUSED_STREAM`, a reset otherwise.
pub(crate) fn classify(endpoint: SocketAddr, mut error: TrySendError<Request<Body>>) -> Failed {
    let cause = error_chain(error.error());
    if let Some(request) = error.take_message() {
        return Failed::unsent(UpstreamError::Unsent { endpoint, cause }, request);
    }
    let refused = std::error::Error::source(error.error())
        .and_then(|source| source.downcast_ref::<h2::Error>())
        .is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM));
    if refused {
        return Failed::sent(UpstreamError::RefusedStream { endpoint, cause });
    }
    Failed::sent(UpstreamError::Reset { endpoint, cause })
}

async fn connect_h2(pool: &H2Pool, target: SocketAddr) -> Result<Pin<Box<dyn Tunnel>>, UpstreamError> {
    let mut sender = pool.sender().await?;
    let fail = |cause: String| UpstreamError::Connect { endpoint: pool.addr(), cause };
    let uri = Uri::builder().authority(target.to_string()).build().map_err(|e| fail(e.to_string()))?;
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

/// `addr` as a URI authority (always valid: an IP address and a port).
pub fn endpoint_authority(addr: SocketAddr) -> Option<UriAuthority> {
    addr.to_string().parse().ok()
}

/// `http://authority/path?query`, the form HTTP/2 and hyper's client need.
fn with_authority(uri: &Uri, authority: UriAuthority) -> Uri {
    let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    // Scheme, authority and path are each valid, and together they make an absolute URI.
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
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
