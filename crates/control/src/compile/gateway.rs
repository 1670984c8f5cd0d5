//! An ingress gateway's config: one listener per server port of the Gateways that select the
//! gateway pod (on POD_IP:port+offset locally), and per port a route config `http.<listen port>`
//! whose virtual hosts come from the VirtualServices bound to those Gateways.
//!
//! A VirtualService binds with `gateways: [ns/name]` (or `name` in the Gateway's namespace);
//! its hosts must fall under a server's hosts (`ns/host`: `*` any namespace, `.` the Gateway's,
//! else the VirtualService's namespace must be `ns`). VirtualServices sharing a host merge into
//! one virtual host, their routes in load order, as Istio merges them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use paymesh_api::model::{GatewayServer, Listener, ListenerKind, RouteConfig, ServerTls, VirtualHost};
use paymesh_config::networking::{Host, NamespacedHost};
use paymesh_config::resource::{Resource, Spec};

use super::cluster::{ClusterInput, ClusterSet};
use super::{Compiled, Inputs, routes};
use crate::registry::Workload;

/// Compiles the listeners, routes and clusters of the gateway pod `proxy`.
pub fn compile(inputs: &Inputs<'_>, proxy: &Workload, ip: IpAddr) -> Compiled {
    let input = ClusterInput {
        store: inputs.store,
        registry: inputs.registry,
        root_namespace: inputs.root_namespace,
        client_namespace: &proxy.namespace,
    };
    let mut clusters = ClusterSet::default();
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
            let Some(listen) = number.checked_add(inputs.gateway_port_offset) else { continue };
            let route = format!("http.{listen}");
            let tls = server.tls.as_ref().filter(|t| !t.credential_name.is_empty()).map(|t| {
                let dir = inputs.credentials_dir.join(&t.credential_name);
                ServerTls {
                    credential_name: t.credential_name.clone(),
                    cert_file: path_text(&dir.join("tls.crt")),
                    key_file: path_text(&dir.join("tls.key")),
                }
            });
            ports.entry(listen).or_default().push(GatewayServer {
                gateway: gateway_name.clone(),
                hosts: server.hosts.iter().map(|h| h.host().to_string()).collect(),
                tls,
                route,
            });
            let virtual_hosts = hosts_by_port.entry(listen).or_default();
            bound_virtual_hosts(
                inputs,
                &input,
                &mut clusters,
                resource,
                &gateway_name,
                &server.hosts,
                listen,
                virtual_hosts,
            );
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
        .map(|(listen, virtual_hosts)| RouteConfig { name: format!("http.{listen}"), virtual_hosts })
        .collect();
    let (clusters, endpoints) = clusters.into_parts();
    Compiled { listeners, routes, clusters, endpoints }
}

/// Adds to `out` the virtual hosts of the VirtualServices bound to `gateway_name` whose hosts
/// fall under `server_hosts`.
#[allow(clippy::too_many_arguments)]
fn bound_virtual_hosts(
    inputs: &Inputs<'_>,
    input: &ClusterInput<'_>,
    clusters: &mut ClusterSet,
    gateway: &Resource,
    gateway_name: &str,
    server_hosts: &[NamespacedHost],
    listen: u16,
    out: &mut Vec<VirtualHost>,
) {
    for (resource, vs) in inputs.store.typed("VirtualService", Spec::virtual_service) {
        let vs_ns = resource.namespace();
        if !vs.gateways.iter().any(|g| routes::gateway_named(g, vs_ns, gateway_name)) {
            continue;
        }
        let hosts: Vec<&Host> =
            vs.hosts.iter().filter(|h| server_hosts.iter().any(|s| admits(s, gateway, vs_ns, h))).collect();
        if hosts.is_empty() {
            continue;
        }
        let compiled = routes::http_routes(input, clusters, vs, vs_ns, gateway_name, None);
        for host in hosts {
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
