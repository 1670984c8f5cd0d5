//! `injection.ImageAnalyzer`: sidecars in injected namespaces whose image differs from the
//! one their injector ConfigMap would inject now (allowing the image-type variant, e.g.
//! `-distroless`, that MeshConfig, ProxyConfig or the pod's `proxy.istio.io/config` choose).
//!
//! ProxyConfig is kept untyped, so the variant is read from raw `spec.image.imageType`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::super::kube::{self, INJECTION_ENABLED, INJECTION_LABEL, REVISION_LABEL};
use super::super::{Analyzer, Context, Report, messages};
use super::{injector_config_map_name, injector_values};
use crate::resource::{Resource, Spec};

/// `injection.ImageAnalyzer`.
pub struct ImageAnalyzer;

impl Analyzer for ImageAnalyzer {
    fn name(&self) -> &'static str {
        "injection.ImageAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let images: BTreeMap<&str, String> = kube::analyzed(ctx.store, "ConfigMap")
            .filter(|r| r.meta.name.starts_with(kube::INJECTOR_CONFIG_MAP))
            .map(|r| (r.meta.name.as_str(), injector_values(r).map(|v| proxy_image(&v)).unwrap_or_default()))
            .collect();
        if images.is_empty() {
            return;
        }
        // Injected namespace → the revision whose injector serves it.
        let mut namespaces: BTreeMap<&str, (&Resource, &str)> = BTreeMap::new();
        for ns in kube::analyzed(ctx.store, "Namespace") {
            let revision = ns.meta.labels.get(REVISION_LABEL);
            if ns.meta.labels.get(INJECTION_LABEL).is_some_and(|v| v == INJECTION_ENABLED)
                || revision.is_some()
            {
                namespaces.insert(&ns.meta.name, (ns, revision.map_or("default", String::as_str)));
            }
        }
        let resolver = ImageTypeResolver::new(ctx);
        let mut mismatched: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for pod in kube::analyzed(ctx.store, "Pod") {
            let Some((_, revision)) = namespaces.get(pod.namespace()) else { continue };
            if pod.meta.annotations.get("sidecar.istio.io/proxyImage").is_some_and(|v| !v.is_empty()) {
                continue;
            }
            let Spec::Pod(typed) = &pod.spec else { continue };
            let Some(spec) = &typed.spec else { continue };
            let Some(expected) = images.get(injector_config_map_name(revision).as_str()) else { continue };
            let variant = resolver.image_type(pod);
            for proxy in kube::all_containers(spec).filter(|c| c.name == kube::ISTIO_PROXY) {
                let image = proxy.image.as_deref().unwrap_or_default();
                if image != expected && image != format!("{expected}-{variant}") {
                    mismatched.entry(pod.namespace()).or_default().push(pod.meta.name.clone());
                }
            }
        }
        for (ns, pods) in mismatched {
            if let Some((namespace, _)) = namespaces.get(ns) {
                report.add(namespace, None, messages::pods_istio_proxy_image_mismatch_in_namespace(&pods));
            }
        }
    }
}

/// `GetIstioProxyImage`: `global.proxy.image` when it is a full reference, else
/// `<global.hub>/<global.proxy.image>:<global.tag>`; empty when the values do not fit.
fn proxy_image(values: &Value) -> String {
    let field = |pointer: &str| match values.pointer(pointer) {
        None | Some(Value::Null) => Some(""),
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => None,
    };
    let (Some(hub), Some(tag), Some(image)) =
        (field("/global/hub"), field("/global/tag"), field("/global/proxy/image"))
    else {
        return String::new();
    };
    if image.contains('/') { image.to_owned() } else { format!("{hub}/{image}:{tag}") }
}

/// `util.EffectiveProxyConfigResolver`, reduced to the image type it is used for here.
struct ImageTypeResolver<'a> {
    mesh_default: Option<&'a str>,
    root: Option<&'a str>,
    namespaces: BTreeMap<&'a str, Option<&'a str>>,
    /// Workload-scoped ProxyConfigs: (`namespace/name`, selector labels, image type).
    workloads: Vec<(String, BTreeMap<String, String>, Option<&'a str>)>,
}

fn image_type(value: Option<&Value>) -> Option<&str> {
    value.and_then(|v| v.pointer("/image/imageType")).and_then(Value::as_str).filter(|t| !t.is_empty())
}

impl<'a> ImageTypeResolver<'a> {
    fn new(ctx: &Context<'a>) -> Self {
        let root_namespace = ctx.mesh.root_namespace();
        let mut resolver = Self {
            mesh_default: image_type(ctx.mesh.get("defaultConfig")),
            root: None,
            namespaces: BTreeMap::new(),
            workloads: Vec::new(),
        };
        for pc in kube::analyzed(ctx.store, "ProxyConfig") {
            let spec = pc.raw.get("spec");
            let kind = image_type(spec);
            if pc.namespace() == root_namespace {
                resolver.root = kind;
            } else if let Some(selector) = spec.and_then(|s| s.get("selector")).filter(|s| !s.is_null()) {
                let labels = kube::string_map(selector.get("matchLabels"));
                resolver.workloads.push((format!("{}/{}", pc.namespace(), pc.meta.name), labels, kind));
            } else {
                resolver.namespaces.insert(pc.namespace(), kind);
            }
        }
        resolver
    }

    /// The image type (`distroless`, `debug`, or empty) the injector would use for `pod`.
    fn image_type(&self, pod: &Resource) -> String {
        let mut variant = self.mesh_default;
        variant = self.root.or(variant);
        variant = self.namespaces.get(pod.namespace()).copied().flatten().or(variant);
        for (name, selector, kind) in &self.workloads {
            // Upstream's test: a ProxyConfig whose name starts with the pod's namespace and
            // whose selector holds every label of the pod.
            if name.starts_with(pod.namespace())
                && pod.meta.labels.iter().all(|(k, v)| selector.get(k) == Some(v))
            {
                variant = kind.or(variant);
            }
        }
        let annotation = pod.meta.annotations.get("proxy.istio.io/config");
        let from_annotation = annotation.and_then(|text| {
            let doc = crate::yaml::parse_stream(text).into_iter().next()?.ok()?.root?;
            image_type(Some(&doc.to_json())).map(str::to_owned)
        });
        let variant = from_annotation.or(variant.map(str::to_owned)).unwrap_or_default();
        if variant == "default" { String::new() } else { variant }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::MeshConfig;
    use super::super::super::kube::testing::{analyze, analyze_with};
    use super::*;

    const INJECTOR: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio-sidecar-injector, namespace: istio-system}\ndata:\n  values: '{\"global\":{\"hub\":\"reg\",\"tag\":\"1.2\",\"proxy\":{\"image\":\"proxyv2\"}}}'\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: on, labels: {istio-injection: enabled}}\n";

    fn pod(name: &str, image: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: on}}\nspec: {{containers: [{{name: istio-proxy, image: '{image}'}}]}}\n"
        )
    }

    #[test]
    fn stale_sidecars_are_reported_per_namespace() {
        let yaml = format!("{INJECTOR}{}{}", pod("old", "reg/proxyv2:1.1"), pod("new", "reg/proxyv2:1.2"));
        assert_eq!(analyze(&ImageAnalyzer, &yaml), ["IST0158 Namespace on"]);
    }

    #[test]
    fn current_sidecars_and_chosen_variants_are_clean() {
        let yaml = format!(
            "{INJECTOR}{}{}",
            pod("new", "reg/proxyv2:1.2"),
            pod("slim", "reg/proxyv2:1.2-distroless")
        );
        let mesh =
            MeshConfig::new(serde_json::json!({"defaultConfig": {"image": {"imageType": "distroless"}}}));
        assert!(analyze_with(&ImageAnalyzer, &mesh, &yaml).is_empty());
        assert_eq!(
            analyze(&ImageAnalyzer, &yaml),
            ["IST0158 Namespace on"],
            "no variant without the mesh default"
        );
    }
}
