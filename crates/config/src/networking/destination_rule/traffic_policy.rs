//! Traffic policies of a DestinationRule (and the Sidecar's connection pools): load
//! balancing, connection pools (the circuit breaker), outlier detection, client TLS,
//! per-port overrides, tunnelling and PROXY protocol.
//!
//! Types mirror the CRD field by field; protobuf oneOfs (`simple` | `consistentHash` |
//! `backendUtilization`, the hash key, the hash algorithm) are enums. Rules are in
//! [`validation`].

mod validation;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::types::{Duration, OneOfError, PortSelector, one_of};

/// Policies for traffic to a host, a subset, or (in `portLevelSettings`) one port.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    pub tunnel: Option<TunnelSettings>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub retry_budget: Option<RetryBudget>,
}

/// Overrides for one port of the host.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    pub port: Option<PortSelector>,
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
}

/// How an endpoint is picked for each request or connection.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(try_from = "LoadBalancerFields")]
pub struct LoadBalancerSettings {
    pub policy: Option<LbPolicy>,
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Deprecated slow-start window (use `warmup`).
    pub warmup_duration_secs: Option<Duration>,
    pub warmup: Option<WarmupConfiguration>,
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
}

/// The load-balancing algorithm (one of `simple`, `consistentHash`, `backendUtilization`).
#[derive(Clone, Debug, PartialEq)]
pub enum LbPolicy {
    Simple(SimpleLb),
    ConsistentHash(ConsistentHashLb),
    BackendUtilization(BackendUtilizationLb),
}

/// A load-balancing algorithm that needs no parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// The proxy's default (least request).
    Unspecified,
    /// Deprecated name of `LEAST_REQUEST`.
    LeastConn,
    Random,
    /// Forward to the address the caller asked for, without load balancing.
    Passthrough,
    RoundRobin,
    /// The fewer active requests, the likelier an endpoint is picked.
    LeastRequest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LoadBalancerFields {
    simple: Option<SimpleLb>,
    consistent_hash: Option<ConsistentHashLb>,
    backend_utilization: Option<BackendUtilizationLb>,
    locality_lb_setting: Option<LocalityLbSetting>,
    warmup_duration_secs: Option<Duration>,
    warmup: Option<WarmupConfiguration>,
    zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
}

impl TryFrom<LoadBalancerFields> for LoadBalancerSettings {
    type Error = OneOfError;

    fn try_from(f: LoadBalancerFields) -> Result<Self, Self::Error> {
        let policy = one_of([
            ("simple", f.simple.map(LbPolicy::Simple)),
            ("consistentHash", f.consistent_hash.map(LbPolicy::ConsistentHash)),
            ("backendUtilization", f.backend_utilization.map(LbPolicy::BackendUtilization)),
        ])?;
        Ok(Self {
            policy,
            locality_lb_setting: f.locality_lb_setting,
            warmup_duration_secs: f.warmup_duration_secs,
            warmup: f.warmup,
            zone_aware_lb_setting: f.zone_aware_lb_setting,
        })
    }
}

/// Session affinity by hashing a request property onto a ring (or Maglev table).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ConsistentHashFields")]
pub struct ConsistentHashLb {
    pub hash_key: Option<HashKey>,
    pub hash_algorithm: Option<HashAlgorithm>,
    /// Deprecated ring size (use `ringHash.minimumRingSize`).
    pub minimum_ring_size: u64,
}

/// What is hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    HttpHeaderName(String),
    HttpCookie(HttpCookie),
    UseSourceIp(bool),
    HttpQueryParameterName(String),
}

/// How the hash picks an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    RingHash(RingHash),
    Maglev(Maglev),
}

/// Ketama ring hashing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RingHash {
    #[serde(default)]
    pub minimum_ring_size: u64,
}

/// Maglev consistent hashing; the table size must be prime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Maglev {
    #[serde(default)]
    pub table_size: u64,
}

/// A cookie to hash; with a `ttl`, the proxy sets it when absent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCookie {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub path: String,
    pub ttl: Option<Duration>,
    #[serde(default)]
    pub attributes: Vec<CookieAttribute>,
}

/// An extra attribute of a generated cookie.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieAttribute {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConsistentHashFields {
    http_header_name: Option<String>,
    http_cookie: Option<HttpCookie>,
    use_source_ip: Option<bool>,
    http_query_parameter_name: Option<String>,
    ring_hash: Option<RingHash>,
    maglev: Option<Maglev>,
    #[serde(default)]
    minimum_ring_size: u64,
}

impl TryFrom<ConsistentHashFields> for ConsistentHashLb {
    type Error = OneOfError;

    fn try_from(f: ConsistentHashFields) -> Result<Self, Self::Error> {
        let hash_key = one_of([
            ("httpHeaderName", f.http_header_name.map(HashKey::HttpHeaderName)),
            ("httpCookie", f.http_cookie.map(HashKey::HttpCookie)),
            ("useSourceIp", f.use_source_ip.map(HashKey::UseSourceIp)),
            ("httpQueryParameterName", f.http_query_parameter_name.map(HashKey::HttpQueryParameterName)),
        ])?;
        let hash_algorithm = one_of([
            ("ringHash", f.ring_hash.map(HashAlgorithm::RingHash)),
            ("maglev", f.maglev.map(HashAlgorithm::Maglev)),
        ])?;
        Ok(Self { hash_key, hash_algorithm, minimum_ring_size: f.minimum_ring_size })
    }
}

/// Weighted round robin by the load endpoints report (ORCA).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendUtilizationLb {
    pub weight_expiration_period: Option<Duration>,
    pub weight_update_period: Option<Duration>,
    pub weight_stabilization_period: Option<Duration>,
    #[serde(default)]
    pub error_utilization_penalty_percent: u32,
    #[serde(default)]
    pub metric_names_for_computing_utilization: Vec<String>,
}

/// Locality-aware routing: weighted distribution or failover between localities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityLbSetting {
    #[serde(default)]
    pub distribute: Vec<LocalityDistribute>,
    #[serde(default)]
    pub failover: Vec<LocalityFailover>,
    #[serde(default)]
    pub failover_priority: Vec<String>,
    pub enabled: Option<bool>,
}

/// Traffic from locality `from` split across localities (`region/zone/subzone`, `*`) by weight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityDistribute {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: BTreeMap<String, u32>,
}

/// Region to fail over to when region `from` has no healthy endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityFailover {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

/// Envoy's zone-aware routing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ZoneAwareLbSetting {
    pub enabled: Option<bool>,
    #[serde(default)]
    pub failover: Vec<LocalityFailover>,
    #[serde(default)]
    pub failover_priority: Vec<String>,
    pub min_cluster_size: Option<u32>,
}

/// Slow start: new endpoints get a growing share of traffic over `duration`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WarmupConfiguration {
    /// Required; `None` only in an invalid document.
    pub duration: Option<Duration>,
    pub minimum_percent: Option<f64>,
    pub aggression: Option<f64>,
}

/// Connection limits to each endpoint: the circuit breaker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    pub tcp: Option<TcpSettings>,
    pub http: Option<HttpSettings>,
}

/// Limits common to HTTP and TCP connections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpSettings {
    #[serde(default)]
    pub max_connections: i32,
    pub connect_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub max_connection_duration: Option<Duration>,
    /// `0s` disables the idle timeout.
    pub idle_timeout: Option<Duration>,
}

/// TCP keepalive probes on upstream connections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepalive {
    #[serde(default)]
    pub probes: u32,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// HTTP request limits (pending, concurrent, per connection, retries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSettings {
    #[serde(default)]
    pub http1_max_pending_requests: i32,
    #[serde(default)]
    pub http2_max_requests: i32,
    #[serde(default)]
    pub max_requests_per_connection: i32,
    #[serde(default)]
    pub max_retries: i32,
    pub idle_timeout: Option<Duration>,
    #[serde(default)]
    pub h2_upgrade_policy: H2UpgradePolicy,
    #[serde(default)]
    pub use_client_protocol: bool,
    #[serde(default)]
    pub max_concurrent_streams: i32,
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// Whether HTTP/1.1 connections are upgraded to HTTP/2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// The mesh-wide setting.
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// HTTP/2 PING keepalives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2KeepAlive {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
}

/// Ejection of endpoints that keep failing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    pub consecutive_local_origin_failures: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated (use `consecutive5xxErrors` or `consecutiveGatewayErrors`).
    #[serde(default)]
    pub consecutive_errors: i32,
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    #[serde(default)]
    pub max_ejection_percent: i32,
    #[serde(default)]
    pub min_health_percent: i32,
    #[serde(default)]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

/// TLS from the proxy to the destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTlsSettings {
    #[serde(default)]
    pub mode: ClientTlsMode,
    #[serde(default)]
    pub client_certificate: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub ca_certificates: String,
    #[serde(default)]
    pub credential_name: String,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Server name sent in the TLS handshake.
    #[serde(default)]
    pub sni: String,
    pub insecure_skip_verify: Option<bool>,
    #[serde(default)]
    pub ca_crl: String,
}

/// Whether and how the proxy originates TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plain text (or the mesh's automatic mTLS).
    #[default]
    Disable,
    /// TLS, verifying the server.
    Simple,
    /// TLS with a client certificate the user supplies.
    Mutual,
    /// Mutual TLS with the mesh's own workload certificates.
    IstioMutual,
}

/// Tunnel the connection through a proxy (HTTP CONNECT or POST).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TunnelSettings {
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub target_host: String,
    #[serde(default)]
    pub target_port: u32,
}

/// Send a PROXY protocol header upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(default)]
    pub version: ProxyProtocolVersion,
}

/// PROXY protocol header version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum ProxyProtocolVersion {
    #[default]
    V1,
    V2,
}

/// Limit on concurrent retries, as a share of active requests.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudget {
    pub percent: Option<f64>,
    #[serde(default)]
    pub min_retry_concurrency: u32,
    pub budget_interval: Option<Duration>,
}
