//! `conditions.ConditionAnalyzer`: status conditions the control plane wrote that say a
//! resource is not working (a Service not bound to its waypoint, a policy ztunnel rejected,
//! a Gateway API Gateway or route not accepted).
//!
//! Only the condition types upstream lists count, so conditions other controllers write
//! (Argo CD's `Synced`, …) stay quiet. Status is read from the raw document of every kind.

use serde_json::Value;

use super::kube::{self, Unique};
use super::{Analyzer, Context, Report, messages};
use crate::resource::Resource;

/// The Gateway API group.
const GATEWAY_API: &str = "gateway.networking.k8s.io";
const GATEWAY_API_NEGATIVE: &[&str] = &["Accepted", "Programmed", "ResolvedRefs"];

/// Kinds checked: (group, kind, condition types whose `False` status is reported, whether
/// the conditions sit under `status.parents[]`).
const CHECKED: &[(&str, &str, &[&str], bool)] = &[
    ("", "Service", &["istio.io/WaypointBound"], false),
    ("networking.istio.io", "ServiceEntry", &["istio.io/WaypointBound"], false),
    ("security.istio.io", "AuthorizationPolicy", &["ZtunnelAccepted", "WaypointAccepted"], false),
    (GATEWAY_API, "Gateway", GATEWAY_API_NEGATIVE, false),
    (GATEWAY_API, "HTTPRoute", GATEWAY_API_NEGATIVE, true),
    (GATEWAY_API, "GRPCRoute", GATEWAY_API_NEGATIVE, true),
];

/// `conditions.ConditionAnalyzer`.
pub struct ConditionAnalyzer;

impl Analyzer for ConditionAnalyzer {
    fn name(&self) -> &'static str {
        "conditions.ConditionAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        for (group, kind, negative, per_parent) in CHECKED {
            for resource in kube::analyzed_in(ctx.store, group, kind) {
                for condition in conditions(resource, *per_parent) {
                    let field = |k: &str| condition.get(k).and_then(Value::as_str).unwrap_or_default();
                    let negative_status = field("status") == "False" && negative.contains(&field("type"));
                    // A waypoint that accepted only part of a policy says so with status True.
                    let partially_invalid = *kind == "AuthorizationPolicy"
                        && field("type") == "WaypointAccepted"
                        && field("reason") == "PartiallyInvalid";
                    if negative_status || partially_invalid {
                        let message = messages::negative_condition_status(
                            field("type"),
                            field("reason"),
                            field("message"),
                        );
                        report.add(resource, None, message);
                    }
                }
            }
        }
    }
}

/// `status.conditions`, or every `status.parents[].conditions` of a route.
fn conditions(resource: &Resource, per_parent: bool) -> Vec<&Value> {
    fn list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
        v.and_then(Value::as_array).into_iter().flatten()
    }
    let status = resource.raw.get("status");
    if per_parent {
        list(status.and_then(|s| s.get("parents"))).flat_map(|p| list(p.get("conditions"))).collect()
    } else {
        list(status.and_then(|s| s.get("conditions"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::analyze;
    use super::*;

    #[test]
    fn negative_conditions_are_reported() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: d}\nstatus: {conditions: [{type: istio.io/WaypointBound, status: 'False', reason: R, message: m, lastTransitionTime: '2023-01-01T00:00:00Z'}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: d}\nstatus: {parents: [{conditions: [{type: Accepted, status: 'False'}]}]}\n";
        assert_eq!(analyze(&ConditionAnalyzer, yaml), ["IST0171 HTTPRoute d/r", "IST0171 Service d/s"]);
    }

    #[test]
    fn positive_and_foreign_conditions_are_clean() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: d}\nstatus: {conditions: [{type: istio.io/WaypointBound, status: 'True', reason: R, message: m, lastTransitionTime: '2023-01-01T00:00:00Z'}, {type: argocd.argoproj.io/Synced, status: 'False', reason: R, message: m, lastTransitionTime: '2023-01-01T00:00:00Z'}]}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: d}\nstatus: {conditions: [{type: Accepted, status: 'False'}]}\n";
        assert!(analyze(&ConditionAnalyzer, yaml).is_empty());
    }
}

#[cfg(test)]
mod conformance {
    use super::super::MeshConfig;
    use super::super::kube::testing::analyze_testdata;
    use super::ConditionAnalyzer;

    /// Istio's "Condition Analyzer" case, run in-crate so it does not depend on every
    /// kind in the file (ServiceEntry, AuthorizationPolicy) loading typed.
    #[test]
    fn upstream_case_matches() {
        let found =
            analyze_testdata(&ConditionAnalyzer, &MeshConfig::default(), &["condition-analyzer.yaml"]);
        assert_eq!(
            found,
            [
                "IST0171 AuthorizationPolicy default/negative-condition-authz",
                "IST0171 AuthorizationPolicy default/negative-condition-authz-partially-invalid",
                "IST0171 GRPCRoute default/negative-condition-grpcroute",
                "IST0171 Gateway default/negative-condition-gateway",
                "IST0171 HTTPRoute default/negative-condition-httproute",
                "IST0171 Service default/negative-condition-svc",
                "IST0171 ServiceEntry default/negative-condition-svcEntry",
            ]
        );
    }
}
