//! VirtualService HTTP routes into model routes, shared by sidecars (mesh-bound
//! VirtualServices) and gateways (gateway-bound ones).
//!
//! Compiled today: `match` on uri, method and headers (`withoutHeaders` as inverted header
//! conditions, `gateways` against the proxy's), weighted destinations (host resolved relative
//! to the VirtualService's namespace, port, subset) and `directResponse`. A rule that needs more
//! (delegate, redirect, query/scheme/authority/port/source matches) is left out whole rather
//! than compiled into something broader: a dropped condition would turn it into a catch-all.

use paymesh_api::model::{self, HeaderEdits, HeaderMatch, Route, RouteAction, RouteMatch, WeightedCluster};
use paymesh_config::networking::VirtualService;
use paymesh_config::networking::virtual_service::{BodyContent, HttpMatchRequest, HttpRoute};
use paymesh_config::types::{StringCondition, StringMatch};

use super::cluster::{ClusterInput, ClusterSet};
use super::naming::resolve_host;

/// The routes of `vs` (in `vs_namespace`) for a proxy that is `gateway` (`ns/name`, or `mesh`
/// for a sidecar); `default_port` is used for destinations that name no port.
pub fn http_routes(
    input: &ClusterInput<'_>,
    clusters: &mut ClusterSet,
    vs: &VirtualService,
    vs_namespace: &str,
    gateway: &str,
    default_port: Option<u16>,
) -> Vec<Route> {
    vs.http
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| {
            let matches = route_matches(rule, vs_namespace, gateway)?;
            let action = action(input, clusters, rule, vs_namespace, default_port)?;
            let name = if rule.name.is_empty() { format!("route-{index}") } else { rule.name.clone() };
            Some(Route { name, matches, headers: HeaderEdits::default(), action })
        })
        .collect()
}

/// The match alternatives of `rule`; `None` when the rule can't be compiled faithfully or no
/// alternative applies to `gateway`.
fn route_matches(rule: &HttpRoute, vs_namespace: &str, gateway: &str) -> Option<Vec<RouteMatch>> {
    if rule.matches.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for m in &rule.matches {
        if !m.gateways.is_empty() && !m.gateways.iter().any(|g| gateway_named(g, vs_namespace, gateway)) {
            continue;
        }
        out.push(route_match(m)?);
    }
    (!out.is_empty()).then_some(out)
}

fn route_match(m: &HttpMatchRequest) -> Option<RouteMatch> {
    let unsupported = m.scheme.is_some()
        || m.authority.is_some()
        || m.port != 0
        || !m.source_labels.is_empty()
        || !m.query_params.is_empty()
        || m.ignore_uri_case
        || !m.source_namespace.is_empty();
    if unsupported {
        return None;
    }
    let headers = m
        .headers
        .iter()
        .map(|(name, c)| header(name, c, false))
        .chain(m.without_headers.iter().map(|(name, c)| header(name, c, true)))
        .collect();
    Some(RouteMatch {
        uri: m.uri.as_ref().and_then(StringCondition::as_match).map(string_match),
        method: m.method.as_ref().and_then(StringCondition::as_match).map(string_match),
        headers,
    })
}

fn header(name: &str, condition: &StringCondition, invert: bool) -> HeaderMatch {
    HeaderMatch { name: name.to_ascii_lowercase(), value: condition.as_match().map(string_match), invert }
}

fn string_match(m: &StringMatch) -> model::StringMatch {
    match m {
        StringMatch::Exact(s) => model::StringMatch::Exact(s.clone()),
        StringMatch::Prefix(s) => model::StringMatch::Prefix(s.clone()),
        StringMatch::Regex(s) => model::StringMatch::Regex(s.clone()),
    }
}

fn action(
    input: &ClusterInput<'_>,
    clusters: &mut ClusterSet,
    rule: &HttpRoute,
    vs_namespace: &str,
    default_port: Option<u16>,
) -> Option<RouteAction> {
    if rule.delegate.is_some() || rule.redirect.is_some() {
        return None;
    }
    if let Some(direct) = &rule.direct_response {
        let body = match direct.body.as_ref().and_then(|b| b.content.as_ref()) {
            Some(BodyContent::String(s)) => s.clone(),
            // Base64 bodies are not decoded yet: leave the rule out rather than answer garbage.
            Some(BodyContent::Bytes(_)) => return None,
            None => String::new(),
        };
        return Some(RouteAction::DirectResponse { status: u16::try_from(direct.status).ok()?, body });
    }
    let single = rule.route.len() == 1;
    let mut targets = Vec::new();
    for destination in &rule.route {
        let d = destination.destination.as_ref()?;
        let host = resolve_host(d.host.as_str(), vs_namespace);
        let service = input.registry.service_by_host(&host)?;
        let wanted = d.port.and_then(|p| u16::try_from(p.number).ok()).filter(|p| *p != 0);
        let port = match wanted.or(default_port) {
            Some(number) => service.ports.iter().find(|p| p.port == number),
            None if service.ports.len() == 1 => service.ports.first(),
            None => None,
        }?;
        let subset = (!d.subset.is_empty()).then_some(d.subset.as_str());
        let cluster = clusters.add(input, service, port, subset);
        let weight =
            if single && destination.weight == 0 { 100 } else { u32::try_from(destination.weight).ok()? };
        targets.push(WeightedCluster { cluster, weight });
    }
    (!targets.is_empty()).then_some(RouteAction::Forward { clusters: targets })
}

/// Whether `reference` (as a VirtualService in `vs_namespace` writes it: `ns/name`, `name`,
/// or `mesh`) names `gateway` (`ns/name`, or `mesh`).
pub fn gateway_named(reference: &str, vs_namespace: &str, gateway: &str) -> bool {
    if reference.contains('/') || reference == "mesh" {
        reference == gateway
    } else {
        format!("{vs_namespace}/{reference}") == gateway
    }
}
