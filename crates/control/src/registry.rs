//! The service registry: which workloads run where, and which Services select them.
//!
//! Built from a [`Store`] in one pass: Services (their ports, protocols and selectors) and
//! workloads, either the running Pods the supervisor writes (`status.podIP`, labels,
//! `serviceAccountName`, container ports, and the annotation [`SIDECAR_ANNOTATION`]) or, for
//! offline tools such as `paymesh tls-check`, the pod templates of Deployments. Endpoints of a
//! Service port are the selected workloads with the port's `targetPort` resolved (a name
//! through the container ports' names), as Kubernetes' endpoints controller resolves it.
//! Lookups by host, by pod and by namespace are indexed once per accepted config, so each
//! proxy's compilation does not scan every Service and pod. Whether a Deployment template is in
//! the mesh is `paymesh analyze`'s own rule ([`in_mesh`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use paymesh_api::model::Protocol;
use paymesh_config::Store;
use paymesh_config::analyze::kube::in_mesh;
use paymesh_config::analyze::service::{PortProtocol, port_protocol};
use paymesh_config::resource::{Resource, Spec};

use crate::compile::naming::fqdn;

/// Pod annotation the supervisor sets to `"true"` on pods that run a paymesh sidecar.
pub const SIDECAR_ANNOTATION: &str = "paymesh.io/sidecar";

/// The cluster's DNS suffix for Services.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// The service account a pod runs under when its spec names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Where workloads come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadSource {
    /// `kind: Pod` resources: the running pods (the control plane).
    Pods,
    /// The pod templates of Deployments, one workload per Deployment (offline checks).
    DeploymentTemplates,
}

/// A workload: a running pod, or a Deployment's pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Pod (or Deployment) name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The pod IP; `None` for a template or a pod not yet running.
    pub ip: Option<IpAddr>,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// The service account, which names its identity.
    pub service_account: String,
    /// Whether it runs a sidecar.
    pub sidecar: bool,
    /// Its container ports.
    pub ports: Vec<ContainerPort>,
    /// `spiffe://TD/ns/NS/sa/SA`.
    pub identity: String,
}

/// One container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// The port's name, when it has one.
    pub name: Option<String>,
    /// The number.
    pub port: u16,
}

/// A Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `name.namespace.svc.cluster.local`.
    pub hostname: String,
    /// The pod selector; `None` selects nothing (headless or external Services).
    pub selector: Option<BTreeMap<String, String>>,
    /// Its ports.
    pub ports: Vec<ServicePort>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name (may be empty).
    pub name: String,
    /// The Service port.
    pub port: u16,
    /// Where on the pod it goes.
    pub target: TargetPort,
    /// How bytes are carried, as Istio selects it.
    pub protocol: Protocol,
}

/// A Service port's `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    /// A container port number.
    Number(u16),
    /// A container port name.
    Name(String),
}

/// One workload behind a Service port.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The workload.
    pub workload: &'a Workload,
    /// The resolved container port.
    pub target_port: u16,
}

/// Services and workloads, indexed once per config version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    services: Vec<Service>,
    workloads: Vec<Workload>,
    /// Indices into `services` by FQDN, built once per accepted config.
    by_host: HashMap<String, usize>,
    /// Indices into `workloads` by `(namespace, name)`.
    by_name: HashMap<(String, String), usize>,
    /// Indices into `workloads` by namespace (Services select within their own).
    by_namespace: HashMap<String, Vec<usize>>,
    /// For each of `services`, the indices into `workloads` it selects: matched once per
    /// config here instead of once per Service per proxy compiled.
    selected: Vec<Vec<usize>>,
}

impl Registry {
    /// Reads Services and workloads (from `source`) out of `store`; identities in `trust_domain`.
    pub fn new(store: &Store, trust_domain: &str, source: WorkloadSource) -> Self {
        let services: Vec<Service> = store.of_kind("Service").filter_map(service).collect();
        let workloads: Vec<Workload> = match source {
            WorkloadSource::Pods => store.of_kind("Pod").filter_map(|r| pod(r, trust_domain)).collect(),
            WorkloadSource::DeploymentTemplates => {
                store.of_kind("Deployment").filter_map(|r| deployment(store, r, trust_domain)).collect()
            }
        };
        let mut by_host = HashMap::with_capacity(services.len());
        for (i, s) in services.iter().enumerate() {
            // The first of duplicates wins, as the linear lookup did.
            by_host.entry(s.hostname.clone()).or_insert(i);
        }
        let mut by_name = HashMap::with_capacity(workloads.len());
        let mut by_namespace: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, w) in workloads.iter().enumerate() {
            by_name.entry((w.namespace.clone(), w.name.clone())).or_insert(i);
            by_namespace.entry(w.namespace.clone()).or_default().push(i);
        }
        let selected = services
            .iter()
            .map(|s| {
                let in_namespace = by_namespace.get(&s.namespace).map_or(&[][..], Vec::as_slice);
                in_namespace
                    .iter()
                    .copied()
                    .filter(|&i| workloads.get(i).is_some_and(|w| s.selects(w)))
                    .collect()
            })
            .collect();
        Registry { services, workloads, by_host, by_name, by_namespace, selected }
    }

    /// Every Service.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The Service whose host is `hostname` (FQDN).
    pub fn service_by_host(&self, hostname: &str) -> Option<&Service> {
        self.by_host.get(hostname).and_then(|i| self.services.get(*i))
    }

    /// The workload `name` in `namespace`.
    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Workload> {
        self.by_name.get(&(namespace.to_owned(), name.to_owned())).and_then(|i| self.workloads.get(*i))
    }

    /// The workloads of `namespace`.
    pub fn workloads_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Workload> + 'a {
        self.by_namespace.get(namespace).into_iter().flatten().filter_map(|i| self.workloads.get(*i))
    }

    /// The workloads behind `port` of `service`, with the container port resolved; workloads
    /// without a matching container port are left out.
    pub fn endpoints<'a>(&'a self, service: &Service, port: &ServicePort) -> Vec<Endpoint<'a>> {
        let index = self.by_host.get(&service.hostname).filter(|&&i| self.services.get(i) == Some(service));
        let selected: Vec<&'a Workload> = match index.and_then(|&i| self.selected.get(i)) {
            Some(selected) => selected.iter().filter_map(|&i| self.workloads.get(i)).collect(),
            // A Service from elsewhere: match it now.
            None => self.workloads_in(&service.namespace).filter(|w| service.selects(w)).collect(),
        };
        selected
            .into_iter()
            .filter_map(|workload| Some(Endpoint { workload, target_port: workload.resolve(&port.target)? }))
            .collect()
    }
}

impl Service {
    /// Whether the Service selects `workload` (same namespace, every selector label).
    pub fn selects(&self, workload: &Workload) -> bool {
        workload.namespace == self.namespace
            && self.selector.as_ref().is_some_and(|selector| {
                !selector.is_empty() && selector.iter().all(|(k, v)| workload.labels.get(k) == Some(v))
            })
    }
}

impl Workload {
    /// The container port `target` names, when the workload has it (a number is taken as is,
    /// as Kubernetes does).
    pub fn resolve(&self, target: &TargetPort) -> Option<u16> {
        match target {
            TargetPort::Number(port) => Some(*port),
            TargetPort::Name(name) => {
                self.ports.iter().find(|p| p.name.as_deref() == Some(name.as_str())).map(|p| p.port)
            }
        }
    }
}

/// `spiffe://TD/ns/NS/sa/SA`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// How the proxy carries a Service port, from Istio's protocol selection ([`port_protocol`],
/// shared with `paymesh analyze`); unknown or unnamed ports are HTTP.
pub fn protocol_of(name: &str, app_protocol: Option<&str>) -> Protocol {
    match port_protocol(name, app_protocol) {
        Some(PortProtocol::Http2 | PortProtocol::Grpc | PortProtocol::GrpcWeb) => Protocol::Http2,
        Some(
            PortProtocol::Tcp
            | PortProtocol::Tls
            | PortProtocol::Https
            | PortProtocol::Mongo
            | PortProtocol::Redis
            | PortProtocol::Mysql
            | PortProtocol::Udp,
        ) => Protocol::Tcp,
        Some(PortProtocol::Http | PortProtocol::HttpProxy) | None => Protocol::Http,
    }
}

fn service(resource: &Resource) -> Option<Service> {
    let Spec::Service(svc) = &resource.spec else { return None };
    let spec = svc.spec.as_ref()?;
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let target = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(*n).ok()?),
                Some(IntOrString::String(name)) => match name.parse::<u16>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Name(name.clone()),
                },
            };
            let name = p.name.clone().unwrap_or_default();
            let protocol = protocol_of(&name, p.app_protocol.as_deref());
            Some(ServicePort { name, port, target, protocol })
        })
        .collect();
    let namespace = resource.namespace().to_owned();
    Some(Service {
        hostname: fqdn(&resource.meta.name, &namespace),
        name: resource.meta.name.clone(),
        namespace,
        selector: spec.selector.clone(),
        ports,
    })
}

fn pod(resource: &Resource, trust_domain: &str) -> Option<Workload> {
    let Spec::Pod(pod) = &resource.spec else { return None };
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok());
    let sidecar = resource.meta.annotations.get(SIDECAR_ANNOTATION).is_some_and(|v| v == "true");
    Some(workload(
        resource.meta.name.clone(),
        resource.namespace(),
        ip,
        resource.meta.labels.clone(),
        pod.spec.as_ref(),
        sidecar,
        trust_domain,
    ))
}

fn deployment(store: &Store, resource: &Resource, trust_domain: &str) -> Option<Workload> {
    let Spec::Deployment(deployment) = &resource.spec else { return None };
    let template = &deployment.spec.as_ref()?.template;
    let meta = template.metadata.as_ref();
    let labels = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    Some(workload(
        resource.meta.name.clone(),
        resource.namespace(),
        None,
        labels,
        template.spec.as_ref(),
        // Istio's own rule (`util.DeploymentInMesh`), as `paymesh analyze` applies it.
        in_mesh(store, resource),
        trust_domain,
    ))
}

fn workload(
    name: String,
    namespace: &str,
    ip: Option<IpAddr>,
    labels: BTreeMap<String, String>,
    spec: Option<&PodSpec>,
    sidecar: bool,
    trust_domain: &str,
) -> Workload {
    let service_account = spec
        .and_then(|s| s.service_account_name.clone().or_else(|| s.service_account.clone()))
        .filter(|sa| !sa.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned());
    let ports = spec
        .into_iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(ContainerPort { name: p.name.clone(), port: u16::try_from(p.container_port).ok()? })
        })
        .collect();
    Workload {
        identity: spiffe_id(trust_domain, namespace, &service_account),
        name,
        namespace: namespace.to_owned(),
        ip,
        labels,
        service_account,
        sidecar,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_as_istio_selects_them() {
        assert_eq!(protocol_of("http", None), Protocol::Http);
        assert_eq!(protocol_of("grpc-api", None), Protocol::Http2);
        assert_eq!(protocol_of("http2", None), Protocol::Http2);
        assert_eq!(protocol_of("tcp-db", None), Protocol::Tcp);
        assert_eq!(protocol_of("redis", None), Protocol::Tcp);
        assert_eq!(protocol_of("", None), Protocol::Http);
        assert_eq!(protocol_of("tcp", Some("http")), Protocol::Http);
        assert_eq!(protocol_of("http", Some("kubernetes.io/h2c")), Protocol::Http2);
    }
}
