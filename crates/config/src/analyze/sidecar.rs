//! Istio's `sidecar.SelectorAnalyzer`: a Sidecar's workload selector must match a pod of its
//! namespace, no pod may be selected by two Sidecars, a namespace may have only one Sidecar
//! without a selector, and a Sidecar for ambient workloads (which have no sidecar) has no
//! effect.
//!
//! Selectors match Pods only, as upstream (a Deployment's template is not a running workload).

use std::collections::BTreeMap;

use super::kube;
use super::{Analyzer, Context, Report, messages};
use crate::networking::Sidecar;
use crate::path::FieldPath;
use crate::resource::Resource;

/// The pod annotation that puts it in ambient mode, and its value.
const AMBIENT_REDIRECTION: &str = "ambient.istio.io/redirection";
const AMBIENT_REDIRECTION_ENABLED: &str = "enabled";
/// The namespace label choosing the data plane, and its ambient value.
const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
const DATAPLANE_MODE_AMBIENT: &str = "ambient";

/// `util.PodInAmbientMode`: ambient traffic redirection is enabled on the pod.
pub(crate) fn pod_in_ambient(pod: &Resource) -> bool {
    pod.meta.annotations.get(AMBIENT_REDIRECTION).is_some_and(|v| v == AMBIENT_REDIRECTION_ENABLED)
}

/// `util.NamespaceInAmbientMode`: labelled ambient, and not for sidecar injection.
fn namespace_in_ambient(namespace: &Resource) -> bool {
    let labels = &namespace.meta.labels;
    if labels.get(kube::INJECTION_LABEL).is_some_and(|v| v == kube::INJECTION_ENABLED)
        || labels.get(kube::REVISION_LABEL).is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    labels.get(DATAPLANE_MODE).is_some_and(|v| v == DATAPLANE_MODE_AMBIENT)
}

/// `labels.SelectorFromSet(...).String()`: `k=v` pairs sorted by key, comma separated.
pub(crate) fn selector_text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `sidecar.SelectorAnalyzer`.
pub struct SelectorAnalyzer;

impl Analyzer for SelectorAnalyzer {
    fn name(&self) -> &'static str {
        "sidecar.SelectorAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let sidecars: Vec<(&Resource, &Sidecar)> =
            kube::analyzed(ctx.store, "Sidecar").filter_map(|r| r.spec.sidecar().map(|s| (r, s))).collect();
        let pods: Vec<&Resource> = kube::analyzed(ctx.store, "Pod").collect();
        // Pod (namespace, name) → the pod and the Sidecars selecting it, in load order.
        let mut selected: BTreeMap<(&str, &str), (&Resource, Vec<&Resource>)> = BTreeMap::new();
        let mut namespace_wide: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
        for &(sidecar, spec) in &sidecars {
            let labels = spec.workload_selector.as_ref().map(|s| &s.labels).filter(|l| !l.is_empty());
            let Some(labels) = labels else {
                namespace_wide.entry(sidecar.namespace()).or_default().push(sidecar);
                continue;
            };
            let mut found = false;
            for &pod in pods.iter().filter(|p| p.namespace() == sidecar.namespace()) {
                if labels.iter().all(|(k, v)| pod.meta.labels.get(k) == Some(v)) {
                    found = true;
                    selected
                        .entry((pod.namespace(), &pod.meta.name))
                        .or_insert((pod, Vec::new()))
                        .1
                        .push(sidecar);
                }
            }
            if !found {
                let first = labels.keys().next().cloned().unwrap_or_default();
                let at = FieldPath::root().key("spec").key("workloadSelector").key("labels").key(first);
                let message = messages::referenced_resource_not_found("selector", selector_text(labels));
                report.add(sidecar, Some(&at), message);
            }
        }

        let mut ineffective: Vec<String> = Vec::new();
        let mut mark_ineffective = |sidecar: &Resource, reason: &str, report: &mut Report| {
            let name = sidecar.friendly_name();
            if !ineffective.contains(&name) {
                ineffective.push(name);
                report.add(sidecar, None, messages::ineffective_policy(reason));
            }
        };
        let name_field = FieldPath::root().key("metadata").key("name");
        for ((namespace, pod_name), (pod, sidecars)) in &selected {
            let ambient = pod_in_ambient(pod);
            if sidecars.len() == 1 && !ambient {
                continue;
            }
            let names: Vec<String> = sidecars.iter().map(|s| s.meta.name.clone()).collect();
            for sidecar in sidecars {
                if ambient {
                    mark_ineffective(
                        sidecar,
                        "selected workload is in ambient mode, the policy has no impact",
                        report,
                    );
                    continue;
                }
                let message = messages::conflicting_sidecar_workload_selectors(&names, namespace, pod_name);
                report.add(sidecar, Some(&name_field), message);
            }
        }
        for (namespace, sidecars) in &namespace_wide {
            if kube::find_namespace(ctx.store, namespace).is_some_and(namespace_in_ambient) {
                for sidecar in sidecars {
                    mark_ineffective(
                        sidecar,
                        "namespace is in ambient mode, the policy has no impact",
                        report,
                    );
                }
                continue;
            }
            if sidecars.len() > 1 {
                let names: Vec<String> = sidecars.iter().map(|s| s.meta.name.clone()).collect();
                for sidecar in sidecars {
                    report.add(
                        sidecar,
                        None,
                        messages::multiple_sidecars_without_workload_selectors(&names, namespace),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MeshConfig;
    use super::super::kube::testing::{analyze, analyze_testdata};
    use super::*;

    fn sidecar(name: &str, namespace: &str, selector: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {{{selector}egress: [{{hosts: ['./*']}}]}}\n"
        )
    }

    const PODS: &str = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns, labels: {app: a, tier: web}}\nspec: {containers: [{name: c}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: q, namespace: amb, labels: {app: a}, annotations: {ambient.istio.io/redirection: enabled}}\n";

    #[test]
    fn selectors_match_one_pod_of_their_namespace() {
        let yaml = format!(
            "{PODS}{}{}{}{}",
            sidecar("ok", "ns", "workloadSelector: {labels: {app: a}}, "),
            sidecar("overlap", "ns", "workloadSelector: {labels: {tier: web}}, "),
            sidecar("none", "ns", "workloadSelector: {labels: {app: b}}, "),
            sidecar("elsewhere", "other", "workloadSelector: {labels: {app: a}}, "),
        );
        assert_eq!(
            analyze(&SelectorAnalyzer, &yaml),
            [
                "IST0101 Sidecar ns/none",
                "IST0101 Sidecar other/elsewhere",
                "IST0110 Sidecar ns/ok",
                "IST0110 Sidecar ns/overlap",
            ]
        );
    }

    #[test]
    fn one_selectorless_sidecar_per_namespace_and_none_for_ambient() {
        let yaml = format!(
            "{PODS}{}{}{}{}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: amb, labels: {{istio.io/dataplane-mode: ambient}}}}\n",
            sidecar("a", "ns", ""),
            sidecar("b", "ns", ""),
            sidecar("c", "amb", ""),
            sidecar("d", "amb", "workloadSelector: {labels: {app: a}}, "),
        );
        assert_eq!(
            analyze(&SelectorAnalyzer, &yaml),
            [
                "IST0111 Sidecar ns/a",
                "IST0111 Sidecar ns/b",
                "IST0167 Sidecar amb/c",
                "IST0167 Sidecar amb/d"
            ]
        );
    }

    #[test]
    fn upstream_cases_match() {
        let default = MeshConfig::default();
        assert_eq!(
            analyze_testdata(&SelectorAnalyzer, &default, &["sidecar-selector.yaml"]),
            [
                "IST0101 Sidecar default/maps-to-nonexistent",
                "IST0101 Sidecar other/maps-to-different-ns",
                "IST0110 Sidecar default/dupe-1",
                "IST0110 Sidecar default/dupe-2",
                "IST0110 Sidecar default/overlap-1",
                "IST0110 Sidecar default/overlap-2",
            ]
        );
    }
}
