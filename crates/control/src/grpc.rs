//! The control plane's TLS gRPC port (istiod's 15012): Istio's CA API and, when given,
//! `MeshDiscovery`, on one listener.
//!
//! [`GrpcServer::bind`] issues the control plane's own serving certificate and binds the socket
//! (so callers learn the real port before anything runs); [`GrpcServer::serve`] accepts
//! connections, finishes each TLS handshake in its own task with a deadline (a stalled or
//! garbage client delays nobody), and hands finished streams to tonic. A client certificate is
//! optional at the TLS layer: a proxy's first CA call has none and brings a bootstrap token;
//! `Subscribe` checks for one itself.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections at once (a semaphore permit travels with
//! each connection and is returned when it closes; accepting pauses while none is free),
//! [`MAX_STREAMS_PER_CONNECTION`] concurrent requests per connection, and TCP plus HTTP/2
//! keepalives so a vanished peer's connection is found and closed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use paymesh_api::pb::mesh_discovery_server::MeshDiscoveryServer;
use paymesh_tls::{ALPN_H2, ClientAuth, CredentialStore, PrivateKey, server_config};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tracing::{debug, info, warn};

use crate::ca::Ca;
use crate::ca::server::{CaServerConfig, MAX_MESSAGE_BYTES, ServeError, certificate_service};
use crate::discovery::Discovery;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a unary request may take (streams are bounded by their own life).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (out of file descriptors) or a failed serving-certificate renewal.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Finished handshakes waiting for tonic.
const ACCEPT_QUEUE: usize = 64;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Requests in progress at once on one connection.
pub const MAX_STREAMS_PER_CONNECTION: usize = 64;

/// HTTP/2 PING interval, and how long a PING may go unanswered.
const H2_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(10));

/// Idle time before TCP keepalive probes start.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A bound, not yet serving, gRPC endpoint.
pub struct GrpcServer {
    ca: Arc<Ca>,
    config: CaServerConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    serving: Arc<CredentialStore>,
    acceptor: TlsAcceptor,
}

impl GrpcServer {
    /// Issues the serving certificate and binds `config.addr`.
    pub async fn bind(ca: Arc<Ca>, config: CaServerConfig) -> Result<Self, ServeError> {
        let serving = CredentialStore::new(config.identity.clone());
        renew_serving(&ca, &serving, &config)?;
        let mut tls = server_config(Arc::clone(&serving), ca.trust_bundle(), ClientAuth::Optional)?;
        tls.alpn_protocols = vec![ALPN_H2.to_vec()];
        let bind_error = |source| ServeError::Bind { addr: config.addr, source };
        let listener = TcpListener::bind(config.addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        info!(addr = %local_addr, identity = %config.identity, "CA endpoint bound");
        Ok(GrpcServer {
            ca,
            config,
            listener,
            local_addr,
            serving,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves the CA, and `discovery` when given, until `shutdown` completes.
    pub async fn serve(
        self,
        discovery: Option<Discovery>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let (streams, incoming) = mpsc::channel(ACCEPT_QUEUE);
        let _tasks = AbortOnDrop(vec![
            tokio::spawn(accept_loop(self.listener, self.acceptor, streams)),
            tokio::spawn(renew_loop(Arc::clone(&self.ca), self.serving, self.config)),
        ]);
        let discovery =
            discovery.map(|d| MeshDiscoveryServer::new(d).max_decoding_message_size(MAX_MESSAGE_BYTES));
        Server::builder()
            .timeout(REQUEST_TIMEOUT)
            .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION)
            .max_concurrent_streams(u32::try_from(MAX_STREAMS_PER_CONNECTION).ok())
            .http2_keepalive_interval(Some(H2_KEEPALIVE.0))
            .http2_keepalive_timeout(Some(H2_KEEPALIVE.1))
            .add_service(certificate_service(self.ca))
            .add_optional_service(discovery)
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
            .await?;
        Ok(())
    }
}

/// Aborts the background tasks when `serve` returns.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

/// A served connection and its share of [`MAX_CONNECTIONS`], released when it closes.
struct Permitted {
    tls: TlsStream<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Permitted {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tls.connect_info()
    }
}

impl AsyncRead for Permitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

type Incoming = Result<Permitted, std::io::Error>;

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, streams: mpsc::Sender<Incoming>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Wait for a free slot before accepting: excess clients queue in the kernel backlog.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "CA endpoint accept failed");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        if let Err(error) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
            debug!(%peer, %error, "TCP keepalive not set");
        }
        let (acceptor, streams) = (acceptor.clone(), streams.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    if streams.send(Ok(Permitted { tls, _permit: permit })).await.is_err() {
                        debug!(%peer, "CA endpoint is shutting down; connection dropped");
                    }
                }
                Ok(Err(error)) => warn!(%peer, %error, "CA endpoint refused a TLS handshake"),
                Err(_) => warn!(%peer, "CA endpoint TLS handshake timed out"),
            }
        });
    }
}

fn renew_serving(ca: &Ca, serving: &CredentialStore, config: &CaServerConfig) -> Result<(), ServeError> {
    let key = PrivateKey::generate()?;
    let credential = ca.issue_local(&config.identity, &config.dns_names, key, config.serving_cert_ttl)?;
    serving.install(credential)?;
    Ok(())
}

async fn renew_loop(ca: Arc<Ca>, serving: Arc<CredentialStore>, config: CaServerConfig) {
    loop {
        let refresh_at = serving.current().map(|c| c.refresh_at()).unwrap_or_else(SystemTime::now);
        let wait = refresh_at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait).await;
        match renew_serving(&ca, &serving, &config) {
            Ok(()) => info!(identity = %config.identity, "CA renewed its serving certificate"),
            Err(error) => {
                warn!(%error, "CA could not renew its serving certificate; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
