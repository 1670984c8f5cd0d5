//! Istio's VirtualService analyzers: `virtualservice.GatewayAnalyzer` (the gateways a
//! VirtualService binds to exist and serve its hosts), `ConflictingMeshGatewayHostsAnalyzer`
//! (two mesh-bound VirtualServices define one host), `DestinationHostAnalyzer` (destinations
//! are known services, with a port when the service has several; ingress routes that skip
//! the subsets sidecars use), `DestinationRuleAnalyzer` (destination subsets exist) and
//! `JWTClaimRouteAnalyzer` (claim-based routing has a RequestAuthentication on the gateway).
//! [`matches`] holds the rule-order checks that upstream runs inside schema validation.
//! `DelegateAnalyzer` (delegation that istiod only logs about) and `RetryTimeoutAnalyzer`
//! (retries that cannot fit in the route's timeout) are paymesh's own (`PM` codes).
//!
//! Each of Istio's analyzers reads the typed model (`Spec::virtual_service`) and follows its
//! upstream file (`pkg/config/analysis/analyzers/virtualservice/*.go`). They need no special
//! case for delegate VirtualServices (no `hosts`): those define no host, so they conflict with
//! nothing.

mod conflict;
mod delegates;
mod destination_hosts;
mod destination_rules;
mod gateways;
pub mod hosts;
mod jwt;
pub mod matches;
mod retries;

pub use conflict::ConflictingMeshGatewayHostsAnalyzer;
pub use delegates::DelegateAnalyzer;
pub use destination_hosts::DestinationHostAnalyzer;
pub use destination_rules::DestinationRuleAnalyzer;
pub use gateways::GatewayAnalyzer;
pub use jwt::JwtClaimRouteAnalyzer;
pub use retries::RetryTimeoutAnalyzer;

use super::kube;
use crate::networking::{Destination, VirtualService};
use crate::path::FieldPath;
use crate::resource::{Resource, Spec};
use crate::store::Store;

/// The VirtualServices istioctl analyzes.
fn virtual_services(store: &Store) -> impl Iterator<Item = (&Resource, &VirtualService)> {
    store.typed("VirtualService", Spec::virtual_service).filter(|(r, _)| !kube::ignored(r))
}

/// Which list a destination comes from, as upstream's `AnnotatedDestination.RouteRule` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteKind {
    Tcp,
    Tls,
    Http,
    /// `http[].mirror` (deprecated single mirror).
    Mirror,
    /// `http[].mirrors[]`.
    Mirrors,
}

/// A destination and where it is written (`getRouteDestinations`, `getHTTPMirrorDestinations`).
struct RoutedDestination<'a> {
    kind: RouteKind,
    rule: usize,
    index: usize,
    /// `None` for a route entry written without a destination (`- {}`).
    destination: Option<&'a Destination>,
}

impl RoutedDestination<'_> {
    /// The destination host (empty when there is no destination).
    fn host(&self) -> &str {
        self.destination.map_or("", |d| d.host.as_str())
    }

    /// The destination subset (empty when none).
    fn subset(&self) -> &str {
        self.destination.map_or("", |d| d.subset.as_str())
    }

    /// The field of the host, for the message's line.
    fn field(&self) -> FieldPath {
        let spec = FieldPath::root().key("spec");
        match self.kind {
            RouteKind::Tcp | RouteKind::Tls | RouteKind::Http => {
                let list = match self.kind {
                    RouteKind::Tcp => "tcp",
                    RouteKind::Tls => "tls",
                    _ => "http",
                };
                spec.key(list).index(self.rule).key("route").index(self.index).key("destination").key("host")
            }
            RouteKind::Mirror => spec.key("http").index(self.rule).key("mirror").key("host"),
            RouteKind::Mirrors => spec
                .key("http")
                .index(self.rule)
                .key("mirrors")
                .index(self.index)
                .key("destination")
                .key("host"),
        }
    }
}

/// The route destinations: TCP, then TLS, then HTTP, in order.
fn route_destinations(vs: &VirtualService) -> Vec<RoutedDestination<'_>> {
    let tcp = vs.tcp.iter().enumerate().flat_map(|(rule, r)| {
        r.route.iter().enumerate().map(move |(index, d)| RoutedDestination {
            kind: RouteKind::Tcp,
            rule,
            index,
            destination: d.destination.as_ref(),
        })
    });
    let tls = vs.tls.iter().enumerate().flat_map(|(rule, r)| {
        r.route.iter().enumerate().map(move |(index, d)| RoutedDestination {
            kind: RouteKind::Tls,
            rule,
            index,
            destination: d.destination.as_ref(),
        })
    });
    let http = vs.http.iter().enumerate().flat_map(|(rule, r)| {
        r.route.iter().enumerate().map(move |(index, d)| RoutedDestination {
            kind: RouteKind::Http,
            rule,
            index,
            destination: d.destination.as_ref(),
        })
    });
    tcp.chain(tls).chain(http).collect()
}

/// The HTTP mirror destinations, rule by rule: `mirror`, then `mirrors`.
fn mirror_destinations(vs: &VirtualService) -> Vec<RoutedDestination<'_>> {
    let mut all = Vec::new();
    for (rule, route) in vs.http.iter().enumerate() {
        if let Some(mirror) = &route.mirror {
            all.push(RoutedDestination {
                kind: RouteKind::Mirror,
                rule,
                index: 0,
                destination: Some(mirror),
            });
        }
        for (index, mirror) in route.mirrors.iter().enumerate() {
            let destination = mirror.destination.as_ref();
            all.push(RoutedDestination { kind: RouteKind::Mirrors, rule, index, destination });
        }
    }
    all
}

/// `resource.NewShortOrFullName`: `namespace/name` as written, or `name` in `namespace`.
fn short_or_full_name<'a>(namespace: &'a str, name: &'a str) -> (&'a str, &'a str) {
    name.split_once('/').unwrap_or((namespace, name))
}

/// A gateway reference of `vs` as upstream prints it: qualified with the VirtualService's
/// namespace when the file gives one.
fn reference_name(vs: &Resource, name: &str) -> String {
    match &vs.meta.namespace {
        Some(namespace) if !name.contains('/') => format!("{namespace}/{name}"),
        _ => name.to_owned(),
    }
}
