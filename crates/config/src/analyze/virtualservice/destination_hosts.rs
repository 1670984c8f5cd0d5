//! `virtualservice.DestinationHostAnalyzer`: every route and mirror destination names a
//! Service or ServiceEntry visible from the VirtualService (IST0101), with a port the service
//! has (IST0101) or, when it has several, with a port at all (IST0112).
//!
//! It also reports a gateway-bound route without a subset to a host that a VirtualService
//! splits by subsets for that very host (IST0140): the gateway routes with its own
//! VirtualServices only, so the subset split (a canary, say) does not apply to its traffic.

use std::collections::BTreeMap;

use super::hosts::Services;
use super::{RouteKind, RoutedDestination, mirror_destinations, route_destinations, virtual_services};
use crate::analyze::gateway::full_name;
use crate::analyze::kube::Unique;
use crate::analyze::{Analyzer, Context, Report, messages};
use crate::networking::VirtualService;
use crate::resource::Resource;

/// `virtualservice.DestinationHostAnalyzer`.
pub struct DestinationHostAnalyzer;

impl Analyzer for DestinationHostAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.DestinationHostAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let services = Services::new(ctx);
        // VirtualService → the hosts it routes to by subset, among its own hosts.
        let mut split: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (vs, spec) in virtual_services(ctx.store) {
            for route in spec.http.iter().flat_map(|r| &r.route) {
                let Some(destination) = &route.destination else { continue };
                if !destination.subset.is_empty() && spec.hosts.contains(&destination.host) {
                    split.entry(full_name(vs)).or_default().push(destination.host.as_str());
                }
            }
        }

        for (vs, spec) in virtual_services(ctx.store) {
            check_hosts(vs, spec, &services, &mut report);
            if spec.gateways.is_empty() {
                continue;
            }
            for route in route_destinations(spec).iter().filter(|d| d.kind == RouteKind::Http) {
                if !route.subset().is_empty() {
                    continue;
                }
                for (other, _) in split.iter().filter(|(_, hosts)| hosts.contains(&route.host())) {
                    let message = messages::ingress_route_rules_not_affected(other, full_name(vs));
                    report.add(vs, Some(&route.field()), message);
                }
            }
        }
    }
}

/// `analyzeVirtualService`: each destination's host and port against the known services.
fn check_hosts(vs: &Resource, spec: &VirtualService, services: &Services, report: &mut Unique<'_>) {
    let namespace = vs.namespace();
    let routes = route_destinations(spec).into_iter().map(|d| (d, "host"));
    let mirrors = mirror_destinations(spec).into_iter().map(|d| (d, "mirror host"));
    for (destination, what) in routes.chain(mirrors) {
        match services.find(namespace, &spec.export_to, destination.host()) {
            None => {
                let message = messages::referenced_resource_not_found(what, destination.host());
                report.add(vs, Some(&destination.field()), message);
            }
            Some(ports) => check_port(vs, &destination, ports, report),
        }
    }
}

/// `checkServiceEntryPorts`.
fn check_port(vs: &Resource, destination: &RoutedDestination<'_>, ports: &[u32], report: &mut Unique<'_>) {
    let port = destination.destination.and_then(|d| d.port.as_ref());
    match port {
        None if ports.len() > 1 => {
            let numbers: Vec<i64> = ports.iter().map(|p| i64::from(*p)).collect();
            let message =
                messages::virtual_service_destination_port_selector_required(destination.host(), &numbers);
            report.add(vs, Some(&destination.field()), message);
        }
        None => {}
        Some(port) if !ports.contains(&port.number) => {
            let message = messages::referenced_resource_not_found(
                "host:port",
                format!("{}:{}", destination.host(), port.number),
            );
            report.add(vs, Some(&destination.field()), message);
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::gateway::testing::analyze_testdata;

    #[test]
    fn upstream_cases() {
        assert_eq!(
            analyze_testdata(&DestinationHostAnalyzer, &["virtualservice_destinationhosts.yaml"]),
            [
                "IST0101 VirtualService default/reviews-bogushost",
                "IST0101 VirtualService default/reviews-bogushost",
                "IST0101 VirtualService default/reviews-bogusport",
                "IST0101 VirtualService default/reviews-bookinfo-other",
                "IST0101 VirtualService default/reviews-mirror-bogushost",
                "IST0101 VirtualService hello/hello-export-to-bogus",
                "IST0101 VirtualService istio-system/cross-namespace-details",
                "IST0112 VirtualService default/reviews-2port-missing",
            ]
        );
        assert_eq!(
            analyze_testdata(
                &DestinationHostAnalyzer,
                &["virtualservice_route_rule_no_effects_ingress.yaml"]
            ),
            ["IST0140 VirtualService default/testing-service-01-test-01"]
        );
    }
}
