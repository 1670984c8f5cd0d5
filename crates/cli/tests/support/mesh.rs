//! Shared by the end-to-end mesh tests (`mesh_*.rs`): manifests of an injected namespace,
//! running `paymesh` subcommands against a test's state dir, `curl` from the test (never through
//! a proxy) and the JSON debug endpoints of the control plane and the sidecars.
//!
//! Include after `support/up.rs` as `mod support;`.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Up, paymesh};

/// The namespace every mesh test runs its pods in: sidecars injected.
pub const INJECTED: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mesh\n  labels:\n    istio-injection: enabled\n---\n";

/// A namespace-wide PeerAuthentication for `mesh` in `mode`.
pub fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: mesh
spec:
  mtls:
    mode: {mode}
---
"
    )
}

/// A paymesh-echo Deployment (one replica) and its Service in `mesh`, running as service account
/// `name`, HTTP on `port` (Service port named `http`) and extra `ports` as `(name, port)`.
pub fn echo_app(name: &str, port: u16, args: &[&str], extra_ports: &[(&str, u16)]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    let container_ports: String =
        extra_ports.iter().map(|(_, p)| format!("        - containerPort: {p}\n")).collect();
    let service_ports: String =
        extra_ports.iter().map(|(n, p)| format!("  - name: {n}\n    port: {p}\n")).collect();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: mesh
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      serviceAccountName: {name}
      containers:
      - name: {name}
        image: paymesh-echo
        command: [\"paymesh-echo\"]
        args: [{}]
        env:
        - {{name: PORT, value: \"{port}\"}}
        ports:
        - containerPort: {port}
{container_ports}---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: mesh
spec:
  selector: {{app: {name}}}
  ports:
  - name: http
    port: {port}
{service_ports}---
",
        args.join(", ")
    )
}

/// `paymesh SUBCOMMAND --state-dir DIR REST...`: (exit code, stdout, stderr).
pub fn run_paymesh(args: &[&str], state_dir: &Path) -> (Option<i32>, String, String) {
    // `--state-dir` right after the subcommand: after `exec`'s `--` it would be the command's.
    let (command, rest) = args.split_first().expect("a subcommand");
    let out =
        paymesh().arg(command).arg("--state-dir").arg(state_dir).args(rest).output().expect("run paymesh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `paymesh exec -n mesh deploy/FROM -- curl -s --max-time 10 ARGS...`: the pod's environment
/// sends it through its sidecar. (exit code, stdout, stderr).
pub fn exec_curl(state_dir: &Path, from: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let target = format!("deploy/{from}");
    let mut all = vec!["exec", "-n", "mesh", target.as_str(), "--", "curl", "-s", "--max-time", "10"];
    all.extend_from_slice(args);
    run_paymesh(&all, state_dir)
}

/// `curl` from the test process itself, through no proxy unless `args` name one with `-x`:
/// (exit code, stdout, stderr).
pub fn curl(args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "--max-time", "5"]).args(args);
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(var);
    }
    let out = command.output().expect("run curl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GET `url` bypassing proxies, parsed as JSON; `None` when it fails or is not JSON.
pub fn get_json(url: &str) -> Option<serde_json::Value> {
    let (code, body, _) = curl(&["-f", url]);
    if code != Some(0) {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// The IP of the pod of deployment `deployment` in `namespace`, from state.json.
pub fn pod_ip(up: &Up, namespace: &str, deployment: &str) -> Ipv4Addr {
    let state = up.state();
    let pod = state["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["namespace"] == namespace && p["deployment"] == deployment)
        .unwrap_or_else(|| panic!("no pod of {namespace}/{deployment} in {state}"));
    pod["ip"].as_str().and_then(|ip| ip.parse().ok()).expect("pod ip")
}

/// The control plane's monitoring address (`IP:PORT`), from state.json.
pub fn monitoring_addr(up: &Up) -> String {
    up.state()["control"]["monitoringAddr"].as_str().expect("monitoringAddr").to_owned()
}

/// The control plane's PID, from state.json.
pub fn control_pid(up: &Up) -> Option<i32> {
    up.state()["control"]["process"]["pid"].as_i64().map(|p| p as i32)
}

/// A sidecar's `/config_dump`.
pub fn config_dump(ip: Ipv4Addr) -> Option<serde_json::Value> {
    get_json(&format!("http://{ip}:15000/config_dump"))
}

/// `paymesh proxy-status` rows (split on whitespace), header excluded.
pub fn proxy_status(state_dir: &Path) -> Vec<Vec<String>> {
    let (code, out, err) = run_paymesh(&["proxy-status"], state_dir);
    assert_eq!(code, Some(0), "proxy-status failed: {err}");
    out.lines().skip(1).map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
}

/// Starts `paymesh up` on `manifest` and waits until it reports running.
pub fn start_mesh(manifest: &Path, state_dir: &Path, base: Ipv4Addr, extra: &[&str]) -> Up {
    crate::support::ensure_bins();
    let mut up = Up::start(&[manifest], state_dir, base, extra);
    up.wait_line("paymesh up: running", Duration::from_secs(90));
    up
}

/// `paymesh up` on the repository's real `k8s/` (the payments binary built too), running: the
/// temp dir holding the state dir (removed on drop), the state dir, the /24 base, the process.
pub fn start_k8s_mesh() -> (tempfile::TempDir, std::path::PathBuf, Ipv4Addr, Up) {
    crate::support::ensure_bins();
    crate::support::ensure_payments_bin();
    let k8s = paymesh_test_util::workspace_root().join("k8s");
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let base = crate::support::random_base();
    let mut up = Up::start(&[&k8s], &state_dir, base, &["--cert-ttl", "1h"]);
    up.wait_line("paymesh up: running", Duration::from_secs(120));
    (dir, state_dir, base, up)
}
