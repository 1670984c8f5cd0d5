//! Building an [`Index`] from a snapshot, checking it on the way: every name a listener or route
//! refers to exists, addresses are usable, identities parse. Any problem rejects the whole
//! snapshot with a reason (the proxy NACKs it and keeps the old index), so a half-applied config
//! never exists.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use paymesh_api::ProxyConfig;
use paymesh_api::model::{
    Cluster, H2Upgrade, ListenerKind, Protocol, RouteAction, RouteConfig, UpstreamTls, WeightedCluster,
};
use paymesh_tls::{ConfigError, ExpectedIdentities, Identity};

use super::cors::Cors;
use super::matching::{HeaderEditor, MatchError, RouteHeaders, RouteMatcher};
use super::rewrite::Rewrite;
use super::{
    Action, ChainEntry, ClusterEntry, EndpointEntry, GatewayListener, GatewayServerEntry, InboundIndex,
    Index, RouteEntry, RouteTable, VirtualHostEntry, WeightedClusters,
};
use crate::balance::Balancer;
use crate::store::Store;
use crate::transport::pool::{Dial, Keepalive, Pools};
use crate::transport::{Plain, Transport, endpoint_authority};

/// Why a snapshot was rejected.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The snapshot is for another proxy.
    #[error("snapshot is for pod {found}, this proxy is {expected}")]
    WrongNode {
        /// This proxy's pod.
        expected: String,
        /// The snapshot's node.
        found: String,
    },
    /// Two resources of one kind share a name.
    #[error("duplicate {kind} `{name}`")]
    Duplicate {
        /// `cluster`, `route config`, ...
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A reference to a cluster that does not exist.
    #[error("{referrer} refers to unknown cluster `{cluster}`")]
    UnknownCluster {
        /// Who refers to it.
        referrer: String,
        /// The missing cluster.
        cluster: String,
    },
    /// A reference to a route config that does not exist.
    #[error("{referrer} refers to unknown route config `{route}`")]
    UnknownRoute {
        /// Who refers to it.
        referrer: String,
        /// The missing route config.
        route: String,
    },
    /// A forward action without clusters, or whose weights are all zero.
    #[error("route `{route}` forwards nowhere: no cluster has a weight")]
    NoWeight {
        /// The route.
        route: String,
    },
    /// A direct response with a status HTTP does not have.
    #[error("route `{route}` answers with invalid status {status}")]
    BadStatus {
        /// The route.
        route: String,
        /// The status.
        status: u16,
    },
    /// An address that can't be dialed or bound.
    #[error("{what} has unusable address {addr}")]
    BadAddress {
        /// What has it.
        what: String,
        /// The address.
        addr: SocketAddr,
    },
    /// A mutual-TLS cluster with no or an invalid subject alt name.
    #[error("cluster `{cluster}`: {reason}")]
    BadIdentities {
        /// The cluster.
        cluster: String,
        /// What is wrong.
        reason: String,
    },
    /// Two inbound chains claim the same port.
    #[error("inbound port {port} belongs to two chains")]
    PortConflict {
        /// The port.
        port: u16,
    },
    /// A route's conditions or header edits do not compile.
    #[error("route `{route}` of virtual host `{vhost}`: {source}")]
    BadRoute {
        /// The route.
        route: String,
        /// Its virtual host.
        vhost: String,
        /// What is wrong.
        #[source]
        source: MatchError,
    },
    /// A TLS client configuration could not be built.
    #[error("TLS for cluster `{cluster}`: {reason}")]
    Tls {
        /// The cluster.
        cluster: String,
        /// What rustls said.
        reason: String,
    },
}

impl Index {
    /// Checks and indexes `config` for the proxy of pod `pod` at `pod_ip`, taking connection
    /// pools and cluster state from `store`.
    pub fn build(
        config: ProxyConfig,
        pod: &str,
        pod_ip: IpAddr,
        store: &mut Store,
    ) -> Result<Index, IndexError> {
        if config.node.pod != pod {
            return Err(IndexError::WrongNode { expected: pod.to_owned(), found: config.node.pod.clone() });
        }
        let clusters = clusters(&config, store)?;
        let mut routes = HashMap::new();
        let mut port_routes = HashMap::new();
        for route_config in &config.routes {
            let table = Arc::new(route_table(route_config, &clusters)?);
            if let Ok(port) = route_config.name.parse::<u16>() {
                port_routes.insert(port, Arc::clone(&table));
            }
            if routes.insert(route_config.name.clone(), table).is_some() {
                return Err(IndexError::Duplicate { kind: "route config", name: route_config.name.clone() });
            }
        }
        let mut tcp = HashMap::new();
        let mut inbound = None;
        let mut gateways = HashMap::new();
        for listener in &config.listeners {
            match &listener.kind {
                ListenerKind::Outbound { tcp: tcp_routes } => {
                    for route in tcp_routes {
                        let name = format!("TCP route {}:{}", route.hosts.join(","), route.port);
                        let split = weighted_clusters(&clusters, &route.clusters, &name, || name.clone())?;
                        let split = Arc::new(split);
                        for host in &route.hosts {
                            tcp.insert(
                                format!("{}:{}", host.to_ascii_lowercase(), route.port),
                                Arc::clone(&split),
                            );
                        }
                    }
                }
                ListenerKind::Inbound { chains } => {
                    inbound = Some(inbound_index(chains, pod_ip, store.pools())?)
                }
                ListenerKind::Gateway { servers } => {
                    check_addr(&listener.name, listener.address, true)?;
                    let mut entries = Vec::with_capacity(servers.len());
                    for server in servers {
                        let table = routes.get(&server.route).ok_or_else(|| IndexError::UnknownRoute {
                            referrer: format!("gateway server {} on {}", server.gateway, listener.name),
                            route: server.route.clone(),
                        })?;
                        entries.push(GatewayServerEntry {
                            gateway: server.gateway.clone(),
                            hosts: server.hosts.clone(),
                            tls: server.tls.clone(),
                            routes: Arc::clone(table),
                        });
                    }
                    let gateway = GatewayListener { name: listener.name.clone(), servers: entries };
                    if gateways.insert(listener.address, Arc::new(gateway)).is_some() {
                        return Err(IndexError::Duplicate {
                            kind: "listener address",
                            name: listener.address.to_string(),
                        });
                    }
                }
            }
        }
        let inbound = match inbound {
            Some(inbound) => inbound,
            None => inbound_index(&[], pod_ip, store.pools())?,
        };
        store.prune();
        Ok(Index { config: Arc::new(config), port_routes, tcp, inbound, gateways })
    }
}

fn find<'a>(
    clusters: &'a HashMap<String, Arc<ClusterEntry>>,
    name: &str,
    referrer: impl FnOnce() -> String,
) -> Result<&'a Arc<ClusterEntry>, IndexError> {
    clusters
        .get(name)
        .ok_or_else(|| IndexError::UnknownCluster { referrer: referrer(), cluster: name.to_owned() })
}

/// `weighted` resolved against `clusters` (zero weights dropped unless alone); `route` names the
/// owner in errors.
fn weighted_clusters(
    clusters: &HashMap<String, Arc<ClusterEntry>>,
    weighted: &[WeightedCluster],
    route: &str,
    referrer: impl Fn() -> String,
) -> Result<WeightedClusters, IndexError> {
    let mut resolved = Vec::with_capacity(weighted.len());
    for w in weighted.iter().filter(|w| w.weight > 0 || weighted.len() == 1) {
        resolved.push((Arc::clone(find(clusters, &w.cluster, &referrer)?), w.weight.max(1)));
    }
    let total = resolved.iter().map(|(_, w)| *w).fold(0u32, u32::saturating_add);
    if resolved.is_empty() || total == 0 {
        return Err(IndexError::NoWeight { route: route.to_owned() });
    }
    Ok(WeightedClusters { clusters: resolved, total })
}

/// The plaintext transport of `protocol` to `addr`: h2c for HTTP/2 ports, else HTTP/1.1.
fn plain(pools: &mut Pools, protocol: Protocol, addr: SocketAddr, dial: Dial) -> Plain {
    match protocol {
        Protocol::Http2 => Plain::H2(pools.plaintext(addr, dial)),
        _ => Plain::H1(pools.http1(addr, dial)),
    }
}

/// How `cluster`'s pools dial, from its connection pool settings.
fn dial(cluster: &Cluster) -> Dial {
    let pool = &cluster.connection_pool;
    Dial {
        connect_timeout: Duration::from_millis(pool.connect_timeout_ms),
        idle_timeout: pool.idle_timeout_ms.map(Duration::from_millis),
        max_requests_per_connection: pool.max_requests_per_connection,
        keepalive: pool.tcp_keepalive.map(|keepalive| Keepalive {
            time: keepalive.time_ms.map(Duration::from_millis),
            interval: keepalive.interval_ms.map(Duration::from_millis),
            probes: keepalive.probes,
        }),
    }
}

fn check_addr(what: &str, addr: SocketAddr, bind: bool) -> Result<(), IndexError> {
    if addr.port() == 0 || (!bind && addr.ip().is_unspecified()) || addr.ip().is_multicast() {
        return Err(IndexError::BadAddress { what: what.to_owned(), addr });
    }
    Ok(())
}

fn expected_identities(cluster: &Cluster, sans: &[String]) -> Result<ExpectedIdentities, IndexError> {
    let bad = |reason: String| IndexError::BadIdentities { cluster: cluster.name.clone(), reason };
    let identities = sans
        .iter()
        .map(|san| san.parse::<Identity>().map_err(|e| bad(format!("subject alt name `{san}`: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    ExpectedIdentities::any_of(identities)
        .ok_or_else(|| bad("ISTIO_MUTUAL without subject alt names".to_owned()))
}

fn clusters(
    config: &ProxyConfig,
    store: &mut Store,
) -> Result<HashMap<String, Arc<ClusterEntry>>, IndexError> {
    let mut endpoint_sets = HashMap::new();
    for set in &config.endpoints {
        if config.cluster(&set.cluster).is_none() {
            return Err(IndexError::UnknownCluster {
                referrer: "endpoints".to_owned(),
                cluster: set.cluster.clone(),
            });
        }
        if endpoint_sets.insert(set.cluster.as_str(), set).is_some() {
            return Err(IndexError::Duplicate { kind: "endpoints of cluster", name: set.cluster.clone() });
        }
    }
    let mut clusters = HashMap::with_capacity(config.clusters.len());
    for cluster in &config.clusters {
        let expected = match &cluster.tls {
            UpstreamTls::IstioMutual { subject_alt_names } => {
                Some(expected_identities(cluster, subject_alt_names)?)
            }
            UpstreamTls::Disable => None,
        };
        let assignment = endpoint_sets.get(cluster.name.as_str()).map(|set| Arc::clone(set));
        let mut endpoints = Vec::new();
        for endpoint in assignment.as_ref().map_or(&[][..], |set| set.endpoints.as_slice()) {
            let state = store.endpoint(&cluster.name, endpoint.address);
            let pools = store.pools();
            let what = format!("endpoint {} of cluster `{}`", endpoint.pod, cluster.name);
            check_addr(&what, endpoint.address, false)?;
            let transport = match (endpoint.tunnel_port, &expected) {
                (Some(tunnel_port), Some(expected)) => {
                    let tunnel = SocketAddr::new(endpoint.address.ip(), tunnel_port);
                    check_addr(&what, tunnel, false)?;
                    let tls_error = |e: ConfigError| IndexError::Tls {
                        cluster: cluster.name.clone(),
                        reason: e.to_string(),
                    };
                    let h2 = pools.mesh(tunnel, expected, dial(cluster)).map_err(tls_error)?;
                    let http1 = match (cluster.protocol, cluster.h2_upgrade) {
                        (Protocol::Http, H2Upgrade::DoNotUpgrade) => {
                            Some(pools.mesh_http1(tunnel, expected, dial(cluster)).map_err(tls_error)?)
                        }
                        _ => None,
                    };
                    Transport::Mesh { h2, http1 }
                }
                _ => Transport::Plain(plain(pools, cluster.protocol, endpoint.address, dial(cluster))),
            };
            endpoints.push(EndpointEntry { address: endpoint.address, transport, state });
        }
        let http1 = cluster.protocol == Protocol::Http
            && (cluster.h2_upgrade == H2Upgrade::DoNotUpgrade || expected.is_none());
        let balancer = Balancer::new(
            &cluster.lb,
            cluster.outlier_detection.as_ref(),
            assignment.as_ref().map_or(&[][..], |set| set.endpoints.as_slice()),
        );
        let entry = ClusterEntry {
            name: cluster.name.clone(),
            config: Arc::clone(cluster),
            assignment,
            endpoints,
            balancer,
            state: store.cluster(&cluster.name, &cluster.connection_pool, http1),
        };
        if clusters.insert(cluster.name.clone(), Arc::new(entry)).is_some() {
            return Err(IndexError::Duplicate { kind: "cluster", name: cluster.name.clone() });
        }
    }
    Ok(clusters)
}

fn route_table(
    config: &RouteConfig,
    clusters: &HashMap<String, Arc<ClusterEntry>>,
) -> Result<RouteTable, IndexError> {
    let mut hosts = HashMap::new();
    for vhost in &config.virtual_hosts {
        let mut routes = Vec::with_capacity(vhost.routes.len());
        for route in &vhost.routes {
            let action = match &route.action {
                RouteAction::Forward { clusters: weighted } => {
                    let referrer = || format!("route `{}` of virtual host `{}`", route.name, vhost.name);
                    Action::Forward(weighted_clusters(clusters, weighted, &route.name, referrer)?)
                }
                RouteAction::Redirect { redirect } => {
                    StatusCode::from_u16(redirect.status).map_err(|_| IndexError::BadStatus {
                        route: route.name.clone(),
                        status: redirect.status,
                    })?;
                    Action::Redirect(redirect.clone())
                }
                RouteAction::DirectResponse { status, body } => {
                    let status = StatusCode::from_u16(*status)
                        .map_err(|_| IndexError::BadStatus { route: route.name.clone(), status: *status })?;
                    Action::Direct { status, body: Bytes::from(body.clone()) }
                }
            };
            let bad = |source| IndexError::BadRoute {
                route: route.name.clone(),
                vhost: vhost.name.clone(),
                source,
            };
            let matcher = RouteMatcher::compile(&route.matches).map_err(bad)?;
            let headers = RouteHeaders {
                request: HeaderEditor::compile(&route.headers.request).map_err(bad)?,
                response: HeaderEditor::compile(&route.headers.response).map_err(bad)?,
            };
            routes.push(RouteEntry {
                name: route.name.clone(),
                virtual_service: route.virtual_service.clone(),
                matcher,
                headers,
                action,
                policy: route.policy.clone(),
                rewrite: route.rewrite.as_ref().map(Rewrite::compile).transpose().map_err(bad)?,
                mirrors: route
                    .mirrors
                    .iter()
                    .map(|m| {
                        let referrer =
                            || format!("mirror of route `{}` of virtual host `{}`", route.name, vhost.name);
                        Ok((Arc::clone(find(clusters, &m.cluster, referrer)?), m.per_million))
                    })
                    .collect::<Result<_, IndexError>>()?,
                cors: route.cors.as_ref().map(Cors::compile).transpose().map_err(bad)?,
            });
        }
        let entry = Arc::new(VirtualHostEntry::new(vhost.name.clone(), routes));
        for domain in &vhost.domains {
            hosts.entry(domain.to_ascii_lowercase()).or_insert_with(|| Arc::clone(&entry));
        }
    }
    Ok(RouteTable { name: config.name.clone(), hosts })
}

fn inbound_index(
    chains: &[paymesh_api::model::InboundChain],
    pod_ip: IpAddr,
    pools: &mut Pools,
) -> Result<InboundIndex, IndexError> {
    let mut entries = Vec::with_capacity(chains.len());
    let mut by_service_port = HashMap::new();
    let mut by_target_port = HashMap::new();
    for (i, chain) in chains.iter().enumerate() {
        let app = SocketAddr::new(pod_ip, chain.target_port);
        check_addr(&format!("inbound chain {}", chain.cluster), app, false)?;
        if by_target_port.insert(chain.target_port, i).is_some() {
            return Err(IndexError::PortConflict { port: chain.target_port });
        }
        for port in &chain.service_ports {
            if by_service_port.insert(*port, i).is_some() {
                return Err(IndexError::PortConflict { port: *port });
            }
        }
        let app_authority = endpoint_authority(app).ok_or_else(|| IndexError::BadAddress {
            what: format!("inbound chain {}", chain.cluster),
            addr: app,
        })?;
        let transport = plain(pools, chain.protocol, app, Dial::default());
        entries.push(Arc::new(ChainEntry { chain: chain.clone(), app, app_authority, transport }));
    }
    let mut http =
        entries.iter().enumerate().filter(|(_, e)| e.chain.protocol != Protocol::Tcp).map(|(i, _)| i);
    let only_http = match (http.next(), http.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    };
    Ok(InboundIndex { chains: entries, by_service_port, by_target_port, only_http })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use paymesh_api::model::{
        ClusterEndpoints, Endpoint, HeaderEdits, LbPolicy, MeshSettings, Node, ProxyKind, Route, VirtualHost,
        WeightedCluster,
    };
    use paymesh_tls::{CredentialStore, TrustBundle};

    use super::*;
    use crate::balance::{HashInput, Tried};
    use crate::http::Authority;

    const POD_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

    fn store() -> Store {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = params.self_signed(&key).expect("root");
        let trust = TrustBundle::new(vec![root.der().clone()]).expect("trust");
        let identity = "spiffe://cluster.local/ns/test/sa/client".parse().expect("identity");
        Store::new(Pools::new(POD_IP, CredentialStore::new(identity), trust))
    }

    /// A config with a plaintext cluster of two endpoints per name in `clusters`, cluster `i`
    /// routed from outbound port `8000 + i`.
    fn config(clusters: &[&str]) -> ProxyConfig {
        let port = |i: usize| 8000 + u16::try_from(i).expect("few clusters");
        let endpoint = |pod: u8, name: &str| Endpoint {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, pod)), 80),
            tunnel_port: None,
            identity: format!("spiffe://cluster.local/ns/test/sa/{name}"),
            pod: format!("{name}-{pod}"),
            labels: Default::default(),
        };
        let cluster = |name: &&str| Cluster {
            name: (*name).to_owned(),
            service: format!("{name}.test.svc.cluster.local"),
            port: 80,
            subset: None,
            protocol: Protocol::Http,
            h2_upgrade: Default::default(),
            tls: UpstreamTls::Disable,
            lb: LbPolicy::RoundRobin,
            connection_pool: Default::default(),
            outlier_detection: None,
        };
        let route = |(i, name): (usize, &&str)| RouteConfig {
            name: port(i).to_string(),
            virtual_hosts: vec![Arc::new(VirtualHost {
                name: (*name).to_owned(),
                domains: vec!["*".to_owned()],
                routes: vec![Route {
                    name: "default".to_owned(),
                    virtual_service: None,
                    matches: Vec::new(),
                    headers: HeaderEdits::default(),
                    policy: Default::default(),
                    rewrite: None,
                    mirrors: Vec::new(),
                    cors: None,
                    action: RouteAction::Forward {
                        clusters: vec![WeightedCluster { cluster: (*name).to_owned(), weight: 100 }],
                    },
                }],
            })],
        };
        ProxyConfig {
            version: "v".to_owned(),
            node: Node {
                pod: "client-0".to_owned(),
                namespace: "test".to_owned(),
                ip: POD_IP,
                kind: ProxyKind::Sidecar,
                identity: "spiffe://cluster.local/ns/test/sa/client".to_owned(),
            },
            mesh: MeshSettings { trust_domain: "cluster.local".to_owned(), cert_ttl_secs: 3600 },
            listeners: Vec::new(),
            routes: clusters.iter().enumerate().map(route).collect(),
            clusters: clusters.iter().map(|name| Arc::new(cluster(name))).collect(),
            endpoints: clusters
                .iter()
                .map(|name| {
                    let endpoints = vec![endpoint(1, name), endpoint(2, name)];
                    Arc::new(ClusterEndpoints { cluster: (*name).to_owned(), endpoints })
                })
                .collect(),
        }
    }

    /// The cluster routed from outbound port `port`.
    fn cluster(index: &Index, port: u16) -> Arc<ClusterEntry> {
        let table = index.port_routes(port).expect("route table");
        let authority = Authority::parse("any", port).expect("authority");
        Arc::clone(crate::route::cluster_of(table, &authority).expect("cluster"))
    }

    /// The endpoint `cluster` picks for a plain first attempt.
    fn pick(cluster: &ClusterEntry) -> Option<usize> {
        let headers = http::HeaderMap::new();
        let input = HashInput { headers: &headers, query: None, source: POD_IP, generated_cookie: None };
        cluster.pick(&input, Tried::default())
    }

    #[test]
    fn cluster_state_is_kept_across_a_push_that_keeps_the_cluster_and_dropped_with_it() {
        let mut store = store();
        let first = Index::build(config(&["a", "b"]), "client-0", POD_IP, &mut store).expect("first");
        let (a, b) = (cluster(&first, 8000), cluster(&first, 8001));
        assert_eq!([pick(&a), pick(&a), pick(&a)], [Some(0), Some(1), Some(0)]);
        assert_eq!(pick(&b), Some(0));

        // A push without `b`: `a` keeps its rotation, the endpoint metadata comes along.
        let second = Index::build(config(&["a"]), "client-0", POD_IP, &mut store).expect("second");
        let kept = cluster(&second, 8000);
        assert!(Arc::ptr_eq(&kept.state, &a.state));
        assert_eq!(pick(&kept), Some(1));
        assert_eq!(kept.endpoint_meta(1).map(|e| e.pod.as_str()), Some("a-2"));

        // Once nothing holds the old index, `b`'s state is gone: it comes back fresh.
        drop((first, a, b));
        let third = Index::build(config(&["a", "b"]), "client-0", POD_IP, &mut store).expect("third");
        assert!(Arc::ptr_eq(&cluster(&third, 8000).state, &kept.state));
        assert_eq!(pick(&cluster(&third, 8001)), Some(0), "b restarts its rotation");
    }
}
