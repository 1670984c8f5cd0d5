//! Connections to upstreams: one multiplexed HTTP/2 connection per (endpoint, accepted
//! identities), reused by every request; keep-alive HTTP/1.1 pools ([`H1Pool`]) to plaintext
//! HTTP/1.1 addresses and, for clusters that do not upgrade to HTTP/2, to peer sidecars over
//! mutual TLS ([`MeshTls`]); and the TCP dialer that binds the pod's own address.
//!
//! The hot path reads an [`H2Pool`]'s live sender from an `ArcSwapOption` (no lock); only
//! (re)connecting takes an async mutex, so concurrent first requests share one handshake.
//! [`Pools`] hands out the same pool for the same key across config snapshots, so a new config
//! does not reopen connections; it lives in the [`crate::store::Store`], which index builds
//! borrow.
//!
//! Pools are shared by every cluster that reaches the same peer with the same accepted
//! identities (a service's cluster and its subsets' clusters name the same pods), where Envoy
//! keeps pools per cluster: one warm HTTP/2 connection per peer instead of one per cluster.
//! Limits that Envoy counts per cluster (requests, pending requests) are counted in the
//! cluster's own state, not in the pools.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use paymesh_tls::{
    ALPN_H2, ALPN_HTTP11, ConfigError, CredentialStore, ExpectedIdentities, TrustBundle, client_config,
};
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, warn};

use super::UpstreamError;
use super::h1::{H1Pool, IDLE_TIMEOUT, MESH_IDLE_TIMEOUT};
use crate::http::Body;
use crate::weak_map::shared;

/// How long a TCP connect (plus TLS handshake) may take where no DestinationRule says (the
/// control plane, the local app); a cluster's pools use its `connectTimeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 pings on idle pooled connections, so a dead peer is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Connects to `addr` from `source` (the pod IP), so peers see which pod called, within
/// `timeout`.
pub async fn connect_tcp(
    source: IpAddr,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let fail = |cause: String| UpstreamError::Connect { endpoint: addr, cause };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|e| fail(e.to_string()))?;
    if source.is_ipv4() == addr.is_ipv4() {
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| fail(format!("binding {source}: {e}")))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| fail("connect timed out".to_owned()))?
        .map_err(|e| fail(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Connects as `dial` says: within its connect timeout, with its TCP keepalive.
pub async fn dial_tcp(source: IpAddr, addr: SocketAddr, dial: &Dial) -> Result<TcpStream, UpstreamError> {
    let stream = connect_tcp(source, addr, dial.connect_timeout).await?;
    if let Some(keepalive) = dial.keepalive {
        let mut settings = socket2::TcpKeepalive::new();
        if let Some(time) = keepalive.time {
            settings = settings.with_time(time);
        }
        if let Some(interval) = keepalive.interval {
            settings = settings.with_interval(interval);
        }
        if let Some(probes) = keepalive.probes {
            settings = settings.with_retries(probes);
        }
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&settings) {
            warn!(%addr, %error, "could not set TCP keepalive");
        }
    }
    Ok(stream)
}

/// Mutual TLS towards peer sidecars that accept one set of identities, offering one ALPN
/// protocol.
pub struct MeshTls {
    connector: TlsConnector,
    alpn: &'static [u8],
    /// The accepted identities, for error messages.
    expected: String,
}

impl MeshTls {
    /// Handshakes over `tcp` to `addr` within `timeout`; the peer must prove an accepted identity
    /// and pick the offered protocol.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let fail = |cause: String| UpstreamError::Connect { endpoint: addr, cause };
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio::time::timeout(timeout, self.connector.connect(name, tcp))
            .await
            .map_err(|_| fail("TLS handshake timed out".to_owned()))?
            .map_err(|e| fail(format!("TLS handshake (expecting {}): {e}", self.expected)))?;
        if tls.get_ref().1.alpn_protocol() != Some(self.alpn) {
            let wanted = String::from_utf8_lossy(self.alpn);
            return Err(fail(format!("peer did not negotiate ALPN {wanted}")));
        }
        Ok(tls)
    }
}

/// One pooled HTTP/2 connection to one upstream address, over mutual TLS or h2c.
pub struct H2Pool {
    addr: SocketAddr,
    source: IpAddr,
    dial: Dial,
    tls: Option<MeshTls>,
    current: ArcSwapOption<SendRequest<Body>>,
    connecting: Mutex<()>,
}

impl H2Pool {
    fn new(addr: SocketAddr, source: IpAddr, dial: Dial, tls: Option<MeshTls>) -> Self {
        H2Pool { addr, source, dial, tls, current: ArcSwapOption::empty(), connecting: Mutex::new(()) }
    }

    /// The address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A sender on the live connection, connecting first when there is none.
    pub async fn sender(&self) -> Result<SendRequest<Body>, UpstreamError> {
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        // Boxed: the handshake's state is kilobytes, and every request future would carry it.
        let sender = Box::pin(self.connect()).await?;
        self.current.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    fn live(&self) -> Option<SendRequest<Body>> {
        self.current.load().as_deref().filter(|sender| !sender.is_closed()).cloned()
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let tcp = dial_tcp(self.source, self.addr, &self.dial).await?;
        let fail = |cause: String| UpstreamError::Connect { endpoint: self.addr, cause };
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new()).keep_alive_interval(KEEPALIVE_INTERVAL);
        let sender = match &self.tls {
            Some(mesh) => {
                let tls = mesh.connect(self.addr, tcp, self.dial.connect_timeout).await?;
                let (sender, connection) =
                    builder.handshake(TokioIo::new(tls)).await.map_err(|e| fail(e.to_string()))?;
                spawn_connection(self.addr, connection);
                sender
            }
            None => {
                let (sender, connection) =
                    builder.handshake(TokioIo::new(tcp)).await.map_err(|e| fail(e.to_string()))?;
                spawn_connection(self.addr, connection);
                sender
            }
        };
        debug!(addr = %self.addr, tls = self.tls.is_some(), "upstream connection established");
        Ok(sender)
    }
}

/// Drives an upstream connection (HTTP/1.1 or HTTP/2) to its end, logging how it failed.
pub(super) fn spawn_connection<F>(addr: SocketAddr, connection: F)
where
    F: Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            warn!(%addr, %error, "upstream connection failed");
        }
    });
}

/// How a cluster dials: its `connectTimeout`, how long and how often its HTTP/1.1 connections
/// are reused (`idleTimeout`, `maxRequestsPerConnection`; `None`: the pool's default, no limit),
/// and TCP keepalive. Pools with other settings are other pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dial {
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Idle HTTP/1.1 connections older than this are not reused.
    pub idle_timeout: Option<Duration>,
    /// HTTP/1.1 connections are closed after this many requests.
    pub max_requests_per_connection: Option<u32>,
    /// TCP keepalive probes on the connections.
    pub keepalive: Option<Keepalive>,
}

/// TCP keepalive (`tcpKeepalive`): after `time` idle, a probe every `interval`, `probes` unanswered
/// ones close the connection (`None`: the system's setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub time: Option<Duration>,
    /// Between probes.
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped.
    pub probes: Option<u32>,
}

impl Default for Dial {
    fn default() -> Self {
        Dial {
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: None,
            max_requests_per_connection: None,
            keepalive: None,
        }
    }
}

/// A pool's key: the address, the identities it accepts (empty for plaintext), how it dials.
type PoolKey = (SocketAddr, String, Dial);

/// The pools of one proxy, by (address, accepted identities); keeps a pool alive only while an
/// index uses it.
pub struct Pools {
    source: IpAddr,
    credentials: Arc<CredentialStore>,
    trust: TrustBundle,
    pools: HashMap<PoolKey, Weak<H2Pool>>,
    http1: HashMap<PoolKey, Weak<H1Pool>>,
}

impl Pools {
    /// Pools dialing from `source`, presenting `credentials`, trusting `trust`.
    pub fn new(source: IpAddr, credentials: Arc<CredentialStore>, trust: TrustBundle) -> Self {
        Pools { source, credentials, trust, pools: HashMap::new(), http1: HashMap::new() }
    }

    /// The mutual TLS HTTP/2 pool to `addr` accepting `expected` servers.
    pub fn mesh(
        &mut self,
        addr: SocketAddr,
        expected: &ExpectedIdentities,
        dial: Dial,
    ) -> Result<Arc<H2Pool>, ConfigError> {
        let (source, credentials, trust) = (self.source, &self.credentials, &self.trust);
        shared(&mut self.pools, (addr, expected.to_string(), dial), || {
            let tls = mesh_tls(credentials, trust, expected, ALPN_H2)?;
            Ok(H2Pool::new(addr, source, dial, Some(tls)))
        })
    }

    /// The mutual TLS HTTP/1.1 pool to `addr` accepting `expected` servers. Connections idle at
    /// most [`MESH_IDLE_TIMEOUT`], whatever the cluster allows: the peer closes them after that.
    pub fn mesh_http1(
        &mut self,
        addr: SocketAddr,
        expected: &ExpectedIdentities,
        dial: Dial,
    ) -> Result<Arc<H1Pool>, ConfigError> {
        let (source, credentials, trust) = (self.source, &self.credentials, &self.trust);
        shared(&mut self.http1, (addr, expected.to_string(), dial), || {
            let tls = mesh_tls(credentials, trust, expected, ALPN_HTTP11)?;
            let idle = dial.idle_timeout.map_or(MESH_IDLE_TIMEOUT, |idle| idle.min(MESH_IDLE_TIMEOUT));
            Ok(H1Pool::new(source, addr, Some(tls), idle).with_dial(dial))
        })
    }

    /// The h2c pool to `addr`.
    pub fn plaintext(&mut self, addr: SocketAddr, dial: Dial) -> Arc<H2Pool> {
        let source = self.source;
        let Ok(pool) = shared::<_, _, Infallible>(&mut self.pools, (addr, String::new(), dial), || {
            Ok(H2Pool::new(addr, source, dial, None))
        });
        pool
    }

    /// The plaintext HTTP/1.1 pool to `addr`.
    pub fn http1(&mut self, addr: SocketAddr, dial: Dial) -> Arc<H1Pool> {
        let source = self.source;
        let Ok(pool) = shared::<_, _, Infallible>(&mut self.http1, (addr, String::new(), dial), || {
            let idle = dial.idle_timeout.unwrap_or(IDLE_TIMEOUT);
            Ok(H1Pool::new(source, addr, None, idle).with_dial(dial))
        });
        pool
    }

    /// Forgets pools no index uses any more.
    pub fn prune(&mut self) {
        self.pools.retain(|_, pool| pool.strong_count() > 0);
        self.http1.retain(|_, pool| pool.strong_count() > 0);
    }
}

/// Mutual TLS presenting `credentials`, accepting `expected` servers chained to `trust`, offering
/// only `alpn`.
fn mesh_tls(
    credentials: &Arc<CredentialStore>,
    trust: &TrustBundle,
    expected: &ExpectedIdentities,
    alpn: &'static [u8],
) -> Result<MeshTls, ConfigError> {
    let mut config = client_config(Some(Arc::clone(credentials)), trust, expected.clone())?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(MeshTls { connector: TlsConnector::from(Arc::new(config)), alpn, expected: expected.to_string() })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[tokio::test]
    async fn a_clusters_tcp_keepalive_is_set_on_its_connections() {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let keepalive = Keepalive {
            time: Some(Duration::from_secs(30)),
            interval: Some(Duration::from_secs(5)),
            probes: Some(3),
        };
        let dial = Dial { keepalive: Some(keepalive), ..Dial::default() };
        let stream = dial_tcp(Ipv4Addr::LOCALHOST.into(), addr, &dial).await.expect("connects");
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"), Duration::from_secs(30));
        assert_eq!(socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"), Duration::from_secs(5));
        assert_eq!(socket.tcp_keepalive_retries().expect("TCP_KEEPCNT"), 3);
    }
}
