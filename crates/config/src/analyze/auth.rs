//! Istio's `auth.AuthorizationPoliciesAnalyzer`: a policy must apply to some workload in the
//! mesh (a pod with a sidecar, or in ambient mode) and the namespaces its sources name
//! (`namespaces`, `notNamespaces`) must exist.
//!
//! As upstream: a policy in the root namespace applies mesh-wide (its selector may match a pod
//! of any namespace); elsewhere a selector-less policy needs a mesh pod in its namespace.
//! Principals are not checked (upstream does not: identities need not be local workloads).

use std::collections::BTreeMap;

use super::kube;
use super::sidecar::{pod_in_ambient, selector_text};
use super::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;
use crate::resource::Resource;
use crate::security::AuthorizationPolicy;

/// `auth.AuthorizationPoliciesAnalyzer`.
pub struct AuthorizationPoliciesAnalyzer;

/// `namespaceMatch`: `*` anything, `*x` a suffix, `x*` a prefix, else equal ignoring case.
fn namespace_matches(namespace: &str, pattern: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        namespace.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        namespace.starts_with(prefix)
    } else {
        namespace.eq_ignore_ascii_case(pattern)
    }
}

impl AuthorizationPoliciesAnalyzer {
    fn no_matching_workloads(
        ctx: &Context<'_>,
        resource: &Resource,
        policy: &AuthorizationPolicy,
        mesh_pods: &BTreeMap<&str, Vec<&BTreeMap<String, String>>>,
        report: &mut Report,
    ) {
        let selects = |labels: &BTreeMap<String, String>, pods: &[&BTreeMap<String, String>]| {
            pods.iter().any(|pod| labels.iter().all(|(k, v)| pod.get(k) == Some(v)))
        };
        let at = FieldPath::root().key("spec").key("selector");
        let selector = policy.selector.as_ref().map(|s| &s.match_labels);
        if resource.namespace() == ctx.mesh.root_namespace() {
            if let Some(labels) = selector
                && !mesh_pods.values().any(|pods| selects(labels, pods))
            {
                report.add(resource, Some(&at), messages::no_matching_workloads_found(selector_text(labels)));
            }
            return;
        }
        let pods = mesh_pods.get(resource.namespace()).map(Vec::as_slice).unwrap_or_default();
        match selector {
            None if pods.is_empty() => report.add(resource, None, messages::no_matching_workloads_found("")),
            Some(labels) if !selects(labels, pods) => {
                report.add(resource, Some(&at), messages::no_matching_workloads_found(selector_text(labels)));
            }
            _ => {}
        }
    }

    fn namespaces_not_found(
        namespaces: &[&str],
        resource: &Resource,
        policy: &AuthorizationPolicy,
        report: &mut Report,
    ) {
        for (i, rule) in policy.rules.iter().flatten().enumerate() {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(source) = &from.source else { continue };
                let listed = [("namespaces", &source.namespaces), ("notNamespaces", &source.not_namespaces)];
                for (field, patterns) in listed {
                    for (k, pattern) in patterns.iter().enumerate() {
                        let pattern = pattern.to_string();
                        if namespaces.iter().any(|ns| namespace_matches(ns, &pattern)) {
                            continue;
                        }
                        let at = FieldPath::root()
                            .key("spec")
                            .key("rules")
                            .index(i)
                            .key("from")
                            .index(j)
                            .key("source")
                            .key(field)
                            .index(k);
                        report.add(
                            resource,
                            Some(&at),
                            messages::referenced_resource_not_found("namespace", pattern),
                        );
                    }
                }
            }
        }
    }
}

impl Analyzer for AuthorizationPoliciesAnalyzer {
    fn name(&self) -> &'static str {
        "auth.AuthorizationPoliciesAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        // Namespace → labels of its pods in the mesh (a namespace with pods but none in the
        // mesh has an empty list).
        let mut mesh_pods: BTreeMap<&str, Vec<&BTreeMap<String, String>>> = BTreeMap::new();
        for workload in kube::workloads(ctx.store) {
            let Some(labels) = kube::workload_labels(workload) else { continue };
            let pods = mesh_pods.entry(workload.namespace()).or_default();
            if kube::in_mesh(ctx.store, workload) || pod_in_ambient(workload) {
                pods.push(labels);
            }
        }
        let namespaces: Vec<&str> =
            kube::analyzed(ctx.store, "Namespace").map(|n| n.meta.name.as_str()).collect();
        for resource in kube::analyzed(ctx.store, "AuthorizationPolicy") {
            let Some(policy) = resource.spec.authorization_policy() else { continue };
            Self::no_matching_workloads(ctx, resource, policy, &mesh_pods, report);
            Self::namespaces_not_found(&namespaces, resource, policy, report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MeshConfig;
    use super::super::kube::testing::{analyze, analyze_testdata};
    use super::*;

    fn policy(name: &str, namespace: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
        )
    }

    const MESH: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: pay, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: pay, labels: {app: pay}}\nspec: {containers: [{name: c}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: q, namespace: plain, labels: {app: plain}}\nspec: {containers: [{name: c}]}\n";

    #[test]
    fn policies_must_apply_to_mesh_workloads() {
        let yaml = format!(
            "{MESH}{}{}{}{}{}{}",
            policy("ok", "pay", "{selector: {matchLabels: {app: pay}}}"),
            policy("wide", "pay", "{}"),
            policy("nopods", "pay", "{selector: {matchLabels: {app: other}}}"),
            policy("outside", "plain", "{}"),
            policy("mesh", "istio-system", "{selector: {matchLabels: {app: pay}}}"),
            policy("mesh-none", "istio-system", "{selector: {matchLabels: {app: plain}}}"),
        );
        assert_eq!(
            analyze(&AuthorizationPoliciesAnalyzer, &yaml),
            [
                "IST0127 AuthorizationPolicy istio-system/mesh-none",
                "IST0127 AuthorizationPolicy pay/nopods",
                "IST0127 AuthorizationPolicy plain/outside",
            ]
        );
    }

    #[test]
    fn deployment_templates_count_as_workloads() {
        let deployment = |name: &str, replicas: u32| {
            format!(
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: pay}}\nspec: {{replicas: {replicas}, selector: {{matchLabels: {{app: {name}}}}}, template: {{metadata: {{labels: {{app: {name}}}}}, spec: {{containers: [{{name: c}}]}}}}}}\n"
            )
        };
        let yaml = format!(
            "{MESH}{}{}{}{}",
            deployment("running", 2),
            deployment("stopped", 0),
            policy("to-running", "pay", "{selector: {matchLabels: {app: running}}}"),
            policy("to-stopped", "pay", "{selector: {matchLabels: {app: stopped}}}"),
        );
        assert_eq!(
            analyze(&AuthorizationPoliciesAnalyzer, &yaml),
            ["IST0127 AuthorizationPolicy pay/to-stopped"],
            "a Deployment's pods are workloads unless it is scaled to zero"
        );
    }

    #[test]
    fn source_namespaces_must_exist() {
        let spec = "{rules: [{from: [{source: {principals: [x]}}, {source: {namespaces: [pay, 'p*', '*y', PAY, nope], notNamespaces: ['*', 'q*']}}]}]}";
        let yaml = format!("{MESH}{}", policy("ns", "pay", spec));
        assert_eq!(
            analyze(&AuthorizationPoliciesAnalyzer, &yaml),
            ["IST0101 AuthorizationPolicy pay/ns", "IST0101 AuthorizationPolicy pay/ns"],
            "nope and q* match no namespace"
        );
    }

    #[test]
    fn upstream_case_matches() {
        assert_eq!(
            analyze_testdata(
                &AuthorizationPoliciesAnalyzer,
                &MeshConfig::default(),
                &["authorizationpolicies.yaml"]
            ),
            [
                "IST0101 AuthorizationPolicy httpbin/httpbin-bogus-not-ns",
                "IST0101 AuthorizationPolicy httpbin/httpbin-bogus-not-ns",
                "IST0101 AuthorizationPolicy httpbin/httpbin-bogus-ns",
                "IST0101 AuthorizationPolicy httpbin/httpbin-bogus-ns",
                "IST0127 AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide",
                "IST0127 AuthorizationPolicy httpbin/httpbin-nopods",
                "IST0127 AuthorizationPolicy istio-system/meshwide-httpbin-v1",
                "IST0127 AuthorizationPolicy test-ambient/no-workload",
            ]
        );
    }
}
