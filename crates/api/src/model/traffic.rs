//! Traffic policies, as the control plane resolves them from VirtualService routes and
//! DestinationRules: what a route does around forwarding (timeout, retries, fault injection) and
//! how a cluster treats its endpoints (load balancing, connection limits, outlier detection).
//!
//! Everything here is already resolved: Istio's defaults are filled in (the default retry policy,
//! a 10 s connect timeout, least-request balancing), durations are milliseconds and percentages
//! parts per million (Envoy's `FractionalPercent`), so the proxy reads values, never rules.

use serde::{Deserialize, Serialize};

/// A route's policies (Istio `HTTPRoute.timeout`, `retries`, `fault`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePolicy {
    /// The whole request, every attempt and backoff included, until the response head;
    /// `None`: no limit (Istio's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When a failed attempt is tried again.
    #[serde(default)]
    pub retries: RetryPolicy,
    /// Faults injected before the request is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

/// A retry policy (Envoy's `RetryPolicy`, converted from Istio's `HTTPRetry` as Istio does).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 turns retrying off.
    pub attempts: u32,
    /// Each attempt's limit until its response head; `None`: only the route's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// The conditions that allow another attempt.
    pub retry_on: Vec<RetryOn>,
    /// The statuses [`RetryOn::RetriableStatusCodes`] retries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
}

impl RetryPolicy {
    /// Retrying turned off (`attempts: 0`).
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 0,
            per_try_timeout_ms: None,
            retry_on: Vec::new(),
            retriable_status_codes: Vec::new(),
        }
    }

    /// Whether the policy allows retrying on `condition`.
    pub fn on(&self, condition: RetryOn) -> bool {
        self.retry_on.contains(&condition)
    }
}

impl Default for RetryPolicy {
    /// Istio's policy for a route that sets none: two retries on `connect-failure`,
    /// `refused-stream`, `unavailable`, `cancelled` and `retriable-status-codes` (503).
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Unavailable,
                RetryOn::Cancelled,
                RetryOn::RetriableStatusCodes,
            ],
            retriable_status_codes: vec![503],
        }
    }
}

/// A retry condition, named as Envoy's `x-envoy-retry-on` and Istio's `retryOn` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RetryOn {
    /// Any 5xx answer, a reset, a connect failure, a refused stream, a per-try timeout.
    #[serde(rename = "5xx")]
    FiveXx,
    /// 502, 503 or 504, a reset, a connect failure, a per-try timeout.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// No answer at all: a reset, a connect failure, a per-try timeout.
    #[serde(rename = "reset")]
    Reset,
    /// The connection to the upstream could not be made.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The HTTP/2 upstream refused the stream (`REFUSED_STREAM`).
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// A 409 answer.
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
    /// An answer whose status is in [`RetryPolicy::retriable_status_codes`].
    #[serde(rename = "retriable-status-codes")]
    RetriableStatusCodes,
    /// gRPC status 1.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// gRPC status 4.
    #[serde(rename = "deadline-exceeded")]
    DeadlineExceeded,
    /// gRPC status 13.
    #[serde(rename = "internal")]
    Internal,
    /// gRPC status 8.
    #[serde(rename = "resource-exhausted")]
    ResourceExhausted,
    /// gRPC status 14.
    #[serde(rename = "unavailable")]
    Unavailable,
}

impl RetryOn {
    /// Every condition, for parsing.
    pub const ALL: [RetryOn; 12] = [
        RetryOn::FiveXx,
        RetryOn::GatewayError,
        RetryOn::Reset,
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Retriable4xx,
        RetryOn::RetriableStatusCodes,
        RetryOn::Cancelled,
        RetryOn::DeadlineExceeded,
        RetryOn::Internal,
        RetryOn::ResourceExhausted,
        RetryOn::Unavailable,
    ];

    /// The name in `retryOn`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::FiveXx => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Reset => "reset",
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::Retriable4xx => "retriable-4xx",
            RetryOn::RetriableStatusCodes => "retriable-status-codes",
            RetryOn::Cancelled => "cancelled",
            RetryOn::DeadlineExceeded => "deadline-exceeded",
            RetryOn::Internal => "internal",
            RetryOn::ResourceExhausted => "resource-exhausted",
            RetryOn::Unavailable => "unavailable",
        }
    }

    /// The condition named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|condition| condition.as_str() == name)
    }

    /// The gRPC status this condition retries, when it is a gRPC one.
    pub fn grpc_status(self) -> Option<u32> {
        match self {
            RetryOn::Cancelled => Some(1),
            RetryOn::DeadlineExceeded => Some(4),
            RetryOn::ResourceExhausted => Some(8),
            RetryOn::Internal => Some(13),
            RetryOn::Unavailable => Some(14),
            _ => None,
        }
    }
}

/// One million: percentages are kept in parts per million, Envoy's finest denominator.
pub const PER_MILLION: u32 = 1_000_000;

/// Faults injected into a route's requests (Istio `HTTPFaultInjection`), each on its own share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Wait before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Answer with an error instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// A fixed delay on a share of requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// How long.
    pub fixed_ms: u64,
    /// The share of requests delayed, in parts per million.
    pub per_million: u32,
}

/// An error answered on a share of requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    /// The answer.
    pub error: AbortError,
    /// The share of requests aborted, in parts per million.
    pub per_million: u32,
}

/// What an aborted request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AbortError {
    /// This HTTP status.
    HttpStatus(u16),
    /// HTTP 200 with this `grpc-status` (trailers-only).
    GrpcStatus(u32),
}

/// How a cluster picks an endpoint (Istio `LoadBalancerSettings`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    /// Each endpoint in turn.
    RoundRobin,
    /// The fewer requests in flight, the likelier: two random endpoints, the less busy wins
    /// (Istio's default).
    LeastRequest,
    /// Uniformly at random.
    Random,
    /// The address the caller asked for (no balancing).
    Passthrough,
    /// The same key to the same endpoint while it stays.
    ConsistentHash(ConsistentHash),
}

/// Session affinity: what is hashed and onto what.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    /// The request property hashed.
    pub key: HashKey,
    /// The table the hash indexes.
    pub table: HashTable,
}

/// The request property a consistent hash uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum HashKey {
    /// A request header (lower case).
    Header(String),
    /// A cookie; with a TTL the proxy sets it on the response when the request had none.
    Cookie {
        /// The cookie's name.
        name: String,
        /// Its path attribute (empty: none).
        #[serde(default)]
        path: String,
        /// Its lifetime when generated; `None`: never generated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
    },
    /// The downstream client's IP address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

/// The table a consistent hash indexes (Envoy's ring hash or Maglev).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum HashTable {
    /// A ketama ring with at least this many entries (Envoy's default 1024).
    RingHash {
        /// The ring's minimum size.
        minimum_ring_size: u64,
    },
    /// A Maglev table of this (prime) size (Envoy's default 65537).
    Maglev {
        /// The table size.
        table_size: u64,
    },
}

/// Connection and request limits towards one cluster, per client proxy: the circuit breaker.
/// `None` is Istio's default, no limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    /// Connections to the cluster's endpoints (`tcp.maxConnections`); an HTTP/1.1 request holds
    /// one for its duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// How long connecting (TCP and TLS) may take (`tcp.connectTimeout`; Istio's default 10 s).
    pub connect_timeout_ms: u64,
    /// Requests waiting for a connection (`http.http1MaxPendingRequests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight (`http.http2MaxRequests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Retries in flight (`http.maxRetries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Requests one connection carries before it is closed (`http.maxRequestsPerConnection`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// How long an unused connection stays open (`http.idleTimeout`, else `tcp.idleTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// TCP keepalive on the connections (`tcp.tcpKeepalive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// TCP keepalive probes; `None` parts keep the system's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpKeepalive {
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
}

/// Istio's connect timeout when a DestinationRule sets none.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool {
            max_connections: None,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_pending_requests: None,
            max_requests: None,
            max_retries: None,
            max_requests_per_connection: None,
            idle_timeout_ms: None,
            tcp_keepalive: None,
        }
    }
}

impl ConnectionPool {
    /// Istio's defaults (left out of snapshots).
    pub fn is_default(&self) -> bool {
        *self == ConnectionPool::default()
    }

    /// Whether any request limit is set (the proxy counts requests only then).
    pub fn limits_requests(&self) -> bool {
        self.max_connections.is_some() || self.max_pending_requests.is_some() || self.max_requests.is_some()
    }
}

/// Ejection of endpoints that keep failing (Istio `OutlierDetection`, defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive 5xx answers (and, unless split, local failures) that eject; `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 answers (and, unless split, local failures) that eject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive connect failures, resets and timeouts that eject, when split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Whether local failures are counted on their own instead of as 5xx answers.
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    /// How often ejections are reviewed (Istio's default 10 s).
    pub interval_ms: u64,
    /// The first ejection's length; the n-th lasts n times as long, up to 300 s.
    pub base_ejection_ms: u64,
    /// The largest share of the cluster's endpoints ejected at once, in percent.
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, in percent, ejections are ignored.
    pub min_health_percent: u32,
}

/// The longest ejection (Envoy's `max_ejection_time` default).
pub const MAX_EJECTION_MS: u64 = 300_000;
