//! The live credential of one workload identity, swapped atomically on rotation.
//!
//! rustls asks [`CredentialStore`] for a certificate at the start of every handshake (as server
//! and as client), reading an `ArcSwap` without a lock. Installing a new credential affects only
//! handshakes that start afterwards: established connections keep their session keys and are
//! never dropped, which is how rotation stays invisible to in-flight requests.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, crypto::CryptoProvider};

use crate::{CertError, Credential, Identity, crypto_provider};

struct Installed {
    credential: Arc<Credential>,
    certified: Arc<CertifiedKey>,
}

/// The current [`Credential`] of one identity (empty until the first one is installed), usable
/// directly as rustls' server and client certificate resolver.
pub struct CredentialStore {
    identity: Identity,
    provider: Arc<CryptoProvider>,
    current: ArcSwapOption<Installed>,
}

impl CredentialStore {
    /// An empty store for `identity`: handshakes that need a certificate fail until
    /// [`install`](Self::install) is called, so nothing is served without an identity.
    pub fn new(identity: Identity) -> Arc<Self> {
        Arc::new(CredentialStore { identity, provider: crypto_provider(), current: ArcSwapOption::empty() })
    }

    /// The identity this store serves.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Makes `credential` the one new handshakes use. Refused when it is for another identity
    /// or rustls can't use its key; the previous credential then stays in place.
    pub fn install(&self, credential: Credential) -> Result<(), CertError> {
        if credential.identity() != &self.identity {
            return Err(CertError::WrongIdentity {
                expected: Box::new(self.identity.clone()),
                found: Box::new(credential.identity().clone()),
            });
        }
        let certified =
            CertifiedKey::from_der(credential.chain().to_vec(), credential.key().to_der(), &self.provider)
                .map_err(CertError::Key)?;
        let installed = Installed { credential: Arc::new(credential), certified: Arc::new(certified) };
        self.current.store(Some(Arc::new(installed)));
        Ok(())
    }

    /// The credential new handshakes use, if any.
    pub fn current(&self) -> Option<Arc<Credential>> {
        self.current.load().as_ref().map(|installed| Arc::clone(&installed.credential))
    }

    fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|installed| Arc::clone(&installed.certified))
    }
}

impl ResolvesServerCert for CredentialStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }
}

impl ResolvesClientCert for CredentialStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("CredentialStore")
            .field("identity", &self.identity.to_string())
            .field("not_after", &current.as_ref().map(|installed| installed.credential.leaf().not_after))
            .finish()
    }
}
