//! Istio's CA protocol (`istio.v1.auth.IstioCertificateService`), as both ends speak it.
//!
//! A proxy proves who it is with its current certificate (rotation) or, for its first one, a
//! single-use [`BootstrapToken`] sent as `authorization: Bearer <token>`; the CA serves under the
//! control plane's identity ([`control_plane_identity`]), which the proxy checks. The [`client`]
//! makes the key, sends the CSR and verifies the answer; it lives here, beside the protocol, so
//! the proxy and the control plane's own tests and benchmarks share it without depending on
//! each other.

pub mod client;

/// Istio's CA API, generated from the vendored `proto/security/v1alpha1/ca.proto`.
#[allow(unused_qualifications, clippy::all)]
pub mod pb {
    tonic::include_proto!("istio.v1.auth");
}

use std::fmt;

use paymesh_tls::{Identity, IdentityError, TrustDomain};

pub use client::{CaClient, CaClientConfig, CaClientError, DEFAULT_CA_TIMEOUT};

/// The metadata key Istio's CA clients send their bearer token in.
pub const AUTHORIZATION: &str = "authorization";

/// Namespace of the control plane's own identity, as Istio names istiod's.
pub const CONTROL_PLANE_NAMESPACE: &str = "istio-system";

/// Service account of the control plane's own identity, as Istio names istiod's.
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "istiod";

/// `spiffe://<trust_domain>/ns/istio-system/sa/istiod`: the identity the CA and discovery
/// serve under, and the one proxies expect.
pub fn control_plane_identity(trust_domain: TrustDomain) -> Result<Identity, IdentityError> {
    Identity::new(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT)
}

/// A bootstrap token (a secret). `Debug` never shows it; [`expose`](Self::expose) does, for the
/// one place it must go (the sidecar's token file, the `authorization` header).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken(String);

impl BootstrapToken {
    /// Wraps a token received from elsewhere (the sidecar's token file) or just issued.
    pub fn new(secret: String) -> Self {
        BootstrapToken(secret)
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BootstrapToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_shows_in_debug() {
        let token = BootstrapToken::new("pmbt_secret".to_owned());
        assert_eq!(format!("{token:?}"), "BootstrapToken(<redacted>)");
        assert_eq!(token.expose(), "pmbt_secret");
    }

    #[test]
    fn the_control_plane_is_istiod() {
        let identity = control_plane_identity(TrustDomain::default()).expect("valid identity");
        assert_eq!(identity.to_string(), "spiffe://cluster.local/ns/istio-system/sa/istiod");
    }
}
