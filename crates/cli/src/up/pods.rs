//! `.paymesh/run/pods.yaml` for the control plane's registry: each planned pod through
//! [`paymesh_control::pods_file`], the one writer of that file's shape.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort};
use paymesh_control::pods_file::{self, RunningPod};

use crate::state::{PodKind, PodState};

/// The Pod manifest of `pod`: its template's annotations, its container's name, image and
/// ports (the gateway's: `istio-proxy` on 8080), `status.podIP`.
pub fn manifest(
    pod: &PodState,
    annotations: &BTreeMap<String, String>,
    container: &Container,
) -> serde_json::Value {
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
    pods_file::manifest(RunningPod {
        name: &pod.name,
        namespace: &pod.namespace,
        labels: &pod.labels,
        annotations,
        service_account: &pod.service_account,
        ip: pod.ip.into(),
        sidecar: pod.has_proxy(),
        container,
    })
}
