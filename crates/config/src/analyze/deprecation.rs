//! Istio's `deprecation.DeprecationAnalyzer` (upstream `FieldAnalyzer`): fields Istio still
//! reads but has deprecated or ignores, and CRDs of kinds it has removed.
//!
//! The list is hand-made upstream too (no Istio API says which fields are deprecated):
//! VirtualService `fault.delay.percent`, Sidecar `outboundTrafficPolicy.egressProxy`, and the
//! `rbac.istio.io` kinds.

use serde_json::Value;

use super::kube;
use super::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;

/// Kinds Istio removed, whose CRDs should go: (group, kind).
const REMOVED_KINDS: [(&str, &str); 4] = [
    ("rbac.istio.io", "ClusterRbacConfig"),
    ("rbac.istio.io", "RbacConfig"),
    ("rbac.istio.io", "ServiceRole"),
    ("rbac.istio.io", "ServiceRoleBinding"),
];

/// `deprecation.DeprecationAnalyzer`.
pub struct DeprecationAnalyzer;

impl Analyzer for DeprecationAnalyzer {
    fn name(&self) -> &'static str {
        "deprecation.DeprecationAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        for (resource, service) in ctx.store.typed("VirtualService", crate::resource::Spec::virtual_service) {
            if kube::ignored(resource) {
                continue;
            }
            for (i, route) in service.http.iter().enumerate() {
                let delay = route.fault.as_ref().and_then(|f| f.delay.as_ref());
                if delay.is_some_and(|d| d.percent > 0) {
                    let at = FieldPath::root()
                        .key("spec")
                        .key("http")
                        .index(i)
                        .key("fault")
                        .key("delay")
                        .key("percent");
                    let detail =
                        "HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage";
                    report.add(resource, Some(&at), messages::deprecated(detail));
                }
            }
        }
        for (resource, sidecar) in ctx.store.typed("Sidecar", crate::resource::Spec::sidecar) {
            let proxy = sidecar.outbound_traffic_policy.as_ref().and_then(|p| p.egress_proxy.as_ref());
            if proxy.is_some() && !kube::ignored(resource) {
                let at = FieldPath::root().key("spec").key("outboundTrafficPolicy").key("egressProxy");
                report.add(
                    resource,
                    Some(&at),
                    messages::deprecated("OutboundTrafficPolicy.EgressProxy ignored"),
                );
            }
        }
        for crd in kube::analyzed(ctx.store, "CustomResourceDefinition") {
            let text = |pointer: &str| crd.raw.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
            let (group, kind) = (text("/spec/group"), text("/spec/names/kind"));
            if REMOVED_KINDS.contains(&(group, kind)) {
                let detail = format!("Custom resource type {group} {kind} is removed");
                report.add(crd, None, messages::deprecated(detail));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MeshConfig;
    use super::super::kube::testing::{analyze, analyze_testdata};
    use super::*;

    #[test]
    fn deprecated_fields_and_removed_kinds() {
        let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: ns}
spec:
  hosts: [a]
  http:
  - {fault: {delay: {percentage: {value: 5}, fixedDelay: 1s}}, route: [{destination: {host: a}}]}
  - {fault: {delay: {percent: 5, fixedDelay: 1s}}, route: [{destination: {host: a}}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc, namespace: ns}
spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: serviceroles.rbac.istio.io}
spec: {group: rbac.istio.io, names: {kind: ServiceRole}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: sidecars.networking.istio.io}
spec: {group: networking.istio.io, names: {kind: Sidecar}}
";
        assert_eq!(
            analyze(&DeprecationAnalyzer, yaml),
            ["IST0002 CustomResourceDefinition serviceroles.rbac.istio.io", "IST0002 VirtualService ns/vs"]
        );
    }

    #[test]
    fn upstream_case_matches() {
        assert_eq!(
            analyze_testdata(&DeprecationAnalyzer, &MeshConfig::default(), &["deprecation.yaml"]),
            ["IST0002 Sidecar default/no-selector", "IST0002 VirtualService foo/productpage"]
        );
    }
}
