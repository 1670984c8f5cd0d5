//! The mesh certificate authority (Istio's Citadel role): signs workload certificates for
//! authenticated proxies, over Istio's own CA API.
//!
//! Flow of one request: [`server`] terminates TLS on the CA port and hands the gRPC call to
//! [`auth`], which names the caller (a client certificate for rotation, else a single-use
//! [`token`]); [`Ca::sign`] applies the lifetime policy, then paymesh-tls's signing core
//! ([`Authority`]) checks the CSR asks for exactly that identity and writes the leaf with the
//! key material [`root`] loaded. The protocol, the bootstrap token type and the client proxies
//! use live in `paymesh_api::ca`.

pub mod auth;
pub mod root;
pub mod server;
pub mod token;

use std::time::{Duration, SystemTime};

use paymesh_api::ca::BootstrapToken;
use paymesh_tls::{
    Authority, Credential, Identity, IssuedChain, PrivateKey, SignError, TrustBundle, TrustDomain, Validity,
};
use tracing::info;

pub use auth::{AuthError, Caller};
pub use root::{RootError, RootSource};
pub use server::{CaServer, CaServerConfig, ServeError};
pub use token::{PodName, Redeemed, TokenError};

use token::TokenRegistry;

/// Workload certificate lifetime when the request names none: 24 hours, as Istio.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest lifetime a request may ask for: 90 days, Istio's `MAX_WORKLOAD_CERT_TTL`.
pub const DEFAULT_MAX_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// How far a leaf's `notBefore` is set in the past, so a workload whose clock is a little
/// behind the CA's accepts its fresh certificate.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(60);

/// How long a bootstrap token can wait for its one use: enough for a sidecar to start.
pub const DEFAULT_BOOTSTRAP_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);

/// The shortest certificate lifetime the CA accepts (tests rotate every few seconds).
pub const MIN_CERT_TTL: Duration = Duration::from_secs(1);

/// The CA's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConfig {
    /// The only trust domain the CA signs for.
    pub trust_domain: TrustDomain,
    /// Where the signing key comes from.
    pub root: RootSource,
    /// Lifetime of a certificate when the request asks for none ([`DEFAULT_CERT_TTL`]).
    pub default_ttl: Duration,
    /// Longest lifetime a request may ask for ([`DEFAULT_MAX_CERT_TTL`]).
    pub max_ttl: Duration,
    /// Clock-skew allowance subtracted from `notBefore` ([`DEFAULT_BACKDATE`]).
    pub backdate: Duration,
    /// Lifetime of an unused bootstrap token ([`DEFAULT_BOOTSTRAP_TOKEN_TTL`]).
    pub bootstrap_token_ttl: Duration,
}

impl CaConfig {
    /// The defaults above for `trust_domain`, keys from `root`.
    pub fn new(trust_domain: TrustDomain, root: RootSource) -> Self {
        CaConfig {
            trust_domain,
            root,
            default_ttl: DEFAULT_CERT_TTL,
            max_ttl: DEFAULT_MAX_CERT_TTL,
            backdate: DEFAULT_BACKDATE,
            bootstrap_token_ttl: DEFAULT_BOOTSTRAP_TOKEN_TTL,
        }
    }
}

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The key material could not be loaded or generated.
    #[error("CA key material: {0}")]
    Root(#[from] RootError),
    /// A TTL setting is out of range.
    #[error("CA configuration: {0}")]
    Config(String),
    /// The loaded authority cannot issue a certificate that verifies against its own roots
    /// (wrong `cert-chain.pem`, mismatched files).
    #[error("CA self-check failed: a probe certificate does not verify against root-cert.pem: {0}")]
    SelfCheck(String),
}

/// Why a certificate request was not signed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A requested validity beyond the CA's maximum.
    #[error("requested validity of {}s is longer than the maximum of {}s", requested.as_secs(), max.as_secs())]
    TtlTooLong {
        /// What was asked.
        requested: Duration,
        /// The CA's maximum.
        max: Duration,
    },
    /// The CSR failed its checks, or signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// The certificate authority: key material, settings and the bootstrap token registry. `Debug`
/// shows neither keys nor tokens.
#[derive(Debug)]
pub struct Ca {
    config: CaConfig,
    authority: Authority,
    tokens: TokenRegistry,
}

impl Ca {
    /// Loads or creates the key material and checks that a probe certificate verifies
    /// against the roots before anything is served.
    pub fn new(config: CaConfig) -> Result<Self, CaError> {
        if config.default_ttl < MIN_CERT_TTL || config.default_ttl > config.max_ttl {
            return Err(CaError::Config(format!(
                "default TTL {}s must be at least {}s and at most the maximum {}s",
                config.default_ttl.as_secs_f64(),
                MIN_CERT_TTL.as_secs(),
                config.max_ttl.as_secs()
            )));
        }
        let authority = root::load(&config.root, &config.trust_domain)?;
        let tokens = TokenRegistry::new(config.trust_domain.clone(), config.bootstrap_token_ttl);
        let ca = Ca { config, authority, tokens };
        ca.self_check()?;
        info!(trust_domain = %ca.config.trust_domain, default_ttl_s = ca.config.default_ttl.as_secs(), "CA ready");
        Ok(ca)
    }

    fn self_check(&self) -> Result<(), CaError> {
        let probe = Identity::new(self.config.trust_domain.clone(), "istio-system", "paymesh-ca-self-check")
            .map_err(|e| CaError::SelfCheck(e.to_string()))?;
        let key = PrivateKey::generate().map_err(|e| CaError::SelfCheck(e.to_string()))?;
        let credential = self
            .issue_local(&probe, &[], key, MIN_CERT_TTL * 60)
            .map_err(|e| CaError::SelfCheck(e.to_string()))?;
        let found = self
            .authority
            .trust()
            .verify(credential.chain(), SystemTime::now())
            .map_err(|e| CaError::SelfCheck(e.to_string()))?;
        if found != probe {
            return Err(CaError::SelfCheck(format!("probe came back as {found}")));
        }
        Ok(())
    }

    /// The only trust domain this CA signs for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// The roots every workload must trust.
    pub fn trust_bundle(&self) -> &TrustBundle {
        self.authority.trust()
    }

    /// A single-use token with which `pod`'s sidecar can get its first certificate for
    /// `identity` (local mode: the supervisor calls this before starting the sidecar).
    pub fn issue_bootstrap_token(
        &self,
        identity: &Identity,
        pod: &PodName,
    ) -> Result<BootstrapToken, TokenError> {
        let token = self.tokens.issue(identity, pod)?;
        info!(%identity, %pod, "CA issued a bootstrap token");
        Ok(token)
    }

    pub(crate) fn tokens(&self) -> &TokenRegistry {
        &self.tokens
    }

    /// Signs `csr_pem` for the authenticated `caller`, valid `requested_ttl` (the default when
    /// `None`), after the checks of [`Authority::sign_csr`].
    pub fn sign(
        &self,
        caller: &Identity,
        csr_pem: &str,
        requested_ttl: Option<Duration>,
    ) -> Result<IssuedChain, RequestError> {
        let ttl = self.ttl(requested_ttl)?;
        Ok(self.authority.sign_csr(csr_pem, caller, &self.validity(ttl))?)
    }

    /// A credential for the control plane's own use (its serving certificate), signed over a
    /// key made in this process, with extra DNS names.
    pub fn issue_local(
        &self,
        identity: &Identity,
        dns_names: &[String],
        key: PrivateKey,
        ttl: Duration,
    ) -> Result<Credential, SignError> {
        self.authority.issue(identity, dns_names, key, &self.validity(ttl))
    }

    fn ttl(&self, requested: Option<Duration>) -> Result<Duration, RequestError> {
        match requested {
            None => Ok(self.config.default_ttl),
            Some(requested) if requested > self.config.max_ttl => {
                Err(RequestError::TtlTooLong { requested, max: self.config.max_ttl })
            }
            Some(requested) => Ok(requested.max(MIN_CERT_TTL)),
        }
    }

    fn validity(&self, ttl: Duration) -> Validity {
        Validity::from_now(ttl, self.config.backdate)
    }
}
