//! Istio's sidecar-injection analyzers: `injection.Analyzer` (namespaces not enabled for
//! injection, conflicting injection labels, pods of injected namespaces without a sidecar),
//! `injection.ImageAutoAnalyzer` (`image: auto` that no injector will fill in) and
//! `injection.ImageAnalyzer` (in [`image`]: sidecars older than the injector's image).
//!
//! The injector's settings come from its ConfigMap (`istio-sidecar-injector[-<rev>]`,
//! `data.values`, a JSON document), read untyped as Istio reads it.

use serde_json::Value;

use super::kube::{self, INJECTION_ENABLED, INJECTION_LABEL, REVISION_LABEL};
use super::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;
use crate::resource::{Resource, Spec};

mod image;

pub use image::ImageAnalyzer;

/// The namespace label choosing ambient mode instead of sidecars.
const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// `injection.Analyzer`.
pub struct InjectionAnalyzer;

impl Analyzer for InjectionAnalyzer {
    fn name(&self) -> &'static str {
        "injection.Analyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        // As upstream, a value read from an injector ConfigMap stays in force for the
        // namespaces analyzed after it.
        let mut enabled_by_default = false;
        let mut injected: Vec<&str> = Vec::new();
        for ns in kube::analyzed(ctx.store, "Namespace").filter(|r| r.meta.name != ctx.istio_namespace) {
            let labels = &ns.meta.labels;
            let injection = labels.get(INJECTION_LABEL);
            let revision = labels.get(REVISION_LABEL);
            let mut istio_labels: Vec<String> =
                injection.map(|v| format!("{INJECTION_LABEL}={v}")).into_iter().collect();
            for label in [REVISION_LABEL, DATAPLANE_MODE] {
                if let Some(v) = labels.get(label)
                    && injection.is_none_or(|i| i == INJECTION_ENABLED)
                {
                    istio_labels.push(format!("{label}={v}"));
                }
            }
            if istio_labels.len() > 1 {
                report.add(ns, None, messages::namespace_multiple_injection_labels(&istio_labels));
            }
            if labels.get(DATAPLANE_MODE).is_some_and(|m| m == "ambient") {
                continue;
            }
            let config_map = injector_config_map_name(revision.map(String::as_str).unwrap_or_default());
            if let Some(cm) = kube::analyzed(ctx.store, "ConfigMap").find(|r| r.meta.name == config_map) {
                enabled_by_default = injector_values(cm)
                    .and_then(|v| v.pointer("/sidecarInjectorWebhook/enableNamespacesByDefault")?.as_bool())
                    .unwrap_or(false);
            }
            let injection = injection.map(String::as_str).unwrap_or_default();
            if injection.is_empty() && revision.is_none() {
                let message = if enabled_by_default {
                    messages::namespace_injection_enabled_by_default()
                } else {
                    messages::namespace_not_injected(&ns.meta.name, &ns.meta.name)
                };
                report.add(ns, Some(&FieldPath::root().key("metadata").key("name")), message);
                continue;
            }
            if injection == INJECTION_ENABLED {
                injected.push(&ns.meta.name);
            }
        }

        for pod in kube::analyzed(ctx.store, "Pod").filter(|p| injected.contains(&p.namespace())) {
            let Spec::Pod(typed) = &pod.spec else { continue };
            let inject =
                pod.meta.labels.get(kube::SIDECAR_INJECT).or(pod.meta.annotations.get(kube::SIDECAR_INJECT));
            if inject.is_some_and(|v| v.eq_ignore_ascii_case("false")) {
                continue;
            }
            let Some(spec) = &typed.spec else { continue };
            if spec.host_network == Some(true) {
                continue;
            }
            let proxy = kube::all_containers(spec).find(|c| c.name == kube::ISTIO_PROXY);
            if proxy.and_then(|c| c.image.as_deref()).is_none_or(str::is_empty) {
                report.add(pod, None, messages::pod_missing_proxy(full_name(pod)));
            }
        }
    }
}

/// `namespace/name`, or `name` when the file gives no namespace (Istio's `FullName`).
fn full_name(resource: &Resource) -> String {
    match &resource.meta.namespace {
        Some(ns) => format!("{ns}/{}", resource.meta.name),
        None => resource.meta.name.clone(),
    }
}

/// `util.GetInjectorConfigMapName`: the injector ConfigMap of a revision.
fn injector_config_map_name(revision: &str) -> String {
    match revision {
        "" | "default" => kube::INJECTOR_CONFIG_MAP.to_owned(),
        rev => format!("{}-{rev}", kube::INJECTOR_CONFIG_MAP),
    }
}

/// The injector's Helm values (`data.values` of its ConfigMap, a JSON document).
fn injector_values(config_map: &Resource) -> Option<Value> {
    let text = config_map.raw.pointer("/data/values")?.as_str()?;
    serde_json::from_str(text).ok()
}

/// `injection.ImageAutoAnalyzer`: `image: auto` is only filled in by the injector.
pub struct ImageAutoAnalyzer;

impl Analyzer for ImageAutoAnalyzer {
    fn name(&self) -> &'static str {
        "injection.ImageAutoAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let webhooks: Vec<&Value> = kube::analyzed(ctx.store, "MutatingWebhookConfiguration")
            .flat_map(|r| r.raw.get("webhooks").and_then(Value::as_array).into_iter().flatten())
            .filter(|w| w.get("name").and_then(Value::as_str).is_some_and(|n| n.ends_with("istio.io")))
            .collect();
        for pod in kube::analyzed(ctx.store, "Pod").filter(|r| has_auto_image(r)) {
            report.add(pod, None, messages::image_auto_without_injection_error("Pod", &pod.meta.name));
        }
        for deployment in kube::analyzed(ctx.store, "Deployment").filter(|r| has_auto_image(r)) {
            let Spec::Deployment(d) = &deployment.spec else { continue };
            let pod_labels = d
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            let ns_labels = kube::find_namespace(ctx.store, deployment.namespace())
                .map(|n| n.meta.labels.clone())
                .unwrap_or_default();
            let injected = webhooks.iter().any(|w| {
                kube::optional_selector_matches(
                    kube::label_selector(w.get("namespaceSelector")).as_ref(),
                    &ns_labels,
                ) && kube::optional_selector_matches(
                    kube::label_selector(w.get("objectSelector")).as_ref(),
                    &pod_labels,
                )
            });
            if !injected {
                let message =
                    messages::image_auto_without_injection_warning("Deployment", &deployment.meta.name);
                report.add(deployment, None, message);
            }
        }
    }
}

/// Whether the pod (template) has an `istio-proxy` container with `image: auto`.
fn has_auto_image(resource: &Resource) -> bool {
    kube::pod_spec(resource).is_some_and(|s| {
        s.containers.iter().any(|c| c.name == kube::ISTIO_PROXY && c.image.as_deref() == Some("auto"))
    })
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::analyze;
    use super::*;

    const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: on, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: off, labels: {istio-injection: disabled}}\n";

    #[test]
    fn uninjected_namespaces_and_pods_without_sidecar_are_reported() {
        let yaml = format!(
            "{NAMESPACES}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: bare}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: both, labels: {{istio-injection: enabled, istio.io/rev: canary}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: on}}\nspec: {{containers: [{{name: app, image: app}}]}}\n"
        );
        assert_eq!(
            analyze(&InjectionAnalyzer, &yaml),
            ["IST0102 Namespace bare", "IST0103 Pod on/p", "IST0123 Namespace both"]
        );
    }

    #[test]
    fn injected_pods_are_clean() {
        let yaml = format!(
            "{NAMESPACES}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: on}}\nspec: {{containers: [{{name: app, image: app}}, {{name: istio-proxy, image: proxyv2}}]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: q, namespace: on, labels: {{sidecar.istio.io/inject: 'false'}}}}\nspec: {{containers: [{{name: app, image: app}}]}}\n"
        );
        assert!(analyze(&InjectionAnalyzer, &yaml).is_empty());
    }

    #[test]
    fn auto_images_need_an_injector() {
        let deployment = |ns: &str| {
            format!(
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: gw, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: gw}}}}\n  template:\n    metadata: {{labels: {{app: gw}}}}\n    spec: {{containers: [{{name: istio-proxy, image: auto}}]}}\n"
            )
        };
        let webhook = "---\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {name: istio-sidecar-injector}\nwebhooks: [{name: namespace.sidecar-injector.istio.io, namespaceSelector: {matchLabels: {istio-injection: enabled}}}]\n";
        let yaml = format!("{NAMESPACES}{webhook}{}", deployment("off"));
        assert_eq!(analyze(&ImageAutoAnalyzer, &yaml), ["IST0146 Deployment off/gw"]);
        let yaml = format!("{NAMESPACES}{webhook}{}", deployment("on"));
        assert!(analyze(&ImageAutoAnalyzer, &yaml).is_empty());
    }
}
