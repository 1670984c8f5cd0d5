//! An ingress gateway's config: one listener per server port of the Gateways that select the
//! gateway pod (on POD_IP:port+offset locally), and per port a route config `http.<listen port>`
//! whose virtual hosts come from the VirtualServices bound to those Gateways.
//!
//! A VirtualService binds with `gateways: [ns/name]` (or `name` in the Gateway's namespace);
//! its hosts must fall under a server's hosts (`ns/host`: `*` any namespace, `.` the Gateway's,
//! else the VirtualService's namespace must be `ns`). The virtual host's domain is the more
//! specific of the VirtualService host and the server host (`*` bound through
//! `api.example.com` answers `api.example.com`), as Istio binds them; a VirtualService reached
//! through two servers of one port is added once. VirtualServices sharing a host merge into
//! one virtual host, their routes in load order, as Istio merges them.
//!
//! TLS: only `SIMPLE` with a `credentialName` (a DNS-1123 subdomain, so it can't climb out of
//! the credentials directory) is served. A server with any other TLS setting is skipped, not
//! served as plaintext; `/debug/configz` lists it as unsupported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use paymesh_api::model::{GatewayServer, Listener, ListenerKind, RouteConfig, ServerTls, VirtualHost};
use paymesh_config::networking::gateway::{ServerTlsMode, ServerTlsSettings};
use paymesh_config::networking::{Host, NamespacedHost};
use paymesh_config::resource::{Resource, Spec};
use paymesh_config::types::is_dns1123_label;

use super::cluster::ClusterSet;
use super::routes::Target;
use super::{Compiled, Inputs, routes};

/// Compiles the listeners, routes and clusters of the gateway pod `inputs.proxy`.
pub fn compile(inputs: &Inputs<'_>, ip: IpAddr) -> Compiled {
    let proxy = inputs.proxy;
    let input = inputs;
    let mut clusters = ClusterSet::default();
    let mut bound = BTreeSet::new();
    let mut ports: BTreeMap<u16, Vec<GatewayServer>> = BTreeMap::new();
    let mut hosts_by_port: BTreeMap<u16, Vec<VirtualHost>> = BTreeMap::new();
    for (resource, gateway) in inputs.store.typed("Gateway", Spec::gateway) {
        if gateway.selector.is_empty()
            || !gateway.selector.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
        {
            continue;
        }
        let gateway_name = format!("{}/{}", resource.namespace(), resource.meta.name);
        for server in &gateway.servers {
            let Some(number) = server.port.as_ref().and_then(|p| u16::try_from(p.number).ok()) else {
                continue;
            };
            let Some(listen) = number.checked_add(inputs.settings.gateway_port_offset) else { continue };
            let route = format!("http.{listen}");
            let tls = match server.tls.as_ref().map(|t| server_tls(t, &inputs.settings.credentials_dir)) {
                None => None,
                Some(Some(tls)) => Some(tls),
                // Not servable as written: skipped (listed in /debug/configz), never plaintext.
                Some(None) => continue,
            };
            ports.entry(listen).or_default().push(GatewayServer {
                gateway: gateway_name.clone(),
                hosts: server.hosts.iter().map(|h| h.host().to_string()).collect(),
                tls,
                route,
            });
            let virtual_hosts = hosts_by_port.entry(listen).or_default();
            let server =
                BoundServer { gateway: resource, name: &gateway_name, hosts: &server.hosts, number, listen };
            bound_virtual_hosts(input, &mut clusters, &server, &mut bound, virtual_hosts);
        }
    }
    let listeners = ports
        .into_iter()
        .map(|(listen, servers)| Listener {
            name: format!("0.0.0.0_{listen}"),
            address: SocketAddr::new(ip, listen),
            kind: ListenerKind::Gateway { servers },
        })
        .collect();
    let routes = hosts_by_port
        .into_iter()
        .map(|(listen, virtual_hosts)| RouteConfig {
            name: format!("http.{listen}"),
            virtual_hosts: virtual_hosts.into_iter().map(Arc::new).collect(),
        })
        .collect();
    let (clusters, endpoints) = clusters.into_parts();
    Compiled { listeners, routes, clusters, endpoints }
}

/// A Gateway server being compiled.
struct BoundServer<'a> {
    gateway: &'a Resource,
    /// `ns/name` of the Gateway.
    name: &'a str,
    hosts: &'a [NamespacedHost],
    /// The server port as written.
    number: u16,
    /// Where it listens (with the local offset).
    listen: u16,
}

/// Adds to `out` the virtual hosts of the VirtualServices bound to `server`'s Gateway whose
/// hosts fall under the server's hosts; `bound` remembers (listen port, VirtualService,
/// domain) so a VirtualService reached through two servers of one port is added once.
fn bound_virtual_hosts(
    input: &Inputs<'_>,
    clusters: &mut ClusterSet,
    server: &BoundServer<'_>,
    bound: &mut BTreeSet<(u16, String, String)>,
    out: &mut Vec<VirtualHost>,
) {
    let listen = server.listen;
    for (resource, vs) in input.store.typed("VirtualService", Spec::virtual_service) {
        let vs_ns = resource.namespace();
        if !vs.gateways.iter().any(|g| routes::gateway_named(g, vs_ns, server.name)) {
            continue;
        }
        let vs_key = format!("{vs_ns}/{}", resource.meta.name);
        let mut domains: Vec<Host> = Vec::new();
        for host in &vs.hosts {
            for server_host in server.hosts.iter().filter(|s| admits(s, server.gateway, vs_ns, host)) {
                let domain = more_specific(host, &server_host.host());
                if !domains.contains(&domain) && bound.insert((listen, vs_key.clone(), domain.to_string())) {
                    domains.push(domain);
                }
            }
        }
        if domains.is_empty() {
            continue;
        }
        let target = Target { gateway: server.name, listener_port: server.number };
        let compiled = routes::http_routes(input, clusters, resource, vs, target);
        for host in domains {
            let name = format!("{host}:{listen}");
            match out.iter_mut().find(|v| v.name == name) {
                Some(existing) => existing.routes.extend(compiled.iter().cloned()),
                None => out.push(VirtualHost {
                    name,
                    domains: if host.as_str() == "*" {
                        vec!["*".to_owned()]
                    } else {
                        vec![host.to_string(), format!("{host}:{listen}")]
                    },
                    routes: compiled.clone(),
                }),
            }
        }
    }
}

/// Of two overlapping hosts, the one that covers less (`api.example.com` of it and `*`).
fn more_specific(a: &Host, b: &Host) -> Host {
    if a.subset_of(b) { a.clone() } else { b.clone() }
}

/// The TLS termination of a server, when paymesh can serve it: `SIMPLE` with a valid
/// `credentialName` and nothing else to present.
pub fn server_tls(tls: &ServerTlsSettings, credentials_dir: &Path) -> Option<ServerTls> {
    let servable = tls.mode == ServerTlsMode::Simple
        && valid_credential_name(&tls.credential_name)
        && tls.server_certificate.is_empty()
        && tls.private_key.is_empty()
        && tls.credential_names.is_empty()
        && tls.tls_certificates.is_empty();
    if !servable {
        return None;
    }
    let dir = credentials_dir.join(&tls.credential_name);
    Some(ServerTls {
        credential_name: tls.credential_name.clone(),
        cert_file: path_text(&dir.join("tls.crt")),
        key_file: path_text(&dir.join("tls.key")),
    })
}

/// A Kubernetes Secret name: a DNS-1123 subdomain (dot-separated labels, at most 253
/// characters), so never `..`, `/` or an absolute path.
pub fn valid_credential_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

/// Whether a server host (`ns/host`) of `gateway` lets a VirtualService of `vs_namespace`
/// bind `host`.
fn admits(server_host: &NamespacedHost, gateway: &Resource, vs_namespace: &str, host: &Host) -> bool {
    let namespace_ok = match server_host.namespace() {
        None | Some("*") => true,
        Some(".") => vs_namespace == gateway.namespace(),
        Some(ns) => ns == vs_namespace,
    };
    namespace_ok && server_host.host().matches(host)
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::valid_credential_name;

    #[test]
    fn credential_names_are_dns_subdomains_only() {
        for good in ["payments-tls", "a.b-c.d", "x"] {
            assert!(valid_credential_name(good), "{good}");
        }
        let long = "a".repeat(254);
        for bad in ["", "..", "../etc", "/etc/passwd", "a/b", "a..b", ".a", "a.", "-a", "a_b", long.as_str()]
        {
            assert!(!valid_credential_name(bad), "{bad}");
        }
    }
}
