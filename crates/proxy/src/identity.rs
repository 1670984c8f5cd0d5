//! The proxy's workload identity: its first certificate (with the bootstrap token), then
//! renewals at half of the remaining lifetime, presenting the current certificate.
//!
//! Certificates go into the [`CredentialStore`], which is rustls' certificate resolver for every
//! listener and upstream connection: a renewal only changes what *new* handshakes present, so
//! no connection is dropped and no request fails. Failed attempts retry with [`Backoff`].
//!
//! The CA is called over a channel of our own (not `CaClient`'s), because its socket must bind
//! the pod IP like every other connection the proxy opens; the exchange itself is the same:
//! fresh key, CSR, `CreateCertificate`, the answer verified against the trust bundle.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use paymesh_control::ca::auth::AUTHORIZATION;
use paymesh_control::ca::pb::IstioCertificateRequest;
use paymesh_control::ca::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use paymesh_control::ca::{BootstrapToken, CaClientConfig, CaClientError};
use paymesh_tls::{
    ALPN_H2, Credential, CredentialStore, ExpectedIdentities, Identity, PrivateKey, certs_from_pem,
    client_config,
};
use rustls_pki_types::ServerName;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::readiness::BlockReady;
use crate::upstream::pool::connect_tcp;

/// The soonest a renewal is scheduled after an issuance (guards against a CA that issues
/// certificates that are nearly expired).
const MIN_REFRESH: Duration = Duration::from_millis(500);

/// What `/config_dump` and discovery report about the current certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    /// The identity.
    pub identity: Identity,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// End of validity.
    pub not_after: SystemTime,
    /// Renewals since the first certificate.
    pub rotations: u64,
}

impl CertStatus {
    /// `not_after` as Unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// Gets and renews the proxy's certificate.
pub struct IdentityManager {
    ca: CaClientConfig,
    source: IpAddr,
    store: Arc<CredentialStore>,
    status: watch::Sender<Option<CertStatus>>,
}

impl IdentityManager {
    /// A manager for `identity`, talking to the CA described by `ca` from `source` (the pod IP).
    pub fn new(ca: CaClientConfig, source: IpAddr, identity: Identity) -> Self {
        IdentityManager { ca, source, store: CredentialStore::new(identity), status: watch::channel(None).0 }
    }

    /// The live credential (rustls' resolver).
    pub fn store(&self) -> &Arc<CredentialStore> {
        &self.store
    }

    /// The current certificate's status (`None` before the first).
    pub fn status(&self) -> watch::Receiver<Option<CertStatus>> {
        self.status.subscribe()
    }

    /// Gets the first certificate with `token` (releasing `ready` once installed), then renews
    /// forever.
    pub async fn run(self, token: BootstrapToken, ready: BlockReady) {
        let mut backoff = Backoff::default();
        let first = loop {
            match self.certify(Some(&token)).await {
                Ok(credential) => break credential,
                Err(error) => {
                    let pause = backoff.next_pause();
                    warn!(%error, retry_ms = pause.as_millis() as u64, "first certificate failed");
                    tokio::time::sleep(pause).await;
                }
            }
        };
        let mut rotations = 0;
        let mut next = self.install(first, rotations);
        drop(ready);
        loop {
            tokio::time::sleep(next).await;
            backoff.reset();
            let renewed = loop {
                match self.certify(None).await {
                    Ok(credential) => break credential,
                    Err(error) => {
                        let pause = backoff.next_pause();
                        warn!(%error, retry_ms = pause.as_millis() as u64, "certificate renewal failed");
                        tokio::time::sleep(pause).await;
                    }
                }
            };
            rotations += 1;
            next = self.install(renewed, rotations);
        }
    }

    /// A new credential: fresh key, CSR, `CreateCertificate` (with `token` as bearer for the
    /// first one, else presenting the current certificate), the answer checked.
    async fn certify(&self, token: Option<&BootstrapToken>) -> Result<Credential, CaClientError> {
        let identity = self.store.identity();
        let key = PrivateKey::generate()?;
        let csr = key.csr(identity)?;
        let validity_duration =
            self.ca.requested_ttl.map_or(0, |ttl| i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.as_pem().to_owned(),
            validity_duration,
            metadata: None,
        });
        if let Some(token) = token {
            let value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| CaClientError::Token)?;
            request.metadata_mut().insert(AUTHORIZATION, value);
        }
        let mut grpc = IstioCertificateServiceClient::new(self.channel(token.is_none())?);
        let response = grpc
            .create_certificate(request)
            .await
            .map_err(|status| CaClientError::Refused(Box::new(status)))?
            .into_inner();
        let mut certs = Vec::new();
        for pem in &response.cert_chain {
            certs.extend(certs_from_pem(pem)?);
        }
        let trust = &self.ca.trust;
        let chain: Vec<_> = certs.into_iter().filter(|cert| !trust.certs().contains(cert)).collect();
        let found = trust.verify(&chain, SystemTime::now())?;
        if &found != identity {
            return Err(CaClientError::WrongIdentity {
                requested: Box::new(identity.clone()),
                found: Box::new(found),
            });
        }
        Ok(Credential::new(key, chain)?)
    }

    /// A channel to the CA whose socket binds the pod IP, presenting the current certificate
    /// when `present_cert`; it connects on first use.
    fn channel(&self, present_cert: bool) -> Result<Channel, CaClientError> {
        let expected = ExpectedIdentities::one(self.ca.ca_identity.clone());
        let credentials = present_cert.then(|| Arc::clone(&self.store));
        let mut tls = client_config(credentials, &self.ca.trust, expected)?;
        tls.alpn_protocols = vec![ALPN_H2.to_vec()];
        let connector = TlsConnector::from(Arc::new(tls));
        let (addr, source) = (self.ca.addr, self.source);
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| CaClientError::Endpoint { addr, source })?
            .connect_timeout(self.ca.timeout)
            .timeout(self.ca.timeout);
        Ok(endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = connect_tcp(source, addr)
                    .await
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()))?;
                let tls = connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })))
    }

    /// Installs `credential`; returns when to renew it.
    fn install(&self, credential: Credential, rotations: u64) -> Duration {
        let leaf = credential.leaf().clone();
        let remaining = leaf.not_after.duration_since(SystemTime::now()).unwrap_or_default();
        if let Err(error) = self.store.install(credential) {
            warn!(%error, "certificate not installed");
            return MIN_REFRESH;
        }
        let status = CertStatus {
            identity: leaf.identity,
            serial: leaf.serial.iter().map(|b| format!("{b:02x}")).collect(),
            not_after: leaf.not_after,
            rotations,
        };
        let refresh = (remaining / 2).max(MIN_REFRESH);
        info!(
            identity = %status.identity,
            serial = %status.serial,
            rotations,
            refresh_in_ms = refresh.as_millis() as u64,
            "certificate installed"
        );
        self.status.send_replace(Some(status));
        refresh
    }
}
