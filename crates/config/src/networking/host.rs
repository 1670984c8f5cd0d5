//! Host names as Istio's networking kinds write them: service names (`reviews`,
//! `reviews.prod.svc.cluster.local`), wildcards (`*`, `*.example.com`), IP addresses, and the
//! `namespace/host` form of Sidecar egress and Gateway server hosts.
//!
//! Hosts decode from any string, so one bad host is a validation message at its field rather
//! than a resource that fails to load; the checks here return Istio's messages.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::types::{is_dns1123_label, is_wildcard_dns1123_label};

/// A host name, possibly wildcarded (`*.example.com`, `*`), as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(transparent)]
pub struct Host(String);

impl Host {
    /// A host name as written.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `*` or `*.suffix` (any leading `*`).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with('*')
    }

    /// Whether the two names overlap: equal, or one wildcard covers the other
    /// (`*.com` and `foo.com`, `*` and anything), as Istio's `host.Name.Matches`.
    pub fn matches(&self, other: &Host) -> bool {
        match (self.is_wildcard(), other.is_wildcard()) {
            (true, true) => {
                let (short, long) = if self.0.len() < other.0.len() { (self, other) } else { (other, self) };
                long.0[1..].ends_with(&short.0[1..])
            }
            (true, false) => other.0.ends_with(&self.0[1..]),
            (false, true) => self.0.ends_with(&other.0[1..]),
            (false, false) => self.0 == other.0,
        }
    }

    /// Whether every name this one covers is covered by `other` (`a.com` ⊂ `*.com`,
    /// `*.a.com` ⊂ `*.com`), as Istio's `host.Name.SubsetOf`.
    pub fn subset_of(&self, other: &Host) -> bool {
        match (self.is_wildcard(), other.is_wildcard()) {
            (true, true) => self.0.len() >= other.0.len() && self.0[1..].ends_with(&other.0[1..]),
            (true, false) => false,
            (false, true) => self.0.ends_with(&other.0[1..]),
            (false, false) => self.0 == other.0,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Host {
    fn from(name: &str) -> Self {
        Self(name.to_owned())
    }
}

/// A host in `namespace/host` form (`istio-system/*`, `./reviews.default.svc.cluster.local`,
/// `*/*.example.com`); Gateways also accept a bare host, meaning any namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "String")]
pub struct NamespacedHost {
    text: String,
    /// Byte offset of the `/`, when there is one.
    slash: Option<usize>,
}

impl NamespacedHost {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The namespace part (`*`, `.`, `~` or a name); `None` for a bare host.
    pub fn namespace(&self) -> Option<&str> {
        self.slash.map(|i| &self.text[..i])
    }

    /// The host part (everything after the first `/`).
    pub fn host(&self) -> Host {
        Host::from(self.slash.map_or(self.text.as_str(), |i| &self.text[i + 1..]))
    }
}

impl From<String> for NamespacedHost {
    fn from(text: String) -> Self {
        let slash = text.find('/');
        Self { text, slash }
    }
}

impl fmt::Display for NamespacedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `text` is an IPv4 or IPv6 address.
pub fn is_ip(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
}

fn dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".to_owned());
    }
    Ok(())
}

fn dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let top = parts.last().copied().unwrap_or_default();
    if !top.is_empty() && top.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!("domain name {domain:?} invalid (label {label:?} invalid)"));
        }
    }
    Ok(())
}

/// A fully-qualified domain name (`ValidateFQDN`); short names like `reviews` pass too.
pub fn validate_fqdn(name: &str) -> Result<(), String> {
    dns1123_preconditions(name)?;
    dns1123_labels(name)
}

/// A domain whose first label may be a wildcard (`ValidateWildcardDomain`).
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!("domain name {domain:?} invalid (label {first:?} invalid)"));
    }
    rest.map_or(Ok(()), dns1123_labels)
}

/// A VirtualService host bound to a gateway: like [`validate_wildcard_domain`], and for TLS
/// routes also the `outbound_.<PORT>_._.<HOSTNAME>` names of AUTO_PASSTHROUGH.
pub fn validate_gateway_bound_domain(sni: bool, domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    if sni && domain.starts_with("outbound_") {
        const FORMAT: &str = "outbound_.<PORT>_._.<HOSTNAME>";
        let parts: Vec<&str> = domain.split('_').collect();
        if parts.len() < 4 {
            return Err(format!("domain name {domain} invalid, should follow '{FORMAT}' format"));
        }
        let port = parts[1].trim_matches('.');
        let hostname = parts[3].trim_matches('.');
        if !port.contains(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {port:?} invalid). should follow {FORMAT} format"
            ));
        }
        if !hostname.contains(|c: char| c.is_ascii_alphabetic()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {hostname:?} invalid). should follow {FORMAT} format"
            ));
        }
        return Ok(());
    }
    validate_wildcard_domain(domain)
}

/// An address or CIDR block (`ValidateIPSubnet`).
pub fn validate_ip_subnet(subnet: &str) -> Result<(), String> {
    if subnet.matches('/').count() == 1 {
        return subnet
            .parse::<ipnet::IpNet>()
            .map(drop)
            .map_err(|_| format!("{subnet} is not a valid CIDR block"));
    }
    if is_ip(subnet) { Ok(()) } else { Err(format!("{subnet} is not a valid IP")) }
}

/// A wildcard anywhere but as the whole first label (`foo*`, `a.*.com`) (`ValidatePartialWildCard`).
pub fn validate_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

/// The host part of a Sidecar egress or Gateway server host.
fn scoped_host_part_problems(hostname: &str, is_gateway: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if hostname != "*" && !hostname.contains('.') {
        problems.push("short names (non FQDN) are not allowed".to_owned());
    }
    if let Err(e) = validate_wildcard_domain(hostname) {
        // Sidecars never accept it; Gateways accept an IP address instead.
        if !is_gateway {
            problems.push(e.clone());
        }
        if !is_ip(hostname) {
            problems.push(e);
        }
    }
    if let Err(e) = validate_partial_wildcard(hostname) {
        problems.push(e);
    }
    problems
}

/// The checks of Istio's `ValidateNamespaceSlashWildcardHostname` for a Sidecar egress host
/// (`is_gateway == false`) or a Gateway server host.
pub fn namespaced_host_problems(host: &NamespacedHost, is_gateway: bool) -> Vec<String> {
    let Some(namespace) = host.namespace() else {
        if is_gateway {
            return scoped_host_part_problems(host.as_str(), true);
        }
        return vec!["host must be of form namespace/dnsName".to_owned()];
    };
    let name = host.host();
    let mut problems = Vec::new();
    if namespace.is_empty() || name.as_str().is_empty() {
        problems.push("config namespace and dnsName in host entry cannot be empty".to_owned());
    }
    let special = if is_gateway { &["*", "."][..] } else { &["*", ".", "~"][..] };
    if !special.contains(&namespace) && !is_dns1123_label(namespace) {
        let kind = if is_gateway { "gateway" } else { "sidecar" };
        problems.push(format!("invalid namespace value {namespace:?} in {kind}"));
    }
    problems.extend(scoped_host_part_problems(name.as_str(), is_gateway));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Host {
        Host::from(s)
    }

    #[test]
    fn matching_follows_istio() {
        assert!(h("foo.com").matches(&h("foo.com")));
        assert!(!h("foo.com").matches(&h("bar.com")));
        assert!(h("*.com").matches(&h("foo.com")));
        assert!(h("bar.com").matches(&h("*.com")));
        assert!(!h("*.foo.com").matches(&h("foo.com")));
        assert!(h("*").matches(&h("foo.com")));
        assert!(h("*").matches(&h("*.com")));
        assert!(h("*.com").matches(&h("*.foo.com")));
    }

    #[test]
    fn subsets_follow_istio() {
        assert!(h("a.com").subset_of(&h("*.com")));
        assert!(h("*.a.com").subset_of(&h("*.com")));
        assert!(!h("*.com").subset_of(&h("*.a.com")));
        assert!(!h("*.com").subset_of(&h("a.com")));
        assert!(h("a.com").subset_of(&h("*")));
    }

    #[test]
    fn domains() {
        for good in ["reviews", "reviews.default.svc.cluster.local", "istio.io.", "*", "*.a.com", "*a.com"] {
            assert_eq!(validate_wildcard_domain(good), Ok(()), "{good}");
        }
        assert_eq!(validate_wildcard_domain(""), Err("empty domain name not allowed".to_owned()));
        assert_eq!(
            validate_wildcard_domain("a.*.com"),
            Err(r#"domain name "*.com" invalid (label "*" invalid)"#.to_owned())
        );
        assert_eq!(
            validate_fqdn("1.2.3.4"),
            Err(r#"domain name "1.2.3.4" invalid (top level domain "4" cannot be all-numeric)"#.to_owned())
        );
        assert_eq!(
            validate_fqdn("a_b.com"),
            Err(r#"domain name "a_b.com" invalid (label "a_b" invalid)"#.to_owned())
        );
        assert_eq!(validate_gateway_bound_domain(true, "outbound_.80_._.e2e.foobar.mesh"), Ok(()));
    }

    #[test]
    fn subnets() {
        assert_eq!(validate_ip_subnet("10.0.0.0/8"), Ok(()));
        assert_eq!(validate_ip_subnet("2001:db8::/32"), Ok(()));
        assert_eq!(validate_ip_subnet("1.2.3.4"), Ok(()));
        assert_eq!(validate_ip_subnet("1.2.3.4/99"), Err("1.2.3.4/99 is not a valid CIDR block".to_owned()));
        assert_eq!(validate_ip_subnet("example"), Err("example is not a valid IP".to_owned()));
    }

    #[test]
    fn namespaced_hosts() {
        let n = |s: &str| NamespacedHost::from(s.to_owned());
        assert_eq!(n("ns/a.com").namespace(), Some("ns"));
        assert_eq!(n("ns/a.com").host(), h("a.com"));
        assert_eq!(n("a.com").namespace(), None);
        assert!(namespaced_host_problems(&n("*/*"), false).is_empty());
        assert!(namespaced_host_problems(&n("~/*"), false).is_empty());
        assert!(namespaced_host_problems(&n("./reviews.default.svc.cluster.local"), false).is_empty());
        assert!(namespaced_host_problems(&n("*.example.com"), true).is_empty());
        assert!(namespaced_host_problems(&n("10.1.2.3"), true).is_empty());
        assert_eq!(namespaced_host_problems(&n("a.com"), false), ["host must be of form namespace/dnsName"]);
        assert_eq!(
            namespaced_host_problems(&n("Bad_NS/a.com"), false),
            [r#"invalid namespace value "Bad_NS" in sidecar"#]
        );
        assert_eq!(
            namespaced_host_problems(&n("ns/reviews"), false),
            ["short names (non FQDN) are not allowed"]
        );
        assert_eq!(
            namespaced_host_problems(&n("ns/foo*.com"), true),
            [
                r#"domain name "foo*.com" invalid (label "foo*" invalid)"#,
                r#"partial wildcard "foo*.com" not allowed"#
            ]
        );
    }
}
