//! `.paymesh/run/pods.yaml`: the running pods as Kubernetes `Pod` manifests (a `kind: List`),
//! which the control plane reads as its service registry, the way istiod watches Pods.
//!
//! Written as JSON, which is YAML too, from k8s-openapi's types so the shape is Kubernetes'.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodIP, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::state::{PodKind, PodState};

/// Tells the control plane whether a pod has a proxy (`"true"`/`"false"`).
pub const SIDECAR_ANNOTATION: &str = "paymesh.io/sidecar";

/// The Pod manifest of `pod`: its template's annotations plus [`SIDECAR_ANNOTATION`], its
/// container's name, image and ports, and `status.podIP` with phase `Running`.
pub fn manifest(
    pod: &PodState,
    annotations: &BTreeMap<String, String>,
    container: &Container,
) -> serde_json::Value {
    let mut annotations = annotations.clone();
    annotations.insert(SIDECAR_ANNOTATION.into(), pod.has_proxy().to_string());
    let container = match pod.kind {
        PodKind::Workload => Container {
            name: container.name.clone(),
            image: container.image.clone(),
            ports: container.ports.clone(),
            ..Container::default()
        },
        PodKind::Gateway => Container {
            name: "istio-proxy".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http2".into()),
                container_port: 8080,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]),
            ..Container::default()
        },
    };
    let object = Pod {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            labels: Some(pod.labels.clone()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(pod.service_account.clone()),
            containers: vec![container],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(pod.ip.to_string()),
            pod_ips: Some(vec![PodIP { ip: pod.ip.to_string() }]),
            ..PodStatus::default()
        }),
    };
    let mut value = serde_json::to_value(object).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), "v1".into());
        map.insert("kind".into(), "Pod".into());
    }
    value
}

/// `kind: List` of `items`.
pub fn list(items: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items })
}
