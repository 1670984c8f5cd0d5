//! The per-snapshot lookup structures: built once from a [`ProxyConfig`] (in [`build`]), then
//! read by every request without a lock through an `ArcSwap`.
//!
//! - route tables by name, and by port for the outbound listener (route config `"8083"`);
//!   within a table, virtual hosts by the exact domain strings (`host` and `host:port` forms);
//! - clusters by name, each with its endpoints (their pod, identity and labels as the control
//!   plane sent them), their transports (a pooled connection) and a handle on the cluster's
//!   state in the [`Store`](crate::store::Store);
//! - TCP routes by `host:port`; inbound chains by service port and target port; gateway
//!   listeners by address.
//!
//! Names are resolved to `Arc`s at build time, so a request never looks a cluster up by name.
//! Nothing here changes after the build: runtime state (pools, load-balancer cursors) lives in
//! the store, which outlives the index.

pub mod build;
pub mod cors;
pub mod matching;
pub mod path_index;
pub mod rewrite;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::uri::Authority as UriAuthority;
use paymesh_api::ProxyConfig;
use paymesh_api::model::{
    Cluster, ClusterEndpoints, Endpoint, InboundChain, MtlsMode, Redirect, RoutePolicy, ServerTls,
};

use crate::balance::{Balancer, Endpoints, HashInput, Tried};
use crate::http::Authority;
use crate::outlier::EndpointState;
use crate::store::ClusterState;
use crate::transport::{Plain, Transport};
use cors::Cors;
use rewrite::Rewrite;

pub use build::IndexError;
pub use matching::{RequestView, RouteHeaders, RouteMatcher};
use path_index::PathIndex;

/// Everything a request needs, for one config version.
pub struct Index {
    config: Arc<ProxyConfig>,
    port_routes: HashMap<u16, Arc<RouteTable>>,
    tcp: HashMap<String, Arc<WeightedClusters>>,
    inbound: InboundIndex,
    gateways: HashMap<SocketAddr, Arc<GatewayListener>>,
}

impl Index {
    /// The config this index was built from (for `/config_dump`).
    pub fn config(&self) -> &Arc<ProxyConfig> {
        &self.config
    }

    /// The config version.
    pub fn version(&self) -> &str {
        &self.config.version
    }

    /// The route table of outbound HTTP on `port` (route config named `"<port>"`).
    pub fn port_routes(&self, port: u16) -> Option<&Arc<RouteTable>> {
        self.port_routes.get(&port)
    }

    /// The TCP route for `host:port` (outbound listener): its clusters by weight.
    pub fn tcp_route(&self, authority: &Authority) -> Option<&Arc<WeightedClusters>> {
        self.tcp.get(authority.text()).or_else(|| {
            let with_port = format!("{}:{}", authority.host(), authority.port());
            self.tcp.get(&with_port)
        })
    }

    /// The inbound chains.
    pub fn inbound(&self) -> &InboundIndex {
        &self.inbound
    }

    /// The gateway listener bound at `addr`.
    pub fn gateway(&self, addr: &SocketAddr) -> Option<&Arc<GatewayListener>> {
        self.gateways.get(addr)
    }

    /// Every gateway listener.
    pub fn gateways(&self) -> impl Iterator<Item = (&SocketAddr, &Arc<GatewayListener>)> {
        self.gateways.iter()
    }
}

/// A route config: virtual hosts by domain.
pub struct RouteTable {
    name: String,
    hosts: HashMap<String, Arc<VirtualHostEntry>>,
}

impl RouteTable {
    /// The route config's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The virtual host for `authority`: the exact `host:port` text, else the host alone, else
    /// the `*` catch-all.
    pub fn virtual_host(&self, authority: &Authority) -> Option<&Arc<VirtualHostEntry>> {
        self.hosts
            .get(authority.text())
            .or_else(|| self.hosts.get(authority.host()))
            .or_else(|| self.hosts.get("*"))
    }
}

/// A virtual host with its routes resolved.
pub struct VirtualHostEntry {
    /// The virtual host's name.
    pub name: String,
    /// Routes, first match wins.
    pub routes: Vec<RouteEntry>,
    /// For a large virtual host, the routes each request can select.
    paths: Option<PathIndex>,
}

impl VirtualHostEntry {
    /// The virtual host `name` with `routes`, indexed by literal path and header when there are
    /// many.
    pub fn new(name: String, routes: Vec<RouteEntry>) -> Self {
        let paths = (routes.len() >= path_index::MIN_ROUTES).then(|| {
            let literals: Vec<_> =
                routes.iter().map(|r| r.matcher.path_literals().map(<[_]>::to_vec)).collect();
            PathIndex::new(&literals)
        });
        VirtualHostEntry { name, routes, paths }
    }

    /// The first route whose conditions `req` meets, with its position.
    pub fn route_for(&self, req: &RequestView<'_>) -> Option<(usize, &RouteEntry)> {
        match &self.paths {
            None => self.routes.iter().enumerate().find(|(_, route)| route.matcher.matches(req)),
            Some(paths) => paths
                .candidates(req.path, req.headers)
                .into_iter()
                .map(|i| i as usize)
                .filter_map(|i| self.routes.get(i).map(|route| (i, route)))
                .find(|(_, route)| route.matcher.matches(req)),
        }
    }
}

/// A route with its conditions compiled and its action resolved.
pub struct RouteEntry {
    /// The route's name.
    pub name: String,
    /// The VirtualService it came from (`namespace/name`).
    pub virtual_service: Option<String>,
    /// Which requests it takes.
    pub matcher: RouteMatcher,
    /// Its header edits.
    pub headers: RouteHeaders,
    /// What it does.
    pub action: Action,
    /// Timeout, retries and faults.
    pub policy: RoutePolicy,
    /// Path and authority rewrites.
    pub rewrite: Option<Rewrite>,
    /// Mirror clusters and their shares (parts per million).
    pub mirrors: Vec<(Arc<ClusterEntry>, u32)>,
    /// Its CORS policy.
    pub cors: Option<Cors>,
}

/// A resolved route action.
pub enum Action {
    /// Forward to one of the clusters, by weight.
    Forward(WeightedClusters),
    /// Answer directly.
    Direct {
        /// The status.
        status: StatusCode,
        /// The body.
        body: Bytes,
    },
    /// Answer with a redirect.
    Redirect(Redirect),
}

/// Clusters with weights (total > 0).
pub struct WeightedClusters {
    clusters: Vec<(Arc<ClusterEntry>, u32)>,
    total: u32,
}

impl WeightedClusters {
    /// The clusters and their weights.
    pub fn entries(&self) -> impl Iterator<Item = (&Arc<ClusterEntry>, u32)> {
        self.clusters.iter().map(|(cluster, weight)| (cluster, *weight))
    }

    /// Picks a cluster in proportion to its weight.
    pub fn pick(&self) -> &Arc<ClusterEntry> {
        let first = &self.clusters[0].0;
        if self.clusters.len() == 1 {
            return first;
        }
        let mut ticket = fastrand::u32(0..self.total);
        for (cluster, weight) in &self.clusters {
            if ticket < *weight {
                return cluster;
            }
            ticket -= weight;
        }
        first
    }
}

/// A cluster with its endpoints.
pub struct ClusterEntry {
    /// The cluster's name.
    pub name: String,
    /// The cluster as compiled (service, port, subset, protocol, policies).
    pub config: Arc<Cluster>,
    /// Its endpoints as compiled; `endpoints[i]` is `assignment.endpoints[i]`.
    assignment: Option<Arc<ClusterEndpoints>>,
    endpoints: Vec<EndpointEntry>,
    /// How an endpoint is chosen.
    pub balancer: Balancer,
    /// State that outlives this index.
    pub state: Arc<ClusterState>,
}

impl ClusterEntry {
    /// The position of the endpoint for the next attempt of the request `input` describes, by
    /// the cluster's balancer; `None` when the cluster has no healthy endpoint.
    pub fn pick(&self, input: &HashInput<'_>, tried: Tried) -> Option<usize> {
        self.balancer.pick(self, || self.state.next_turn(), input, tried)
    }

    /// The endpoints' states, in order.
    pub fn states(&self) -> impl Iterator<Item = &EndpointState> {
        self.endpoints.iter().map(|endpoint| &*endpoint.state)
    }

    /// The endpoint at `index`.
    pub fn endpoint(&self, index: usize) -> Option<&EndpointEntry> {
        self.endpoints.get(index)
    }

    /// What the control plane said of the endpoint at `index` (pod, identity, labels).
    pub fn endpoint_meta(&self, index: usize) -> Option<&Endpoint> {
        self.assignment.as_ref()?.endpoints.get(index)
    }
}

impl Endpoints for ClusterEntry {
    fn count(&self) -> usize {
        self.endpoints.len()
    }

    fn state(&self, index: usize) -> &EndpointState {
        &self.endpoints[index].state
    }
}

/// One endpoint and how to reach it.
pub struct EndpointEntry {
    /// Pod IP and target port.
    pub address: SocketAddr,
    /// The connection to use.
    pub transport: Transport,
    /// Requests in flight and outlier detection's view of it.
    pub state: Arc<EndpointState>,
}

/// The inbound listener's chains.
pub struct InboundIndex {
    chains: Vec<Arc<ChainEntry>>,
    by_service_port: HashMap<u16, usize>,
    by_target_port: HashMap<u16, usize>,
    only_http: Option<usize>,
}

/// One inbound chain, with the connection to its app port.
pub struct ChainEntry {
    /// The chain.
    pub chain: InboundChain,
    /// `POD_IP:target_port`.
    pub app: SocketAddr,
    /// `app` as a URI authority, made once.
    pub app_authority: UriAuthority,
    /// The connections to the app.
    pub transport: Plain,
}

impl InboundIndex {
    /// The chain an HTTP request for `port` (its authority's port) goes to: the chain serving
    /// that Service port, else the one with that target port, else the only HTTP chain.
    pub fn for_request(&self, port: Option<u16>) -> Option<&Arc<ChainEntry>> {
        let by_port =
            port.and_then(|p| self.by_service_port.get(&p).or_else(|| self.by_target_port.get(&p)).copied());
        by_port.or(self.only_http).and_then(|i| self.chains.get(i))
    }

    /// The chain whose app listens on `target_port` (CONNECT).
    pub fn for_target(&self, target_port: u16) -> Option<&Arc<ChainEntry>> {
        self.by_target_port.get(&target_port).and_then(|i| self.chains.get(*i))
    }

    /// Whether any chain accepts plaintext (PERMISSIVE or DISABLE).
    pub fn accepts_plaintext(&self) -> bool {
        self.chains.iter().any(|c| c.chain.mtls != MtlsMode::Strict)
    }
}

/// A gateway listener: its servers, in order.
pub struct GatewayListener {
    /// The listener's name.
    pub name: String,
    /// Its servers.
    pub servers: Vec<GatewayServerEntry>,
}

/// A gateway server with its route table resolved.
pub struct GatewayServerEntry {
    /// The `Gateway` resource.
    pub gateway: String,
    /// Hosts it accepts.
    pub hosts: Vec<String>,
    /// TLS termination.
    pub tls: Option<ServerTls>,
    /// Its routes.
    pub routes: Arc<RouteTable>,
}

impl GatewayListener {
    /// The first server whose hosts match `host` (`*`, exact, or `*.suffix`).
    pub fn server_for(&self, host: &str) -> Option<&GatewayServerEntry> {
        self.servers.iter().find(|server| server.hosts.iter().any(|pattern| host_matches(pattern, host)))
    }

    /// The TLS settings of the listener (its first server with TLS).
    pub fn tls(&self) -> Option<&ServerTls> {
        self.servers.iter().find_map(|server| server.tls.as_ref())
    }
}

/// Istio's Gateway host matching, without the `namespace/` prefix: `*`, exact (case-insensitive),
/// or `*.suffix` matching any host ending in `.suffix`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.rsplit_once('/').map_or(pattern, |(_, host)| host);
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len() && host.to_ascii_lowercase().ends_with(&suffix.to_ascii_lowercase())
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}
