//! What the compiler leaves out: every field of an accepted config that the proxy model cannot
//! express yet, with the resource, the field's path and why.
//!
//! [`scan`] runs once per accepted config (the config store calls it and logs the list once per
//! version); `/debug/configz` shows it under `unsupported`, so nothing Istio would act on is
//! ignored silently.

use paymesh_config::Store;
use paymesh_config::networking::destination_rule::traffic_policy::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LbPolicy, LoadBalancerSettings, TrafficPolicy,
};
use paymesh_config::networking::virtual_service::{AbortError, BodyContent, DelayKind, HttpRoute};
use paymesh_config::resource::{Resource, Spec};
use serde::Serialize;

use super::gateway::server_tls;
use super::route_policy::unknown_retry_on;

/// One field paymesh does not act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unsupported {
    /// `Kind namespace/name`.
    pub resource: String,
    /// The field's path (`spec.http[0].timeout`).
    pub field: String,
    /// What paymesh does instead.
    pub reason: String,
}

const RULE_DROPPED: &str = "not implemented: the rule is left out";
const TLS_ORIGINATION: &str = "not implemented: TLS origination";
const POLICY_DROPPED: &str = "not implemented: the setting is ignored";

/// Kinds the proxies do not enforce yet, and what that means for traffic.
const NOT_ENFORCED: [(&str, &str); 6] = [
    ("AuthorizationPolicy", "not enforced yet: every peer with a mesh certificate is allowed"),
    ("RequestAuthentication", "not enforced yet: JWTs are not validated"),
    ("RateLimitPolicy", "not enforced yet: requests are not rate limited"),
    ("Telemetry", "not implemented: no metrics or traces are exported"),
    ("ServiceEntry", "not implemented: the host is not in the registry"),
    ("EnvoyFilter", "not applicable: paymesh's proxy is not Envoy"),
];

/// Every unsupported field of `store`'s VirtualServices, DestinationRules and Gateways.
pub fn scan(store: &Store) -> Vec<Unsupported> {
    let mut out = Vec::new();
    for (resource, vs) in store.typed("VirtualService", Spec::virtual_service) {
        let mut add = |field: String, reason: &str| out.push(entry(resource, field, reason));
        for (i, rule) in vs.http.iter().enumerate() {
            http_rule(rule, &format!("spec.http[{i}]"), &mut add);
        }
        if !vs.tls.is_empty() {
            add("spec.tls".to_owned(), "not implemented: TLS routes are ignored");
        }
    }
    for (resource, dr) in store.typed("DestinationRule", Spec::destination_rule) {
        let mut add = |field: String, reason: &str| out.push(entry(resource, field, reason));
        if let Some(policy) = &dr.traffic_policy {
            traffic_policy(policy, "spec.trafficPolicy", &mut add);
        }
        for (i, subset) in dr.subsets.iter().enumerate() {
            if let Some(policy) = &subset.traffic_policy {
                traffic_policy(policy, &format!("spec.subsets[{i}].trafficPolicy"), &mut add);
            }
        }
    }
    for resource in store.iter() {
        if let Some((_, reason)) = NOT_ENFORCED.iter().find(|(kind, _)| *kind == resource.kind) {
            out.push(entry(resource, "spec".to_owned(), reason));
        }
    }
    for (resource, gateway) in store.typed("Gateway", Spec::gateway) {
        for (i, server) in gateway.servers.iter().enumerate() {
            let Some(tls) = &server.tls else { continue };
            if server_tls(tls, std::path::Path::new("")).is_none() {
                out.push(entry(
                    resource,
                    format!("spec.servers[{i}].tls"),
                    "not implemented: only mode SIMPLE with a valid credentialName is served; the server is skipped",
                ));
            }
        }
    }
    out
}

fn entry(resource: &Resource, field: String, reason: &str) -> Unsupported {
    Unsupported {
        resource: format!("{} {}/{}", resource.kind, resource.namespace(), resource.meta.name),
        field,
        reason: reason.to_owned(),
    }
}

fn http_rule(rule: &HttpRoute, path: &str, add: &mut impl FnMut(String, &str)) {
    if let Some(retries) = &rule.retries {
        for condition in unknown_retry_on(&retries.retry_on) {
            add(
                format!("{path}.retries.retryOn"),
                &format!("not implemented: condition `{condition}` never retries"),
            );
        }
        if retries.backoff.is_some() {
            add(
                format!("{path}.retries.backoff"),
                "not implemented: retries back off from 25 ms, Envoy's default",
            );
        }
    }
    if let Some(fault) = &rule.fault {
        if fault.delay.as_ref().is_some_and(|d| matches!(d.kind, Some(DelayKind::Exponential(_)))) {
            add(format!("{path}.fault.delay.exponentialDelay"), "not implemented (nor in Istio): no delay");
        }
        if fault.abort.as_ref().is_some_and(|a| matches!(a.error, Some(AbortError::Http2Error(_)))) {
            add(format!("{path}.fault.abort.http2Error"), "not implemented: no abort");
        }
    }
    if let Some(BodyContent::Bytes(_)) =
        rule.direct_response.as_ref().and_then(|d| d.body.as_ref()).and_then(|b| b.content.as_ref())
    {
        add(format!("{path}.directResponse.body.bytes"), RULE_DROPPED);
    }
    if rule.route.len() > 1 {
        for (j, destination) in rule.route.iter().enumerate() {
            if destination.headers.is_some() {
                add(
                    format!("{path}.route[{j}].headers"),
                    "not implemented: per-destination headers of a split route are dropped",
                );
            }
        }
    }
}

/// The connection pool settings paymesh does not apply, by field path under `connectionPool`.
fn pool_gaps(pool: &ConnectionPoolSettings) -> Vec<&'static str> {
    let mut gaps = Vec::new();
    if let Some(tcp) = &pool.tcp {
        gaps.extend(
            [
                ("tcp.tcpKeepalive", tcp.tcp_keepalive.is_some()),
                ("tcp.maxConnectionDuration", tcp.max_connection_duration.is_some()),
            ]
            .into_iter()
            .filter_map(|(field, set)| set.then_some(field)),
        );
    }
    if let Some(http) = &pool.http {
        gaps.extend(
            [
                ("http.useClientProtocol", http.use_client_protocol),
                ("http.maxConcurrentStreams", http.max_concurrent_streams > 0),
                ("http.http2KeepAlive", http.http2_keep_alive.is_some()),
            ]
            .into_iter()
            .filter_map(|(field, set)| set.then_some(field)),
        );
    }
    gaps
}

/// The load balancer settings paymesh does not apply.
fn balancer_gaps(lb: &LoadBalancerSettings) -> Vec<&'static str> {
    [
        ("localityLbSetting", lb.locality_lb_setting.is_some()),
        ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
        ("warmup", lb.warmup.is_some()),
        ("zoneAwareLbSetting", lb.zone_aware_lb_setting.is_some()),
        ("backendUtilization", matches!(lb.policy, Some(LbPolicy::BackendUtilization(_)))),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect()
}

fn traffic_policy(policy: &TrafficPolicy, path: &str, add: &mut impl FnMut(String, &str)) {
    let not_applied = [
        ("tunnel", policy.tunnel.is_some()),
        ("proxyProtocol", policy.proxy_protocol.is_some()),
        ("retryBudget", policy.retry_budget.is_some()),
    ];
    for (field, present) in not_applied {
        if present {
            add(format!("{path}.{field}"), POLICY_DROPPED);
        }
    }
    let mut settings =
        |at: String, lb: Option<&LoadBalancerSettings>, pool: Option<&ConnectionPoolSettings>| {
            for field in lb.map(balancer_gaps).unwrap_or_default() {
                add(format!("{at}.loadBalancer.{field}"), POLICY_DROPPED);
            }
            for field in pool.map(pool_gaps).unwrap_or_default() {
                add(format!("{at}.connectionPool.{field}"), POLICY_DROPPED);
            }
        };
    settings(path.to_owned(), policy.load_balancer.as_ref(), policy.connection_pool.as_ref());
    for (i, port) in policy.port_level_settings.iter().enumerate() {
        settings(
            format!("{path}.portLevelSettings[{i}]"),
            port.load_balancer.as_ref(),
            port.connection_pool.as_ref(),
        );
    }
    let origination = |tls: Option<&ClientTlsSettings>| {
        tls.is_some_and(|t| matches!(t.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual))
    };
    if origination(policy.tls.as_ref()) {
        add(format!("{path}.tls.mode"), TLS_ORIGINATION);
    }
    for (i, port) in policy.port_level_settings.iter().enumerate() {
        if origination(port.tls.as_ref()) {
            add(format!("{path}.portLevelSettings[{i}].tls.mode"), TLS_ORIGINATION);
        }
    }
}
