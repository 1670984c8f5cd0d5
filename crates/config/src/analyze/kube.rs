//! Kubernetes facts the analyzers share: which namespaces istioctl ignores, which
//! workloads belong to the control plane or are in the mesh, label selectors as
//! `metav1.LabelSelector` matches them, and a report that drops repeated messages.
//!
//! Istio's analyzers lean on the same handful of helpers (`util.IsIstioControlPlane`,
//! `util.DeploymentInMesh`, `LabelSelectorAsSelector`); keeping one copy here keeps the
//! analyzers' logic readable and identical to upstream's.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::{Message, Report};
use crate::path::FieldPath;
use crate::resource::{Resource, Spec};
use crate::store::Store;

/// The sidecar's container name.
pub const ISTIO_PROXY: &str = "istio-proxy";
/// The operator's container name, exempt like the sidecar from the UID check.
pub const ISTIO_OPERATOR: &str = "istio-operator";
/// The legacy namespace injection label and its enabling value.
pub const INJECTION_LABEL: &str = "istio-injection";
pub const INJECTION_ENABLED: &str = "enabled";
/// The revision label (namespace, object or webhook selector).
pub const REVISION_LABEL: &str = "istio.io/rev";
/// The pod injection label (and deprecated annotation).
pub const SIDECAR_INJECT: &str = "sidecar.istio.io/inject";
/// The sidecar injector's ConfigMap (`-<revision>` appended for a revision).
pub const INJECTOR_CONFIG_MAP: &str = "istio-sidecar-injector";

/// Namespaces istioctl never analyzes (`inject.IgnoredNamespaces`): its file source drops
/// every resource in them, and a Namespace resource with one of these names.
const IGNORED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease", "local-path-storage"];

/// Whether istioctl would drop `resource` before analysis, being in a Kubernetes system namespace.
pub fn ignored(resource: &Resource) -> bool {
    let namespace = if resource.kind == "Namespace" {
        resource.meta.name.as_str()
    } else {
        resource.meta.namespace.as_deref().unwrap_or("")
    };
    IGNORED_NAMESPACES.contains(&namespace)
}

/// The resources of `kind` that istioctl analyzes (those outside the ignored namespaces).
pub fn analyzed<'a>(store: &'a Store, kind: &'a str) -> impl Iterator<Item = &'a Resource> + 'a {
    store.of_kind(kind).filter(|r| !ignored(r))
}

/// The resources of `kind` in API group `group` (`""` for the core group).
pub fn analyzed_in<'a>(
    store: &'a Store,
    group: &'a str,
    kind: &'a str,
) -> impl Iterator<Item = &'a Resource> + 'a {
    analyzed(store, kind).filter(move |r| r.api_version.group == group)
}

/// `util.IsIstioControlPlane`: labelled `istio` (any value) or `release: istio`.
pub fn is_control_plane(resource: &Resource) -> bool {
    resource.meta.labels.contains_key("istio")
        || resource.meta.labels.get("release").is_some_and(|v| v == "istio")
}

/// The Namespace resource named `name`.
pub fn find_namespace<'a>(store: &'a Store, name: &str) -> Option<&'a Resource> {
    analyzed(store, "Namespace").find(|r| r.meta.name == name)
}

/// The pod spec of a Pod, or of a Deployment's pod template.
pub fn pod_spec(resource: &Resource) -> Option<&PodSpec> {
    match &resource.spec {
        Spec::Pod(pod) => pod.spec.as_ref(),
        Spec::Deployment(deployment) => deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        _ => None,
    }
}

/// Where [`pod_spec`] sits in the document.
pub fn pod_spec_path(resource: &Resource) -> FieldPath {
    let spec = FieldPath::root().key("spec");
    match resource.spec {
        Spec::Deployment(_) => spec.key("template").key("spec"),
        _ => spec,
    }
}

/// A Pod's containers followed by its init containers (native sidecars live there).
pub fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers.iter().chain(spec.init_containers.iter().flatten())
}

/// `util.DeploymentInMesh` / `util.PodInMesh`: has a sidecar, or asks for one (label, then
/// annotation), or lives in a namespace labelled for injection.
pub fn in_mesh(store: &Store, resource: &Resource) -> bool {
    let Some(spec) = pod_spec(resource) else { return false };
    let (labels, annotations, has_proxy) = match &resource.spec {
        Spec::Deployment(deployment) => {
            let meta = deployment.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
            (
                meta.and_then(|m| m.labels.clone()).unwrap_or_default(),
                meta.and_then(|m| m.annotations.clone()).unwrap_or_default(),
                has_istio_proxy(spec.containers.iter()),
            )
        }
        _ => (
            resource.meta.labels.clone(),
            resource.meta.annotations.clone(),
            has_istio_proxy(all_containers(spec)),
        ),
    };
    if has_proxy {
        return true;
    }
    if let Some(v) = labels.get(SIDECAR_INJECT).or_else(|| annotations.get(SIDECAR_INJECT)) {
        return v == "true";
    }
    find_namespace(store, resource.namespace())
        .is_some_and(|ns| ns.meta.labels.get(INJECTION_LABEL).is_some_and(|v| v == INJECTION_ENABLED))
}

/// The labels of the pods `resource` stands for: a Pod's own, or a Deployment's pod template
/// (unless scaled to zero). Istio's analyzers see only Pods, because they read a cluster;
/// files hold Deployments, and `paymesh up` makes pods from them, so paymesh matches both.
pub fn workload_labels(resource: &Resource) -> Option<&BTreeMap<String, String>> {
    match &resource.spec {
        Spec::Pod(_) => Some(&resource.meta.labels),
        Spec::Deployment(deployment) => {
            let spec = deployment.spec.as_ref()?;
            if spec.replicas == Some(0) {
                return None;
            }
            spec.template.metadata.as_ref()?.labels.as_ref()
        }
        _ => None,
    }
}

/// Every Pod and Deployment analyzed, the resources that stand for workloads.
pub fn workloads(store: &Store) -> impl Iterator<Item = &Resource> {
    analyzed(store, "Pod").chain(analyzed(store, "Deployment"))
}

/// Whether a container named `istio-proxy` with an image is present.
fn has_istio_proxy<'a>(mut containers: impl Iterator<Item = &'a Container>) -> bool {
    containers.find(|c| c.name == ISTIO_PROXY).and_then(|c| c.image.as_deref()).is_some_and(|i| !i.is_empty())
}

/// A `metav1.LabelSelector` read from a raw document (`None` when absent).
pub fn label_selector(value: Option<&Value>) -> Option<LabelSelector> {
    value.filter(|v| !v.is_null()).and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// `LabelSelectorAsSelector(selector).Matches(labels)`; a selector Kubernetes would reject
/// (unknown operator, `In` without values) matches nothing, as in upstream.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => !values.is_empty() && value.is_some_and(|v| values.contains(v)),
                "NotIn" => !values.is_empty() && value.is_none_or(|v| !values.contains(v)),
                "Exists" => values.is_empty() && value.is_some(),
                "DoesNotExist" => values.is_empty() && value.is_none(),
                _ => false,
            }
        })
}

/// `selectorMatches` of the webhook analyzers: an absent selector matches everything.
pub fn optional_selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.is_none_or(|s| selector_matches(s, labels))
}

/// A string map (labels, `matchLabels`) read from a raw document.
pub fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect())
        .unwrap_or_default()
}

/// A report that keeps one copy of identical messages about the same resource, as
/// istioctl's `SortedDedupedCopy` does before printing.
pub struct Unique<'r> {
    report: &'r mut Report,
    seen: HashSet<(String, &'static str, String)>,
}

impl<'r> Unique<'r> {
    pub fn new(report: &'r mut Report) -> Self {
        Self { report, seen: HashSet::new() }
    }

    /// Reports `message` about `resource` unless the same message was already reported.
    pub fn add(&mut self, resource: &Resource, field: Option<&FieldPath>, message: Message) {
        if self.seen.insert((resource.friendly_name(), message.kind.code, message.text.clone())) {
            self.report.add(resource, field, message);
        }
    }
}

/// Running one analyzer over YAML in unit tests, whatever kinds this build types.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::sync::Arc;

    use serde_json::Value;

    use super::super::{Analyzer, Context, MeshConfig, run};
    use crate::resource::{ApiVersion, KindSupport, Metadata, Origin, Resource, Spec};
    use crate::source::Location;
    use crate::store::Store;

    /// Every document of `yaml` as a resource (kinds not typed here are kept untyped).
    pub fn resources(yaml: &str) -> Vec<Resource> {
        let file: Arc<Path> = Arc::from(Path::new("test.yaml"));
        crate::yaml::parse_stream(yaml)
            .into_iter()
            .filter_map(|doc| doc.expect("valid YAML").root)
            .map(|root| {
                let raw = root.to_json();
                let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
                let api_version = ApiVersion::parse(&text(raw.get("apiVersion")).expect("apiVersion"));
                let kind = text(raw.get("kind")).expect("kind");
                let meta = raw.get("metadata");
                let map = |key: &str| {
                    meta.and_then(|m| m.get(key)).map(|v| serde_json::from_value(v.clone()).expect(key))
                };
                let meta = Metadata {
                    name: text(meta.and_then(|m| m.get("name"))).expect("metadata.name"),
                    namespace: text(meta.and_then(|m| m.get("namespace"))),
                    labels: map("labels").unwrap_or_default(),
                    annotations: map("annotations").unwrap_or_default(),
                };
                let spec = match Spec::decode(&api_version, &kind, &raw).expect("decodes") {
                    KindSupport::Typed(spec) => spec,
                    KindSupport::Untyped | KindSupport::Unknown => Spec::Other,
                };
                let origin =
                    Origin { location: Location::new(file.clone(), root.line, 1), tree: Arc::new(root) };
                Resource { api_version, kind, meta, spec, raw, origin }
            })
            .collect()
    }

    /// Runs `analyzer` over `yaml` with `mesh`; returns `CODE origin` per message, sorted.
    pub fn analyze_with(analyzer: &dyn Analyzer, mesh: &MeshConfig, yaml: &str) -> Vec<String> {
        let (store, duplicates) = Store::new(resources(yaml));
        assert!(duplicates.is_empty(), "{duplicates:?}");
        let ctx = Context { store: &store, mesh, istio_namespace: "istio-system" };
        let mut found: Vec<String> = run(&ctx, &[analyzer])
            .into_iter()
            .map(|m| format!("{} {}", m.kind.code, m.origin.map(|o| o.resource).unwrap_or_default()))
            .collect();
        found.sort();
        found
    }

    /// Runs `analyzer` over files of Istio's analyzer test data (`analyze/testdata`).
    pub fn analyze_testdata(analyzer: &dyn Analyzer, mesh: &MeshConfig, files: &[&str]) -> Vec<String> {
        let dir = paymesh_test_util::istio_conformance().join("analyze/testdata");
        let yaml: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(dir.join(f)).expect("test data is readable"))
            .collect();
        analyze_with(analyzer, mesh, &yaml.join("\n---\n"))
    }

    /// [`analyze_with`] Istio's default mesh config.
    pub fn analyze(analyzer: &dyn Analyzer, yaml: &str) -> Vec<String> {
        analyze_with(analyzer, &MeshConfig::default(), yaml)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn selector(json: Value) -> LabelSelector {
        label_selector(Some(&json)).expect("a selector")
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let l = labels(&[("app", "a"), ("tier", "web")]);
        assert!(selector_matches(&selector(serde_json::json!({})), &l));
        assert!(selector_matches(&selector(serde_json::json!({"matchLabels": {"app": "a"}})), &l));
        assert!(!selector_matches(&selector(serde_json::json!({"matchLabels": {"app": "b"}})), &l));
        let expr = |op: &str, values: &[&str]| {
            selector(
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]}),
            )
        };
        assert!(selector_matches(&expr("In", &["web", "db"]), &l));
        assert!(!selector_matches(&expr("NotIn", &["web"]), &l));
        assert!(selector_matches(&expr("Exists", &[]), &l));
        assert!(!selector_matches(&expr("DoesNotExist", &[]), &l));
        assert!(!selector_matches(&expr("In", &[]), &l), "In without values is invalid");
        assert!(!selector_matches(&expr("Near", &["web"]), &l), "unknown operators match nothing");
    }
}
