//! VirtualService HTTP routes into model routes, shared by sidecars (mesh-bound
//! VirtualServices) and gateways (gateway-bound ones).
//!
//! Compiled: `match` (uri with `ignoreUriCase`, scheme, method, authority, headers,
//! `withoutHeaders` as inverted header conditions, `queryParams`), the proxy-side conditions
//! evaluated here as Istio evaluates them when it generates a proxy's config (`gateways`,
//! `sourceLabels` and `sourceNamespace` against the proxy, `port` against the listener port),
//! weighted destinations (host resolved relative to the VirtualService's namespace; port: the
//! one named, else the service's only port, else the listener port; subset), `headers` (route
//! level, with a single destination's own merged in), `directResponse`, the policies
//! (`timeout`, `retries`, `fault`: [`super::route_policy`]) and `delegate` (the delegate's rules
//! merged in, as Istio merges them), `rewrite` (uri, authority, `uriRegexRewrite`), `redirect`
//! mirrors (`mirror`, `mirrors`, with their percentages) and `corsPolicy`; and `tcp` routes
//! ([`tcp_clusters`]). A rule whose parts cannot be compiled faithfully is left out whole rather than
//! compiled into something broader: a dropped condition would turn it into a catch-all.
//! Fields dropped from a compiled rule are listed by [`super::unsupported`].

use std::borrow::Cow;

use paymesh_api::model::{
    self, Cors, HeaderEdits, HeaderMatch, HeaderOps, Mirror, PER_MILLION, QueryParamMatch, Redirect,
    RedirectPath, RedirectPort, RegexRewrite, Rewrite, Route, RouteAction, RouteMatch, WeightedCluster,
};
use paymesh_config::networking::virtual_service::{
    self, BodyContent, CorsPolicy, DerivePort, HeaderOperations, Headers, HttpMatchRequest, HttpRedirect,
    HttpRewrite, HttpRoute, UnmatchedPreflights, delegate,
};
use paymesh_config::networking::virtual_service::{L4MatchAttributes, MESH_GATEWAY};
use paymesh_config::networking::{Destination, VirtualService};
use paymesh_config::resource::{Resource, Spec};
use paymesh_config::types::{Percent, StringCondition, StringMatch};

use super::Inputs;
use super::cluster::ClusterSet;
use super::naming::resolve_host;
use super::route_policy::{per_million, route_policy};

/// Where a VirtualService's rules are compiled for: the proxy (`gateway`: `ns/name`, or `mesh`
/// for a sidecar) and the listener port (the Service port for a sidecar, the Gateway server
/// port for a gateway).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `ns/name` of the Gateway, or `mesh`.
    pub gateway: &'a str,
    /// The port requests arrive on.
    pub listener_port: u16,
}

/// The routes of `vs` (the spec of `resource`) for `target`, each naming its VirtualService. A
/// rule with a `delegate` is replaced by the delegate VirtualService's rules merged into it
/// ([`delegate::merge_routes`]: matches combined, unset fields inherited, conflicting rules left
/// out), each compiled in the delegate's namespace and named after it; a delegate that does not
/// exist leaves the rule out, so requests fall through to the rules after it, as in Istio.
pub fn http_routes(
    input: &Inputs<'_>,
    clusters: &mut ClusterSet,
    resource: &Resource,
    vs: &VirtualService,
    target: Target<'_>,
) -> Vec<Route> {
    let vs_namespace = resource.namespace();
    let mut expanded: Vec<(Cow<'_, HttpRoute>, &str, String)> = Vec::new();
    for rule in &vs.http {
        let Some(reference) = &rule.delegate else {
            expanded.push((
                Cow::Borrowed(rule),
                vs_namespace,
                format!("{vs_namespace}/{}", resource.meta.name),
            ));
            continue;
        };
        let Some((leaf, leaf_vs)) = delegate_of(input, &reference.name, &reference.namespace, vs_namespace)
        else {
            continue;
        };
        let leaf_namespace = leaf.namespace();
        let name = format!("{leaf_namespace}/{}", leaf.meta.name);
        for merged in delegate::merge_routes(rule, &leaf_vs.http) {
            expanded.push((Cow::Owned(merged), leaf_namespace, name.clone()));
        }
    }
    expanded
        .iter()
        .enumerate()
        .filter_map(|(index, (rule, rule_namespace, virtual_service))| {
            let matches = route_matches(input, rule, rule_namespace, target)?;
            let action = action(input, clusters, rule, rule_namespace, target.listener_port)?;
            let name = if rule.name.is_empty() { format!("route-{index}") } else { rule.name.clone() };
            let virtual_service = Some(virtual_service.clone());
            let policy = route_policy(rule);
            let rewrite = rule.rewrite.as_ref().map(rewrite);
            let mirrors = match &action {
                RouteAction::Forward { .. } => {
                    mirrors(input, clusters, rule, rule_namespace, target.listener_port)
                }
                RouteAction::DirectResponse { .. } | RouteAction::Redirect { .. } => Vec::new(),
            };
            let headers = header_edits(rule);
            let cors = rule.cors_policy.as_ref().map(cors);
            Some(Route { name, virtual_service, matches, headers, action, policy, rewrite, mirrors, cors })
        })
        .collect()
}

/// The weighted clusters of `vs`'s first `tcp` rule that applies to this proxy on `port` (a
/// match on `port`, `gateways`, `sourceLabels`, `sourceNamespace`, or no match at all);
/// `None` when none does, or a destination is not in the registry (the service's own cluster
/// stays).
pub fn tcp_clusters(
    input: &Inputs<'_>,
    clusters: &mut ClusterSet,
    resource: &Resource,
    vs: &VirtualService,
    port: u16,
) -> Option<Vec<WeightedCluster>> {
    let vs_namespace = resource.namespace();
    let proxy = input.proxy;
    let applies = |m: &L4MatchAttributes| {
        (m.port == 0 || m.port == u32::from(port))
            && (m.gateways.is_empty()
                || m.gateways.iter().any(|g| gateway_named(g, vs_namespace, MESH_GATEWAY)))
            && m.source_labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
            && (m.source_namespace.is_empty() || m.source_namespace == proxy.namespace)
    };
    let rule = vs.tcp.iter().find(|rule| rule.matches.is_empty() || rule.matches.iter().any(applies))?;
    let single = rule.route.len() == 1;
    rule.route
        .iter()
        .map(|destination| {
            let cluster =
                destination_cluster(input, clusters, destination.destination.as_ref()?, vs_namespace, port)?;
            let weight = if single && destination.weight == 0 {
                100
            } else {
                u32::try_from(destination.weight).ok()?
            };
            Some(WeightedCluster { cluster, weight })
        })
        .collect()
}

/// The delegate VirtualService `name` in `namespace` (the root's when empty): one without
/// hosts.
fn delegate_of<'a>(
    input: &Inputs<'a>,
    name: &str,
    namespace: &str,
    root_namespace: &str,
) -> Option<(&'a Resource, &'a VirtualService)> {
    let namespace = if namespace.is_empty() { root_namespace } else { namespace };
    input
        .store
        .typed("VirtualService", Spec::virtual_service)
        .find(|(r, vs)| r.namespace() == namespace && r.meta.name == name && vs.is_delegate())
}

/// The route's header edits: its own, with its single destination's merged in (the
/// destination's `set` wins over the route's for the same header).
pub fn header_edits(rule: &HttpRoute) -> HeaderEdits {
    let mut edits = HeaderEdits::default();
    let mut apply = |headers: &Headers| {
        merge(&mut edits.request, headers.request.as_ref());
        merge(&mut edits.response, headers.response.as_ref());
    };
    if let Some(headers) = &rule.headers {
        apply(headers);
    }
    if let [only] = rule.route.as_slice()
        && let Some(headers) = &only.headers
    {
        apply(headers);
    }
    edits
}

fn merge(ops: &mut HeaderOps, from: Option<&HeaderOperations>) {
    let Some(from) = from else { return };
    let lower = |(k, v): (&String, &String)| (k.to_ascii_lowercase(), v.clone());
    ops.set.extend(from.set.iter().map(lower));
    ops.add.extend(from.add.iter().map(lower));
    for name in &from.remove {
        let name = name.to_ascii_lowercase();
        if !ops.remove.contains(&name) {
            ops.remove.push(name);
        }
    }
}

/// The match alternatives of `rule`; `None` when the rule can't be compiled faithfully or no
/// alternative applies to this proxy and listener.
fn route_matches(
    input: &Inputs<'_>,
    rule: &HttpRoute,
    vs_namespace: &str,
    target: Target<'_>,
) -> Option<Vec<RouteMatch>> {
    if rule.matches.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for m in &rule.matches {
        if !applies_here(input, m, vs_namespace, target) {
            continue;
        }
        out.push(route_match(m)?);
    }
    (!out.is_empty()).then_some(out)
}

/// The conditions on the proxy itself, decided at compile time as Istio does: `gateways`,
/// `sourceLabels`, `sourceNamespace` and `port`.
fn applies_here(input: &Inputs<'_>, m: &HttpMatchRequest, vs_namespace: &str, target: Target<'_>) -> bool {
    let proxy = input.proxy;
    (m.gateways.is_empty() || m.gateways.iter().any(|g| gateway_named(g, vs_namespace, target.gateway)))
        && m.source_labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
        && (m.source_namespace.is_empty() || m.source_namespace == proxy.namespace)
        && (m.port == 0 || m.port == u32::from(target.listener_port))
}

fn route_match(m: &HttpMatchRequest) -> Option<RouteMatch> {
    let headers = m
        .headers
        .iter()
        .map(|(name, c)| header(name, c, false))
        .chain(m.without_headers.iter().map(|(name, c)| header(name, c, true)))
        .collect();
    let condition =
        |c: &Option<StringCondition>| c.as_ref().and_then(StringCondition::as_match).map(string_match);
    let query_params = m
        .query_params
        .iter()
        .map(|(name, c)| QueryParamMatch { name: name.clone(), value: c.as_match().map(string_match) })
        .collect();
    Some(RouteMatch {
        uri: condition(&m.uri),
        ignore_uri_case: m.ignore_uri_case,
        scheme: condition(&m.scheme),
        authority: condition(&m.authority),
        query_params,
        method: condition(&m.method),
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
    input: &Inputs<'_>,
    clusters: &mut ClusterSet,
    rule: &HttpRoute,
    vs_namespace: &str,
    listener_port: u16,
) -> Option<RouteAction> {
    if rule.delegate.is_some() {
        return None;
    }
    if let Some(redirect) = &rule.redirect {
        return Some(RouteAction::Redirect { redirect: redirect_of(redirect)? });
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
        let cluster = destination_cluster(input, clusters, d, vs_namespace, listener_port)?;
        let weight =
            if single && destination.weight == 0 { 100 } else { u32::try_from(destination.weight).ok()? };
        targets.push(WeightedCluster { cluster, weight });
    }
    (!targets.is_empty()).then_some(RouteAction::Forward { clusters: targets })
}

/// The cluster of destination `d` (host resolved relative to `vs_namespace`; port: the one
/// named, else the service's only port, else the listener port; subset), added when new.
fn destination_cluster(
    input: &Inputs<'_>,
    clusters: &mut ClusterSet,
    d: &Destination,
    vs_namespace: &str,
    listener_port: u16,
) -> Option<String> {
    let host = resolve_host(d.host.as_str(), vs_namespace);
    let service = input.registry.service_by_host(&host)?;
    let wanted = d.port.and_then(|p| u16::try_from(p.number).ok()).filter(|p| *p != 0);
    let port = match (wanted, service.ports.as_slice()) {
        (Some(number), ports) => ports.iter().find(|p| p.port == number),
        (None, [only]) => Some(only),
        (None, ports) => ports.iter().find(|p| p.port == listener_port),
    }?;
    let subset = (!d.subset.is_empty()).then_some(d.subset.as_str());
    Some(clusters.add(input, service, port, subset))
}

/// A rule's mirrors: `mirror` with `mirrorPercentage` (or the deprecated `mirrorPercent`),
/// and each of `mirrors` with its `percentage`; 100 % when unset, as Istio. A mirror whose
/// host is not in the registry is left out.
fn mirrors(
    input: &Inputs<'_>,
    clusters: &mut ClusterSet,
    rule: &HttpRoute,
    vs_namespace: &str,
    listener_port: u16,
) -> Vec<Mirror> {
    let share = |percent: Option<Percent>, legacy: Option<u32>| match (percent, legacy) {
        (Some(percent), _) => per_million(percent),
        (None, Some(legacy)) => legacy.min(100) * (PER_MILLION / 100),
        (None, None) => PER_MILLION,
    };
    let single = rule
        .mirror
        .as_ref()
        .map(|d| (d, share(rule.mirror_percentage, rule.mirror_percent.or(rule.mirror_percent_snake))));
    let listed =
        rule.mirrors.iter().filter_map(|m| Some((m.destination.as_ref()?, share(m.percentage, None))));
    single
        .into_iter()
        .chain(listed)
        .filter_map(|(d, per_million)| {
            let cluster = destination_cluster(input, clusters, d, vs_namespace, listener_port)?;
            Some(Mirror { cluster, per_million })
        })
        .collect()
}

/// A rule's `corsPolicy`: the deprecated exact `allowOrigin` list joins `allowOrigins`.
fn cors(policy: &CorsPolicy) -> Cors {
    let exact = policy.allow_origin.iter().map(|origin| model::StringMatch::Exact(origin.clone()));
    let matched = policy.allow_origins.iter().filter_map(StringCondition::as_match).map(string_match);
    Cors {
        allow_origins: exact.chain(matched).collect(),
        allow_methods: policy.allow_methods.clone(),
        allow_headers: policy.allow_headers.clone(),
        expose_headers: policy.expose_headers.clone(),
        max_age_secs: policy.max_age.map(|age| age.as_std().as_secs()),
        allow_credentials: policy.allow_credentials.unwrap_or(false),
        ignore_unmatched_preflights: policy.unmatched_preflights == Some(UnmatchedPreflights::Ignore),
    }
}

/// A rule's `rewrite`, with Istio's `\\1` groups written as the proxy's `${1}`.
fn rewrite(rewrite: &HttpRewrite) -> Rewrite {
    let non_empty = |text: &String| (!text.is_empty()).then(|| text.clone());
    Rewrite {
        uri: non_empty(&rewrite.uri),
        uri_regex: rewrite
            .uri_regex_rewrite
            .as_ref()
            .map(|r| RegexRewrite { pattern: r.pattern.clone(), substitution: substitution(&r.rewrite) }),
        authority: non_empty(&rewrite.authority),
    }
}

/// An RE2 substitution (`\\1`) as the `regex` crate writes it (`${1}`, and `$` doubled).
fn substitution(re2: &str) -> String {
    let mut out = String::with_capacity(re2.len());
    let mut chars = re2.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // RE2 reads one digit: `\10` is group 1, then `0`.
            '\\' if let Some(digit) = chars.next_if(char::is_ascii_digit) => {
                out.push_str(&format!("${{{digit}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// A rule's `redirect`; `None` for a status that is not one.
fn redirect_of(redirect: &HttpRedirect) -> Option<Redirect> {
    let non_empty = |text: &String| (!text.is_empty()).then(|| text.clone());
    let status =
        if redirect.redirect_code == 0 { 301 } else { u16::try_from(redirect.redirect_code).ok()? };
    let port = match redirect.port {
        Some(virtual_service::RedirectPort::Number(port)) => RedirectPort::Number(u16::try_from(port).ok()?),
        Some(virtual_service::RedirectPort::Derive(DerivePort::FromRequestPort)) => RedirectPort::RequestPort,
        Some(virtual_service::RedirectPort::Derive(DerivePort::FromProtocolDefault)) | None => {
            RedirectPort::ProtocolDefault
        }
    };
    let path = match (non_empty(&redirect.uri), non_empty(&redirect.prefix_rewrite)) {
        (Some(uri), _) => Some(RedirectPath::Replace(uri)),
        (None, Some(prefix)) => Some(RedirectPath::Prefix(prefix)),
        (None, None) => None,
    };
    Some(Redirect {
        status,
        scheme: non_empty(&redirect.scheme),
        authority: non_empty(&redirect.authority),
        port,
        path,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_substitutions_become_the_regex_crates() {
        assert_eq!(substitution(r"\2/instance/\1"), "${2}/instance/${1}");
        assert_eq!(substitution(r"/price/$5/\10"), "/price/$$5/${1}0");
        assert_eq!(substitution(r"\x"), r"\x");
    }
}
