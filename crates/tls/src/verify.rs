//! Peer certificate verification by SPIFFE identity, for both directions of a mesh connection.
//!
//! Mesh certificates carry no DNS names: a peer is who its SPIFFE URI SAN says, once the chain
//! verifies against the mesh roots. [`SpiffeServerVerifier`] (client side) checks the server is
//! one of the identities the caller expects; [`SpiffeClientVerifier`] (server side) accepts any
//! client of its own trust domain and leaves authorization to the layers above.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{CertError, Identity, TrustBundle, TrustDomain, crypto_provider, leaf_identity};

/// Why a peer with a valid chain was still refused. `Debug` prints the message, because rustls
/// reports custom verifier errors with `Debug`, and that text ends up in handshake errors.
#[derive(thiserror::Error)]
pub enum PeerError {
    /// The leaf has no usable SPIFFE identity.
    #[error("peer certificate: {0}")]
    Certificate(#[from] CertError),
    /// The server is not one of the identities the client expects.
    #[error("server identity {found} is not one of the expected identities {expected}")]
    UnexpectedServer {
        /// What the server's certificate says.
        found: Identity,
        /// What the client accepts, comma separated.
        expected: String,
    },
    /// A client from another trust domain.
    #[error("client identity {found} is not in trust domain {expected}")]
    ForeignTrustDomain {
        /// What the client's certificate says.
        found: Identity,
        /// The server's trust domain.
        expected: TrustDomain,
    },
}

impl fmt::Debug for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<PeerError> for Error {
    fn from(err: PeerError) -> Self {
        match err {
            PeerError::Certificate(CertError::Parse(_)) => {
                Error::InvalidCertificate(CertificateError::BadEncoding)
            }
            other => Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(other)))),
        }
    }
}

/// The identities a client accepts from a server: never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedIdentities(BTreeSet<Identity>);

impl ExpectedIdentities {
    /// Exactly one acceptable identity.
    pub fn one(identity: Identity) -> Self {
        ExpectedIdentities(BTreeSet::from([identity]))
    }

    /// Any of `identities`; `None` when there is none (a client that accepts nobody is a bug,
    /// not a configuration).
    pub fn any_of(identities: impl IntoIterator<Item = Identity>) -> Option<Self> {
        let set: BTreeSet<Identity> = identities.into_iter().collect();
        (!set.is_empty()).then_some(ExpectedIdentities(set))
    }

    /// Whether `identity` is acceptable.
    pub fn contains(&self, identity: &Identity) -> bool {
        self.0.contains(identity)
    }
}

impl fmt::Display for ExpectedIdentities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, identity) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{identity}")?;
        }
        Ok(())
    }
}

/// The client side's check of a mesh server. It verifies, in order:
///
/// 1. the leaf parses as an X.509 end-entity certificate;
/// 2. leaf + presented intermediates chain to one of the mesh roots (signatures, validity at
///    the handshake time, CA basic constraints, path length, server-auth extended key usage);
/// 3. the leaf carries exactly one URI SAN, a workload SPIFFE ID;
/// 4. that identity is one of the [`ExpectedIdentities`];
/// 5. the handshake signature was made by the leaf's key (the peer holds the private key).
///
/// The TLS server name is ignored: mesh certificates name identities, not hosts.
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: ExpectedIdentities,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// A verifier trusting `trust`'s roots and accepting only `expected` servers.
    pub fn new(trust: &TrustBundle, expected: ExpectedIdentities) -> Self {
        SpiffeServerVerifier { roots: trust.root_store(), expected, provider: crypto_provider() }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let algorithms = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &self.roots, intermediates, now, algorithms)?;
        let found = leaf_identity(end_entity).map_err(PeerError::from)?;
        if !self.expected.contains(&found) {
            return Err(PeerError::UnexpectedServer { found, expected: self.expected.to_string() }.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier").field("expected", &self.expected.to_string()).finish()
    }
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Mesh inbound (STRICT mTLS): no certificate, no connection.
    Required,
    /// The CA port: a proxy's first request has no certificate yet (it authenticates with a
    /// bootstrap token instead); one that is presented must still verify.
    Optional,
}

/// The server side's check of a mesh client. It verifies, in order:
///
/// 1. leaf + presented intermediates chain to one of the mesh roots (signatures, validity at
///    the handshake time, CA constraints, client-auth extended key usage), by rustls' webpki
///    client verifier;
/// 2. the leaf carries exactly one URI SAN, a workload SPIFFE ID;
/// 3. that identity is in the server's own trust domain;
/// 4. the handshake signature was made by the leaf's key.
///
/// Which identities may call what is authorization, decided above TLS.
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
}

impl SpiffeClientVerifier {
    /// A verifier trusting `trust`'s roots and accepting clients of `trust_domain`.
    pub fn new(trust: &TrustBundle, trust_domain: TrustDomain, auth: ClientAuth) -> Result<Self, Error> {
        let builder = WebPkiClientVerifier::builder_with_provider(trust.root_store(), crypto_provider());
        let builder = match auth {
            ClientAuth::Required => builder,
            ClientAuth::Optional => builder.allow_unauthenticated(),
        };
        let inner = builder.build().map_err(|e| Error::General(format!("client verifier: {e}")))?;
        Ok(SpiffeClientVerifier { inner, trust_domain })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let found = leaf_identity(end_entity).map_err(PeerError::from)?;
        if found.trust_domain() != &self.trust_domain {
            return Err(PeerError::ForeignTrustDomain { found, expected: self.trust_domain.clone() }.into());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("trust_domain", &self.trust_domain.as_str())
            .field("mandatory", &self.inner.client_auth_mandatory())
            .finish()
    }
}
