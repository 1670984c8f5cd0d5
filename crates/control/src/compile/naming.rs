//! Istio's names: a Service's FQDN, a host resolved relative to a namespace, and the
//! authorities (`Host` values) a sidecar's virtual host answers to.

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
