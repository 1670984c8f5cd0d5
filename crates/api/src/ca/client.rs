//! A client of the CA API: make a key, send its CSR, check what comes back. The proxy gets its
//! certificates with it; the control plane's tests and benchmarks play proxies with it.
//!
//! The channel speaks TLS with the mesh verifier: the CA must prove the control plane's
//! SPIFFE identity under the mesh roots. With a [`CredentialStore`] the client presents the
//! workload's current certificate (rotation); with a [`BootstrapToken`] it sends
//! `authorization: Bearer <token>` (first certificate). The answer is verified against the
//! client's own trust bundle and must name the identity asked for before it becomes a
//! [`Credential`]; the private key never leaves this process.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use paymesh_tls::{
    ALPN_H2, CertError, ConfigError, Credential, CredentialStore, ExpectedIdentities, Identity, KeyError,
    PrivateKey, TrustBundle, certs_from_pem, client_config,
};
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use super::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use super::pb::{IstioCertificateRequest, IstioCertificateResponse};
use super::{AUTHORIZATION, BootstrapToken};

/// How long connecting and one request may take, unless configured.
pub const DEFAULT_CA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the CA is and how to recognise it.
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    /// The CA endpoint.
    pub addr: SocketAddr,
    /// The mesh roots (the CA's serving certificate and every issued chain must verify).
    pub trust: TrustBundle,
    /// The identity the CA's serving certificate must carry.
    pub ca_identity: Identity,
    /// Validity to ask for; `None` lets the CA choose its default.
    pub requested_ttl: Option<Duration>,
    /// Limit on connecting and on each request ([`DEFAULT_CA_TIMEOUT`]).
    pub timeout: Duration,
    /// The address connections bind as their source (a pod's own IP, so the CA sees which pod
    /// calls); `None` lets the kernel choose.
    pub source: Option<IpAddr>,
}

/// Why no certificate was obtained.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    /// The TLS configuration could not be built.
    #[error("CA client TLS: {0}")]
    Tls(#[from] ConfigError),
    /// The key or CSR could not be made.
    #[error("CA client key: {0}")]
    Key(#[from] KeyError),
    /// The endpoint address is unusable.
    #[error("CA endpoint {addr}: {source}")]
    Endpoint {
        /// The address.
        addr: SocketAddr,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The token can't be sent as metadata.
    #[error("bootstrap token is not valid ASCII metadata")]
    Token,
    /// The CA (or the connection to it) refused.
    #[error("CA refused: {}: {}", .0.code(), .0.message())]
    Refused(Box<Status>),
    /// The answer does not verify against the trust bundle or is malformed.
    #[error("CA answer: {0}")]
    Answer(#[from] CertError),
    /// The answer names another identity than the one asked for.
    #[error("CA issued a certificate for {found}, not for {requested}")]
    WrongIdentity {
        /// What was asked.
        requested: Box<Identity>,
        /// What came back.
        found: Box<Identity>,
    },
}

/// A client of one CA endpoint. Clones share the connection.
#[derive(Clone)]
pub struct CaClient {
    grpc: IstioCertificateServiceClient<Channel>,
    trust: TrustBundle,
    requested_ttl: Option<Duration>,
}

impl CaClient {
    /// A client that connects on first use, presenting `credentials`' current certificate
    /// when given.
    pub fn new(
        config: CaClientConfig,
        credentials: Option<Arc<CredentialStore>>,
    ) -> Result<Self, CaClientError> {
        let expected = ExpectedIdentities::one(config.ca_identity.clone());
        let mut tls = client_config(credentials, &config.trust, expected)?;
        tls.alpn_protocols = vec![ALPN_H2.to_vec()];
        let connector = TlsConnector::from(Arc::new(tls));
        let (addr, source) = (config.addr, config.source);
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| CaClientError::Endpoint { addr, source })?
            .connect_timeout(config.timeout)
            .timeout(config.timeout);
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = connect(source, addr).await?;
                let tls = connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }));
        Ok(CaClient {
            grpc: IstioCertificateServiceClient::new(channel),
            trust: config.trust,
            requested_ttl: config.requested_ttl,
        })
    }

    /// A new credential for `identity`: fresh key, CSR, `CreateCertificate` (with `token` as
    /// bearer when given), then the answer is checked.
    pub async fn certify(
        &self,
        identity: &Identity,
        token: Option<&BootstrapToken>,
    ) -> Result<Credential, CaClientError> {
        let key = PrivateKey::generate()?;
        let csr = key.csr(identity)?;
        let validity_duration =
            self.requested_ttl.map_or(0, |ttl| i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let mut request = Request::new(IstioCertificateRequest {
            csr: csr.as_pem().to_owned(),
            validity_duration,
            metadata: None,
        });
        if let Some(token) = token {
            let value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| CaClientError::Token)?;
            request.metadata_mut().insert(AUTHORIZATION, value);
        }
        let response = self.call(request).await.map_err(|status| CaClientError::Refused(Box::new(status)))?;
        let mut certs = Vec::new();
        for pem in &response.cert_chain {
            certs.extend(certs_from_pem(pem)?);
        }
        let chain: Vec<_> = certs.into_iter().filter(|cert| !self.trust.certs().contains(cert)).collect();
        let found = self.trust.verify(&chain, SystemTime::now())?;
        if &found != identity {
            return Err(CaClientError::WrongIdentity {
                requested: Box::new(identity.clone()),
                found: Box::new(found),
            });
        }
        Ok(Credential::new(key, chain)?)
    }

    /// The bare `CreateCertificate` call, for tools that build their own request.
    pub async fn call(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        Ok(self.grpc.clone().create_certificate(request).await?.into_inner())
    }
}

/// A TCP connection to `addr`, from `source` when given.
async fn connect(source: Option<IpAddr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(addr).await };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}
