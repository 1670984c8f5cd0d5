//! Upstream clusters: a Service port (and DestinationRule subset) with its endpoints and the
//! transport security towards them.
//!
//! TLS follows Istio: the DestinationRule (the client namespace's, else the Service's, else the
//! root namespace's) `tls.mode` — subset over rule, port-level over both — `DISABLE` is
//! plaintext, `ISTIO_MUTUAL` is mesh mTLS; unset is auto mTLS: mesh mTLS when the endpoints run
//! sidecars. Endpoints with a sidecar are reached through its inbound port (15006).

use std::collections::BTreeMap;

use paymesh_api::model::{Cluster, ClusterEndpoints, Endpoint, LbPolicy, UpstreamTls, outbound_cluster_name};
use paymesh_api::ports::PROXY_INBOUND;
use paymesh_config::Store;
use paymesh_config::networking::DestinationRule;
use paymesh_config::networking::destination_rule::traffic_policy::{ClientTlsMode, TrafficPolicy};
use paymesh_config::resource::Spec;

use super::naming::resolve_host;
use crate::registry::{Registry, Service, ServicePort};

/// How a client originates connections to a service port, and which rule said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The mode written (`None`: no rule sets one, auto mTLS).
    pub mode: Option<ClientTlsMode>,
    /// `namespace/name` of the DestinationRule that applies, when one does.
    pub rule: Option<String>,
}

/// The DestinationRule a client in `client_namespace` uses for `host` (FQDN): its own
/// namespace's first, then the host's namespace's, then the root namespace's.
pub fn destination_rule<'a>(
    store: &'a Store,
    root_namespace: &str,
    client_namespace: &str,
    host: &str,
    host_namespace: &str,
) -> Option<(String, &'a DestinationRule)> {
    let candidates: Vec<_> = store
        .typed("DestinationRule", Spec::destination_rule)
        .filter(|(r, dr)| resolve_host(dr.host.as_str(), r.namespace()) == host)
        .collect();
    [client_namespace, host_namespace, root_namespace].into_iter().find_map(|ns| {
        candidates
            .iter()
            .find(|(r, _)| r.namespace() == ns)
            .map(|(r, dr)| (format!("{}/{}", r.namespace(), r.meta.name), *dr))
    })
}

/// The TLS mode a DestinationRule sets for `port` of `subset`.
pub fn client_tls(
    store: &Store,
    root_namespace: &str,
    client_namespace: &str,
    service: &Service,
    port: u16,
    subset: Option<&str>,
) -> ClientTls {
    let Some((rule, dr)) =
        destination_rule(store, root_namespace, client_namespace, &service.hostname, &service.namespace)
    else {
        return ClientTls { mode: None, rule: None };
    };
    let subset_policy = subset
        .and_then(|name| dr.subsets.iter().find(|s| s.name == name))
        .and_then(|s| s.traffic_policy.as_ref());
    let mode =
        [subset_policy, dr.traffic_policy.as_ref()].into_iter().flatten().find_map(|p| policy_tls(p, port));
    ClientTls { mode, rule: Some(rule) }
}

fn policy_tls(policy: &TrafficPolicy, port: u16) -> Option<ClientTlsMode> {
    let port_level = policy
        .port_level_settings
        .iter()
        .find(|p| p.port.is_some_and(|sel| sel.number == u32::from(port)))
        .and_then(|p| p.tls.as_ref());
    port_level.or(policy.tls.as_ref()).map(|tls| tls.mode)
}

/// Clusters and their endpoints, built once each per proxy.
#[derive(Debug, Default)]
pub struct ClusterSet {
    built: BTreeMap<String, (Cluster, ClusterEndpoints)>,
}

/// What a cluster is built from.
pub struct ClusterInput<'a> {
    /// The resources.
    pub store: &'a Store,
    /// Services and pods.
    pub registry: &'a Registry,
    /// Istio's root namespace.
    pub root_namespace: &'a str,
    /// The namespace of the proxy the cluster is for.
    pub client_namespace: &'a str,
}

impl ClusterSet {
    /// The cluster for `port` of `service` (and `subset`), added when new; returns its name.
    pub fn add(
        &mut self,
        input: &ClusterInput<'_>,
        service: &Service,
        port: &ServicePort,
        subset: Option<&str>,
    ) -> String {
        let name = outbound_cluster_name(port.port, subset, &service.hostname);
        if self.built.contains_key(&name) {
            return name;
        }
        let rule = destination_rule(
            input.store,
            input.root_namespace,
            input.client_namespace,
            &service.hostname,
            &service.namespace,
        );
        let subset_labels = subset.map(|s| {
            rule.as_ref().and_then(|(_, dr)| dr.subsets.iter().find(|x| x.name == s)).map(|x| &x.labels)
        });
        let endpoints: Vec<Endpoint> = input
            .registry
            .endpoints(service, port)
            .into_iter()
            .filter(|ep| match subset_labels {
                None => true,
                // A subset no rule defines selects nothing.
                Some(None) => false,
                Some(Some(labels)) => labels.iter().all(|(k, v)| ep.workload.labels.get(k) == Some(v)),
            })
            .filter_map(|ep| {
                Some(Endpoint {
                    address: std::net::SocketAddr::new(ep.workload.ip?, ep.target_port),
                    tunnel_port: ep.workload.sidecar.then_some(PROXY_INBOUND),
                    identity: ep.workload.identity.clone(),
                    pod: ep.workload.name.clone(),
                    labels: ep.workload.labels.clone(),
                })
            })
            .collect();
        let mode =
            client_tls(input.store, input.root_namespace, input.client_namespace, service, port.port, subset)
                .mode;
        let any_sidecar = endpoints.iter().any(|e| e.tunnel_port.is_some());
        let mutual = match mode {
            Some(ClientTlsMode::IstioMutual) => true,
            Some(ClientTlsMode::Disable) => false,
            // SIMPLE/MUTUAL originate TLS to servers outside the mesh, which the model does
            // not carry yet; auto mTLS decides.
            None | Some(ClientTlsMode::Simple | ClientTlsMode::Mutual) => any_sidecar,
        };
        let tls = if mutual {
            let mut subject_alt_names: Vec<String> = endpoints.iter().map(|e| e.identity.clone()).collect();
            subject_alt_names.sort();
            subject_alt_names.dedup();
            UpstreamTls::IstioMutual { subject_alt_names }
        } else {
            UpstreamTls::Disable
        };
        let cluster = Cluster {
            name: name.clone(),
            service: service.hostname.clone(),
            port: port.port,
            subset: subset.map(str::to_owned),
            protocol: port.protocol,
            tls,
            lb: LbPolicy::RoundRobin,
        };
        self.built.insert(name.clone(), (cluster, ClusterEndpoints { cluster: name.clone(), endpoints }));
        name
    }

    /// The clusters and endpoints, sorted by name.
    pub fn into_parts(self) -> (Vec<Cluster>, Vec<ClusterEndpoints>) {
        self.built.into_values().unzip()
    }
}
