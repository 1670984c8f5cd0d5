//! Istio's names: a Service's FQDN, a host resolved relative to a namespace, and the
//! authorities (`Host` values) a sidecar's virtual host answers to.

use paymesh_config::networking::Host;

use crate::registry::{CLUSTER_DOMAIN, Service};

/// `name.namespace.svc.cluster.local`.
pub fn fqdn(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.{CLUSTER_DOMAIN}")
}

/// A host as a VirtualService or DestinationRule in `namespace` writes it, made fully
/// qualified as Istio's `ResolveShortnameToFQDN` does: a name without a dot gets
/// `.namespace.svc.cluster.local`; anything with a dot, `*` and IP addresses stay as written.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host == "*" || host.contains('.') || host.contains(':') {
        host.to_owned()
    } else {
        fqdn(host, namespace)
    }
}

/// The host names a client in `client_namespace` may use for `service`, without port, in
/// Istio's order: the FQDN, the short name (same namespace only), `name.ns`, `name.ns.svc`.
pub fn host_names(service: &Service, client_namespace: &str) -> Vec<String> {
    let mut names = vec![service.hostname.clone()];
    if service.namespace == client_namespace {
        names.push(service.name.clone());
    }
    names.push(format!("{}.{}", service.name, service.namespace));
    names.push(format!("{}.{}.svc", service.name, service.namespace));
    names
}

/// The virtual host domains of `service` port `port` for a client in `client_namespace`:
/// each host name of [`host_names`], without and with `:port`.
pub fn domains(service: &Service, port: u16, client_namespace: &str) -> Vec<String> {
    host_names(service, client_namespace)
        .into_iter()
        .flat_map(|name| {
            let with_port = format!("{name}:{port}");
            [name, with_port]
        })
        .collect()
}

/// Of `candidates` (a resolved host each), the one for `host` as Istio picks it: the exact
/// host first, else the most specific wildcard covering it (`*.payments.svc.cluster.local`
/// before `*.local` before `*`); among equals, the first.
pub fn most_specific<T>(host: &str, candidates: impl IntoIterator<Item = (String, T)>) -> Option<T> {
    let wanted = Host::new(host);
    let mut best: Option<(usize, T)> = None;
    for (candidate, value) in candidates {
        let candidate = Host::new(candidate);
        let rank = if candidate.as_str() == host {
            usize::MAX
        } else if candidate.is_wildcard() && wanted.subset_of(&candidate) {
            candidate.as_str().len()
        } else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| rank > *b) {
            best = Some((rank, value));
        }
    }
    best.map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::most_specific;

    #[test]
    fn exact_host_beats_wildcards_and_longer_wildcards_win() {
        let host = "account.payments.svc.cluster.local";
        let candidates = || {
            vec![
                ("*".to_owned(), 1),
                ("*.payments.svc.cluster.local".to_owned(), 2),
                ("*.local".to_owned(), 3),
                ("ledger.payments.svc.cluster.local".to_owned(), 4),
            ]
        };
        assert_eq!(most_specific(host, candidates()), Some(2));
        let mut with_exact = candidates();
        with_exact.push((host.to_owned(), 5));
        assert_eq!(most_specific(host, with_exact), Some(5));
        assert_eq!(most_specific("a.b.example.com", candidates()), Some(1));
        assert_eq!(most_specific("x.example.com", vec![("*.local".to_owned(), 1)]), None);
    }
}
