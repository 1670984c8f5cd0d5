//! Upstream clusters: a Service port (and DestinationRule subset) with its endpoints and the
//! transport security towards them.
//!
//! TLS follows Istio: the DestinationRule (the client namespace's, else the Service's, else the
//! root namespace's; in each, the exact host before the most specific wildcard) `tls.mode` —
//! subset over rule, port-level over both — `DISABLE` is plaintext to every endpoint,
//! `ISTIO_MUTUAL` mesh mTLS to every endpoint; unset is auto mTLS, decided per endpoint as
//! Istio does: mTLS when the endpoint runs a sidecar and its PeerAuthentication for the target
//! port is not `DISABLE`. [`endpoint_mtls`] is that decision, shared with `paymesh tls-check`.
//! mTLS endpoints are reached through the sidecar inbound port (15006); plaintext ones
//! directly. `SIMPLE`/`MUTUAL` (TLS origination to servers outside the mesh) is not
//! implemented: auto mTLS decides, and `/debug/configz` lists the field as unsupported.
//! `connectionPool.http.h2UpgradePolicy` of the same rule (same precedence) says whether an
//! HTTP port's requests cross the mTLS hop as HTTP/2 (`UPGRADE`) or stay HTTP/1.1 (Istio's
//! default) ([`H2Upgrade`]).

use std::collections::BTreeMap;

use paymesh_api::model::{
    Cluster, ClusterEndpoints, Endpoint, H2Upgrade, MtlsMode, UpstreamTls, outbound_cluster_name,
};
use paymesh_api::ports::PROXY_INBOUND;
use paymesh_config::Store;
use paymesh_config::networking::DestinationRule;
use paymesh_config::networking::destination_rule::traffic_policy::{
    ClientTlsMode, H2UpgradePolicy, PortTrafficPolicy, TrafficPolicy,
};
use paymesh_config::resource::Spec;

use super::cluster_policy::cluster_policy;
use super::naming::{most_specific, resolve_host};
use super::{Inputs, peer_authn};
use crate::registry::{Service, ServicePort};

/// How a client originates connections to a service port, and which rule said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The mode written (`None`: no rule sets one, auto mTLS).
    pub mode: Option<ClientTlsMode>,
    /// `namespace/name` of the DestinationRule that applies, when one does.
    pub rule: Option<String>,
}

/// The DestinationRule a client in `client_namespace` uses for `host` (FQDN): its own
/// namespace's first, then the host's namespace's, then the root namespace's; within one
/// namespace the rule for the exact host, else the most specific wildcard covering it.
pub fn destination_rule<'a>(
    store: &'a Store,
    root_namespace: &str,
    client_namespace: &str,
    host: &str,
    host_namespace: &str,
) -> Option<(String, &'a DestinationRule)> {
    let candidates: Vec<_> = store.typed("DestinationRule", Spec::destination_rule).collect();
    [client_namespace, host_namespace, root_namespace].into_iter().find_map(|ns| {
        let in_ns = candidates
            .iter()
            .filter(|(r, _)| r.namespace() == ns)
            .map(|(r, dr)| (resolve_host(dr.host.as_str(), r.namespace()), (*r, *dr)));
        most_specific(host, in_ns).map(|(r, dr)| (format!("{}/{}", r.namespace(), r.meta.name), dr))
    })
}

/// Whether a client sends mutual TLS to one endpoint, given the DestinationRule's mode:
/// `ISTIO_MUTUAL` always, `DISABLE` never, unset (auto mTLS) when the endpoint runs a sidecar
/// whose PeerAuthentication for the port is not `DISABLE`. `SIMPLE`/`MUTUAL` are not
/// implemented and fall back to auto mTLS.
pub fn endpoint_mtls(mode: Option<ClientTlsMode>, sidecar: bool, peer: MtlsMode) -> bool {
    match mode {
        Some(ClientTlsMode::IstioMutual) => true,
        Some(ClientTlsMode::Disable) => false,
        None | Some(ClientTlsMode::Simple | ClientTlsMode::Mutual) => sidecar && peer != MtlsMode::Disable,
    }
}

/// Istio's name of a client mode as `paymesh tls-check` prints it; `auto` says what auto mTLS
/// decided (`ISTIO_MUTUAL`, `DISABLE`, or both across endpoints).
pub fn client_mode_name(mode: Option<ClientTlsMode>, auto: &str) -> String {
    match mode {
        Some(ClientTlsMode::IstioMutual) => "ISTIO_MUTUAL".to_owned(),
        Some(ClientTlsMode::Disable) => "DISABLE".to_owned(),
        Some(ClientTlsMode::Simple) => "SIMPLE (not implemented)".to_owned(),
        Some(ClientTlsMode::Mutual) => "MUTUAL (not implemented)".to_owned(),
        None => format!("AUTO ({auto})"),
    }
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
    let mode =
        most_specific_setting(dr, subset, port, |p| p.tls.as_ref(), |p| p.tls.as_ref()).map(|t| t.mode);
    ClientTls { mode, rule: Some(rule) }
}

/// Whether `port` of `subset` upgrades HTTP/1.1 to HTTP/2 between sidecars: the most specific
/// `connectionPool` of `dr` decides (as Istio merges it, whole); `DEFAULT` or none is the mesh
/// default, MeshConfig `h2UpgradePolicy`, which paymesh-control does not read: Istio's default
/// for it, `DO_NOT_UPGRADE`, applies (docs/compat.md).
fn h2_upgrade(dr: Option<&DestinationRule>, subset: Option<&str>, port: u16) -> H2Upgrade {
    let pool = dr.and_then(|dr| {
        most_specific_setting(
            dr,
            subset,
            port,
            |p| p.connection_pool.as_ref(),
            |p| p.connection_pool.as_ref(),
        )
    });
    match pool.and_then(|pool| pool.http.as_ref()).map(|http| http.h2_upgrade_policy) {
        Some(H2UpgradePolicy::Upgrade) => H2Upgrade::Upgrade,
        Some(H2UpgradePolicy::DoNotUpgrade | H2UpgradePolicy::Default) | None => H2Upgrade::DoNotUpgrade,
    }
}

/// The first setting found for `port`, most specific first: the subset's traffic policy before
/// the rule's, and in each the port-level settings for `port` before the policy's own.
pub(super) fn most_specific_setting<'a, T>(
    dr: &'a DestinationRule,
    subset: Option<&str>,
    port: u16,
    at_port: impl Fn(&'a PortTrafficPolicy) -> Option<&'a T>,
    at_policy: impl Fn(&'a TrafficPolicy) -> Option<&'a T>,
) -> Option<&'a T> {
    let subset_policy = subset
        .and_then(|name| dr.subsets.iter().find(|s| s.name == name))
        .and_then(|s| s.traffic_policy.as_ref());
    [subset_policy, dr.traffic_policy.as_ref()].into_iter().flatten().find_map(|policy| {
        policy
            .port_level_settings
            .iter()
            .find(|p| p.port.is_some_and(|sel| sel.number == u32::from(port)))
            .and_then(&at_port)
            .or_else(|| at_policy(policy))
    })
}

/// Clusters and their endpoints, built once each per proxy.
#[derive(Debug, Default)]
pub struct ClusterSet {
    built: BTreeMap<String, (Cluster, ClusterEndpoints)>,
}

impl ClusterSet {
    /// The cluster for `port` of `service` (and `subset`), added when new; returns its name.
    pub fn add(
        &mut self,
        input: &Inputs<'_>,
        service: &Service,
        port: &ServicePort,
        subset: Option<&str>,
    ) -> String {
        let name = outbound_cluster_name(port.port, subset, &service.hostname);
        if self.built.contains_key(&name) {
            return name;
        }
        let (root, client) = (input.root_namespace(), input.proxy.namespace.as_str());
        let rule = destination_rule(input.store, root, client, &service.hostname, &service.namespace);
        let subset_labels = subset.map(|s| {
            rule.as_ref().and_then(|(_, dr)| dr.subsets.iter().find(|x| x.name == s)).map(|x| &x.labels)
        });
        let mode = client_tls(input.store, root, client, service, port.port, subset).mode;
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
                let w = ep.workload;
                let auto = !matches!(mode, Some(ClientTlsMode::IstioMutual | ClientTlsMode::Disable));
                let peer = if auto && w.sidecar {
                    peer_authn::resolve(input.store, root, &w.namespace, &w.labels, ep.target_port).mode
                } else {
                    MtlsMode::Permissive
                };
                let mtls = endpoint_mtls(mode, w.sidecar, peer);
                Some(Endpoint {
                    address: std::net::SocketAddr::new(w.ip?, ep.target_port),
                    tunnel_port: mtls.then_some(PROXY_INBOUND),
                    identity: w.identity.clone(),
                    pod: w.name.clone(),
                    labels: w.labels.clone(),
                })
            })
            .collect();
        let mtls: Vec<&Endpoint> = endpoints.iter().filter(|e| e.tunnel_port.is_some()).collect();
        // The proxy needs the identities to expect; without an mTLS endpoint there are none.
        let tls = if !mtls.is_empty() {
            let mut subject_alt_names: Vec<String> = mtls.iter().map(|e| e.identity.clone()).collect();
            subject_alt_names.sort();
            subject_alt_names.dedup();
            UpstreamTls::IstioMutual { subject_alt_names }
        } else {
            UpstreamTls::Disable
        };
        let dr = rule.as_ref().map(|(_, dr)| *dr);
        let policy = cluster_policy(dr, subset, port.port);
        let cluster = Cluster {
            name: name.clone(),
            service: service.hostname.clone(),
            port: port.port,
            subset: subset.map(str::to_owned),
            protocol: port.protocol,
            h2_upgrade: h2_upgrade(dr, subset, port.port),
            tls,
            lb: policy.lb,
            connection_pool: policy.connection_pool,
            outlier_detection: policy.outlier_detection,
        };
        self.built.insert(name.clone(), (cluster, ClusterEndpoints { cluster: name.clone(), endpoints }));
        name
    }

    /// The clusters of every subset the DestinationRule for `service` defines, as Istio builds
    /// them whether or not a route names them (so a route added later finds them warm).
    pub fn add_subsets(&mut self, input: &Inputs<'_>, service: &Service, port: &ServicePort) {
        let (root, client) = (input.root_namespace(), input.proxy.namespace.as_str());
        let Some((_, rule)) =
            destination_rule(input.store, root, client, &service.hostname, &service.namespace)
        else {
            return;
        };
        for subset in &rule.subsets {
            self.add(input, service, port, Some(&subset.name));
        }
    }

    /// The clusters and endpoints, sorted by name.
    pub fn into_parts(self) -> (Vec<Cluster>, Vec<ClusterEndpoints>) {
        self.built.into_values().unzip()
    }
}
