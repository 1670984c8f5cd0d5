//! The ingress gateway that file-only analysis assumes exists.
//!
//! `istioctl analyze` on files calls `AddDefaultResources`: unless the mesh config sets
//! `ingressControllerMode: OFF`, it adds a Pod labelled `istio: ingressgateway` and the
//! Service `<ingressService>` (default `istio-ingressgateway`) in the Istio namespace, so
//! that a Gateway selecting Istio's ingress gateway is not reported for selecting nothing.
//! Istio's analyzer tests run with the same resources, and their expected messages depend
//! on them (a Gateway on `istio: ingressgateway` port 80 is fine, port 8004 is not).
//!
//! paymesh always runs its own ingress gateway, so these resources describe that gateway:
//! the same Pod (plus `app: istio-ingressgateway` and its service account) and the same
//! Service, whose `http2` and `https` ports forward to the gateway's 8080 and 8443. The
//! analyzers accept a Gateway server port that is either a Service port or a target port,
//! so every port upstream's defaults accept is still accepted, and 8080/8443 (the ports the
//! gateway listens on locally) are too. A resource of the input with the same kind,
//! namespace and name replaces its built-in twin, as a file's does in istioctl.

use std::borrow::Borrow;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::analyze::MeshConfig;
use crate::load::{self, Loaded};
use crate::resource::Resource;

/// The pseudo file name the built-in resources are reported under.
pub const SOURCE: &str = "<built-in ingress gateway>";

/// The ingress gateway Service name when the mesh config does not set `ingressService`.
pub const DEFAULT_INGRESS_SERVICE: &str = "istio-ingressgateway";

/// The built-in resources for `mesh`, in `istio_namespace`; none when ingress is turned off.
pub fn resources(mesh: &MeshConfig, istio_namespace: &str) -> Vec<Resource> {
    if mesh.get("ingressControllerMode").and_then(Value::as_str) == Some("OFF") {
        return Vec::new();
    }
    let service = mesh
        .get("ingressService")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_INGRESS_SERVICE);
    let yaml = manifest(service, istio_namespace);
    let mut loaded = Loaded::default();
    load::load_bytes(Arc::from(Path::new(SOURCE)), yaml.as_bytes(), &mut loaded);
    loaded.resources
}

/// Appends to `input` the built-in resources it does not define itself (`input` holds
/// resources, or shared handles to them).
pub fn add_missing<R>(input: &mut Vec<R>, mesh: &MeshConfig, istio_namespace: &str)
where
    R: Borrow<Resource> + From<Resource>,
{
    let builtin: Vec<R> = resources(mesh, istio_namespace)
        .into_iter()
        .filter(|b| {
            !input.iter().map(Borrow::borrow).any(|r: &Resource| {
                r.kind == b.kind && r.namespace() == b.namespace() && r.meta.name == b.meta.name
            })
        })
        .map(R::from)
        .collect();
    input.extend(builtin);
}

/// The built-in resources as YAML.
pub(crate) fn manifest(service: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {service}-dummypod
  namespace: {namespace}
  labels:
    istio: ingressgateway
    app: istio-ingressgateway
spec:
  serviceAccountName: istio-ingressgateway-service-account
  containers:
  - name: istio-proxy
---
apiVersion: v1
kind: Service
metadata:
  name: {service}
  namespace: {namespace}
spec:
  selector:
    istio: ingressgateway
  ports:
  - {{name: http2, port: 80, targetPort: 8080, protocol: TCP}}
  - {{name: https, port: 443, targetPort: 8443, protocol: TCP}}
  - {{name: tcp, port: 31400, targetPort: 31400, protocol: TCP}}
  - {{name: tls, port: 15443, targetPort: 15443, protocol: TCP}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_pod_and_service_load() {
        let built = resources(&MeshConfig::default(), "istio-system");
        let names: Vec<String> = built.iter().map(Resource::friendly_name).collect();
        assert_eq!(
            names,
            ["Pod istio-system/istio-ingressgateway-dummypod", "Service istio-system/istio-ingressgateway"]
        );
        assert_eq!(built[0].meta.labels.get("istio").map(String::as_str), Some("ingressgateway"));
        assert_eq!(built[0].origin.location.file.to_string_lossy(), SOURCE);
    }

    #[test]
    fn mesh_config_names_the_service_or_turns_ingress_off() {
        let custom = MeshConfig::new(serde_json::json!({"ingressService": "edge"}));
        let built = resources(&custom, "mesh");
        assert_eq!(built[1].friendly_name(), "Service mesh/edge");
        assert_eq!(built[0].meta.name, "edge-dummypod");
        let off = MeshConfig::new(serde_json::json!({"ingressControllerMode": "OFF"}));
        assert!(resources(&off, "istio-system").is_empty());
    }

    #[test]
    fn the_input_replaces_its_builtin_twin() {
        let mut input = resources(&MeshConfig::default(), "istio-system");
        input.truncate(1);
        add_missing(&mut input, &MeshConfig::default(), "istio-system");
        assert_eq!(input.len(), 2, "only the Service was missing");
        add_missing(&mut input, &MeshConfig::default(), "istio-system");
        assert_eq!(input.len(), 2, "nothing is added twice");
    }
}
