//! Workload private keys and the certificate signing requests made from them.
//!
//! A proxy generates its ECDSA P-256 key here, sends only the [`Csr`] (public key + SPIFFE URI
//! SAN) to the CA, and keeps the key: private keys never leave the process that made them, and
//! their `Debug` never prints key material, so a stray `{:?}` in a log can't leak one.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Identity;

/// Why a key or CSR could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key generator failed (no randomness).
    #[error("could not generate an ECDSA P-256 key: {0}")]
    Generate(#[source] rcgen::Error),
    /// A PEM key was not a PKCS#8 key of a supported algorithm.
    #[error("could not load the private key (PKCS#8 PEM, `BEGIN PRIVATE KEY`, is supported): {0}")]
    Load(#[source] rcgen::Error),
    /// The CSR could not be built or signed.
    #[error("could not build the CSR for {identity}: {source}")]
    Csr {
        /// The identity the CSR was for.
        identity: Identity,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
}

/// A private key (ECDSA P-256 when generated here). Its `Debug` shows the algorithm only.
pub struct PrivateKey {
    pair: KeyPair,
}

impl PrivateKey {
    /// A fresh ECDSA P-256 key, the algorithm Istio's agents use for workload certificates.
    pub fn generate() -> Result<Self, KeyError> {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map(|pair| PrivateKey { pair })
            .map_err(KeyError::Generate)
    }

    /// Loads a PKCS#8 PEM key (`-----BEGIN PRIVATE KEY-----`): ECDSA P-256/P-384, Ed25519 or RSA.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        KeyPair::from_pem(pem).map(|pair| PrivateKey { pair }).map_err(KeyError::Load)
    }

    /// The key as PKCS#8 PEM, for writing to a file only its owner can read.
    pub fn to_pkcs8_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// The key as PKCS#8 DER, the form rustls loads.
    pub fn to_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pair.serialize_der()))
    }

    /// The raw public key (for ECDSA, the uncompressed point), as a certificate's
    /// `subjectPublicKey` carries it.
    pub fn public_key_raw(&self) -> &[u8] {
        self.pair.public_key_raw()
    }

    /// The rcgen key pair, for signing certificates with this key.
    pub fn key_pair(&self) -> &KeyPair {
        &self.pair
    }

    /// A CSR for `identity`, signed with this key: empty subject, one URI SAN (the SPIFFE ID),
    /// as Istio's agents send them.
    pub fn csr(&self, identity: &Identity) -> Result<Csr, KeyError> {
        let csr_error = |source| KeyError::Csr { identity: identity.clone(), source };
        let uri = identity.to_string().try_into().map_err(csr_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        let request = params.serialize_request(&self.pair).map_err(csr_error)?;
        request.pem().map(Csr).map_err(csr_error)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.pair.algorithm())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A PEM-encoded PKCS#10 certificate signing request (public data: no secret inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr(String);

impl Csr {
    /// The PEM text, as `IstioCertificateRequest.csr` carries it.
    pub fn as_pem(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use rcgen::CertificateSigningRequestParams;

    use super::*;

    #[test]
    fn debug_never_prints_key_material() {
        let key = PrivateKey::generate().expect("key generation");
        let debug = format!("{key:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let pem = key.to_pkcs8_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&body[..16]), "{debug}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let key = PrivateKey::generate().expect("key generation");
        let loaded = PrivateKey::from_pkcs8_pem(&key.to_pkcs8_pem()).expect("pem round-trips");
        assert_eq!(loaded.public_key_raw(), key.public_key_raw());
        assert!(
            PrivateKey::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }

    #[test]
    fn csr_carries_the_spiffe_uri_and_a_valid_signature() {
        let key = PrivateKey::generate().expect("key generation");
        let id: Identity =
            "spiffe://cluster.local/ns/payments/sa/account-service".parse().expect("valid identity");
        let csr = key.csr(&id).expect("csr");
        assert!(csr.as_pem().starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        // from_pem verifies the signature.
        let parsed = CertificateSigningRequestParams::from_pem(csr.as_pem()).expect("csr verifies");
        let uris: Vec<String> = parsed
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                SanType::URI(uri) => uri.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(uris, ["spiffe://cluster.local/ns/payments/sa/account-service"]);
        assert_eq!(parsed.public_key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    }
}
