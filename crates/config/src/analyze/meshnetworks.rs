//! `meshnetworks.MeshNetworksAnalyzer`: every `fromRegistry` of Istio's MeshNetworks must
//! name a known service registry (`Kubernetes`, `External`, `Mock`, or a remote cluster
//! registered by a multicluster Secret).
//!
//! MeshNetworks is not a resource in files: it comes from `--meshNetworksFile`, which
//! [`load`] turns into the resource `MeshNetworks <istio namespace>/meshnetworks` whose
//! document is the file itself (`networks: ...`), as istioctl does.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::kube::{self, Unique};
use super::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;
use crate::resource::{ApiVersion, Metadata, Origin, Resource, Spec};
use crate::source::Location;

/// The kind (and resource name) istioctl gives the mesh networks.
pub const KIND: &str = "MeshNetworks";
const NAME: &str = "meshnetworks";
/// Registries Istio always has (`provider.Mock`, `provider.Kubernetes`, `provider.External`).
const BUILT_IN_REGISTRIES: &[&str] = &["Mock", "Kubernetes", "External"];
/// The label marking a Secret that registers remote clusters, one per data key.
const MULTICLUSTER_SECRET_LABEL: &str = "istio/multiCluster";

/// Why a mesh networks file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: invalid YAML: {message}")]
    Syntax { path: String, line: u32, message: String },
    #[error("{path}: mesh networks must be a mapping (`networks: ...`)")]
    NotAMapping { path: String },
}

/// Reads a MeshNetworks file as the resource `MeshNetworks <istio_namespace>/meshnetworks`.
pub fn load(path: &Path, istio_namespace: &str) -> Result<Resource, LoadError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: shown.clone(), source })?;
    let root = match crate::yaml::parse_stream(&text).into_iter().next() {
        Some(Err(e)) => return Err(LoadError::Syntax { path: shown, line: e.line, message: e.message }),
        Some(Ok(doc)) => doc.root,
        None => None,
    };
    let root = root.unwrap_or_else(|| crate::yaml::Node {
        line: 1,
        column: 1,
        value: crate::yaml::NodeValue::Map(Vec::new()),
    });
    let raw = match root.to_json() {
        Value::Null => json!({}),
        raw @ Value::Object(_) => raw,
        _ => return Err(LoadError::NotAMapping { path: shown }),
    };
    let location = Location::new(Arc::from(path), root.line, root.column);
    Ok(Resource {
        api_version: ApiVersion { group: String::new(), version: "v1alpha1".to_owned() },
        kind: KIND.to_owned(),
        meta: Metadata {
            name: NAME.to_owned(),
            namespace: Some(istio_namespace.to_owned()),
            ..Metadata::default()
        },
        spec: Spec::Other,
        raw,
        origin: Origin { location, tree: Arc::new(root) },
    })
}

/// `meshnetworks.MeshNetworksAnalyzer`.
pub struct MeshNetworksAnalyzer;

impl Analyzer for MeshNetworksAnalyzer {
    fn name(&self) -> &'static str {
        "meshnetworks.MeshNetworksAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let mut registries: Vec<&str> = BUILT_IN_REGISTRIES.to_vec();
        let secrets = kube::analyzed_in(ctx.store, "", "Secret")
            .filter(|s| s.meta.labels.get(MULTICLUSTER_SECRET_LABEL).is_some_and(|v| v == "true"));
        for secret in secrets {
            registries.extend(
                secret
                    .raw
                    .get("data")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.as_str()),
            );
        }
        for mesh_networks in ctx.store.of_kind(KIND) {
            let networks = mesh_networks.raw.get("networks").and_then(Value::as_object).into_iter().flatten();
            for (network, spec) in networks {
                let endpoints = spec.get("endpoints").and_then(Value::as_array).into_iter().flatten();
                for (j, endpoint) in endpoints.enumerate() {
                    let Some(registry) = endpoint.get("fromRegistry").and_then(Value::as_str) else {
                        continue;
                    };
                    if !registries.contains(&registry) {
                        let at =
                            FieldPath::root().key("networks").key(network.clone()).key("endpoints").index(j);
                        let message = messages::unknown_mesh_networks_service_registry(registry, network);
                        report.add(mesh_networks, Some(&at.key("fromRegistry")), message);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::resources;
    use super::super::{Context, MeshConfig, run};
    use super::*;
    use crate::store::Store;

    fn analyze(test: &str, networks: &str, extra: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join(format!("{test}.yaml"));
        std::fs::write(&file, networks).expect("write");
        let mut all = resources(extra);
        all.push(load(&file, "istio-system").expect("loads"));
        let (store, _) = Store::new(all);
        let mesh = MeshConfig::default();
        let ctx = Context { store: &store, mesh: &mesh, istio_namespace: "istio-system" };
        run(&ctx, &[&MeshNetworksAnalyzer])
            .into_iter()
            .map(|m| {
                format!("{} {} {}", m.kind.code, m.origin.map(|o| o.resource).unwrap_or_default(), m.text)
            })
            .collect()
    }

    #[test]
    fn unknown_registries_are_reported() {
        let found = analyze(
            "unknown",
            "networks:\n  n1:\n    endpoints:\n    - fromRegistry: Kubernetes\n    - fromRegistry: other\n",
            "",
        );
        assert_eq!(
            found,
            ["IST0126 MeshNetworks istio-system/meshnetworks Unknown service registry other in network n1"]
        );
    }

    #[test]
    fn remote_cluster_registries_are_known() {
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: remote, namespace: istio-system, labels: {istio/multiCluster: 'true'}}\ndata: {other: eA==}\n";
        let found = analyze(
            "remote",
            "networks:\n  n1:\n    endpoints:\n    - fromRegistry: other\n    - fromCidr: 10.0.0.0/8\n",
            secret,
        );
        assert!(found.is_empty(), "{found:?}");
    }
}
