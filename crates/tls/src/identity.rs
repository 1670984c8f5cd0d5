//! SPIFFE identities of mesh workloads: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
//!
//! Every identity enters the mesh through [`Identity::from_str`] (a certificate SAN, a CSR, a
//! token request, configuration) and travels as this type, never as a raw string, so a namespace
//! can't be mistaken for a service account and every identity has the one canonical form Istio
//! writes into its certificates.

use std::fmt;
use std::str::FromStr;

/// The URI scheme of every SPIFFE ID.
pub const SPIFFE_SCHEME: &str = "spiffe://";

/// The trust domain Istio (and paymesh) use unless configured otherwise.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// SPIFFE ID spec: a SPIFFE ID is at most 2048 bytes.
const MAX_ID_LEN: usize = 2048;

/// SPIFFE ID spec: a trust domain is at most 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a mesh identity (or a trust domain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The string does not start with `spiffe://`.
    #[error("`{0}` is not a SPIFFE ID: it must start with `spiffe://`")]
    MissingScheme(String),
    /// Longer than the SPIFFE spec allows.
    #[error("SPIFFE ID is {0} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong(usize),
    /// The trust domain is empty, too long, or has a character SPIFFE forbids.
    #[error("invalid trust domain `{domain}`: {reason}")]
    TrustDomain {
        /// The rejected trust domain.
        domain: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The path is not `/ns/<namespace>/sa/<service account>`.
    #[error(
        "SPIFFE ID path `{0}` is not a workload identity: expected `/ns/<namespace>/sa/<service-account>`"
    )]
    NotWorkloadPath(String),
    /// A namespace or service account segment is empty or has a forbidden character.
    #[error("invalid {what} `{segment}`: {reason}")]
    Segment {
        /// `namespace` or `service account`.
        what: &'static str,
        /// The rejected segment.
        segment: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A SPIFFE trust domain (`cluster.local` by default): the authority part of every identity
/// the mesh CA signs. Lowercase letters, digits, `.`, `-` and `_` only, as the SPIFFE spec says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain as written in SPIFFE IDs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        TrustDomain(DEFAULT_TRUST_DOMAIN.to_owned())
    }
}

impl FromStr for TrustDomain {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let reject = |reason| Err(IdentityError::TrustDomain { domain: s.to_owned(), reason });
        if s.is_empty() {
            return reject("it is empty");
        }
        if s.len() > MAX_TRUST_DOMAIN_LEN {
            return reject("it is longer than 255 bytes");
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
        {
            return reject("only lowercase letters, digits, '.', '-' and '_' are allowed");
        }
        Ok(TrustDomain(s.to_owned()))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A workload's identity: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, the
/// only form Istio issues and the only one the mesh accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: TrustDomain,
    namespace: String,
    service_account: String,
}

impl Identity {
    /// The identity of `service_account` in `namespace` under `trust_domain`; the segments
    /// follow the same rules as when parsed.
    pub fn new(
        trust_domain: TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        check_segment("namespace", namespace)?;
        check_segment("service account", service_account)?;
        Ok(Identity {
            trust_domain,
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// The trust domain (the SPIFFE ID's authority).
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

/// SPIFFE path segments: non-empty, not `.` or `..`, letters, digits, `.`, `-`, `_`.
fn check_segment(what: &'static str, segment: &str) -> Result<(), IdentityError> {
    let reject = |reason| Err(IdentityError::Segment { what, segment: segment.to_owned(), reason });
    if segment.is_empty() {
        return reject("it is empty");
    }
    if segment == "." || segment == ".." {
        return reject("`.` and `..` are not allowed");
    }
    if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
        return reject("only letters, digits, '.', '-' and '_' are allowed");
    }
    Ok(())
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_ID_LEN {
            return Err(IdentityError::TooLong(s.len()));
        }
        let rest = s.strip_prefix(SPIFFE_SCHEME).ok_or_else(|| IdentityError::MissingScheme(s.to_owned()))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        let trust_domain = domain.parse()?;
        let mut segments = path.split('/');
        match (segments.next(), segments.next(), segments.next(), segments.next(), segments.next()) {
            (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) => {
                Identity::new(trust_domain, namespace, service_account)
            }
            _ => Err(IdentityError::NotWorkloadPath(format!("/{path}"))),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SPIFFE_SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_canonical_form() {
        let id: Identity =
            "spiffe://cluster.local/ns/payments/sa/payment-service".parse().expect("valid identity");
        assert_eq!(id.trust_domain().as_str(), "cluster.local");
        assert_eq!(id.namespace(), "payments");
        assert_eq!(id.service_account(), "payment-service");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/payments/sa/payment-service");
        let built =
            Identity::new(TrustDomain::default(), "payments", "payment-service").expect("valid segments");
        assert_eq!(built, id);
    }

    #[test]
    fn custom_trust_domain() {
        let id: Identity = "spiffe://prod.example_org/ns/a/sa/b".parse().expect("valid identity");
        assert_eq!(id.trust_domain().as_str(), "prod.example_org");
    }

    #[test]
    fn rejects_what_is_not_a_workload_identity() {
        let cases = [
            ("http://cluster.local/ns/a/sa/b", "must start with `spiffe://`"),
            ("SPIFFE://cluster.local/ns/a/sa/b", "must start with `spiffe://`"),
            ("spiffe://Cluster.local/ns/a/sa/b", "invalid trust domain `Cluster.local`"),
            ("spiffe:///ns/a/sa/b", "invalid trust domain ``: it is empty"),
            ("spiffe://cluster.local", "path `/` is not a workload identity"),
            ("spiffe://cluster.local/ns/a", "path `/ns/a` is not a workload identity"),
            ("spiffe://cluster.local/ns/a/sa/b/extra", "is not a workload identity"),
            ("spiffe://cluster.local/sa/b/ns/a", "is not a workload identity"),
            ("spiffe://cluster.local/ns//sa/b", "invalid namespace ``: it is empty"),
            ("spiffe://cluster.local/ns/a/sa/", "invalid service account ``: it is empty"),
            ("spiffe://cluster.local/ns/../sa/b", "invalid namespace `..`"),
            ("spiffe://cluster.local/ns/a b/sa/b", "invalid namespace `a b`"),
            ("spiffe://cluster.local/ns/a/sa/b?x=1", "invalid service account `b?x=1`"),
            ("spiffe://user@cluster.local/ns/a/sa/b", "invalid trust domain `user@cluster.local`"),
            ("spiffe://cluster.local:8080/ns/a/sa/b", "invalid trust domain `cluster.local:8080`"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Identity>().expect_err("must be refused").to_string();
            assert!(err.contains(want), "{input}: got `{err}`, want `{want}`");
        }
    }

    #[test]
    fn rejects_overlong_ids_and_domains() {
        let long = format!("spiffe://cluster.local/ns/{}/sa/b", "a".repeat(2100));
        assert_eq!(
            long.parse::<Identity>().expect_err("must be refused"),
            IdentityError::TooLong(long.len())
        );
        let domain = "a".repeat(256);
        assert!(matches!(domain.parse::<TrustDomain>(), Err(IdentityError::TrustDomain { .. })));
        assert!("a".repeat(255).parse::<TrustDomain>().is_ok());
    }
}
