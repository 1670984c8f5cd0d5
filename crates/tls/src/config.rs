//! rustls configurations for mesh connections, built from a [`CredentialStore`] so rotation
//! needs no new config, and a [`TrustBundle`] so only mesh-issued peers are accepted.
//!
//! Both sides speak TLS 1.3 only, use the workspace's one crypto provider (ring), and disable
//! session resumption: every connection runs the full certificate verification, so a peer's
//! identity is always the one its current certificate proves.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::NoServerSessionStorage;
use rustls::version::TLS13;
use rustls::{ClientConfig, ServerConfig};

use crate::crypto_provider;
use crate::{
    ClientAuth, CredentialStore, ExpectedIdentities, SpiffeClientVerifier, SpiffeServerVerifier, TrustBundle,
};

/// ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// ALPN id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// rustls refused the protocol versions or the verifier.
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The inbound side: presents `credentials`' current certificate, asks the client for one
/// that chains to `trust` and names an identity of the server's own trust domain (`auth` says
/// whether it is required), and offers ALPN `h2` then `http/1.1`.
pub fn server_config(
    credentials: Arc<CredentialStore>,
    trust: &TrustBundle,
    auth: ClientAuth,
) -> Result<ServerConfig, ConfigError> {
    let verifier = SpiffeClientVerifier::new(trust, credentials.identity().trust_domain().clone(), auth)?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(credentials);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The outbound side: verifies the server as [`SpiffeServerVerifier`] describes (chain to
/// `trust`, SPIFFE identity in `expected`), presents `credentials`' current certificate when
/// given (`None`: no client certificate, as a proxy's very first call to the CA), and offers
/// ALPN `h2` then `http/1.1`.
pub fn client_config(
    credentials: Option<Arc<CredentialStore>>,
    trust: &TrustBundle,
    expected: ExpectedIdentities,
) -> Result<ClientConfig, ConfigError> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(trust, expected)));
    let mut config = match credentials {
        Some(store) => builder.with_client_cert_resolver(store),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}
