//! Mesh identity and TLS, shared by the proxy, the control plane's CA and the CLI.
//!
//! - [`Identity`] / [`TrustDomain`]: SPIFFE IDs `spiffe://<td>/ns/<ns>/sa/<sa>`, always parsed.
//! - [`PrivateKey`] / [`Csr`]: a workload's ECDSA P-256 key (redacted `Debug`) and the CSR the CA
//!   signs; the key never leaves the process.
//! - [`Credential`] / [`TrustBundle`]: the issued chain with its key, the mesh roots.
//! - [`CredentialStore`]: the live credential, swapped atomically on rotation; it is rustls'
//!   certificate resolver on both sides, so rotating never drops a connection.
//! - [`Authority`]: a signing CA's core (CSR checks, leaf shape, a generated root), shared by
//!   the control plane's CA and the proxy's tests.
//! - [`server_config`] / [`client_config`]: mTLS configs whose verifiers check SPIFFE identities
//!   ([`SpiffeClientVerifier`], [`SpiffeServerVerifier`]).
//!
//! The whole workspace uses one crypto stack: rustls with the `ring` provider ([`crypto_provider`]).

pub mod cert;
pub mod config;
pub mod identity;
pub mod key;
pub mod sign;
pub mod store;
pub mod verify;

use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;

pub use cert::{CertError, Credential, LeafInfo, TrustBundle, cert_to_pem, certs_from_pem, leaf_identity};
pub use config::{ALPN_H2, ALPN_HTTP11, ConfigError, client_config, server_config};
pub use identity::{DEFAULT_TRUST_DOMAIN, Identity, IdentityError, TrustDomain};
pub use key::{Csr, KeyError, PrivateKey};
pub use sign::{Authority, IssuedChain, MAX_CSR_BYTES, SignError, Validity};
pub use store::CredentialStore;
pub use verify::{ClientAuth, ExpectedIdentities, PeerError, SpiffeClientVerifier, SpiffeServerVerifier};

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// The crypto provider of every TLS config in the mesh: rustls' `ring` provider.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::clone(&PROVIDER)
}
