//! `.paymesh/run/state.json`: what `paymesh up` is running, written by the supervisor and read
//! by `logs`, `exec`, `proxy-status` and `proxy-config`.
//!
//! The supervisor rewrites the file (write to a temporary file, then rename, so readers never
//! see half a file) whenever a process starts, restarts or stops, and removes it on exit. The
//! same structure, with no PIDs, is the plan `paymesh up --dry-run -o json` prints.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where state lives when `--state-dir` is not given.
pub const DEFAULT_STATE_DIR: &str = ".paymesh";

/// Errors reading the state of a running `paymesh up`.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No state file: `paymesh up` is not running with this state directory.
    #[error("{}: not found; is `paymesh up` running with --state-dir {}?", .path.display(), .state_dir.display())]
    NotRunning { path: PathBuf, state_dir: PathBuf },
    /// The file could not be read.
    #[error("reading {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not the state this version writes.
    #[error("{}: not a paymesh state file: {source}", .path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    /// No pod matches what the user asked for.
    #[error("{wanted}: no such pod{}; pods: {}", namespace_hint(.namespace), .known.join(", "))]
    UnknownPod { wanted: String, namespace: Option<String>, known: Vec<String> },
    /// Several pods in different namespaces match.
    #[error("{wanted} is ambiguous ({}); give -n NAMESPACE", .matches.join(", "))]
    AmbiguousPod { wanted: String, matches: Vec<String> },
}

fn namespace_hint(namespace: &Option<String>) -> String {
    namespace.as_ref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default()
}

/// Everything `paymesh up` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The `paymesh up` process (absent in a dry-run plan).
    pub supervisor_pid: Option<u32>,
    /// The state directory, absolute.
    pub state_dir: PathBuf,
    /// The control plane; `None` when no pod has a sidecar.
    pub control: Option<ControlState>,
    /// `http://ADDR:8080` when the ingress gateway runs.
    pub ingress_url: Option<String>,
    /// Every pod, in plan order.
    pub pods: Vec<PodState>,
}

/// The control plane process and its addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlState {
    /// Its own loopback address.
    pub ip: Ipv4Addr,
    /// CA + discovery (TLS gRPC).
    pub grpc_addr: SocketAddr,
    /// `/ready`, `/debug/*`, `/metrics`.
    pub monitoring_addr: SocketAddr,
    /// The process.
    pub process: ProcessState,
}

/// What a pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodKind {
    /// A Deployment replica: an app, with or without a sidecar.
    Workload,
    /// The ingress gateway: a proxy in gateway mode, no app.
    Gateway,
}

/// One pod: an app process, a proxy process, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub name: String,
    pub namespace: String,
    /// The Deployment it is a replica of.
    pub deployment: String,
    pub kind: PodKind,
    /// Its own loopback address.
    pub ip: Ipv4Addr,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// The app's container ports.
    pub ports: Vec<u16>,
    /// The app's environment as the supervisor sets it (`exec` uses it too).
    pub env: BTreeMap<String, String>,
    /// The app (absent for the gateway).
    pub app: Option<ProcessState>,
    /// The sidecar or gateway proxy (absent without injection).
    pub proxy: Option<ProcessState>,
}

impl PodState {
    /// Whether a proxy runs beside (or as) this pod.
    pub fn has_proxy(&self) -> bool {
        self.proxy.is_some()
    }

    /// `namespace/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One supervised process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessState {
    /// Program (resolved path) and arguments.
    pub command: Vec<String>,
    /// Its PID while it runs (also its process group).
    pub pid: Option<u32>,
    /// How often it was restarted after exiting.
    pub restarts: u32,
    /// Where its stdout and stderr are appended.
    pub log: PathBuf,
}

impl State {
    /// `<state_dir>/run/state.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("run").join("state.json")
    }

    /// Reads the state of the `paymesh up` using `state_dir`.
    pub fn read(state_dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(state_dir);
        let bytes = fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => {
                StateError::NotRunning { path: path.clone(), state_dir: state_dir.to_owned() }
            }
            _ => StateError::Read { path: path.clone(), source },
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
    }

    /// Writes the state atomically (temporary file + rename).
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        let path = Self::path(state_dir);
        let tmp = path.with_extension("json.tmp");
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    }

    /// Finds a pod: `NAME`, or `deploy/NAME` / `deployment/NAME` (its first pod), optionally
    /// only in `namespace`. Without a namespace, a name must be unique across namespaces.
    pub fn find_pod(&self, wanted: &str, namespace: Option<&str>) -> Result<&PodState, StateError> {
        let in_namespace = |pod: &&PodState| namespace.is_none_or(|ns| pod.namespace == ns);
        let deployment = wanted.strip_prefix("deploy/").or_else(|| wanted.strip_prefix("deployment/"));
        let matches: Vec<&PodState> = match deployment {
            Some(name) => {
                let mut firsts: Vec<&PodState> = Vec::new();
                for pod in self.pods.iter().filter(in_namespace).filter(|p| p.deployment == name) {
                    if !firsts.iter().any(|f| f.namespace == pod.namespace) {
                        firsts.push(pod);
                    }
                }
                firsts
            }
            None => self.pods.iter().filter(in_namespace).filter(|p| p.name == wanted).collect(),
        };
        match matches.as_slice() {
            [pod] => Ok(pod),
            [] => Err(StateError::UnknownPod {
                wanted: wanted.to_owned(),
                namespace: namespace.map(str::to_owned),
                known: self.pods.iter().map(PodState::qualified_name).collect(),
            }),
            many => Err(StateError::AmbiguousPod {
                wanted: wanted.to_owned(),
                matches: many.iter().map(|p| p.qualified_name()).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, namespace: &str, deployment: &str) -> PodState {
        PodState {
            name: name.into(),
            namespace: namespace.into(),
            deployment: deployment.into(),
            kind: PodKind::Workload,
            ip: Ipv4Addr::new(127, 0, 10, 3),
            service_account: "default".into(),
            labels: BTreeMap::new(),
            ports: vec![],
            env: BTreeMap::new(),
            app: None,
            proxy: None,
        }
    }

    fn state() -> State {
        State {
            supervisor_pid: None,
            state_dir: PathBuf::from("/tmp/x"),
            control: None,
            ingress_url: None,
            pods: vec![pod("a-1", "ns1", "a"), pod("a-2", "ns1", "a"), pod("a-1", "ns2", "a")],
        }
    }

    #[test]
    fn finds_pods_by_name_and_deployment() {
        let state = state();
        assert_eq!(state.find_pod("deploy/a", Some("ns1")).map(|p| &p.name).ok(), Some(&"a-1".to_owned()));
        assert_eq!(state.find_pod("a-2", None).map(|p| &p.name).ok(), Some(&"a-2".to_owned()));
        assert_eq!(
            state.find_pod("deployment/a", Some("ns2")).map(|p| p.qualified_name()).ok(),
            Some("ns2/a-1".to_owned())
        );
        assert_eq!(
            state.find_pod("a-1", None).map_err(|e| e.to_string()).err().as_deref(),
            Some("a-1 is ambiguous (ns1/a-1, ns2/a-1); give -n NAMESPACE")
        );
        assert_eq!(
            state.find_pod("b", Some("ns1")).map_err(|e| e.to_string()).err().as_deref(),
            Some("b: no such pod in namespace ns1; pods: ns1/a-1, ns1/a-2, ns2/a-1")
        );
    }
}
