//! The CA's gRPC endpoint: Istio's `IstioCertificateService/CreateCertificate` over TLS.
//!
//! The listener, TLS and serving certificate live in the shared [`GrpcServer`] (the control
//! plane serves discovery on the same port); [`CaServer`] is that server with only the CA, and
//! [`CertificateService`] authenticates the caller ([`auth`]) and signs ([`Ca::sign`]).
//! Every refusal is logged with its reason and returned as a gRPC status carrying it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use paymesh_api::ca::pb::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use paymesh_api::ca::pb::{IstioCertificateRequest, IstioCertificateResponse};
use paymesh_api::ca::{
    AUTHORIZATION, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT, control_plane_identity,
};
use paymesh_tls::{CertError, ConfigError, Identity, IdentityError, SignError, TrustDomain};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::auth;
use super::{Ca, DEFAULT_CERT_TTL, RequestError};
use crate::grpc::GrpcServer;

/// The CA's port in production (Istio's istiod TLS gRPC port).
pub const DEFAULT_CA_PORT: u16 = 15012;

/// The largest gRPC message accepted; tonic refuses larger ones with OUT_OF_RANGE.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

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
            identity: control_plane_identity(trust_domain)?,
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

/// A bound, not yet serving, CA endpoint: the shared [`GrpcServer`] serving only the CA.
pub struct CaServer {
    inner: GrpcServer,
}

impl CaServer {
    /// Issues the serving certificate and binds `config.addr`.
    pub async fn bind(ca: Arc<Ca>, config: CaServerConfig) -> Result<Self, ServeError> {
        Ok(CaServer { inner: GrpcServer::bind(ca, config).await? })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        self.inner.serve(None, shutdown).await
    }
}

/// The CA's tonic service, for the shared gRPC server.
pub(crate) fn certificate_service(ca: Arc<Ca>) -> IstioCertificateServiceServer<CertificateService> {
    IstioCertificateServiceServer::new(CertificateService { ca }).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

/// `IstioCertificateService` over the CA.
pub(crate) struct CertificateService {
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
fn status_of(error: &RequestError) -> Status {
    let message = error.to_string();
    match error {
        RequestError::Sign(SignError::NotCaller { .. }) => Status::permission_denied(message),
        RequestError::TtlTooLong { .. }
        | RequestError::Sign(
            SignError::CsrTooLarge(_) | SignError::CsrPem(_) | SignError::CsrInvalid(_) | SignError::NoSan,
        ) => Status::invalid_argument(message),
        RequestError::Sign(
            SignError::Random | SignError::Credential(_) | SignError::Root(_) | SignError::Sign(_),
        ) => Status::internal(message),
    }
}
