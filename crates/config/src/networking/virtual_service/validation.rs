//! The VirtualService rules of Istio's webhook (`ValidateVirtualService`, `validateHTTPRoute`,
//! `validateTLSRoute`, `validateTCPRoute`): hosts, gateway names, route kinds that exclude
//! each other, matches, destinations and weights. The per-feature HTTP checks (headers,
//! CORS, faults, retries, redirects, rewrites) are in [`http`].

mod http;

use super::{
    HttpMatchRequest, HttpRoute, HttpRouteDestination, L4MatchAttributes, MESH_GATEWAY, RouteDestination,
    TcpRoute, TlsMatchAttributes, TlsRoute, VirtualService,
};
use crate::networking::host::{self, Host};
use crate::networking::rules::{self, push};
use crate::networking::{Destination, Placement};
use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::types::{StringCondition, StringMatch, is_dns1123_label};
use crate::validate::Validate;

/// Prefix of header names that route on a JWT claim (`@request.auth.claims.group`).
const JWT_CLAIM_HEADER: &str = "@request.auth.claims";

impl Validate for VirtualService {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.is_delegate() {
            let rules = [
                (
                    !self.gateways.is_empty(),
                    "gateways",
                    "delegate virtual service must have no gateways specified",
                ),
                (!self.tls.is_empty(), "tls", "delegate virtual service must have no tls route specified"),
                (!self.tcp.is_empty(), "tcp", "delegate virtual service must have no tcp route specified"),
            ];
            for (_, field, message) in rules.into_iter().filter(|(broken, ..)| *broken) {
                push(errors, &at.key(field), message);
            }
        }
        let applies_to_gateway =
            !self.gateways.is_empty() && !self.gateways.iter().any(|g| g == MESH_GATEWAY);
        check_gateway_names(&self.gateways, &at.key("gateways"), errors);
        if !applies_to_gateway {
            self.check_no_jwt_claim_routes(at, errors);
        }
        self.check_hosts(applies_to_gateway, at, errors);
        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            push(errors, at, "http, tcp or tls must be provided in virtual service");
        }
        for (i, route) in self.http.iter().enumerate() {
            check_http_route(route, self.is_delegate(), &at.key("http").index(i), errors);
        }
        for (i, route) in self.tls.iter().enumerate() {
            check_tls_route(route, self, &at.key("tls").index(i), errors);
        }
        for (i, route) in self.tcp.iter().enumerate() {
            check_tcp_route(route, &at.key("tcp").index(i), errors);
        }
    }
}

impl Placement for VirtualService {
    fn validate_placement(&self, _name: &str, namespace: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
        rules::check_export_to(namespace, &self.export_to, false, false, &at.key("exportTo"), errors);
    }
}

impl VirtualService {
    fn check_no_jwt_claim_routes(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        for (i, route) in self.http.iter().enumerate() {
            for (j, m) in route.matches.iter().enumerate() {
                let at = at.key("http").index(i).key("match").index(j);
                for (field, headers) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
                    for name in headers.keys().filter(|k| is_jwt_claim(k)) {
                        push(
                            errors,
                            &at.key(field).key(name.as_str()),
                            format!(
                                "JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: [{}]",
                                self.gateways.join(" ")
                            ),
                        );
                    }
                }
            }
        }
    }

    fn check_hosts(&self, applies_to_gateway: bool, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let sni = self.tls.iter().any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut all_valid = true;
        for (i, h) in self.hosts.iter().enumerate() {
            let checked = if applies_to_gateway {
                host::validate_gateway_bound_domain(sni, h.as_str())
            } else {
                host::validate_wildcard_domain(h.as_str())
            };
            match checked {
                Err(_) if host::is_ip(h.as_str()) => {}
                Err(e) => {
                    push(errors, &at.key("hosts").index(i), e);
                    all_valid = false;
                }
                Ok(()) if !applies_to_gateway && h.as_str() == "*" => {
                    push(
                        errors,
                        &at.key("hosts").index(i),
                        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                    );
                    all_valid = false;
                }
                Ok(()) => {}
            }
        }
        if all_valid {
            for (j, later) in self.hosts.iter().enumerate() {
                for earlier in self.hosts[..j].iter().filter(|e| e.matches(later)) {
                    push(
                        errors,
                        &at.key("hosts").index(j),
                        format!("duplicate hosts in virtual service: {earlier} & {later}"),
                    );
                }
            }
        }
    }
}

fn is_jwt_claim(header: &str) -> bool {
    header.strip_prefix(JWT_CLAIM_HEADER).is_some_and(|rest| rest.len() > 1 && rest.starts_with(['.', '[']))
}

/// Gateway references: `namespace/name`, or a bare name (`mesh`, legacy `name.namespace`)
/// that must be a valid FQDN (`validateGatewayNames`).
fn check_gateway_names(names: &[String], at: &FieldPath, errors: &mut Vec<FieldError>) {
    for (i, name) in names.iter().enumerate() {
        let at = at.index(i);
        let Some((namespace, gateway)) = name.split_once('/') else {
            if let Err(e) = host::validate_fqdn(name) {
                push(errors, &at, e);
            }
            continue;
        };
        if namespace.is_empty() || gateway.is_empty() {
            push(errors, &at, "config namespace and gateway name cannot be empty");
        }
        if !is_dns1123_label(namespace) {
            push(errors, &at, format!("invalid value for namespace: {namespace:?}"));
        }
        if !is_dns1123_label(gateway) {
            push(errors, &at, format!("invalid value for gateway name: {gateway:?}"));
        }
    }
}

/// How an HTTP route relates to delegation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteKind {
    Independent,
    /// Hands over to a delegate VirtualService (`delegate:` set).
    Root,
    /// Belongs to a delegate VirtualService.
    Delegated,
}

fn check_http_route(route: &HttpRoute, in_delegate: bool, at: &FieldPath, errors: &mut Vec<FieldError>) {
    let kind = match (in_delegate, route.delegate.is_some()) {
        (true, _) => RouteKind::Delegated,
        (false, true) => RouteKind::Root,
        (false, false) => RouteKind::Independent,
    };
    check_route_conflicts(route, kind, at, errors);
    for (i, m) in route.matches.iter().enumerate() {
        check_match(m, &at.key("match").index(i), errors);
    }
    if let Some(headers) = &route.headers {
        http::check_headers(headers, &at.key("headers"), errors);
    }
    if let Some(cors) = &route.cors_policy {
        http::check_cors(cors, &at.key("corsPolicy"), errors);
    }
    if let Some(fault) = &route.fault {
        http::check_fault(fault, &at.key("fault"), errors);
    }
    for (field, percent) in
        [("mirrorPercent", route.mirror_percent), ("mirror_percent", route.mirror_percent_snake)]
    {
        if let Some(value) = percent.filter(|v| *v > 100) {
            push(
                errors,
                &at.key(field),
                format!("mirror_percent must have a max value of 100 (it has {value})"),
            );
        }
    }
    if let Some(p) = &route.mirror_percentage {
        http::check_mirror_percentage(
            "mirror_percentage",
            p.value,
            &at.key("mirrorPercentage").key("value"),
            errors,
        );
    }
    if let Some(mirror) = &route.mirror {
        mirror.validate(&at.key("mirror"), errors);
    }
    for (i, mirror) in route.mirrors.iter().enumerate() {
        let at = at.key("mirrors").index(i);
        match &mirror.destination {
            Some(destination) => destination.validate(&at.key("destination"), errors),
            None => push(errors, &at, "destination is required for mirrors"),
        }
        if let Some(p) = &mirror.percentage {
            http::check_mirror_percentage(
                "mirror percentage",
                p.value,
                &at.key("percentage").key("value"),
                errors,
            );
        }
    }
    if let Some(redirect) = &route.redirect {
        http::check_redirect(redirect, &at.key("redirect"), errors);
    }
    if let Some(response) = &route.direct_response {
        http::check_direct_response(response, &at.key("directResponse"), errors);
    }
    if let Some(retries) = &route.retries {
        http::check_retries(retries, &at.key("retries"), errors);
    }
    if let Some(rewrite) = &route.rewrite {
        http::check_rewrite(rewrite, &at.key("rewrite"), errors);
    }
    http::check_authority_rewrite(route, at, errors);
    check_http_destinations(&route.route, &at.key("route"), errors);
    rules::check_optional_duration(route.timeout.as_ref(), &at.key("timeout"), errors);
}

/// Redirect, direct response, route and delegate exclude each other (`validateHTTPRouteConflict`).
fn check_route_conflicts(route: &HttpRoute, kind: RouteKind, at: &FieldPath, errors: &mut Vec<FieldError>) {
    let mut conflict = |field: &str, message: String| push(errors, &at.key(field), message);
    if kind == RouteKind::Root {
        if route.redirect.is_some() {
            conflict("redirect", format!("root HTTP route {} must not specify redirect", route.name));
        }
        if !route.route.is_empty() {
            conflict("route", format!("root HTTP route {} must not specify route", route.name));
        }
        return;
    }
    if kind == RouteKind::Delegated && route.delegate.is_some() {
        conflict("delegate", "delegate HTTP route cannot contain delegate".to_owned());
    }
    let (instead, instead_name) = if route.redirect.is_some() {
        (Some("redirect"), "redirect")
    } else if route.direct_response.is_some() {
        (Some("directResponse"), "direct_response")
    } else {
        (None, "")
    };
    match instead {
        Some(field) => {
            if !route.route.is_empty() {
                conflict("route", format!("HTTP route cannot contain both route and {instead_name}"));
            }
            if route.fault.is_some() {
                conflict("fault", format!("HTTP route cannot contain both fault and {instead_name}"));
            }
            if route.rewrite.is_some() {
                conflict(
                    "rewrite",
                    format!("HTTP route rule cannot contain both rewrite and {instead_name}"),
                );
            }
            if field == "redirect" && route.direct_response.is_some() {
                conflict(
                    "directResponse",
                    "HTTP route rule cannot contain both direct_response and redirect".to_owned(),
                );
            }
        }
        None if route.route.is_empty() => {
            push(errors, at, "HTTP route, redirect or direct_response is required")
        }
        None => {}
    }
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        push(errors, &at.key("mirrors"), "HTTP route cannot contain both mirror and mirrors");
    }
}

/// One request match (`validateHTTPRouteMatchRequest`).
fn check_match(m: &HttpMatchRequest, at: &FieldPath, errors: &mut Vec<FieldError>) {
    for (name, condition) in &m.headers {
        let at = at.key("headers").key(name.as_str());
        http::check_match_header_name(name, &at, errors);
        if let Some(sm) = condition.as_match() {
            rules::check_string_match(sm, "headers", &at, errors);
        }
    }
    for (name, condition) in &m.without_headers {
        let at = at.key("withoutHeaders").key(name.as_str());
        http::check_match_header_name(name, &at, errors);
        // `regex: "*"` is not a regular expression: it means "present".
        if let Some(sm) = condition.as_match().filter(|sm| **sm != StringMatch::Regex("*".to_owned())) {
            rules::check_string_match(sm, "withoutHeaders", &at, errors);
        }
    }
    // An empty URI prefix is allowed (match everything); other fields need a value.
    if let Some(StringCondition::Match(sm)) = &m.uri {
        rules::check_string_match_regex(sm, "uri", &at.key("uri"), errors);
    }
    for (field, condition) in [("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)] {
        if let Some(StringCondition::Match(sm)) = condition {
            rules::check_string_match(sm, field, &at.key(field), errors);
        }
    }
    for (name, condition) in &m.query_params {
        if let Some(sm) = condition.as_match() {
            rules::check_string_match(sm, "queryParams", &at.key("queryParams").key(name.as_str()), errors);
        }
    }
    if m.port != 0 {
        rules::check_port(m.port, &at.key("port"), errors);
    }
    rules::check_labels(&m.source_labels, &at.key("sourceLabels"), errors);
    check_gateway_names(&m.gateways, &at.key("gateways"), errors);
    if !m.source_namespace.is_empty() && !is_dns1123_label(&m.source_namespace) {
        push(
            errors,
            &at.key("sourceNamespace"),
            format!("sourceNamespace match {} is invalid", m.source_namespace),
        );
    }
}

/// Weighted HTTP destinations (`validateHTTPRouteDestinations`).
fn check_http_destinations(
    destinations: &[HttpRouteDestination],
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    for (i, d) in destinations.iter().enumerate() {
        if let Some(headers) = &d.headers {
            http::check_headers(headers, &at.index(i).key("headers"), errors);
        }
    }
    let pairs: Vec<(Option<&Destination>, i32, FieldPath)> = destinations
        .iter()
        .enumerate()
        .map(|(i, d)| (d.destination.as_ref(), d.weight, at.index(i)))
        .collect();
    check_weights(&pairs, at, errors);
}

/// Each destination, non-negative weights, and some weight when there are several.
fn check_weights(
    destinations: &[(Option<&Destination>, i32, FieldPath)],
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let mut total: i64 = 0;
    for (destination, weight, item) in destinations {
        match destination {
            Some(destination) => destination.validate(&item.key("destination"), errors),
            None => push(errors, item, "destination is required"),
        }
        if *weight < 0 {
            push(errors, &item.key("weight"), format!("weight {weight} < 0"));
        }
        total += i64::from(*weight);
    }
    if destinations.len() > 1 && total == 0 {
        push(errors, at, "total destination weight = 0");
    }
}

fn check_route_destinations(destinations: &[RouteDestination], at: &FieldPath, errors: &mut Vec<FieldError>) {
    let pairs: Vec<(Option<&Destination>, i32, FieldPath)> = destinations
        .iter()
        .enumerate()
        .map(|(i, d)| (d.destination.as_ref(), d.weight, at.index(i)))
        .collect();
    check_weights(&pairs, at, errors);
}

fn check_tls_route(route: &TlsRoute, vs: &VirtualService, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if route.matches.is_empty() {
        push(errors, &at.key("match"), "TLS route must have at least one match condition");
    }
    for (i, m) in route.matches.iter().enumerate() {
        check_tls_match(m, vs, &at.key("match").index(i), errors);
    }
    if route.route.is_empty() {
        push(errors, &at.key("route"), "TLS route is required");
    }
    check_route_destinations(&route.route, &at.key("route"), errors);
}

fn check_tls_match(
    m: &TlsMatchAttributes,
    vs: &VirtualService,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    if m.sni_hosts.is_empty() {
        push(errors, &at.key("sniHosts"), "TLS match must have at least one SNI host");
    }
    for (i, sni) in m.sni_hosts.iter().enumerate() {
        check_sni_host(sni, vs, &at.key("sniHosts").index(i), errors);
    }
    check_l4_common(&m.destination_subnets, m.port, &m.source_labels, &m.gateways, at, errors);
}

/// An SNI host must be a domain covered by one of the VirtualService's hosts (`validateSniHost`).
fn check_sni_host(sni: &Host, vs: &VirtualService, at: &FieldPath, errors: &mut Vec<FieldError>) {
    // Istio checks SNI hosts with the gateway rules unless `mesh` is named explicitly.
    let checked = if vs.gateways.iter().any(|g| g == MESH_GATEWAY) {
        host::validate_wildcard_domain(sni.as_str())
    } else {
        host::validate_gateway_bound_domain(true, sni.as_str())
    };
    match checked {
        // An IP address is accepted (Istio warns that clients rarely send one as SNI).
        Err(_) if host::is_ip(sni.as_str()) => {}
        Err(e) => push(errors, at, e),
        Ok(()) if vs.hosts.iter().any(|h| sni.subset_of(h)) => {}
        Ok(()) => {
            let hosts: Vec<&str> = vs.hosts.iter().map(Host::as_str).collect();
            push(
                errors,
                at,
                format!(
                    "SNI host {:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                    sni.as_str(),
                    hosts.join(", ")
                ),
            );
        }
    }
}

fn check_tcp_route(route: &TcpRoute, at: &FieldPath, errors: &mut Vec<FieldError>) {
    for (i, m) in route.matches.iter().enumerate() {
        check_tcp_match(m, &at.key("match").index(i), errors);
    }
    if route.route.is_empty() {
        push(errors, &at.key("route"), "TCP route is required");
    }
    check_route_destinations(&route.route, &at.key("route"), errors);
}

fn check_tcp_match(m: &L4MatchAttributes, at: &FieldPath, errors: &mut Vec<FieldError>) {
    check_l4_common(&m.destination_subnets, m.port, &m.source_labels, &m.gateways, at, errors);
}

/// Conditions TLS and TCP matches share (`validateTLSMatch`, `validateTCPMatch`).
fn check_l4_common(
    subnets: &[String],
    port: u32,
    source_labels: &std::collections::BTreeMap<String, String>,
    gateways: &[String],
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    for (i, subnet) in subnets.iter().enumerate() {
        if let Err(e) = host::validate_ip_subnet(subnet) {
            push(errors, &at.key("destinationSubnets").index(i), e);
        }
    }
    if port != 0 {
        rules::check_port(port, &at.key("port"), errors);
    }
    rules::check_labels(source_labels, &at.key("sourceLabels"), errors);
    check_gateway_names(gateways, &at.key("gateways"), errors);
}
