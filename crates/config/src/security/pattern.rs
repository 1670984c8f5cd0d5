//! The values AuthorizationPolicy matches on, parsed as Istio parses them: wildcard string
//! patterns (`*`, `prefix*`, `*suffix`), request paths (patterns or `{*}`/`{**}` templates),
//! peer principals (`cluster.local/ns/NS/sa/SA`), service accounts (`NS/SA` or `SA`) and IP
//! blocks (CIDRs, a bare address meaning /32 or /128).
//!
//! Each parses from its YAML string and fails with the wording of Istio's webhook, so a bad
//! entry is reported at its own list index.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::LazyLock;

use ipnet::IpNet;
use regex::Regex;
use serde::{Deserialize, Deserializer};

/// Why an AuthorizationPolicy value did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("empty value not allowed")]
    Empty,
    #[error("bad CIDR range ({0}): {1}")]
    Cidr(String, String),
    #[error("bad IP address ({0})")]
    Ip(String),
    #[error("bad port ({0})")]
    Port(String),
    #[error("invalid or unsupported path template {0:?}")]
    PathTemplate(String),
    #[error("invalid service account {0:?}: wildcards are not supported")]
    ServiceAccountWildcard(String),
    #[error("invalid service account {0:?}: must be \"name\" or \"namespace/name\"")]
    ServiceAccountShape(String),
}

/// Implements `Deserialize` from a YAML string through `FromStr`.
macro_rules! deserialize_from_str {
    ($($ty:ty),+) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )+};
}
deserialize_from_str!(Pattern, PathPattern, Principal, ServiceAccountRef, IpBlock, Port);

/// A string matched as Istio matches AuthorizationPolicy values: `*` alone matches any
/// non-empty value, a leading `*` a suffix, a trailing `*` a prefix, anything else exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    Any,
    Prefix(String),
    Suffix(String),
    Exact(String),
}

impl Pattern {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => !value.is_empty(),
            Pattern::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Pattern::Suffix(suffix) => value.ends_with(suffix.as_str()),
            Pattern::Exact(exact) => value == exact,
        }
    }
}

impl FromStr for Pattern {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s.is_empty() {
            return Err(ValueError::Empty);
        } else if s == "*" {
            Pattern::Any
        } else if let Some(suffix) = s.strip_prefix('*') {
            Pattern::Suffix(suffix.to_owned())
        } else if let Some(prefix) = s.strip_suffix('*') {
            Pattern::Prefix(prefix.to_owned())
        } else {
            Pattern::Exact(s.to_owned())
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Prefix(p) => write!(f, "{p}*"),
            Pattern::Suffix(s) => write!(f, "*{s}"),
            Pattern::Exact(e) => f.write_str(e),
        }
    }
}

/// The operators of a path template: `{*}` (one segment) and `{**}` (any number).
const TEMPLATE_OPERATORS: [&str; 2] = ["{*}", "{**}"];

/// What Istio rejects inside a path template: named variables (`{name}`, `{name=*}`), empty
/// braces, and bare `*`/`**` segments.
static UNSUPPORTED_TEMPLATE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"/\{\w+=\*\*?\}|\{\w*\}|/\*\*?|\*\*?/").ok());

/// A request path to match: a [`Pattern`], or a path template using `{*}` and `{**}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathPattern {
    Pattern(Pattern),
    Template(String),
}

impl FromStr for PathPattern {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !TEMPLATE_OPERATORS.iter().any(|op| s.contains(op)) {
            return s.parse().map(PathPattern::Pattern);
        }
        match &*UNSUPPORTED_TEMPLATE {
            Some(unsupported) if !unsupported.is_match(s) => Ok(PathPattern::Template(s.to_owned())),
            _ => Err(ValueError::PathTemplate(s.to_owned())),
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Pattern(p) => p.fmt(f),
            PathPattern::Template(t) => f.write_str(t),
        }
    }
}

/// A peer principal pattern: the peer's SPIFFE identity without `spiffe://`
/// (`cluster.local/ns/payments/sa/payment-service`), or a wildcard pattern over it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal(pub Pattern);

/// The parts of an exact principal in Istio's `TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT` form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity<'a> {
    pub trust_domain: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
}

impl Principal {
    /// The identity this principal names, when it is exact and in SPIFFE form.
    pub fn identity(&self) -> Option<Identity<'_>> {
        let Pattern::Exact(text) = &self.0 else {
            return None;
        };
        match text.split('/').collect::<Vec<_>>()[..] {
            [trust_domain, "ns", namespace, "sa", service_account]
                if [trust_domain, namespace, service_account].iter().all(|p| !p.is_empty()) =>
            {
                Some(Identity { trust_domain, namespace, service_account })
            }
            _ => None,
        }
    }

    /// Whether a peer with `identity` (`spiffe://` optional) matches.
    pub fn matches(&self, identity: &str) -> bool {
        self.0.matches(identity.strip_prefix("spiffe://").unwrap_or(identity))
    }
}

impl FromStr for Principal {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Principal)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A service account in `source.serviceAccounts`: `namespace/name`, or `name` for the
/// policy's own namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccountRef {
    pub namespace: Option<String>,
    pub name: String,
}

impl FromStr for ServiceAccountRef {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.contains('*') {
            return Err(ValueError::ServiceAccountWildcard(s.to_owned()));
        }
        match s.split('/').collect::<Vec<_>>()[..] {
            [name] => Ok(Self { namespace: None, name: name.to_owned() }),
            [namespace, name] if !namespace.is_empty() && !name.is_empty() => {
                Ok(Self { namespace: Some(namespace.to_owned()), name: name.to_owned() })
            }
            _ => Err(ValueError::ServiceAccountShape(s.to_owned())),
        }
    }
}

impl fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// An IP block: a CIDR range, or a single address (a /32 or /128 range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpBlock(pub IpNet);

impl IpBlock {
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr)
    }
}

impl FromStr for IpBlock {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.contains('/') {
            return s
                .parse()
                .map(IpBlock)
                .map_err(|e: ipnet::AddrParseError| ValueError::Cidr(s.to_owned(), e.to_string()));
        }
        s.parse::<IpAddr>().map(|addr| IpBlock(IpNet::from(addr))).map_err(|_| ValueError::Ip(s.to_owned()))
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A port written as a decimal string (`"8080"`), as AuthorizationPolicy operations write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(pub u16);

impl FromStr for Port {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        s.parse().map(Port).map_err(|_| ValueError::Port(s.to_owned()))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> Pattern {
        s.parse().expect(s)
    }

    #[test]
    fn patterns_follow_istio_wildcards() {
        assert_eq!(pattern("*"), Pattern::Any);
        assert_eq!(pattern("ns-prefix-*"), Pattern::Prefix("ns-prefix-".into()));
        assert_eq!(pattern("*-suffix"), Pattern::Suffix("-suffix".into()));
        assert_eq!(pattern("*mid*"), Pattern::Suffix("mid*".into()));
        assert_eq!(pattern("a*b"), Pattern::Exact("a*b".into()));
        assert!(pattern("*").matches("x") && !pattern("*").matches(""));
        assert!(pattern("/info*").matches("/info/1") && !pattern("/info*").matches("/data"));
        assert!(pattern("*.local").matches("a.local"));
        for s in ["*", "p*", "*s", "e"] {
            assert_eq!(pattern(s).to_string(), s);
        }
        assert_eq!("".parse::<Pattern>(), Err(ValueError::Empty));
    }

    #[test]
    fn path_templates_reject_what_istio_rejects() {
        for ok in ["/path/template/{*}", "/{**}/path/template", "/a/{*}/b/{**}"] {
            assert_eq!(ok.parse::<PathPattern>(), Ok(PathPattern::Template(ok.into())), "{ok}");
        }
        assert_eq!("/prefix/*".parse::<PathPattern>(), Ok(PathPattern::Pattern(pattern("/prefix/*"))));
        for bad in ["/{*}/foo/{bar}", "/{*}/{name=*}", "/{**}/*", "/{}/{*}", "*/{*}"] {
            assert_eq!(
                bad.parse::<PathPattern>().map_err(|e| e.to_string()),
                Err(format!("invalid or unsupported path template {bad:?}")),
                "{bad}"
            );
        }
    }

    #[test]
    fn principals_expose_their_identity() {
        let p: Principal = "cluster.local/ns/payments/sa/payment-service".parse().expect("principal");
        assert_eq!(
            p.identity(),
            Some(Identity {
                trust_domain: "cluster.local",
                namespace: "payments",
                service_account: "payment-service"
            })
        );
        assert!(p.matches("spiffe://cluster.local/ns/payments/sa/payment-service"));
        assert!(!p.matches("cluster.local/ns/payments/sa/other"));
        let any_in_ns: Principal = "cluster.local/ns/payments/*".parse().expect("prefix");
        assert_eq!(any_in_ns.identity(), None);
        assert!(any_in_ns.matches("cluster.local/ns/payments/sa/x"));
        assert_eq!("bar".parse::<Principal>().map(|p| p.identity().is_none()), Ok(true));
    }

    #[test]
    fn service_accounts_are_name_or_namespace_slash_name() {
        assert_eq!(
            "baz/sa".parse(),
            Ok(ServiceAccountRef { namespace: Some("baz".into()), name: "sa".into() })
        );
        assert_eq!("sa".parse(), Ok(ServiceAccountRef { namespace: None, name: "sa".into() }));
        assert_eq!(
            "a/b/c".parse::<ServiceAccountRef>().map_err(|e| e.to_string()),
            Err(r#"invalid service account "a/b/c": must be "name" or "namespace/name""#.into())
        );
        assert_eq!("/sa".parse::<ServiceAccountRef>(), Err(ValueError::ServiceAccountShape("/sa".into())));
        assert_eq!(
            "ns/*".parse::<ServiceAccountRef>(),
            Err(ValueError::ServiceAccountWildcard("ns/*".into()))
        );
    }

    #[test]
    fn ip_blocks_take_cidrs_and_bare_addresses() {
        let block: IpBlock = "1.2.3.4".parse().expect("v4");
        assert_eq!(block.to_string(), "1.2.3.4/32");
        assert_eq!("2001:db8::1".parse::<IpBlock>().map(|b| b.to_string()), Ok("2001:db8::1/128".into()));
        let net: IpBlock = "5.6.0.0/16".parse().expect("cidr");
        assert!(net.contains("5.6.7.8".parse().expect("addr")));
        assert!(!net.contains("5.7.0.1".parse().expect("addr")));
        assert_eq!(
            "1.2.3".parse::<IpBlock>().map_err(|e| e.to_string()),
            Err("bad IP address (1.2.3)".into())
        );
        assert_eq!(
            "5.6.0.0/33".parse::<IpBlock>().map_err(|e| e.to_string()),
            Err("bad CIDR range (5.6.0.0/33): invalid IP address syntax".into())
        );
    }

    #[test]
    fn ports_are_decimal_strings_up_to_65535() {
        assert_eq!("80".parse(), Ok(Port(80)));
        assert_eq!("65536".parse::<Port>().map_err(|e| e.to_string()), Err("bad port (65536)".into()));
        assert_eq!("http".parse::<Port>(), Err(ValueError::Port("http".into())));
    }
}
