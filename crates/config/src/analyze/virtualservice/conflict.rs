//! `virtualservice.ConflictingMeshGatewayHostsAnalyzer`: two VirtualServices bound to the
//! mesh (no `gateways`, or `mesh` among them) that define the same host for the same
//! namespaces (IST0109); sidecars then use one of them, and which one is undefined.
//!
//! Hosts are compared as FQDNs (`reviews` in `foo` is `reviews.foo.svc.cluster.local`) per
//! visibility scope: the namespaces of `exportTo`, or `*`. A host exported to every namespace
//! also conflicts with an overlapping host (`*.d` and `*.productpage.d`) of a narrower scope.
//! Delegate VirtualServices define no host and are never reported.

use std::collections::{BTreeMap, BTreeSet};

use super::hosts::{EXPORT_TO_ALL, EXPORT_TO_LOCAL, cluster_domain, to_fqdn};
use super::virtual_services;
use crate::analyze::gateway::full_name;
use crate::analyze::kube::Unique;
use crate::analyze::{Analyzer, Context, Report, messages};
use crate::networking::Host;
use crate::path::FieldPath;
use crate::resource::Resource;

/// `virtualservice.ConflictingMeshGatewayHostsAnalyzer`.
pub struct ConflictingMeshGatewayHostsAnalyzer;

impl Analyzer for ConflictingMeshGatewayHostsAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.ConflictingMeshGatewayHostsAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let domain = cluster_domain(ctx.mesh);
        // (scope, FQDN) → the mesh-bound VirtualServices defining it, in load order.
        let mut by_host: BTreeMap<(String, String), Vec<&Resource>> = BTreeMap::new();
        for (vs, spec) in virtual_services(ctx.store).filter(|(_, s)| s.applies_to_mesh()) {
            let namespace = vs.namespace();
            let scopes: BTreeSet<&str> =
                if spec.export_to.is_empty() || spec.export_to.iter().any(|e| e == EXPORT_TO_ALL) {
                    BTreeSet::from([EXPORT_TO_ALL])
                } else {
                    spec.export_to
                        .iter()
                        .map(|e| if e == EXPORT_TO_LOCAL { namespace } else { e.as_str() })
                        .collect()
                };
            for scope in scopes {
                for host in &spec.hosts {
                    let key = (scope.to_owned(), to_fqdn(namespace, host.as_str(), domain));
                    by_host.entry(key).or_default().push(vs);
                }
            }
        }

        let at = FieldPath::root().key("metadata").key("name");
        let mut reported = BTreeSet::new();
        for ((scope, fqdn), defined_by) in &by_host {
            let mut conflicting = defined_by.clone();
            if scope != EXPORT_TO_ALL {
                // Hosts every namespace sees that overlap this one.
                let host = Host::from(fqdn.as_str());
                for ((other_scope, other), vss) in &by_host {
                    if other_scope == EXPORT_TO_ALL && host.matches(&Host::from(other.as_str())) {
                        conflicting.extend(vss);
                    }
                }
            }
            if conflicting.len() < 2 {
                continue;
            }
            let names: Vec<String> = conflicting.iter().map(|r| full_name(r)).collect();
            let scoped = format!("{scope}/{fqdn}");
            for vs in conflicting {
                if reported.insert(vs.friendly_name()) {
                    let message =
                        messages::conflicting_mesh_gateway_virtual_service_hosts(names.join(","), &scoped);
                    report.add(vs, Some(&at), message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::gateway::testing::{analyze, analyze_testdata};

    #[test]
    fn upstream_cases() {
        assert_eq!(
            analyze_testdata(
                &ConflictingMeshGatewayHostsAnalyzer,
                &["virtualservice_conflictingmeshgatewayhosts.yaml"]
            ),
            [
                "IST0109 VirtualService bar/ratings",
                "IST0109 VirtualService foo/bogus-productpage",
                "IST0109 VirtualService foo/productpage",
                "IST0109 VirtualService foo/ratings",
                "IST0109 VirtualService team2/ratings",
                "IST0109 VirtualService team3/ratings",
                "IST0109 VirtualService team4/ratings",
            ]
        );
        assert_eq!(
            analyze_testdata(
                &ConflictingMeshGatewayHostsAnalyzer,
                &["virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml"]
            ),
            [
                "IST0109 VirtualService bar/productpage",
                "IST0109 VirtualService bar/productpage-c",
                "IST0109 VirtualService bar/productpage-d",
                "IST0109 VirtualService foo/productpage",
                "IST0109 VirtualService foo/productpage-c",
                "IST0109 VirtualService foo/productpage-d",
            ]
        );
    }

    #[test]
    fn delegates_define_no_host() {
        let vs = |name: &str, hosts: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: payments}}\nspec:\n  hosts: {hosts}\n  http:\n  - route:\n    - destination: {{host: ledger}}\n"
            )
        };
        let yaml = [vs("a", "[]"), vs("b", "[]"), vs("c", "[ledger]")].join("---\n");
        assert!(analyze(&ConflictingMeshGatewayHostsAnalyzer, &yaml).is_empty());
    }
}
