//! Bootstrap tokens: how a proxy proves its identity before it has a certificate (local mode).
//!
//! The supervisor asks the CA for a token per pod ([`TokenRegistry::issue`]) and hands it to
//! that pod's sidecar; the sidecar sends it once as `authorization: Bearer <token>` with its
//! first CSR. A token is random (256 bits), bound to one identity and one pod, single use and
//! short-lived. The registry keeps only SHA-256 digests, so a memory dump of the CA can't replay
//! a token, and remembers spent and expired ones for a while so a reuse is logged as such.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use paymesh_api::ca::BootstrapToken;
use paymesh_tls::{Identity, TrustDomain};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

/// What every token starts with, so secret scanners and humans recognise one.
const TOKEN_PREFIX: &str = "pmbt_";

/// Random bytes per token.
const TOKEN_BYTES: usize = 32;

/// Why a token was not issued or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The identity is outside the CA's trust domain.
    #[error("cannot issue a bootstrap token for {identity}: the CA signs only trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The identity asked for.
        identity: Box<Identity>,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// The system random generator failed.
    #[error("no randomness for a bootstrap token")]
    Random,
    /// Not a token this CA issued (forged, mistyped, or forgotten long ago).
    #[error("bootstrap token is unknown")]
    Unknown,
    /// Issued, but its lifetime is over.
    #[error("bootstrap token of pod {pod} has expired")]
    Expired {
        /// The pod it was issued for.
        pod: PodName,
    },
    /// Issued and already spent: tokens are single use.
    #[error("bootstrap token of pod {pod} was already used")]
    Reused {
        /// The pod it was issued for.
        pod: PodName,
    },
}

/// The pod a token was issued for (`<namespace>/<name>`), for logs and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName(String);

impl PodName {
    /// The pod `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        PodName(format!("{namespace}/{name}"))
    }
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a redeemed token vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    /// The identity the token was issued for.
    pub identity: Identity,
    /// The pod it was issued to.
    pub pod: PodName,
}

struct Entry {
    identity: Identity,
    pod: PodName,
    expires: Instant,
    used: bool,
}

/// The CA's outstanding bootstrap tokens.
pub struct TokenRegistry {
    trust_domain: TrustDomain,
    ttl: Duration,
    random: SystemRandom,
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl TokenRegistry {
    /// A registry issuing tokens for `trust_domain` that live `ttl`.
    pub fn new(trust_domain: TrustDomain, ttl: Duration) -> Self {
        TokenRegistry { trust_domain, ttl, random: SystemRandom::new(), entries: Mutex::new(HashMap::new()) }
    }

    /// A fresh single-use token proving `identity` for `pod`, valid for the registry's TTL.
    pub fn issue(&self, identity: &Identity, pod: &PodName) -> Result<BootstrapToken, TokenError> {
        self.issue_at(identity, pod, Instant::now())
    }

    fn issue_at(
        &self,
        identity: &Identity,
        pod: &PodName,
        now: Instant,
    ) -> Result<BootstrapToken, TokenError> {
        if identity.trust_domain() != &self.trust_domain {
            return Err(TokenError::ForeignTrustDomain {
                identity: Box::new(identity.clone()),
                trust_domain: self.trust_domain.clone(),
            });
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        self.random.fill(&mut bytes).map_err(|_| TokenError::Random)?;
        let secret = format!("{TOKEN_PREFIX}{}", hex(&bytes));
        let entry =
            Entry { identity: identity.clone(), pod: pod.clone(), expires: now + self.ttl, used: false };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.forget_stale(&mut entries, now);
        entries.insert(fingerprint(&secret), entry);
        Ok(BootstrapToken::new(secret))
    }

    /// Spends `presented`: the identity it vouches for, once. Every later presentation fails
    /// with [`TokenError::Reused`].
    pub fn redeem(&self, presented: &str) -> Result<Redeemed, TokenError> {
        self.redeem_at(presented, Instant::now())
    }

    fn redeem_at(&self, presented: &str, now: Instant) -> Result<Redeemed, TokenError> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.forget_stale(&mut entries, now);
        let entry = entries.get_mut(&fingerprint(presented)).ok_or(TokenError::Unknown)?;
        if entry.used {
            return Err(TokenError::Reused { pod: entry.pod.clone() });
        }
        if now >= entry.expires {
            return Err(TokenError::Expired { pod: entry.pod.clone() });
        }
        entry.used = true;
        Ok(Redeemed { identity: entry.identity.clone(), pod: entry.pod.clone() })
    }

    /// Drops entries one TTL past their expiry: until then a late presentation is reported as
    /// expired or reused rather than unknown.
    fn forget_stale(&self, entries: &mut HashMap<Vec<u8>, Entry>, now: Instant) {
        entries.retain(|_, entry| now < entry.expires + self.ttl);
    }
}

impl fmt::Debug for TokenRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outstanding = self.entries.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("TokenRegistry").field("ttl", &self.ttl).field("entries", &outstanding).finish()
    }
}

fn fingerprint(secret: &str) -> Vec<u8> {
    digest(&SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// Lowercase hex, for token secrets and serial numbers in logs.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(ttl: Duration) -> TokenRegistry {
        TokenRegistry::new(TrustDomain::default(), ttl)
    }

    fn payment() -> Identity {
        "spiffe://cluster.local/ns/payments/sa/payment-service".parse().expect("valid identity")
    }

    #[test]
    fn a_token_is_redeemed_once_for_its_identity_and_pod() {
        let tokens = registry(Duration::from_secs(60));
        let pod = PodName::new("payments", "payment-service-0");
        let token = tokens.issue(&payment(), &pod).expect("issued");
        assert!(token.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(token.expose().len(), TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
        assert_eq!(format!("{token:?}"), "BootstrapToken(<redacted>)");
        let redeemed = tokens.redeem(token.expose()).expect("first use");
        assert_eq!(redeemed, Redeemed { identity: payment(), pod: pod.clone() });
        assert_eq!(tokens.redeem(token.expose()), Err(TokenError::Reused { pod }));
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let tokens = registry(Duration::from_secs(60));
        let pod = PodName::new("payments", "p-0");
        let real = tokens.issue(&payment(), &pod).expect("issued");
        let mut forged = real.expose().to_owned();
        forged.pop();
        forged.push(if real.expose().ends_with('0') { '1' } else { '0' });
        assert_eq!(tokens.redeem(&forged), Err(TokenError::Unknown));
        assert_eq!(tokens.redeem(""), Err(TokenError::Unknown));
        let foreign: Identity =
            "spiffe://other.domain/ns/payments/sa/payment-service".parse().expect("valid identity");
        let err = tokens.issue(&foreign, &pod).expect_err("foreign trust domain");
        assert!(err.to_string().contains("the CA signs only trust domain cluster.local"), "{err}");
        assert!(tokens.redeem(real.expose()).is_ok(), "the real token is still good after failed guesses");
    }

    #[test]
    fn tokens_expire_and_are_forgotten_one_ttl_later() {
        let ttl = Duration::from_secs(60);
        let tokens = registry(ttl);
        let pod = PodName::new("payments", "p-0");
        let start = Instant::now();
        let token = tokens.issue_at(&payment(), &pod, start).expect("issued");
        assert_eq!(
            tokens.redeem_at(token.expose(), start + ttl),
            Err(TokenError::Expired { pod: pod.clone() })
        );
        assert_eq!(tokens.redeem_at(token.expose(), start + 2 * ttl), Err(TokenError::Unknown));
        let token = tokens.issue_at(&payment(), &pod, start).expect("issued");
        assert!(tokens.redeem_at(token.expose(), start + ttl - Duration::from_millis(1)).is_ok());
    }

    #[test]
    fn every_token_is_different() {
        let tokens = registry(Duration::from_secs(60));
        let pod = PodName::new("payments", "p-0");
        let a = tokens.issue(&payment(), &pod).expect("issued");
        let b = tokens.issue(&payment(), &pod).expect("issued");
        assert_ne!(a, b);
    }
}
