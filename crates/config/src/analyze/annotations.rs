//! Istio annotations on Kubernetes objects (Namespace, Service, Pod, Deployment):
//! `annotations.K8sAnalyzer` reports unknown, misplaced, deprecated and invalid ones;
//! `annotations.AlphaAnalyzer` reports those of alpha-phase features.
//!
//! What Istio knows about each annotation is the [`catalogue`] (transcribed from istio/api);
//! the value checks the injector applies are in [`validate`].

use std::collections::BTreeMap;

use super::kube;
use super::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;
use crate::resource::{Resource, Spec};

pub mod catalogue;
mod validate;

use catalogue::{FeatureStatus, ResourceType};

/// The kinds whose annotations are analyzed.
const KINDS: &[&str] = &["Namespace", "Service", "Pod", "Deployment"];

/// Whether `name` is in Istio's namespace of annotations (or the one Kubernetes annotation
/// Istio documents).
fn is_istio_annotation(name: &str) -> bool {
    name == "kubernetes.io/ingress.class" || name.split('/').next().is_some_and(|p| p.ends_with("istio.io"))
}

/// The annotated resources with their Istio annotations, each with the path of its line.
fn istio_annotations<'a>(
    ctx: &Context<'a>,
) -> impl Iterator<Item = (&'a Resource, &'a str, &'a str, FieldPath)> + 'a {
    let store = ctx.store;
    KINDS.iter().flat_map(move |kind| kube::analyzed(store, kind)).flat_map(|r| {
        r.meta.annotations.iter().filter(|(name, _)| is_istio_annotation(name)).map(move |(name, value)| {
            (
                r,
                name.as_str(),
                value.as_str(),
                FieldPath::root().key("metadata").key("annotations").key(name.clone()),
            )
        })
    })
}

/// `annotations.K8sAnalyzer`.
pub struct K8sAnalyzer;

impl Analyzer for K8sAnalyzer {
    fn name(&self) -> &'static str {
        "annotations.K8sAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        for (resource, name, value, at) in istio_annotations(ctx) {
            let Some(def) = catalogue::lookup(name) else {
                report.add(resource, Some(&at), messages::unknown_annotation(name));
                continue;
            };
            if def.deprecated {
                let inject = kube::SIDECAR_INJECT;
                // Both the deprecated annotation and its replacement label: the user knows.
                if !(name == inject && resource.meta.labels.contains_key(inject)) {
                    let extra = if name == inject {
                        " in favor of the \"sidecar.istio.io/inject\" label"
                    } else {
                        ""
                    };
                    report.add(resource, Some(&at), messages::deprecated_annotation(name, extra));
                }
            }
            if def.resources.contains(&ResourceType::Any) {
                continue;
            }
            if !def.resources.iter().any(|t| t.as_str() == resource.kind) {
                let kinds: Vec<&str> = def.resources.iter().map(|t| t.as_str()).collect();
                report.add(resource, Some(&at), messages::misplaced_annotation(name, kinds.join(", ")));
                continue;
            }
            if let Some(Err(problem)) = validate::validator(name).map(|check| check(value)) {
                report.add(resource, Some(&at), messages::invalid_annotation(name, problem));
            }
        }
    }
}

/// Alpha annotations Istio sets itself; reporting them would only be noise.
const ALWAYS_IGNORED: &[&str] =
    &["sidecar.istio.io/status", "gateway.istio.io/controller-version", "istio.io/rev"];
/// Alpha annotations istio-cni sets on every pod it handles.
const SET_BY_CNI: &[&str] = &[
    "sidecar.istio.io/interceptionMode",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
];

/// `annotations.AlphaAnalyzer`. Upstream leaves it out of `All()` as too noisy; paymesh
/// registers it so `--analyzer annotations.AlphaAnalyzer` can select it.
pub struct AlphaAnalyzer;

impl Analyzer for AlphaAnalyzer {
    fn name(&self) -> &'static str {
        "annotations.AlphaAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut cni: BTreeMap<String, bool> = BTreeMap::new();
        for (resource, name, _, at) in istio_annotations(ctx) {
            let Some(def) = catalogue::lookup(name) else { continue };
            if def.status != FeatureStatus::Alpha || ALWAYS_IGNORED.contains(&name) {
                continue;
            }
            let uses_cni = *cni.entry(resource.friendly_name()).or_insert_with(|| cni_enabled(resource));
            if uses_cni && SET_BY_CNI.contains(&name) {
                continue;
            }
            report.add(resource, Some(&at), messages::alpha_annotation(name));
        }
    }
}

/// A Pod without the `istio-init` init container has its traffic set up by istio-cni.
fn cni_enabled(resource: &Resource) -> bool {
    match &resource.spec {
        Spec::Pod(pod) => {
            !pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten()).any(|c| c.name == "istio-init")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::analyze;
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n";

    #[test]
    fn unknown_misplaced_deprecated_and_invalid_annotations_are_reported() {
        let yaml = format!(
            "{POD}    sidecar.istio.io/bogus: x\n    status.sidecar.istio.io/port: nope\n    sidecar.istio.io/statsInclusionPrefixes: a\nspec: {{containers: [{{name: c}}]}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: n, annotations: {{sidecar.istio.io/proxyCPU: '1'}}}}\n"
        );
        assert_eq!(
            analyze(&K8sAnalyzer, &yaml),
            ["IST0107 Namespace n", "IST0108 Pod p", "IST0125 Pod p", "IST0135 Pod p"]
        );
    }

    #[test]
    fn well_placed_annotations_are_clean() {
        let yaml = format!(
            "{POD}    sidecar.istio.io/proxyCPU: 100m\n    proxy.istio.io/config: '{{}}'\n    galley.istio.io/analyze-suppress: IST0103\n    example.com/other: x\nspec: {{containers: [{{name: c}}]}}\n"
        );
        assert!(analyze(&K8sAnalyzer, &yaml).is_empty());
    }

    #[test]
    fn alpha_annotations_skip_what_istio_sets_itself() {
        let yaml = format!(
            "{POD}    sidecar.istio.io/proxyCPU: 100m\n    sidecar.istio.io/interceptionMode: REDIRECT\n    istio.io/rev: canary\n    proxy.istio.io/config: '{{}}'\nspec: {{containers: [{{name: c}}]}}\n"
        );
        assert_eq!(analyze(&AlphaAnalyzer, &yaml), ["IST0136 Pod p"]);
        let clean = format!("{POD}    proxy.istio.io/config: '{{}}'\nspec: {{containers: [{{name: c}}]}}\n");
        assert!(analyze(&AlphaAnalyzer, &clean).is_empty());
    }
}
