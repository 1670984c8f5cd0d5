//! What the compiler leaves out: every field of an accepted config that the proxy model cannot
//! express yet, with the resource, the field's path and why.
//!
//! [`scan`] runs once per accepted config (the config store calls it and logs the list once per
//! version); `/debug/configz` shows it under `unsupported`, so nothing Istio would act on is
//! ignored silently.

use paymesh_config::Store;
use paymesh_config::networking::destination_rule::traffic_policy::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, H2UpgradePolicy, HttpSettings, TrafficPolicy,
};
use paymesh_config::networking::virtual_service::{BodyContent, HttpRoute};
use paymesh_config::resource::{Resource, Spec};
use serde::Serialize;

use super::gateway::server_tls;

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

const DROPPED: &str = "not implemented: the route is compiled without it";
const RULE_DROPPED: &str = "not implemented: the rule is left out";
const TLS_ORIGINATION: &str = "not implemented: TLS origination";
const POLICY_DROPPED: &str = "not implemented: endpoints are picked round robin with no limits";

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
        if !vs.tcp.is_empty() {
            add("spec.tcp".to_owned(), "not implemented: TCP routes are ignored");
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
    let dropped: [(&str, bool); 7] = [
        ("timeout", rule.timeout.is_some()),
        ("retries", rule.retries.is_some()),
        ("fault", rule.fault.is_some()),
        ("mirror", rule.mirror.is_some()),
        ("mirrors", !rule.mirrors.is_empty()),
        ("rewrite", rule.rewrite.is_some()),
        ("corsPolicy", rule.cors_policy.is_some()),
    ];
    for (field, present) in dropped {
        if present {
            add(format!("{path}.{field}"), DROPPED);
        }
    }
    for (field, present) in [("redirect", rule.redirect.is_some()), ("delegate", rule.delegate.is_some())] {
        if present {
            add(format!("{path}.{field}"), RULE_DROPPED);
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
    for (j, m) in rule.matches.iter().enumerate() {
        let conditions = [
            ("scheme", m.scheme.is_some()),
            ("authority", m.authority.is_some()),
            ("queryParams", !m.query_params.is_empty()),
            ("ignoreUriCase", m.ignore_uri_case),
        ];
        for (field, present) in conditions {
            if present {
                add(format!("{path}.match[{j}].{field}"), RULE_DROPPED);
            }
        }
    }
}

/// Whether a connection pool sets anything besides `http.h2UpgradePolicy` (which is applied).
fn limits(pool: &ConnectionPoolSettings) -> bool {
    let http = pool
        .http
        .as_ref()
        .map(|http| HttpSettings { h2_upgrade_policy: H2UpgradePolicy::Default, ..http.clone() });
    pool.tcp.is_some() || http.is_some_and(|http| http != HttpSettings::default())
}

fn traffic_policy(policy: &TrafficPolicy, path: &str, add: &mut impl FnMut(String, &str)) {
    let not_applied = [
        ("loadBalancer", policy.load_balancer.is_some()),
        ("connectionPool", policy.connection_pool.as_ref().is_some_and(limits)),
        ("outlierDetection", policy.outlier_detection.is_some()),
        ("tunnel", policy.tunnel.is_some()),
        ("proxyProtocol", policy.proxy_protocol.is_some()),
        ("retryBudget", policy.retry_budget.is_some()),
    ];
    for (field, present) in not_applied {
        if present {
            add(format!("{path}.{field}"), POLICY_DROPPED);
        }
    }
    for (i, port) in policy.port_level_settings.iter().enumerate() {
        let port_level = [
            ("loadBalancer", port.load_balancer.is_some()),
            ("connectionPool", port.connection_pool.as_ref().is_some_and(limits)),
            ("outlierDetection", port.outlier_detection.is_some()),
        ];
        for (field, present) in port_level {
            if present {
                add(format!("{path}.portLevelSettings[{i}].{field}"), POLICY_DROPPED);
            }
        }
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
