//! A sidecar's config: `virtualOutbound` (the app's HTTP proxy, POD_IP:15001) with one route
//! config per service port and TCP routes, and `virtualInbound` (POD_IP:15006) with one chain
//! per container port that a Service targets, its mTLS mode resolved from PeerAuthentication.
//!
//! The services a sidecar sees are every Service of the mesh, narrowed by the `Sidecar`
//! resource that applies to it (its egress hosts, `ns/host` with `*`, `.` and `~`, each
//! listener's hosts limited to its `port` when it names one), as Istio scopes a proxy's config.
//!
//! A service port's virtual host gets the routes of the mesh-bound VirtualService for its host
//! (exact host first, else the most specific wildcard); only without one does it get the
//! `default` route, so a VirtualService's unmatched requests answer 404 (NR) as in Istio.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use paymesh_api::model::Protocol;
use paymesh_api::model::{
    Cluster, ClusterEndpoints, HeaderEdits, InboundChain, Listener, ListenerKind, Route, RouteAction,
    RouteConfig, TcpRoute, VirtualHost, WeightedCluster, inbound_cluster_name,
};
use paymesh_api::ports::{PROXY_INBOUND, PROXY_OUTBOUND};
use paymesh_config::networking::Host;
use paymesh_config::networking::Sidecar;
use paymesh_config::networking::virtual_service::MESH_GATEWAY;
use paymesh_config::resource::Spec;

use super::cluster::ClusterSet;
use super::naming::{domains, host_names, most_specific, resolve_host};
use super::routes::Target;
use super::{Compiled, Inputs, peer_authn, routes};
use crate::registry::{Service, Workload};

/// Compiles the listeners, routes and clusters of the sidecar of `inputs.proxy`.
pub fn compile(inputs: &Inputs<'_>, ip: std::net::IpAddr) -> Compiled {
    let Outbound { tcp, routes, clusters, endpoints } = outbound(inputs);
    let listeners = listeners(inputs, ip, tcp);
    Compiled { listeners, routes, clusters, endpoints }
}

/// What a sidecar sees of the mesh: the same for every proxy of one scope
/// ([`super::scope`]).
pub struct Outbound {
    /// `virtualOutbound`'s TCP routes.
    pub tcp: Vec<TcpRoute>,
    /// Route configs, one per service port.
    pub routes: Vec<RouteConfig>,
    /// Clusters, sorted by name.
    pub clusters: Vec<Cluster>,
    /// Their endpoints, in the same order.
    pub endpoints: Vec<ClusterEndpoints>,
}

/// The two listeners of the sidecar of `inputs.proxy` at `ip`, `virtualOutbound` with `tcp`.
pub fn listeners(inputs: &Inputs<'_>, ip: std::net::IpAddr, tcp: Vec<TcpRoute>) -> Vec<Listener> {
    vec![
        Listener {
            name: "virtualOutbound".to_owned(),
            address: SocketAddr::new(ip, PROXY_OUTBOUND),
            kind: ListenerKind::Outbound { tcp },
        },
        Listener {
            name: "virtualInbound".to_owned(),
            address: SocketAddr::new(ip, PROXY_INBOUND),
            kind: ListenerKind::Inbound { chains: inbound_chains(inputs, inputs.proxy) },
        },
    ]
}

/// The routes and clusters the sidecar of `inputs.proxy` sees. Reads of the proxy: its
/// namespace, and its labels through the Sidecar resource's `workloadSelector` and the
/// VirtualService matches' `sourceLabels` (what [`super::scope::ScopeKey`] captures).
pub fn outbound(inputs: &Inputs<'_>) -> Outbound {
    let proxy = inputs.proxy;
    let input = inputs;
    let mut clusters = ClusterSet::default();
    let mut route_configs: BTreeMap<u16, Vec<VirtualHost>> = BTreeMap::new();
    let mut tcp = Vec::new();
    let scope = egress_scope(inputs, proxy);
    let mesh_services: Vec<_> = inputs
        .store
        .typed("VirtualService", Spec::virtual_service)
        .filter(|(_, vs)| vs.applies_to_mesh())
        .flat_map(|(r, vs)| vs.hosts.iter().map(move |h| (resolve_host(h.as_str(), r.namespace()), (r, vs))))
        .collect();
    for service in inputs.registry.services() {
        let virtual_service = most_specific(&service.hostname, mesh_services.iter().cloned());
        for port in service.ports.iter().filter(|p| visible(&scope, service, p.port)) {
            let default_cluster = clusters.add(input, service, port, None);
            clusters.add_subsets(input, service, port);
            if port.protocol == Protocol::Tcp {
                let routed = virtual_service.and_then(|(r, vs)| {
                    Some((r, routes::tcp_clusters(input, &mut clusters, r, vs, port.port)?))
                });
                let (clusters, virtual_service) = match routed {
                    Some((r, split)) => (split, Some(format!("{}/{}", r.namespace(), r.meta.name))),
                    None => (vec![WeightedCluster { cluster: default_cluster, weight: 100 }], None),
                };
                tcp.push(TcpRoute {
                    hosts: host_names(service, &proxy.namespace),
                    port: port.port,
                    clusters,
                    virtual_service,
                });
                continue;
            }
            let target = Target { gateway: MESH_GATEWAY, listener_port: port.port };
            let vs_routes = match virtual_service {
                Some((r, vs)) => routes::http_routes(input, &mut clusters, r, vs, target),
                None => vec![Route {
                    headers: HeaderEdits::default(),
                    policy: Default::default(),
                    rewrite: None,
                    mirrors: Vec::new(),
                    cors: None,
                    name: "default".to_owned(),
                    virtual_service: None,
                    matches: Vec::new(),
                    action: RouteAction::Forward {
                        clusters: vec![WeightedCluster { cluster: default_cluster, weight: 100 }],
                    },
                }],
            };
            route_configs.entry(port.port).or_default().push(VirtualHost {
                name: format!("{}:{}", service.hostname, port.port),
                domains: domains(service, port.port, &proxy.namespace),
                routes: vs_routes,
            });
        }
    }
    let routes = route_configs
        .into_iter()
        .map(|(port, virtual_hosts)| RouteConfig {
            name: port.to_string(),
            virtual_hosts: virtual_hosts.into_iter().map(Arc::new).collect(),
        })
        .collect();
    let (clusters, endpoints) = clusters.into_parts();
    Outbound { tcp, routes, clusters, endpoints }
}

/// One egress host of a Sidecar: namespace (`*` any), host, and the listener's port (`None`:
/// every port).
type EgressHost = (String, Host, Option<u16>);

/// Egress hosts of the Sidecar resource applying to `proxy` (`None`: no Sidecar, all services).
fn egress_scope(inputs: &Inputs<'_>, proxy: &Workload) -> Option<Vec<EgressHost>> {
    let sidecars: Vec<_> = inputs.store.typed("Sidecar", Spec::sidecar).collect();
    let pick = |pred: &dyn Fn(&paymesh_config::resource::Resource, &Sidecar) -> bool| {
        sidecars.iter().find(|(r, s)| pred(r, s)).map(|(_, s)| *s)
    };
    let sidecar = pick(&|r, s| {
        r.namespace() == proxy.namespace
            && s.workload_selector
                .as_ref()
                .is_some_and(|sel| !sel.labels.is_empty() && sel.matches(&proxy.labels))
    })
    .or_else(|| pick(&|r, s| r.namespace() == proxy.namespace && s.workload_selector.is_none()))
    .or_else(|| pick(&|r, s| r.namespace() == inputs.root_namespace() && s.workload_selector.is_none()))?;
    let hosts = sidecar
        .egress
        .iter()
        .flat_map(|e| {
            let port = e.port.as_ref().and_then(|p| u16::try_from(p.number).ok()).filter(|p| *p != 0);
            e.hosts.iter().map(move |h| (h, port))
        })
        .filter_map(|(h, port)| {
            let ns = match h.namespace()? {
                "." => proxy.namespace.clone(),
                other => other.to_owned(),
            };
            Some((ns, h.host(), port))
        })
        .collect();
    Some(hosts)
}

fn visible(scope: &Option<Vec<EgressHost>>, service: &Service, port: u16) -> bool {
    let Some(hosts) = scope else { return true };
    hosts.iter().any(|(ns, host, listener_port)| {
        (ns == "*" || *ns == service.namespace)
            && listener_port.is_none_or(|p| p == port)
            && host.matches(&Host::new(service.hostname.as_str()))
    })
}

/// One chain per container port of `proxy` that some Service targets.
fn inbound_chains(inputs: &Inputs<'_>, proxy: &Workload) -> Vec<InboundChain> {
    let mut by_port: BTreeMap<u16, (Vec<u16>, Protocol)> = BTreeMap::new();
    for service in inputs.registry.services().iter().filter(|s| s.selects(proxy)) {
        for port in &service.ports {
            if let Some(target) = proxy.resolve(&port.target) {
                let entry = by_port.entry(target).or_insert_with(|| (Vec::new(), port.protocol));
                entry.0.push(port.port);
            }
        }
    }
    by_port
        .into_iter()
        .map(|(target_port, (mut service_ports, protocol))| {
            service_ports.sort_unstable();
            service_ports.dedup();
            let decision = peer_authn::resolve(
                inputs.store,
                inputs.root_namespace(),
                &proxy.namespace,
                &proxy.labels,
                target_port,
            );
            InboundChain {
                target_port,
                service_ports,
                protocol,
                mtls: decision.mode,
                mtls_policy: decision.policy,
                cluster: inbound_cluster_name(target_port),
            }
        })
        .collect()
}
