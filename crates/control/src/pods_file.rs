//! The pods file (`.paymesh/run/pods.yaml`): the running pods as Kubernetes `Pod` manifests in
//! a `kind: List`, which the [`registry`](crate::registry) reads the way istiod watches Pods.
//!
//! One writer for everyone who produces it (the supervisor behind `paymesh up`, benchmarks), so
//! its shape is the registry's by construction. Written as JSON, which is YAML too, from
//! k8s-openapi's types so the shape is Kubernetes'.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod, PodIP, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::registry::SIDECAR_ANNOTATION;

/// One running pod.
#[derive(Debug, Clone)]
pub struct RunningPod<'a> {
    /// Pod name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Labels (Services select on them).
    pub labels: &'a BTreeMap<String, String>,
    /// Annotations besides [`SIDECAR_ANNOTATION`], which is set from `sidecar`.
    pub annotations: &'a BTreeMap<String, String>,
    /// The service account: the pod's SPIFFE identity.
    pub service_account: &'a str,
    /// `status.podIP`.
    pub ip: IpAddr,
    /// Whether a paymesh proxy runs beside it.
    pub sidecar: bool,
    /// Its container (name, image and ports: named target ports resolve against them).
    pub container: Container,
}

/// The Pod manifest of `pod`, phase `Running`.
pub fn manifest(pod: RunningPod<'_>) -> serde_json::Value {
    let mut annotations = pod.annotations.clone();
    annotations.insert(SIDECAR_ANNOTATION.into(), pod.sidecar.to_string());
    let object = Pod {
        metadata: ObjectMeta {
            name: Some(pod.name.to_owned()),
            namespace: Some(pod.namespace.to_owned()),
            labels: Some(pod.labels.clone()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(pod.service_account.to_owned()),
            containers: vec![pod.container],
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

/// The pods file's content: `kind: List` of `items`.
pub fn list(items: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

#[cfg(test)]
mod tests {
    use paymesh_config::{Loaded, Store};

    use super::*;
    use crate::registry::{Registry, WorkloadSource};

    #[test]
    fn the_registry_reads_what_is_written() {
        let labels = BTreeMap::from([("app".to_owned(), "echo".to_owned())]);
        let pod = RunningPod {
            name: "echo-0",
            namespace: "mesh",
            labels: &labels,
            annotations: &BTreeMap::new(),
            service_account: "echo",
            ip: "127.1.2.3".parse().expect("ip"),
            sidecar: true,
            container: Container { name: "app".into(), ..Container::default() },
        };
        let text = list(vec![manifest(pod)]).to_string();
        let mut loaded = Loaded::default();
        let path = std::sync::Arc::from(std::path::Path::new("pods.yaml"));
        paymesh_config::load::load_bytes(path, text.as_bytes(), &mut loaded);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let (store, _) = Store::new(loaded.resources);
        let registry = Registry::new(&store, "cluster.local", WorkloadSource::Pods);
        let workload = registry.workload("mesh", "echo-0").expect("the pod is registered");
        assert!(workload.sidecar);
        assert_eq!(workload.ip, Some("127.1.2.3".parse().expect("ip")));
        assert_eq!(workload.identity, "spiffe://cluster.local/ns/mesh/sa/echo");
    }
}
