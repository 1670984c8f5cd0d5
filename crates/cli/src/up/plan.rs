//! Planning `paymesh up`: manifests in, pods out, nothing started.
//!
//! Every replica of every Deployment becomes a pod named as Kubernetes names them
//! (`<deployment>-<pod-template-hash>-<5 chars>`, deterministic here so reruns keep names),
//! with its own loopback address from the `--ip-base` /24 (`.0` and `.1` skipped, `.2` for the
//! control plane). A pod gets a sidecar as Istio's injector decides (namespace label
//! `istio-injection`, pod label or annotation `sidecar.istio.io/inject`). When any pod has a
//! sidecar, the plan adds the control plane and an ingress gateway pod in `istio-system`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use paymesh_api::ports;
use paymesh_config::Store;
use paymesh_config::resource::Spec;

use super::bins::Bins;
use crate::state::{ControlState, PodKind, PodState, ProcessState, State};

/// Where Istio puts its control plane and gateway.
pub const ISTIO_NAMESPACE: &str = "istio-system";
/// Istio's ingress gateway names.
const GATEWAY_DEPLOYMENT: &str = "istio-ingressgateway";
const GATEWAY_SERVICE_ACCOUNT: &str = "istio-ingressgateway-service-account";
/// Local mode: a Gateway server port P listens on P + this (80 → 8080).
pub const GATEWAY_PORT_OFFSET: u16 = 8000;
/// The host byte of the control plane's address in the /24.
const CONTROL_HOST: u8 = 2;
/// Kubernetes' alphabet for generated names (no vowels, no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// More pods than addresses in the /24.
    #[error("{pods} pods and the control plane need more than the 253 addresses of {base}/24")]
    OutOfAddresses { pods: usize, base: Ipv4Addr },
    /// Addresses must be loopback: every pod binds its own.
    #[error("{what} {addr} is not a loopback address (127.0.0.0/8)")]
    NotLoopback { what: &'static str, addr: Ipv4Addr },
    /// A Deployment without a pod template container.
    #[error("Deployment {namespace}/{name} has no containers")]
    NoContainers { namespace: String, name: String },
    /// Negative replicas.
    #[error("Deployment {namespace}/{name}: replicas {replicas} is negative")]
    NegativeReplicas { namespace: String, name: String, replicas: i32 },
}

/// What the plan needs besides the manifests.
#[derive(Debug)]
pub struct Settings<'a> {
    /// The `-f` paths (handed to the control plane as they are).
    pub config_paths: &'a [PathBuf],
    /// Absolute state directory.
    pub state_dir: &'a Path,
    /// Any address in the /24 pods are numbered in.
    pub ip_base: Ipv4Addr,
    /// The gateway pod's address (the ingress URL's host).
    pub ingress_addr: Ipv4Addr,
    /// Workload certificate lifetime, as the control plane's `--cert-ttl` takes it.
    pub cert_ttl: &'a str,
    /// Where programs are found.
    pub bins: &'a Bins,
}

/// The plan: the state to run (no PIDs yet), the pods as Kubernetes manifests, and the
/// programs that could not be found (fatal unless dry-running).
#[derive(Debug)]
pub struct Plan {
    pub state: State,
    pub pods_manifest: serde_json::Value,
    pub missing_programs: Vec<String>,
}

/// Paths under the state directory.
pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

/// `<state>/run/pods.yaml`.
pub fn pods_file(state_dir: &Path) -> PathBuf {
    run_dir(state_dir).join("pods.yaml")
}

/// `<state>/run/admin-token`.
pub fn admin_token_file(state_dir: &Path) -> PathBuf {
    run_dir(state_dir).join("admin-token")
}

/// `<state>/run/tokens/<namespace>.<pod>`: a pod's bootstrap token, deleted by its proxy.
pub fn token_file(state_dir: &Path, pod: &PodState) -> PathBuf {
    run_dir(state_dir).join("tokens").join(format!("{}.{}", pod.namespace, pod.name))
}

/// `<state>/data/<namespace>/<deployment>`: the working directory of a Deployment's apps,
/// shared by its replicas like a shared volume (so an embedded SQLite file is one per
/// Deployment), and never the directory `paymesh up` was started in.
pub fn app_dir(state_dir: &Path, pod: &PodState) -> PathBuf {
    state_dir.join("data").join(&pod.namespace).join(&pod.deployment)
}

/// `<state>/ca`.
pub fn ca_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("ca")
}

/// Plans every pod of `store`'s Deployments.
pub fn plan(store: &Store, settings: &Settings<'_>) -> Result<Plan, PlanError> {
    for (what, addr) in [("--ip-base", settings.ip_base), ("--ingress-addr", settings.ingress_addr)] {
        if !addr.is_loopback() {
            return Err(PlanError::NotLoopback { what, addr });
        }
    }
    let mut missing = Vec::new();
    let mut resolve = |program: &str| match settings.bins.resolve(program) {
        Some(path) => path.display().to_string(),
        None => {
            if !missing.iter().any(|m| m == program) {
                missing.push(program.to_owned());
            }
            program.to_owned()
        }
    };

    let mut pods = Vec::new();
    let mut manifests = Vec::new();
    let mut next_host = CONTROL_HOST + 1;
    let [a, b, c, _] = settings.ip_base.octets();
    for resource in store.of_kind("Deployment") {
        let Spec::Deployment(deployment) = &resource.spec else { continue };
        let namespace = resource.namespace().to_owned();
        let name = resource.meta.name.clone();
        let template = Template::of(deployment, &namespace, &name)?;
        let sidecar = injects(store, &namespace, &template.labels, &template.annotations);
        let hash = pod_template_hash(deployment);
        for replica in 0..template.replicas {
            if next_host == 255 {
                return Err(PlanError::OutOfAddresses { pods: pods.len() + 1, base: settings.ip_base });
            }
            let ip = Ipv4Addr::new(a, b, c, next_host);
            next_host += 1;
            let pod_name = format!("{name}-{hash}-{}", suffix(&hash, replica));
            let mut labels = template.labels.clone();
            labels.insert("pod-template-hash".into(), hash.clone());
            let env =
                app_env(&template.container, &pod_name, &namespace, &template.service_account, ip, sidecar);
            let command = expand_command(&template.container, &env);
            let log_dir = settings.state_dir.join("logs").join(&pod_name);
            let app = ProcessState {
                command: match command.split_first() {
                    Some((program, args)) => {
                        std::iter::once(resolve(program)).chain(args.iter().cloned()).collect()
                    }
                    None => Vec::new(),
                },
                pid: None,
                restarts: 0,
                log: log_dir.join("app.log"),
            };
            let mut pod = PodState {
                name: pod_name,
                namespace: namespace.clone(),
                deployment: name.clone(),
                kind: PodKind::Workload,
                ip,
                service_account: template.service_account.clone(),
                labels,
                ports: template.ports.clone(),
                env,
                app: Some(app),
                proxy: None,
            };
            if sidecar {
                pod.proxy = Some(proxy_process(&pod, "sidecar", settings, &mut resolve));
            }
            manifests.push(super::pods::manifest(&pod, &template.annotations, &template.container));
            pods.push(pod);
        }
    }

    let needs_control = pods.iter().any(PodState::has_proxy);
    let (control, ingress_url) = if needs_control {
        let gateway = gateway_pod(settings);
        let proxy = proxy_process(&gateway, "gateway", settings, &mut resolve);
        let gateway = PodState { proxy: Some(proxy), ..gateway };
        manifests.push(super::pods::manifest(&gateway, &BTreeMap::new(), &Container::default()));
        pods.push(gateway);
        let control = control_process(settings, (a, b, c), &mut resolve);
        (Some(control), Some(format!("http://{}:{}", settings.ingress_addr, ports::GATEWAY_HTTP)))
    } else {
        (None, None)
    };
    let state =
        State { supervisor_pid: None, state_dir: settings.state_dir.to_owned(), control, ingress_url, pods };
    Ok(Plan { state, pods_manifest: paymesh_control::pods_file::list(manifests), missing_programs: missing })
}

/// The parts of a Deployment's pod template a pod is made from.
struct Template {
    replicas: u32,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    service_account: String,
    /// The first container: local mode runs one app process per pod.
    container: Container,
    ports: Vec<u16>,
}

impl Template {
    fn of(deployment: &Deployment, namespace: &str, name: &str) -> Result<Self, PlanError> {
        let spec = deployment.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        let replicas = u32::try_from(replicas).map_err(|_| PlanError::NegativeReplicas {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            replicas,
        })?;
        let template = spec.map(|s| &s.template);
        let meta = template.and_then(|t| t.metadata.as_ref());
        let pod_spec = template.and_then(|t| t.spec.as_ref());
        let container = pod_spec.and_then(|p| p.containers.first()).cloned().ok_or_else(|| {
            PlanError::NoContainers { namespace: namespace.to_owned(), name: name.to_owned() }
        })?;
        let ports =
            container.ports.iter().flatten().filter_map(|p| u16::try_from(p.container_port).ok()).collect();
        Ok(Self {
            replicas,
            labels: meta.and_then(|m| m.labels.clone()).unwrap_or_default(),
            annotations: meta.and_then(|m| m.annotations.clone()).unwrap_or_default(),
            service_account: pod_spec
                .and_then(|p| p.service_account_name.clone().or_else(|| p.service_account.clone()))
                .unwrap_or_else(|| "default".into()),
            container,
            ports,
        })
    }
}

/// Istio's injection decision: `istio-injection=disabled` on the namespace or `"false"` on the
/// pod (label, then annotation) wins; then `istio-injection=enabled` or the pod's `"true"`.
pub fn injects(
    store: &Store,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    let namespace_label = store
        .of_kind("Namespace")
        .find(|r| r.meta.name == namespace)
        .and_then(|r| r.meta.labels.get("istio-injection").cloned());
    let pod_says =
        labels.get("sidecar.istio.io/inject").or_else(|| annotations.get("sidecar.istio.io/inject"));
    match (namespace_label.as_deref(), pod_says.map(String::as_str)) {
        (Some("disabled"), _) | (_, Some("false")) => false,
        (Some("enabled"), _) | (_, Some("true")) => true,
        _ => false,
    }
}

/// The app's environment: the container's `env` values, then what the supervisor sets.
fn app_env(
    container: &Container,
    pod: &str,
    namespace: &str,
    service_account: &str,
    ip: Ipv4Addr,
    sidecar: bool,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container.env.iter().flatten() {
        if let Some(value) = &var.value {
            let value = expand(value, &env);
            env.insert(var.name.clone(), value);
        }
    }
    env.insert("POD_IP".into(), ip.to_string());
    env.insert("POD_NAME".into(), pod.to_owned());
    env.insert("POD_NAMESPACE".into(), namespace.to_owned());
    env.insert("SERVICE_ACCOUNT".into(), service_account.to_owned());
    if sidecar {
        let proxy = format!("http://{ip}:{}", ports::PROXY_OUTBOUND);
        for name in ["HTTP_PROXY", "http_proxy"] {
            env.insert(name.into(), proxy.clone());
        }
        for name in ["NO_PROXY", "no_proxy"] {
            env.insert(name.into(), ip.to_string());
        }
    }
    env
}

/// `command` + `args` with Kubernetes' `$(VAR)` references expanded.
fn expand_command(container: &Container, env: &BTreeMap<String, String>) -> Vec<String> {
    container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|a| expand(a, env))
        .collect()
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`, an
/// undefined reference stays as written.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = env.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn proxy_process(
    pod: &PodState,
    mode: &str,
    settings: &Settings<'_>,
    resolve: &mut impl FnMut(&str) -> String,
) -> ProcessState {
    let control = SocketAddr::from((control_ip(settings.ip_base), ports::CONTROL_GRPC_TLS));
    let command = vec![
        resolve("paymesh-proxy"),
        "--mode".into(),
        mode.into(),
        "--pod".into(),
        pod.name.clone(),
        "--namespace".into(),
        pod.namespace.clone(),
        "--service-account".into(),
        pod.service_account.clone(),
        "--ip".into(),
        pod.ip.to_string(),
        "--control".into(),
        control.to_string(),
        "--root-cert".into(),
        ca_dir(settings.state_dir).join("root-cert.pem").display().to_string(),
        "--token-file".into(),
        token_file(settings.state_dir, pod).display().to_string(),
    ];
    let log = settings.state_dir.join("logs").join(&pod.name).join("proxy.log");
    ProcessState { command, pid: None, restarts: 0, log }
}

fn control_ip(base: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, _] = base.octets();
    Ipv4Addr::new(a, b, c, CONTROL_HOST)
}

fn control_process(
    settings: &Settings<'_>,
    (a, b, c): (u8, u8, u8),
    resolve: &mut impl FnMut(&str) -> String,
) -> ControlState {
    let ip = Ipv4Addr::new(a, b, c, CONTROL_HOST);
    let grpc_addr = SocketAddr::from((ip, ports::CONTROL_GRPC_TLS));
    let monitoring_addr = SocketAddr::from((ip, ports::CONTROL_MONITORING));
    let mut command = vec![resolve("paymesh-control")];
    for path in settings.config_paths {
        command.push("-f".into());
        command.push(path.display().to_string());
    }
    let state_dir = settings.state_dir;
    command.extend([
        "--pods".into(),
        pods_file(state_dir).display().to_string(),
        "--ca-dir".into(),
        ca_dir(state_dir).display().to_string(),
        "--grpc-addr".into(),
        grpc_addr.to_string(),
        "--monitoring-addr".into(),
        monitoring_addr.to_string(),
        "--admin-token-file".into(),
        admin_token_file(state_dir).display().to_string(),
        "--cert-ttl".into(),
        settings.cert_ttl.to_owned(),
        "--gateway-port-offset".into(),
        GATEWAY_PORT_OFFSET.to_string(),
        "--credentials-dir".into(),
        super::credentials::credentials_dir(state_dir).display().to_string(),
    ]);
    let log = state_dir.join("logs").join("paymesh-control").join("control.log");
    ControlState {
        ip,
        grpc_addr,
        monitoring_addr,
        process: ProcessState { command, pid: None, restarts: 0, log },
    }
}

fn gateway_pod(settings: &Settings<'_>) -> PodState {
    let hash = safe_encode_decimal(fnv1a(GATEWAY_DEPLOYMENT.as_bytes()));
    let labels = BTreeMap::from([
        ("app".to_owned(), GATEWAY_DEPLOYMENT.to_owned()),
        ("istio".to_owned(), "ingressgateway".to_owned()),
        ("pod-template-hash".to_owned(), hash.clone()),
    ]);
    PodState {
        name: format!("{GATEWAY_DEPLOYMENT}-{hash}-{}", suffix(&hash, 0)),
        namespace: ISTIO_NAMESPACE.into(),
        deployment: GATEWAY_DEPLOYMENT.into(),
        kind: PodKind::Gateway,
        ip: settings.ingress_addr,
        service_account: GATEWAY_SERVICE_ACCOUNT.into(),
        labels,
        ports: Vec::new(),
        env: BTreeMap::new(),
        app: None,
        proxy: None,
    }
}

/// FNV-1a, 32 bits: what Kubernetes hashes pod templates with.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &b| (hash ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Kubernetes' `pod-template-hash`: the decimal hash, each digit mapped into the safe alphabet.
fn pod_template_hash(deployment: &Deployment) -> String {
    let template = deployment.spec.as_ref().map(|s| &s.template);
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    safe_encode_decimal(fnv1a(&bytes))
}

fn safe_encode_decimal(hash: u32) -> String {
    hash.to_string()
        .bytes()
        .map(|d| char::from(SAFE_ALPHABET[usize::from(d) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The 5-character pod suffix: random in Kubernetes, derived from the hash and replica here.
fn suffix(hash: &str, replica: u32) -> String {
    let mut n = fnv1a(format!("{hash}/{replica}").as_bytes());
    (0..5)
        .map(|_| {
            let c = SAFE_ALPHABET[(n % 27) as usize];
            n /= 27;
            char::from(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_kubernetes_references() {
        let env = BTreeMap::from([("PORT".to_owned(), "8081".to_owned())]);
        assert_eq!(expand("--port=$(PORT)", &env), "--port=8081");
        assert_eq!(expand("$$(PORT) $(NOPE) $", &env), "$(PORT) $(NOPE) $");
        assert_eq!(expand("$(PORT", &env), "$(PORT");
    }

    #[test]
    fn names_look_like_kubernetes_names() {
        let hash = safe_encode_decimal(fnv1a(b"x"));
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{hash}");
        assert_eq!(suffix(&hash, 0).len(), 5);
        assert_ne!(suffix(&hash, 0), suffix(&hash, 1));
        assert_eq!(suffix(&hash, 1), suffix(&hash, 1));
    }
}
