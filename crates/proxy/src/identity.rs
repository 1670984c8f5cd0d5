//! The proxy's workload identity: its first certificate (with the bootstrap token), then
//! renewals at half of the remaining lifetime, presenting the current certificate.
//!
//! Certificates go into the [`CredentialStore`], which is rustls' certificate resolver for every
//! listener and upstream connection: a renewal only changes what *new* handshakes present, so
//! no connection is dropped and no request fails. Failed attempts retry with [`Backoff`].
//!
//! The CA is called through [`CaClient`] (fresh key, CSR, `CreateCertificate`, the answer
//! verified against the trust bundle), its socket bound to the pod IP like every other
//! connection the proxy opens.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use paymesh_api::ca::{BootstrapToken, CaClient, CaClientConfig, CaClientError};
use paymesh_tls::{Credential, CredentialStore, Identity};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::readiness::BlockReady;

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
    store: Arc<CredentialStore>,
    status: watch::Sender<Option<CertStatus>>,
}

impl IdentityManager {
    /// A manager for `identity`, talking to the CA described by `ca` (whose `source` is the
    /// pod IP).
    pub fn new(ca: CaClientConfig, identity: Identity) -> Self {
        IdentityManager { ca, store: CredentialStore::new(identity), status: watch::channel(None).0 }
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

    /// A new credential, with `token` as bearer for the first one, else presenting the current
    /// certificate.
    async fn certify(&self, token: Option<&BootstrapToken>) -> Result<Credential, CaClientError> {
        let current = token.is_none().then(|| Arc::clone(&self.store));
        CaClient::new(self.ca.clone(), current)?.certify(self.store.identity(), token).await
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
