//! Who is asking the CA: the identity a request proves, before any CSR is looked at.
//!
//! Two ways in, tried in this order (as Istio tries its client-certificate authenticator
//! before its token authenticators):
//! 1. rotation: a mesh certificate presented in the TLS handshake. rustls already verified the
//!    chain and trust domain at handshake time; here the leaf is checked again against the
//!    clock, because one HTTP/2 connection outlives the certificate that opened it;
//! 2. bootstrap: `authorization: Bearer <token>`, spent in the [`TokenRegistry`].

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use paymesh_tls::{CertError, Identity, LeafInfo, TrustDomain};
use rustls_pki_types::CertificateDer;

use super::token::{Redeemed, TokenError, TokenRegistry, hex};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A proxy's first request, vouched for by its bootstrap token.
    Bootstrap(Redeemed),
    /// A proxy rotating: its current mesh certificate.
    Certificate(LeafInfo),
}

impl Caller {
    /// The identity the caller proved.
    pub fn identity(&self) -> &Identity {
        match self {
            Caller::Bootstrap(redeemed) => &redeemed.identity,
            Caller::Certificate(leaf) => &leaf.identity,
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Bootstrap(redeemed) => {
                write!(f, "{} (bootstrap token of pod {})", redeemed.identity, redeemed.pod)
            }
            Caller::Certificate(leaf) => {
                write!(f, "{} (certificate serial {})", leaf.identity, hex(&leaf.serial))
            }
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Neither a client certificate nor a bearer token.
    #[error("no client certificate and no `authorization: Bearer` token")]
    Missing,
    /// An `authorization` value that is not `Bearer <token>`.
    #[error("`authorization` metadata is not `Bearer <token>`")]
    MalformedAuthorization,
    /// The bearer token was refused.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The client certificate names no usable identity.
    #[error("client certificate: {0}")]
    Certificate(#[from] CertError),
    /// The client certificate is outside its validity window now.
    #[error(
        "client certificate of {identity} is not valid now (valid from unix time {not_before} to {not_after})"
    )]
    NotValidNow {
        /// Whose certificate.
        identity: Box<Identity>,
        /// Start of validity, seconds since the epoch.
        not_before: u64,
        /// End of validity, seconds since the epoch.
        not_after: u64,
    },
    /// A client certificate of another trust domain.
    #[error("client certificate of {identity} is outside trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// Whose certificate.
        identity: Box<Identity>,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
}

/// Names the caller of one request from its TLS peer certificates (leaf first) and its
/// `authorization` metadata value.
pub(crate) fn authenticate(
    trust_domain: &TrustDomain,
    tokens: &TokenRegistry,
    peer_certs: Option<&[CertificateDer<'_>]>,
    authorization: Option<&[u8]>,
    now: SystemTime,
) -> Result<Caller, AuthError> {
    if let Some(leaf) = peer_certs.and_then(<[_]>::first) {
        let leaf = LeafInfo::parse(leaf)?;
        if !leaf.is_valid_at(now) {
            return Err(AuthError::NotValidNow {
                identity: Box::new(leaf.identity),
                not_before: unix(leaf.not_before),
                not_after: unix(leaf.not_after),
            });
        }
        if leaf.identity.trust_domain() != trust_domain {
            return Err(AuthError::ForeignTrustDomain {
                identity: Box::new(leaf.identity),
                trust_domain: trust_domain.clone(),
            });
        }
        return Ok(Caller::Certificate(leaf));
    }
    let value = authorization.ok_or(AuthError::Missing)?;
    let token = bearer(value).ok_or(AuthError::MalformedAuthorization)?;
    Ok(Caller::Bootstrap(tokens.redeem(token)?))
}

/// The token of `Bearer <token>` (scheme case-insensitive, as RFC 7235 says).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ca::token::PodName;

    #[test]
    fn bearer_values() {
        assert_eq!(bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"abc"), None);
        assert_eq!(bearer(&[0xff, 0x20, 0x41]), None);
    }

    #[test]
    fn tokens_authenticate_once_and_nothing_is_refused() {
        let td = TrustDomain::default();
        let tokens = TokenRegistry::new(td.clone(), Duration::from_secs(60));
        let identity: Identity =
            "spiffe://cluster.local/ns/payments/sa/saga-service".parse().expect("valid identity");
        let token = tokens.issue(&identity, &PodName::new("payments", "saga-0")).expect("issued");
        let header = format!("Bearer {}", token.expose());
        let now = SystemTime::now();
        let caller = authenticate(&td, &tokens, None, Some(header.as_bytes()), now).expect("first use");
        assert_eq!(caller.identity(), &identity);
        assert_eq!(caller.to_string(), format!("{identity} (bootstrap token of pod payments/saga-0)"));
        let again = authenticate(&td, &tokens, None, Some(header.as_bytes()), now).expect_err("second use");
        assert_eq!(again.to_string(), "bootstrap token of pod payments/saga-0 was already used");
        let none = authenticate(&td, &tokens, None, None, now).expect_err("nothing");
        assert!(matches!(none, AuthError::Missing));
        let basic = authenticate(&td, &tokens, None, Some(b"Basic eA=="), now).expect_err("basic");
        assert!(matches!(basic, AuthError::MalformedAuthorization));
    }
}
