//! `paymesh up` with sidecars: the control plane and proxies are real `paymesh-control` and
//! `paymesh-proxy` processes.

#![cfg(unix)]

use std::time::Duration;

#[path = "support/up.rs"]
mod support;

use support::*;

const INJECTED: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mesh\n  labels:\n    istio-injection: enabled\n---\n";

fn run_paymesh(args: &[&str], state_dir: &std::path::Path) -> (Option<i32>, String, String) {
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

#[test]
fn sidecars_sync_carry_exec_traffic_and_stop_in_order() {
    ensure_bins();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("mesh.yaml");
    std::fs::write(&manifest, format!("{INJECTED}{}", echo_deployment("echo", "mesh", 2, 9090, &[])))
        .expect("write");
    let base = random_base();
    let state_dir = dir.path().join("state");
    let mut up = Up::start(&[&manifest], &state_dir, base, &["--cert-ttl", "1h"]);
    up.wait_line("paymesh up: running", Duration::from_secs(120));

    let rows: Vec<Vec<String>> = up
        .seen
        .iter()
        .filter(|l| l.starts_with("echo-") || l.starts_with("istio-ingressgateway-"))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 3, "two echo pods and the gateway: {:?}", up.seen);
    for row in rows.iter().filter(|r| r[0].starts_with("echo-")) {
        assert_eq!(row[3], "SYNCED", "{row:?}");
        assert_eq!(row[4], "PERMISSIVE", "{row:?}");
    }
    let ingress = up.seen.iter().find(|l| l.starts_with("ingress: ")).expect("ingress line");
    assert_eq!(ingress, &format!("ingress: http://{}:8080", host(base, 1)));
    let pods_yaml = std::fs::read_to_string(state_dir.join("run/pods.yaml")).expect("pods.yaml");
    assert!(
        pods_yaml.contains("\"kind\": \"List\"") && pods_yaml.contains("\"paymesh.io/sidecar\": \"true\"")
    );

    // Through the sidecar: curl honours http_proxy from the pod's environment.
    let (code, stdout, stderr) = run_paymesh(
        &[
            "exec",
            "-n",
            "mesh",
            "deploy/echo",
            "--",
            "curl",
            "-s",
            "--max-time",
            "10",
            "http://echo.mesh:9090/echo",
        ],
        &state_dir,
    );
    assert_eq!(code, Some(0), "{stderr}");
    let echo: serde_json::Value = serde_json::from_str(&stdout).expect("echo JSON through the mesh");
    assert_eq!(echo["namespace"], "mesh");

    let (code, status, _) = run_paymesh(&["proxy-status"], &state_dir);
    assert_eq!(code, Some(0));
    assert_eq!(status.lines().filter(|l| l.contains(" SYNCED ")).count(), 3, "{status}");

    let (code, clusters, stderr) =
        run_paymesh(&["proxy-config", "clusters", "-n", "mesh", "deploy/echo"], &state_dir);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(clusters.contains("echo.mesh.svc.cluster.local  9090"), "{clusters}");
    // No DestinationRule upgrades the `http` port, so its requests stay HTTP/1.1 (Istio's default).
    let echo_row =
        clusters.lines().find(|l| l.starts_with("echo.mesh.svc.cluster.local")).unwrap_or_default();
    assert_eq!(
        echo_row.split_whitespace().skip(5).collect::<Vec<_>>(),
        ["HTTP", "ISTIO_MUTUAL"],
        "{clusters}"
    );
    let (code, secret, stderr) =
        run_paymesh(&["proxy-config", "secret", "-n", "mesh", "deploy/echo"], &state_dir);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(secret.contains("spiffe://cluster.local/ns/mesh/sa/default  true"), "{secret}");

    // Nothing under the state dir is open to group or others (CA key, state, logs, app data),
    // but for public certificates, which the CA writes 0644 on purpose; the dir itself is 0700.
    let mut open_to_others = Vec::new();
    let mut dirs = vec![state_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("state dir readable") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let public =
                path.to_string_lossy().ends_with("cert.pem") || path.extension().is_some_and(|e| e == "crt");
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
            if mode & 0o077 != 0 && !meta.is_symlink() && !public {
                open_to_others.push(path.clone());
            }
            if meta.is_dir() {
                dirs.push(path);
            }
        }
    }
    assert!(open_to_others.is_empty(), "readable by others: {open_to_others:?}");
    let root_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&state_dir).expect("meta").permissions());
    assert_eq!(root_mode & 0o777, 0o700);

    let needle = state_dir.display().to_string();
    let mentioning = processes_mentioning(&needle);
    assert!(mentioning.len() >= 2, "the supervisor and the control plane name the state dir: {mentioning:?}");
    let pids = up.pids();
    assert_eq!(pids.len(), 1 + 1 + 2 * 2 + 1, "supervisor, control plane, 2 apps + 2 sidecars, gateway");
    assert_eq!(up.interrupt(Duration::from_secs(60)).code(), Some(0));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived paymesh up");
    }
    // Nothing else started for this state dir either (a child state.json never recorded).
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "processes of {needle} left behind: {left:?}");
}
