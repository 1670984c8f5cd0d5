//! The bench's mesh: a config directory (Namespaces with `istio-injection: enabled`, N
//! Services with one port each, a mesh-wide STRICT PeerAuthentication) and a pods file with
//! [`ENDPOINTS_PER_SERVICE`] pods per Service, written the way `paymesh up` writes them
//! (k8s-openapi `Pod`s in a `kind: List`, annotation `paymesh.io/sidecar: "true"`, a unique
//! loopback `status.podIP`, labels selecting their Service, `spec.serviceAccountName`).
//!
//! Every file is written atomically (temp file outside the watched paths, then rename), so the
//! control plane's poller sees one change per edit, as with the supervisor's own writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Container, ContainerPort};
use paymesh_control::pods_file::{self, RunningPod};

/// Pods (endpoints) behind each Service.
pub const ENDPOINTS_PER_SERVICE: usize = 10;

/// Services per Namespace.
const SERVICES_PER_NAMESPACE: usize = 100;

/// The Service port and the pods' container port.
const SERVICE_PORT: u16 = 8080;
const TARGET_PORT: i32 = 9080;

/// One pod of the generated mesh.
#[derive(Debug, Clone)]
pub struct PodRef {
    /// Pod name, `svc-<i>-<j>`.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Service account (the Service's name).
    pub service_account: String,
    /// `status.podIP`.
    pub ip: Ipv4Addr,
    /// The `app` label.
    pub app: String,
}

/// A generated mesh on disk.
pub struct Mesh {
    /// The config directory (`-f`).
    pub config_dir: PathBuf,
    /// The pods file (`--pods`).
    pub pods_file: PathBuf,
    /// Where temp files are written before the rename (same filesystem, not watched).
    scratch: PathBuf,
    /// Every pod, Service by Service.
    pub pods: Vec<PodRef>,
}

fn namespace_of(service: usize) -> String {
    format!("ns-{}", service / SERVICES_PER_NAMESPACE)
}

/// Pod IPs: `127.<octet>.0.1` upwards, one per pod.
fn pod_ip(octet: u8, index: usize) -> Ipv4Addr {
    let n = u32::try_from(index + 1).unwrap_or(u32::MAX) & 0xffff;
    Ipv4Addr::new(127, octet, (n >> 8) as u8, (n & 0xff) as u8)
}

/// A Service manifest (YAML).
fn service_yaml(name: &str, namespace: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  selector: {{app: {app}}}\n  ports: [{{name: http, port: {SERVICE_PORT}, targetPort: {TARGET_PORT}}}]\n---\n"
    )
}

impl Mesh {
    /// Writes a mesh of `services` Services under `root`, pod IPs in `127.<octet>.0.0/16`.
    pub fn generate(root: &Path, services: usize, octet: u8) -> anyhow::Result<Self> {
        anyhow::ensure!(services * ENDPOINTS_PER_SERVICE < 65_000, "too many pods for one /16");
        let config_dir = root.join("config");
        let scratch = root.join("scratch");
        for dir in [&config_dir, &scratch] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut base = String::from(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\n\
             apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n---\n",
        );
        let namespaces = services.div_ceil(SERVICES_PER_NAMESPACE);
        for ns in 0..namespaces {
            let _ = write!(
                base,
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{ns}, labels: {{istio-injection: enabled}}}}\n---\n"
            );
        }
        let mut services_yaml = String::new();
        let mut pods = Vec::with_capacity(services * ENDPOINTS_PER_SERVICE);
        for i in 0..services {
            let (name, namespace) = (format!("svc-{i}"), namespace_of(i));
            services_yaml.push_str(&service_yaml(&name, &namespace, &name));
            for j in 0..ENDPOINTS_PER_SERVICE {
                pods.push(PodRef {
                    name: format!("{name}-{j}"),
                    namespace: namespace.clone(),
                    service_account: name.clone(),
                    ip: pod_ip(octet, pods.len()),
                    app: name.clone(),
                });
            }
        }
        let mesh = Mesh { pods_file: root.join("pods.yaml"), config_dir, scratch, pods };
        mesh.write_atomic(&mesh.config_dir.join("base.yaml"), &base)?;
        mesh.write_atomic(&mesh.config_dir.join("services.yaml"), &services_yaml)?;
        mesh.write_pods()?;
        Ok(mesh)
    }

    /// Writes `text` to `path` through a temp file and a rename.
    fn write_atomic(&self, path: &Path, text: &str) -> anyhow::Result<()> {
        let temp = self.scratch.join("next.tmp");
        std::fs::write(&temp, text).with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, path).with_context(|| format!("renaming onto {}", path.display()))
    }

    /// Writes the pods file from [`Mesh::pods`].
    pub fn write_pods(&self) -> anyhow::Result<()> {
        let items: Vec<_> = self.pods.iter().map(manifest).collect();
        self.write_atomic(&self.pods_file, &pods_file::list(items).to_string())
    }

    /// Adds Service `name` (selecting the pods of `svc-0`) as a new file in the config dir.
    pub fn add_service(&self, name: &str) -> anyhow::Result<()> {
        let yaml = service_yaml(name, &namespace_of(0), "svc-0");
        self.write_atomic(&self.config_dir.join(format!("{name}.yaml")), &yaml)
    }

    /// Moves pod `index` to the Service `app` selects (a label change) and rewrites the pods file.
    pub fn relabel(&mut self, index: usize, app: &str) -> anyhow::Result<()> {
        let pod = self.pods.get_mut(index).context("no such pod")?;
        pod.app = app.to_owned();
        self.write_pods()
    }
}

/// The Pod manifest of `pod`, written as the supervisor writes it.
fn manifest(pod: &PodRef) -> serde_json::Value {
    let labels = BTreeMap::from([("app".to_owned(), pod.app.clone())]);
    pods_file::manifest(RunningPod {
        name: &pod.name,
        namespace: &pod.namespace,
        labels: &labels,
        annotations: &BTreeMap::new(),
        service_account: &pod.service_account,
        ip: pod.ip.into(),
        sidecar: true,
        container: Container {
            name: "app".into(),
            image: Some("bench".into()),
            ports: Some(vec![ContainerPort {
                container_port: TARGET_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]),
            ..Container::default()
        },
    })
}
