//! `virtualservice.DestinationRuleAnalyzer`: a route or mirror destination with a `subset`
//! needs a DestinationRule for that host defining that subset (IST0101); without one the
//! proxy has no cluster for it and the route fails with 503s.
//!
//! Hosts are compared as Services (namespace, name): the destination's short name in the
//! VirtualService's namespace, the DestinationRule's host in the DestinationRule's.

use std::collections::BTreeSet;

use super::hosts::{cluster_domain, resource_name, to_fqdn};
use super::{RouteKind, mirror_destinations, route_destinations, virtual_services};
use crate::analyze::kube::{self, Unique};
use crate::analyze::{Analyzer, Context, Report, messages};
use crate::resource::Spec;

/// `virtualservice.DestinationRuleAnalyzer`.
pub struct DestinationRuleAnalyzer;

impl Analyzer for DestinationRuleAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.DestinationRuleAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let domain = cluster_domain(ctx.mesh);
        // ((namespace, name), subset) of every subset a DestinationRule defines.
        let mut subsets = BTreeSet::new();
        for (rule, spec) in
            ctx.store.typed("DestinationRule", Spec::destination_rule).filter(|(r, _)| !kube::ignored(r))
        {
            let namespace = rule.namespace();
            let host = resource_name(namespace, &to_fqdn(namespace, spec.host.as_str(), domain));
            for subset in &spec.subsets {
                subsets.insert((host.clone(), subset.name.clone()));
            }
        }

        for (vs, spec) in virtual_services(ctx.store) {
            let destinations = route_destinations(spec).into_iter().chain(mirror_destinations(spec));
            for destination in destinations.filter(|d| !d.subset().is_empty()) {
                let host = resource_name(vs.namespace(), destination.host());
                if subsets.contains(&(host, destination.subset().to_owned())) {
                    continue;
                }
                let what = match destination.kind {
                    RouteKind::Mirror | RouteKind::Mirrors => "mirror+subset in destinationrule",
                    _ => "host+subset in destinationrule",
                };
                let value = format!("{}+{}", destination.host(), destination.subset());
                report.add(
                    vs,
                    Some(&destination.field()),
                    messages::referenced_resource_not_found(what, value),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::gateway::testing::analyze_testdata;

    #[test]
    fn upstream_case() {
        assert_eq!(
            analyze_testdata(&DestinationRuleAnalyzer, &["virtualservice_destinationrules.yaml"]),
            [
                "IST0101 VirtualService default/reviews-bogussubset",
                "IST0101 VirtualService default/reviews-mirror-bogussubset",
            ]
        );
    }
}
