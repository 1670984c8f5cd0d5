//! The compiled, proxy-facing config: what one proxy needs, as pure data.
//!
//! The control plane compiles Istio resources and the service registry into one [`ProxyConfig`]
//! per proxy; the proxy indexes it once per snapshot and swaps it in atomically. The shape
//! follows Envoy's (listeners → route configs → virtual hosts → routes → clusters → endpoints)
//! and Istio's names for them (`outbound|8083||account-service.payments.svc.cluster.local`),
//! so `paymesh proxy-config` reads like `istioctl proxy-config`, and traffic management
//! (matches, weights, subsets, retries, faults) slots into [`Route`] and [`Cluster`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod traffic;

pub use traffic::*;

/// Everything one proxy runs with, at one version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// The config version: increases with every change the control plane accepts.
    pub version: String,
    /// The proxy this config was compiled for.
    pub node: Node,
    /// Mesh-wide settings.
    pub mesh: MeshSettings,
    /// Where the proxy accepts traffic.
    pub listeners: Vec<Listener>,
    /// HTTP route tables, referenced by name from listeners.
    pub routes: Vec<RouteConfig>,
    /// Upstream clusters, referenced by name from routes and TCP listeners.
    pub clusters: Vec<Arc<Cluster>>,
    /// The endpoints of each cluster.
    pub endpoints: Vec<Arc<ClusterEndpoints>>,
}

/// The proxy a config is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod IP (locally: its own loopback address).
    pub ip: IpAddr,
    /// Sidecar or gateway.
    pub kind: ProxyKind,
    /// The SPIFFE identity the proxy's certificate carries.
    pub identity: String,
}

/// What a proxy is deployed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// Beside one workload: outbound 15001, inbound 15006.
    Sidecar,
    /// An ingress gateway: Istio `Gateway` servers.
    Gateway,
}

impl ProxyKind {
    /// The name on the wire (`Hello.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Gateway => "gateway",
        }
    }

    /// Parses the wire name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sidecar" => Some(ProxyKind::Sidecar),
            "gateway" => Some(ProxyKind::Gateway),
            _ => None,
        }
    }
}

/// Mesh-wide settings (Istio's MeshConfig subset the proxy needs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshSettings {
    /// The SPIFFE trust domain (`cluster.local`).
    pub trust_domain: String,
    /// Lifetime of workload certificates, in seconds; proxies renew at half-life.
    pub cert_ttl_secs: u64,
}

/// A listener: a port the proxy accepts on and what it does with a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Istio-style name: `virtualOutbound`, `virtualInbound`, `0.0.0.0_8080`.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// What it does.
    pub kind: ListenerKind,
}

/// The kinds of listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "type")]
pub enum ListenerKind {
    /// The app's HTTP proxy (sidecar, 15001): absolute-form HTTP/1.1, h2c, CONNECT. The
    /// authority names the service; HTTP goes through the route config named after the port
    /// (`"8083"`), TCP (CONNECT, or a Service port whose protocol is tcp) through [`TcpRoute`].
    Outbound {
        /// Ports whose Service port protocol is TCP, and the cluster for each `host:port`.
        tcp: Vec<TcpRoute>,
    },
    /// Traffic from other proxies (sidecar, 15006): one chain per workload port.
    Inbound {
        /// The workload's ports and how each is secured.
        chains: Vec<InboundChain>,
    },
    /// An ingress gateway server port (Istio `Gateway.servers`).
    Gateway {
        /// The servers bound to this port.
        servers: Vec<GatewayServer>,
    },
}

/// A TCP service the outbound listener can tunnel to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    /// The host names the authority may use (`db`, `db.ns`, `db.ns.svc.cluster.local`).
    pub hosts: Vec<String>,
    /// The Service port.
    pub port: u16,
    /// Where the bytes go, split by weight per connection (a VirtualService `tcp` route; one
    /// entry: the service itself).
    pub clusters: Vec<WeightedCluster>,
    /// The VirtualService it came from (`namespace/name`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<String>,
}

/// One port of the workload behind an inbound listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundChain {
    /// The container port the app listens on (on the pod IP).
    pub target_port: u16,
    /// The Service ports that map to it (requests name these in their authority).
    pub service_ports: Vec<u16>,
    /// How bytes are carried.
    pub protocol: Protocol,
    /// What peer authentication requires.
    pub mtls: MtlsMode,
    /// The policy that decided `mtls` (`payments/default`, or `mesh default`), for tls-check.
    pub mtls_policy: String,
    /// The inbound cluster (`inbound|8083||`), for stats and config dumps.
    pub cluster: String,
}

/// Peer authentication mode of a port (Istio `PeerAuthentication.MutualTLS.Mode`, resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Only mutual TLS with a mesh certificate.
    Strict,
    /// Mutual TLS or plaintext, told apart from the first bytes.
    Permissive,
    /// Plaintext only.
    Disable,
}

/// How a port's bytes are carried, as Istio selects it: the Service port's `appProtocol`, else
/// its name prefix (`http`, `http2`, `grpc`, `tcp`, ...); unnamed ports are HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP; the app is spoken to in HTTP/1.1.
    Http,
    /// HTTP/2 (also gRPC); the app is spoken to in h2c.
    Http2,
    /// Opaque bytes.
    Tcp,
}

/// One server of an ingress gateway listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayServer {
    /// The `Gateway` resource (`namespace/name`).
    pub gateway: String,
    /// Hosts this server accepts (`*`, `payments.example.com`).
    pub hosts: Vec<String>,
    /// TLS termination, when the server is HTTPS.
    pub tls: Option<ServerTls>,
    /// The route config for its requests.
    pub route: String,
}

/// TLS termination at the gateway (`SIMPLE` mode).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    /// The `credentialName` it came from.
    pub credential_name: String,
    /// PEM certificate chain file (locally `.paymesh/credentials/<name>/tls.crt`).
    pub cert_file: String,
    /// PEM private key file.
    pub key_file: String,
}

/// A named HTTP route table (Envoy RouteConfiguration).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteConfig {
    /// The port number for outbound (`"8083"`), `http.8080` for a gateway.
    pub name: String,
    /// Virtual hosts, matched on the request's authority.
    pub virtual_hosts: Vec<Arc<VirtualHost>>,
}

/// Requests for a set of domains (Envoy VirtualHost).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    /// `account-service.payments.svc.cluster.local:8083`.
    pub name: String,
    /// Authorities that select it, with and without port: `account-service`,
    /// `account-service.payments`, ..., `*` for a catch-all.
    pub domains: Vec<String>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
}

/// One route: where matching requests go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `default`, or the VirtualService route's name.
    pub name: String,
    /// The VirtualService it came from (`namespace/name`); `None` for a service's default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<String>,
    /// Alternatives, any of which selects the route (Istio `HTTPRoute.match`); empty: every
    /// request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// Header edits on the request before it is forwarded and on the response before it is
    /// returned (Istio `HTTPRoute.headers`).
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub headers: HeaderEdits,
    /// What happens to the request.
    pub action: RouteAction,
    /// Timeout, retries and faults.
    #[serde(default)]
    pub policy: RoutePolicy,
    /// Path and authority rewrites before forwarding (Istio `HTTPRoute.rewrite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Copies of the traffic sent elsewhere, answers ignored (Istio `mirror`, `mirrors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// Cross-origin resource sharing (Istio `corsPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

/// A route's CORS policy: which origins may call, with what, and what they may read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Allowed origins (`*` as an exact value allows any).
    pub allow_origins: Vec<StringMatch>,
    /// `Access-Control-Allow-Methods`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// `Access-Control-Allow-Credentials: true`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// A preflight from an origin not allowed is answered without CORS headers instead of being
    /// forwarded (`unmatchedPreflights: IGNORE`).
    #[serde(default)]
    pub ignore_unmatched_preflights: bool,
}

/// A mirror of a route's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Where the copies go.
    pub cluster: String,
    /// The share of requests copied, in parts per million.
    pub per_million: u32,
}

/// What a route rewrites before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    /// Replaces the part of the path the route matched: the prefix of a prefix match, the
    /// whole path otherwise (Istio `rewrite.uri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Every match of `pattern` in the path replaced by `substitution` (`$1` groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<RegexRewrite>,
    /// The authority (`Host`) sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// A regex path rewrite (Istio `uriRegexRewrite`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegexRewrite {
    /// RE2 pattern.
    pub pattern: String,
    /// The replacement, groups written `$1` (converted from Istio's `\1`).
    pub substitution: String,
}

/// Where a redirect points (Istio `HTTPRedirect`): each part replaces the request's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// The status (301 when the rule sets none).
    pub status: u16,
    /// A new scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// A new host (without port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// The port.
    #[serde(default)]
    pub port: RedirectPort,
    /// A new path (`uri`), or a new prefix for the matched one (`prefixRewrite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RedirectPath>,
}

/// The port of a redirect's location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RedirectPort {
    /// Left out: the scheme's default (Istio's `FROM_PROTOCOL_DEFAULT`), unless the request's
    /// authority is kept whole.
    #[default]
    ProtocolDefault,
    /// The request's port (`FROM_REQUEST_PORT`).
    RequestPort,
    /// This port.
    Number(u16),
}

/// A redirect's new path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RedirectPath {
    /// The whole path.
    Replace(String),
    /// The matched prefix replaced.
    Prefix(String),
}

/// Header edits of a route (Istio `Headers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderEdits {
    /// Edits of the request, applied before forwarding.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request: HeaderOps,
    /// Edits of the response, applied before returning it.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response: HeaderOps,
}

impl HeaderEdits {
    /// No edit at all.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// Edits of one header section (Istio `HeaderOperations`), applied in the order remove, set,
/// add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOps {
    /// Headers replaced (or created) with these values; names lower case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Values appended to these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Headers removed; names lower case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// No edit.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// One alternative of a route's conditions (Istio `HTTPMatchRequest`): every part must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// The request path (without the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Whether `uri` compares without regard to ASCII case (Istio `ignoreUriCase`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    /// The request scheme (`http`, `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// The request authority (`Host` or `:authority`), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
    /// The request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// A condition on one query parameter (its first value, as written).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryParamMatch {
    /// The parameter's name.
    pub name: String,
    /// The value condition; `None`: the parameter is present with any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<StringMatch>,
}

/// A condition on one request header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// Header name, lower case.
    pub name: String,
    /// The value condition; `None`: the header is present with any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<StringMatch>,
    /// The condition must *not* hold (Istio `withoutHeaders`).
    #[serde(default)]
    pub invert: bool,
}

/// How a string is compared (Istio `StringMatch`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Matches the whole string (RE2 syntax).
    Regex(String),
}

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "type")]
pub enum RouteAction {
    /// Forward to clusters, split by weight (one entry: all traffic).
    Forward {
        /// Clusters and their weights (weights sum to 100 when more than one).
        clusters: Vec<WeightedCluster>,
    },
    /// Answer directly.
    DirectResponse {
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
    },
    /// Answer with a redirect.
    Redirect {
        /// Where to.
        redirect: Redirect,
    },
}

/// A cluster and its share of a route's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedCluster {
    /// Cluster name.
    pub cluster: String,
    /// Share, 0–100.
    pub weight: u32,
}

/// An upstream: a service port (and subset) with its connection policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// `outbound|8083||account-service.payments.svc.cluster.local`, with the subset between
    /// the bars.
    pub name: String,
    /// The service's fully qualified host.
    pub service: String,
    /// The Service port.
    pub port: u16,
    /// The subset (DestinationRule), if any.
    pub subset: Option<String>,
    /// How requests are carried.
    pub protocol: Protocol,
    /// Whether HTTP/1.1 requests cross the mutual TLS hop as HTTP/2 (an `Http` port only).
    #[serde(default, skip_serializing_if = "H2Upgrade::is_default")]
    pub h2_upgrade: H2Upgrade,
    /// How connections to endpoints are secured.
    pub tls: UpstreamTls,
    /// How an endpoint is chosen.
    pub lb: LbPolicy,
    /// Connection and request limits (the circuit breaker).
    #[serde(default, skip_serializing_if = "ConnectionPool::is_default")]
    pub connection_pool: ConnectionPool,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

/// How an `Http` port's requests travel between sidecars (Istio's `h2UpgradePolicy`, already
/// resolved by the control plane: a DestinationRule's `DEFAULT` arrives as the mesh default).
/// HTTP/2 and gRPC ports always use HTTP/2; plaintext endpoints get the port's own protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2Upgrade {
    /// Kept HTTP/1.1 (whatever the client spoke): pooled keep-alive connections per peer, one
    /// request at a time on each. Istio's mesh-wide default (MeshConfig `h2UpgradePolicy`), so
    /// the default here too.
    #[default]
    DoNotUpgrade,
    /// Upgraded (a DestinationRule's `UPGRADE`): HTTP/2, one multiplexed connection per peer.
    Upgrade,
}

impl H2Upgrade {
    /// The default, left out of snapshots (most clusters have it).
    pub fn is_default(&self) -> bool {
        *self == H2Upgrade::default()
    }
}

/// Transport security towards a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "mode")]
pub enum UpstreamTls {
    /// Istio mutual TLS: present the proxy's certificate, accept only these identities.
    IstioMutual {
        /// SPIFFE identities of the endpoints (their service accounts).
        subject_alt_names: Vec<String>,
    },
    /// Plaintext (DestinationRule `DISABLE`, or endpoints without a sidecar).
    Disable,
}

/// The endpoints of one cluster (Envoy ClusterLoadAssignment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEndpoints {
    /// The cluster.
    pub cluster: String,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// One pod serving a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Pod IP and container (target) port.
    pub address: SocketAddr,
    /// The pod's sidecar inbound port (15006) when it has one: mutual TLS goes there, with
    /// the original authority. `None`: plaintext straight to `address`.
    pub tunnel_port: Option<u16>,
    /// The pod's SPIFFE identity.
    pub identity: String,
    /// Pod name.
    pub pod: String,
    /// Pod labels (subsets and locality select on these).
    pub labels: BTreeMap<String, String>,
}

/// Why a config could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("config snapshot is not valid JSON for the model: {0}")]
pub struct CodecError(#[from] serde_json::Error);

impl ProxyConfig {
    /// The wire form (`Snapshot.config_json`).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|cluster| cluster.name == name).map(|cluster| &**cluster)
    }

    /// The endpoints of cluster `name` (empty when it has none).
    pub fn endpoints_of(&self, name: &str) -> &[Endpoint] {
        self.endpoints.iter().find(|set| set.cluster == name).map_or(&[], |set| &set.endpoints)
    }
}

/// Istio's cluster name: `outbound|PORT|SUBSET|HOST`.
pub fn outbound_cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// Istio's inbound cluster name: `inbound|PORT||`.
pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(h2_upgrade: H2Upgrade) -> Cluster {
        Cluster {
            name: outbound_cluster_name(8080, None, "echo.shop.svc.cluster.local"),
            service: "echo.shop.svc.cluster.local".to_owned(),
            port: 8080,
            subset: None,
            protocol: Protocol::Http,
            h2_upgrade,
            tls: UpstreamTls::Disable,
            lb: LbPolicy::RoundRobin,
            connection_pool: ConnectionPool::default(),
            outlier_detection: None,
        }
    }

    #[test]
    fn only_an_upgrading_cluster_carries_h2_upgrade_on_the_wire() {
        let kept = serde_json::to_value(cluster(H2Upgrade::DoNotUpgrade)).expect("encodes");
        assert_eq!(kept.get("h2Upgrade"), None, "{kept}");
        let upgraded = serde_json::to_value(cluster(H2Upgrade::Upgrade)).expect("encodes");
        assert_eq!(upgraded["h2Upgrade"], "UPGRADE", "{upgraded}");
        for (value, expected) in [(kept, H2Upgrade::DoNotUpgrade), (upgraded, H2Upgrade::Upgrade)] {
            let decoded: Cluster = serde_json::from_value(value).expect("decodes");
            assert_eq!(decoded.h2_upgrade, expected);
        }
    }
}
