//! The CA's gRPC endpoint: Istio's `IstioCertificateService/CreateCertificate` over TLS.
//!
//! [`CaServer::bind`] issues the control plane's own serving certificate and binds the socket
//! (so callers learn the real port before anything runs); [`CaServer::serve`] accepts
//! connections, finishes each TLS handshake in its own task with a deadline (a stalled or
//! garbage client delays nobody), and hands finished streams to tonic. A client certificate is
//! optional at the TLS layer: a proxy's first call has none and brings a bootstrap token.
//! Every refusal is logged with its reason and returned as a gRPC status carrying it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use paymesh_tls::{
    ALPN_H2, CertError, ClientAuth, ConfigError, CredentialStore, Identity, IdentityError, PrivateKey,
    TrustDomain, server_config,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::auth::{self, AUTHORIZATION};
use super::pb::istio_certificate_service_server::{IstioCertificateService, IstioCertificateServiceServer};
use super::pb::{IstioCertificateRequest, IstioCertificateResponse};
use super::{Ca, DEFAULT_CERT_TTL, SignError};

/// The CA's port in production (Istio's istiod TLS gRPC port).
pub const DEFAULT_CA_PORT: u16 = 15012;

/// Namespace and service account of the control plane's own identity, as Istio names istiod.
pub const CONTROL_PLANE_NAMESPACE: &str = "istio-system";
/// See [`CONTROL_PLANE_NAMESPACE`].
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "istiod";

/// The largest gRPC message accepted; tonic refuses larger ones with OUT_OF_RANGE.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (out of file descriptors) or a failed serving-certificate renewal.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Finished handshakes waiting for tonic.
const ACCEPT_QUEUE: usize = 64;

/// The CA endpoint's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaServerConfig {
    /// Where to listen (tests: `127.0.0.1:0`).
    pub addr: SocketAddr,
    /// The control plane's identity, in its serving certificate; proxies expect it.
    pub identity: Identity,
    /// DNS names added to the serving certificate, for clients that check a host name
    /// (Istio's agents dial `istiod.istio-system.svc`).
    pub dns_names: Vec<String>,
    /// Lifetime of the serving certificate; it is renewed at half-life.
    pub serving_cert_ttl: Duration,
}

impl CaServerConfig {
    /// Listens on `addr` as `spiffe://<trust_domain>/ns/istio-system/sa/istiod`.
    pub fn new(addr: SocketAddr, trust_domain: TrustDomain) -> Result<Self, IdentityError> {
        Ok(CaServerConfig {
            addr,
            identity: Identity::new(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT)?,
            dns_names: vec![format!("{CONTROL_PLANE_SERVICE_ACCOUNT}.{CONTROL_PLANE_NAMESPACE}.svc")],
            serving_cert_ttl: DEFAULT_CERT_TTL,
        })
    }
}

/// Why the CA endpoint could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The port could not be bound.
    #[error("CA endpoint cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate could not be issued.
    #[error("CA serving certificate: {0}")]
    Issue(#[from] SignError),
    /// The serving certificate could not be installed.
    #[error("CA serving certificate: {0}")]
    Install(#[from] CertError),
    /// The TLS configuration could not be built.
    #[error("CA endpoint TLS: {0}")]
    Tls(#[from] ConfigError),
    /// The key for the serving certificate could not be made.
    #[error("CA serving key: {0}")]
    Key(#[from] paymesh_tls::KeyError),
    /// tonic's server failed.
    #[error("CA endpoint: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A bound, not yet serving, CA endpoint.
pub struct CaServer {
    ca: Arc<Ca>,
    config: CaServerConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    serving: Arc<CredentialStore>,
    acceptor: TlsAcceptor,
}

impl CaServer {
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
        Ok(CaServer { ca, config, listener, local_addr, serving, acceptor: TlsAcceptor::from(Arc::new(tls)) })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let (streams, incoming) = mpsc::channel(ACCEPT_QUEUE);
        let _tasks = AbortOnDrop(vec![
            tokio::spawn(accept_loop(self.listener, self.acceptor, streams)),
            tokio::spawn(renew_loop(Arc::clone(&self.ca), self.serving, self.config)),
        ]);
        let service = IstioCertificateServiceServer::new(CertificateService { ca: self.ca })
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        Server::builder()
            .timeout(REQUEST_TIMEOUT)
            .add_service(service)
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

type Incoming = Result<TlsStream<TcpStream>, std::io::Error>;

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, streams: mpsc::Sender<Incoming>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "CA endpoint accept failed");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let (acceptor, streams) = (acceptor.clone(), streams.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    if streams.send(Ok(tls)).await.is_err() {
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

struct CertificateService {
    ca: Arc<Ca>,
}

#[tonic::async_trait]
impl IstioCertificateService for CertificateService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let connection = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().cloned();
        let peer = connection.as_ref().and_then(|c| c.get_ref().remote_addr());
        let certs = connection.and_then(|c| c.peer_certs());
        let authorization = request.metadata().get(AUTHORIZATION).map(|v| v.as_bytes().to_vec());
        let body = request.into_inner();
        let ca = Arc::clone(&self.ca);
        // Signing can take milliseconds with an RSA CA key: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            create_certificate(&ca, peer, certs.as_deref().map(Vec::as_slice), authorization.as_deref(), body)
        })
        .await
        .map_err(|_| Status::internal("signing task failed"))?
    }
}

fn create_certificate(
    ca: &Ca,
    peer: Option<SocketAddr>,
    certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
    authorization: Option<&[u8]>,
    request: IstioCertificateRequest,
) -> Result<Response<IstioCertificateResponse>, Status> {
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    let caller = auth::authenticate(ca.trust_domain(), ca.tokens(), certs, authorization, SystemTime::now())
        .map_err(|reason| {
            warn!(%peer, %reason, "CA refused an unauthenticated request");
            Status::unauthenticated(reason.to_string())
        })?;
    let ttl = u64::try_from(request.validity_duration).ok().filter(|s| *s > 0).map(Duration::from_secs);
    let issued = ca.sign(caller.identity(), &request.csr, ttl).map_err(|reason| {
        warn!(%peer, %caller, %reason, "CA refused to sign");
        status_of(&reason)
    })?;
    info!(%peer, %caller, "CA signed a certificate");
    Ok(Response::new(IstioCertificateResponse { cert_chain: issued.to_cert_chain_pems(), root_cert: None }))
}

/// The one mapping from signing errors to gRPC status codes.
fn status_of(error: &SignError) -> Status {
    let message = error.to_string();
    match error {
        SignError::NotCaller { .. } => Status::permission_denied(message),
        SignError::CsrTooLarge(_)
        | SignError::CsrPem(_)
        | SignError::CsrInvalid(_)
        | SignError::NoSan
        | SignError::TtlTooLong { .. } => Status::invalid_argument(message),
        SignError::Random | SignError::Credential(_) | SignError::Sign(_) => Status::internal(message),
    }
}
