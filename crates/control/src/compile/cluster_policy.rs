//! A DestinationRule's `loadBalancer`, `connectionPool` and `outlierDetection` for one cluster,
//! as Istio translates them for Envoy.
//!
//! Each setting is taken whole from the most specific place that sets it — the subset's
//! `trafficPolicy` before the rule's, and in each the `portLevelSettings` for the port before the
//! policy's own — which is how Istio merges them (a subset's `connectionPool` replaces the rule's
//! entirely, it does not merge field by field). Unset means Istio's defaults: least-request
//! balancing, no connection limit, a 10 s connect timeout, no outlier detection.
//!
//! Outlier detection with Istio's defaults filled in: `consecutive5xxErrors` 5 unless set (0
//! turns it off), gateway errors off unless set, local-origin failures counted on their own only
//! with `splitExternalLocalOriginErrors`, interval 10 s, base ejection 30 s, at most 10 % ejected,
//! no panic threshold (`minHealthPercent` 0). The deprecated `consecutiveErrors` counts gateway
//! errors, as Istio maps it, when neither newer field is set.

use paymesh_api::model::{
    ConnectionPool, ConsistentHash, DEFAULT_CONNECT_TIMEOUT_MS, HashKey, HashTable, LbPolicy,
    OutlierDetection, TcpKeepalive,
};
use paymesh_config::networking::DestinationRule;
use paymesh_config::networking::destination_rule::traffic_policy::{
    self as istio, ConnectionPoolSettings, HashAlgorithm, LoadBalancerSettings, SimpleLb,
};

use super::cluster::most_specific_setting;
use super::route_policy::millis;

/// Envoy's ring size when none is given.
const DEFAULT_RING_SIZE: u64 = 1024;

/// Envoy's Maglev table size when none is given.
const DEFAULT_MAGLEV_SIZE: u64 = 65_537;

/// The policies of one cluster.
pub struct ClusterPolicy {
    /// Endpoint selection.
    pub lb: LbPolicy,
    /// Limits.
    pub connection_pool: ConnectionPool,
    /// Ejection of failing endpoints.
    pub outlier_detection: Option<OutlierDetection>,
}

/// The policies `dr` sets for `port` of `subset`.
pub fn cluster_policy(dr: Option<&DestinationRule>, subset: Option<&str>, port: u16) -> ClusterPolicy {
    let Some(dr) = dr else {
        return ClusterPolicy {
            lb: LbPolicy::LeastRequest,
            connection_pool: ConnectionPool::default(),
            outlier_detection: None,
        };
    };
    let lb =
        most_specific_setting(dr, subset, port, |p| p.load_balancer.as_ref(), |p| p.load_balancer.as_ref());
    let pool = most_specific_setting(
        dr,
        subset,
        port,
        |p| p.connection_pool.as_ref(),
        |p| p.connection_pool.as_ref(),
    );
    let outlier = most_specific_setting(
        dr,
        subset,
        port,
        |p| p.outlier_detection.as_ref(),
        |p| p.outlier_detection.as_ref(),
    );
    ClusterPolicy {
        lb: lb.map_or(LbPolicy::LeastRequest, load_balancer),
        connection_pool: pool.map_or_else(ConnectionPool::default, connection_pool),
        outlier_detection: outlier.and_then(outlier_detection),
    }
}

fn load_balancer(settings: &LoadBalancerSettings) -> LbPolicy {
    match &settings.policy {
        Some(istio::LbPolicy::Simple(SimpleLb::RoundRobin)) => LbPolicy::RoundRobin,
        Some(istio::LbPolicy::Simple(SimpleLb::Random)) => LbPolicy::Random,
        Some(istio::LbPolicy::Simple(SimpleLb::Passthrough)) => LbPolicy::Passthrough,
        Some(istio::LbPolicy::ConsistentHash(hash)) => match hash_key(hash.hash_key.as_ref()) {
            Some(key) => LbPolicy::ConsistentHash(ConsistentHash { key, table: hash_table(hash) }),
            None => LbPolicy::LeastRequest,
        },
        Some(istio::LbPolicy::Simple(
            SimpleLb::Unspecified | SimpleLb::LeastConn | SimpleLb::LeastRequest,
        ))
        | Some(istio::LbPolicy::BackendUtilization(_))
        | None => LbPolicy::LeastRequest,
    }
}

fn hash_key(key: Option<&istio::HashKey>) -> Option<HashKey> {
    Some(match key? {
        istio::HashKey::HttpHeaderName(name) => HashKey::Header(name.to_ascii_lowercase()),
        istio::HashKey::HttpCookie(cookie) => HashKey::Cookie {
            name: cookie.name.clone(),
            path: cookie.path.clone(),
            ttl_secs: cookie.ttl.map(|ttl| ttl.as_std().as_secs()).filter(|secs| *secs > 0),
        },
        istio::HashKey::UseSourceIp(true) => HashKey::SourceIp,
        istio::HashKey::UseSourceIp(false) => return None,
        istio::HashKey::HttpQueryParameterName(name) => HashKey::QueryParameter(name.clone()),
    })
}

fn hash_table(hash: &istio::ConsistentHashLb) -> HashTable {
    let or = |size: u64, default: u64| if size == 0 { default } else { size };
    match hash.hash_algorithm {
        Some(HashAlgorithm::Maglev(maglev)) => {
            HashTable::Maglev { table_size: or(maglev.table_size, DEFAULT_MAGLEV_SIZE) }
        }
        Some(HashAlgorithm::RingHash(ring)) => {
            HashTable::RingHash { minimum_ring_size: or(ring.minimum_ring_size, DEFAULT_RING_SIZE) }
        }
        None => HashTable::RingHash { minimum_ring_size: or(hash.minimum_ring_size, DEFAULT_RING_SIZE) },
    }
}

fn connection_pool(pool: &ConnectionPoolSettings) -> ConnectionPool {
    let positive = |value: i32| u32::try_from(value).ok().filter(|v| *v > 0);
    let tcp = pool.tcp.as_ref();
    let http = pool.http.as_ref();
    ConnectionPool {
        max_connections: tcp.and_then(|tcp| positive(tcp.max_connections)),
        connect_timeout_ms: tcp
            .and_then(|tcp| tcp.connect_timeout)
            .map(millis)
            .filter(|ms| *ms > 0)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        max_pending_requests: http.and_then(|http| positive(http.http1_max_pending_requests)),
        max_requests: http.and_then(|http| positive(http.http2_max_requests)),
        max_retries: http.and_then(|http| positive(http.max_retries)),
        max_requests_per_connection: http.and_then(|http| positive(http.max_requests_per_connection)),
        idle_timeout_ms: http
            .and_then(|http| http.idle_timeout)
            .or_else(|| tcp.and_then(|tcp| tcp.idle_timeout))
            .map(millis)
            .filter(|ms| *ms > 0),
        tcp_keepalive: tcp.and_then(|tcp| tcp.tcp_keepalive.as_ref()).map(|keepalive| TcpKeepalive {
            time_ms: keepalive.time.map(millis),
            interval_ms: keepalive.interval.map(millis),
            probes: (keepalive.probes > 0).then_some(keepalive.probes),
        }),
    }
}

fn outlier_detection(outlier: &istio::OutlierDetection) -> Option<OutlierDetection> {
    let threshold = |value: Option<u32>| value.filter(|v| *v > 0);
    let deprecated = u32::try_from(outlier.consecutive_errors).ok().filter(|v| *v > 0);
    let newer = outlier.consecutive_5xx_errors.is_some() || outlier.consecutive_gateway_errors.is_some();
    let (consecutive_5xx, consecutive_gateway_errors) = match (newer, deprecated) {
        (false, Some(errors)) => (None, Some(errors)),
        _ => (
            threshold(outlier.consecutive_5xx_errors.or(Some(5))),
            threshold(outlier.consecutive_gateway_errors),
        ),
    };
    let split = outlier.split_external_local_origin_errors;
    let local = split.then(|| threshold(outlier.consecutive_local_origin_failures)).flatten();
    if consecutive_5xx.is_none() && consecutive_gateway_errors.is_none() && local.is_none() {
        return None;
    }
    let percent = |value: i32, default: u32| {
        u32::try_from(value).ok().filter(|v| *v > 0).map_or(default, |v| v.min(100))
    };
    Some(OutlierDetection {
        consecutive_5xx,
        consecutive_gateway_errors,
        consecutive_local_origin_failures: local,
        split_external_local_origin_errors: split,
        interval_ms: outlier.interval.map(millis).filter(|ms| *ms > 0).unwrap_or(10_000),
        base_ejection_ms: outlier.base_ejection_time.map(millis).filter(|ms| *ms > 0).unwrap_or(30_000),
        max_ejection_percent: percent(outlier.max_ejection_percent, 10),
        min_health_percent: percent(outlier.min_health_percent, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(spec: serde_json::Value) -> DestinationRule {
        serde_json::from_value(spec).expect("a DestinationRule spec")
    }

    fn account_service() -> DestinationRule {
        rule(serde_json::json!({
            "host": "account-service",
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": {"maxConnections": 100, "connectTimeout": "2s"},
                    "http": {"http1MaxPendingRequests": 50, "http2MaxRequests": 200,
                             "maxRequestsPerConnection": 0, "maxRetries": 3, "idleTimeout": "60s"}
                },
                "outlierDetection": {"consecutive5xxErrors": 5, "consecutiveGatewayErrors": 3,
                                     "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 50},
                "portLevelSettings": [{"port": {"number": 9090}, "loadBalancer": {"simple": "ROUND_ROBIN"}}]
            },
            "subsets": [{
                "name": "sticky",
                "labels": {"version": "v1"},
                "trafficPolicy": {
                    "loadBalancer": {"consistentHash": {"httpHeaderName": "X-Tenant-Id", "maglev": {}}},
                    "connectionPool": {"tcp": {"maxConnections": 1}}
                }
            }]
        }))
    }

    #[test]
    fn the_repositorys_account_service_rule_becomes_limits_and_ejection() {
        let dr = account_service();
        let policy = cluster_policy(Some(&dr), None, 8083);
        assert_eq!(policy.lb, LbPolicy::LeastRequest, "Istio's default");
        let pool = policy.connection_pool;
        assert_eq!((pool.max_connections, pool.connect_timeout_ms), (Some(100), 2000));
        assert_eq!(
            (pool.max_pending_requests, pool.max_requests, pool.max_retries),
            (Some(50), Some(200), Some(3))
        );
        assert_eq!((pool.max_requests_per_connection, pool.idle_timeout_ms), (None, Some(60_000)));
        let outlier = policy.outlier_detection.expect("outlier detection");
        assert_eq!((outlier.consecutive_5xx, outlier.consecutive_gateway_errors), (Some(5), Some(3)));
        assert_eq!((outlier.max_ejection_percent, outlier.min_health_percent), (50, 0));
    }

    #[test]
    fn a_subsets_setting_replaces_the_rules_whole_and_port_level_beats_the_policys() {
        let dr = account_service();
        let sticky = cluster_policy(Some(&dr), Some("sticky"), 8083);
        let key = HashKey::Header("x-tenant-id".to_owned());
        assert_eq!(
            sticky.lb,
            LbPolicy::ConsistentHash(ConsistentHash { key, table: HashTable::Maglev { table_size: 65_537 } })
        );
        assert_eq!(sticky.connection_pool.max_connections, Some(1));
        assert_eq!(
            sticky.connection_pool.max_pending_requests, None,
            "not merged with the rule's http settings"
        );
        assert_eq!(sticky.connection_pool.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
        assert!(sticky.outlier_detection.is_some(), "inherited: the subset sets none");
        assert_eq!(cluster_policy(Some(&dr), None, 9090).lb, LbPolicy::RoundRobin);
    }

    #[test]
    fn outlier_defaults_follow_istio() {
        let defaults = outlier_detection(&istio::OutlierDetection::default()).expect("5xx on by default");
        assert_eq!((defaults.consecutive_5xx, defaults.consecutive_gateway_errors), (Some(5), None));
        assert_eq!(
            (defaults.interval_ms, defaults.base_ejection_ms, defaults.max_ejection_percent),
            (10_000, 30_000, 10)
        );
        let off = istio::OutlierDetection { consecutive_5xx_errors: Some(0), ..Default::default() };
        assert_eq!(outlier_detection(&off), None);
        let old = istio::OutlierDetection { consecutive_errors: 2, ..Default::default() };
        let old = outlier_detection(&old).expect("deprecated field");
        assert_eq!((old.consecutive_5xx, old.consecutive_gateway_errors), (None, Some(2)));
    }
}
