//! Certificates as the mesh sees them: the [`TrustBundle`] (mesh roots), a workload's
//! [`Credential`] (key + chain from the CA), and reading a leaf's SPIFFE identity and validity.
//!
//! Data flows CA → PEM chain → [`Credential::new`] (which checks that the leaf carries exactly
//! one SPIFFE URI SAN and that its public key is the workload's own) → [`crate::CredentialStore`].
//! Chain verification goes through rustls' webpki, the same code the TLS handshake runs.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::ParsedCertificate;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Identity, IdentityError, PrivateKey, crypto_provider};

/// Why a certificate, chain or bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// PEM text held no certificate, or a block was malformed.
    #[error("invalid PEM certificates: {0}")]
    Pem(String),
    /// The DER is not an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    Parse(String),
    /// The leaf has no URI SAN, several, or one that is not `spiffe://…`.
    #[error("certificate must carry exactly one SPIFFE URI SAN; found {0:?}")]
    SpiffeSan(Vec<String>),
    /// The URI SAN is `spiffe://` but not a workload identity.
    #[error("certificate SAN is not a mesh identity: {0}")]
    Identity(#[from] IdentityError),
    /// A chain with no certificate in it.
    #[error("empty certificate chain")]
    EmptyChain,
    /// The leaf's public key is not the key the credential was built with.
    #[error("certificate for {0} does not match the private key")]
    KeyMismatch(Identity),
    /// A credential for a different identity than the store serves.
    #[error("credential is for {found}, but this store serves {expected}")]
    WrongIdentity {
        /// The store's identity.
        expected: Box<Identity>,
        /// The credential's identity.
        found: Box<Identity>,
    },
    /// The chain does not verify against the mesh roots (signature, expiry, usage).
    #[error("certificate chain does not verify against the mesh roots: {0}")]
    Untrusted(#[source] rustls::Error),
    /// A trust bundle with no usable root.
    #[error("trust bundle has no usable root certificate: {0}")]
    NoRoots(String),
    /// rustls refused the key.
    #[error("rustls cannot use the private key: {0}")]
    Key(#[source] rustls::Error),
}

/// What the mesh reads from a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The SPIFFE identity in the one URI SAN.
    pub identity: Identity,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The serial number, big-endian bytes.
    pub serial: Vec<u8>,
}

impl LeafInfo {
    /// Reads identity, validity and serial from a DER certificate.
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, CertError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
        let validity = cert.validity();
        Ok(LeafInfo {
            identity: spiffe_identity(&cert)?,
            not_before: unix_seconds(validity.not_before.timestamp()),
            not_after: unix_seconds(validity.not_after.timestamp()),
            serial: cert.raw_serial().to_vec(),
        })
    }

    /// Whether `now` is inside the validity window.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

fn unix_seconds(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
}

/// The identity of a leaf: exactly one URI SAN, and it is a workload SPIFFE ID (the X.509-SVID
/// rule). DNS or IP SANs beside it are allowed (the control plane's serving certificate has them).
pub fn leaf_identity(der: &CertificateDer<'_>) -> Result<Identity, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
    spiffe_identity(&cert)
}

fn spiffe_identity(cert: &X509Certificate<'_>) -> Result<Identity, CertError> {
    let san = cert.subject_alternative_name().map_err(|e| CertError::Parse(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri] if uri.starts_with(crate::identity::SPIFFE_SCHEME) => Ok(uri.parse()?),
        _ => Err(CertError::SpiffeSan(uris.iter().map(|u| u.to_string()).collect())),
    }
}

/// Every certificate in a PEM text, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::Pem("no `BEGIN CERTIFICATE` block".to_owned()));
    }
    Ok(certs)
}

/// One DER certificate as a PEM block (LF line endings, trailing newline).
pub fn cert_to_pem(der: &CertificateDer<'_>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.as_ref()), config)
}

/// The mesh's root certificates: what every workload trusts, and nothing else.
#[derive(Clone)]
pub struct TrustBundle {
    certs: Vec<CertificateDer<'static>>,
    store: Arc<RootCertStore>,
}

impl TrustBundle {
    /// A bundle of the given root certificates; each must parse as a trust anchor.
    pub fn new(certs: Vec<CertificateDer<'static>>) -> Result<Self, CertError> {
        let mut store = RootCertStore::empty();
        for cert in &certs {
            store.add(cert.clone()).map_err(|e| CertError::NoRoots(e.to_string()))?;
        }
        if store.is_empty() {
            return Err(CertError::NoRoots("the bundle is empty".to_owned()));
        }
        Ok(TrustBundle { certs, store: Arc::new(store) })
    }

    /// A bundle from PEM text (`root-cert.pem`).
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        Self::new(certs_from_pem(pem)?)
    }

    /// The root certificates.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The roots as PEM, one block each.
    pub fn to_pem(&self) -> String {
        self.certs.iter().map(cert_to_pem).collect()
    }

    /// The roots as rustls holds them.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.store)
    }

    /// Verifies that `chain` (leaf first, then intermediates) chains to one of the roots at
    /// `now` (signatures, validity, CA constraints, server-auth usage), then returns the leaf's
    /// SPIFFE identity.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: SystemTime) -> Result<Identity, CertError> {
        let (leaf, intermediates) = chain.split_first().ok_or(CertError::EmptyChain)?;
        let parsed = ParsedCertificate::try_from(leaf).map_err(CertError::Untrusted)?;
        let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        let algorithms = crypto_provider().signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &self.store, intermediates, now, algorithms)
            .map_err(CertError::Untrusted)?;
        leaf_identity(leaf)
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle").field("roots", &self.certs.len()).finish()
    }
}

/// A workload's credential: its private key and the chain the CA issued for it (leaf first,
/// then intermediates; the root stays in the [`TrustBundle`]).
pub struct Credential {
    key: PrivateKey,
    chain: Vec<CertificateDer<'static>>,
    leaf: LeafInfo,
}

impl Credential {
    /// Pairs `key` with `chain`; refused when the leaf has no single SPIFFE identity or was
    /// issued for another key.
    pub fn new(key: PrivateKey, chain: Vec<CertificateDer<'static>>) -> Result<Self, CertError> {
        let first = chain.first().ok_or(CertError::EmptyChain)?;
        let (_, cert) = X509Certificate::from_der(first).map_err(|e| CertError::Parse(e.to_string()))?;
        let leaf = LeafInfo::parse(first)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CertError::KeyMismatch(leaf.identity));
        }
        Ok(Credential { key, chain, leaf })
    }

    /// The identity the certificate proves.
    pub fn identity(&self) -> &Identity {
        &self.leaf.identity
    }

    /// Identity, validity and serial of the leaf.
    pub fn leaf(&self) -> &LeafInfo {
        &self.leaf
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// Leaf first, then intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// When to ask for the next certificate: half-way through the validity window, as Istio's
    /// agents rotate.
    pub fn refresh_at(&self) -> SystemTime {
        let lifetime = self.leaf.not_after.duration_since(self.leaf.not_before).unwrap_or_default();
        self.leaf.not_before + lifetime / 2
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("identity", &self.leaf.identity.to_string())
            .field("not_after", &self.leaf.not_after)
            .field("chain_len", &self.chain.len())
            .field("key", &self.key)
            .finish()
    }
}
