//! `paymesh up` without sidecars, and the commands that read its state: real processes
//! (paymesh, paymesh-echo, curl) on a random loopback /24 per test, state in a tempdir.

#![cfg(unix)]

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

#[path = "support/up.rs"]
mod support;

use support::*;

const NAMESPACE_PLAIN: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n---\n";

fn plan_json(files: &[&Path], base: std::net::Ipv4Addr, state_dir: &Path) -> serde_json::Value {
    let mut command = paymesh();
    command.args(["up", "--dry-run", "-o", "json", "--ip-base", &base.to_string()]);
    command.arg("--state-dir").arg(state_dir);
    for file in files {
        command.arg("-f").arg(file);
    }
    let out = command.output().expect("run paymesh up --dry-run");
    assert!(out.status.success(), "dry-run failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("plan is JSON")
}

#[test]
fn dry_run_plans_replicas_injection_and_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("mesh.yaml");
    let injected = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mesh\n  labels:\n    istio-injection: enabled\n---\n";
    let opted_in = echo_deployment("solo", "demo", 1, 9000, &[]).replace(
        "labels: {app: solo}\n    spec:",
        "labels: {app: solo}\n      annotations: {sidecar.istio.io/inject: \"true\"}\n    spec:",
    );
    let opted_out = echo_deployment("quiet", "mesh", 2, 9001, &[]).replace(
        "labels: {app: quiet}\n    spec:",
        "labels: {app: quiet}\n      annotations: {sidecar.istio.io/inject: \"false\"}\n    spec:",
    );
    std::fs::write(
        &manifest,
        format!(
            "{NAMESPACE_PLAIN}{injected}{}{}{opted_in}{opted_out}",
            echo_deployment("web", "mesh", 3, 9002, &[]),
            echo_deployment("plain", "demo", 2, 9003, &[]),
        ),
    )
    .expect("write manifest");
    let base = random_base();
    let plan = plan_json(&[&manifest], base, &dir.path().join("state"));
    let pods = plan["pods"].as_array().expect("pods");
    // 3 + 2 + 1 + 2 replicas, plus the ingress gateway.
    assert_eq!(pods.len(), 9);
    let sidecar = |deployment: &str| -> Vec<bool> {
        pods.iter().filter(|p| p["deployment"] == deployment).map(|p| !p["proxy"].is_null()).collect()
    };
    assert_eq!(sidecar("web"), [true, true, true]);
    assert_eq!(sidecar("plain"), [false, false]);
    assert_eq!(sidecar("solo"), [true]);
    assert_eq!(sidecar("quiet"), [false, false]);
    let gateway = pods.iter().find(|p| p["kind"] == "gateway").expect("gateway pod");
    assert_eq!(gateway["namespace"], "istio-system");
    assert_eq!(gateway["labels"]["istio"], "ingressgateway");
    assert_eq!(gateway["serviceAccount"], "istio-ingressgateway-service-account");
    assert!(gateway["name"].as_str().is_some_and(|n| n.starts_with("istio-ingressgateway-")));
    assert_eq!(plan["control"]["ip"], host(base, 2).to_string());
    let ips: HashSet<&str> = pods.iter().filter_map(|p| p["ip"].as_str()).collect();
    assert_eq!(ips.len(), pods.len(), "pod IPs are unique");
    assert!(!ips.contains(host(base, 2).to_string().as_str()), "no pod takes the control plane's IP");
    let web = pods.iter().find(|p| p["deployment"] == "web").expect("web pod");
    assert_eq!(web["env"]["HTTP_PROXY"], format!("http://{}:15001", web["ip"].as_str().unwrap_or("")));
    let name = web["name"].as_str().expect("name");
    let parts: Vec<&str> = name.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[2].len()), (3, "web", 5), "{name}");
}

#[test]
fn dry_run_on_the_repository_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k8s = paymesh_test_util::workspace_root().join("k8s");
    let plan = plan_json(&[&k8s], random_base(), dir.path());
    let pods = plan["pods"].as_array().expect("pods");
    // account 2, payment 2 + v2 1 + premium 2, saga 2, validation 2, and the gateway.
    assert_eq!(pods.len(), 12);
    assert!(pods.iter().all(|p| !p["proxy"].is_null()), "payments is injected: every pod has a sidecar");
    let ips: HashSet<&str> = pods.iter().filter_map(|p| p["ip"].as_str()).collect();
    assert_eq!(ips.len(), 12);
    let account = pods.iter().find(|p| p["deployment"] == "account-service").expect("account-service");
    assert_eq!(account["app"]["command"][1], "account-service");
    assert_eq!(account["serviceAccount"], "account-service");
    assert!(!dir.path().join("run/state.json").exists(), "a dry run writes no state");
}

#[test]
fn up_runs_supervises_and_stops_pods_without_sidecars() {
    ensure_bins();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("demo.yaml");
    std::fs::write(
        &manifest,
        format!(
            "{NAMESPACE_PLAIN}{}{}",
            echo_deployment("echo", "demo", 2, 9090, &[]),
            echo_deployment("crasher", "demo", 1, 9091, &["--crash-after", "1"]),
        ),
    )
    .expect("write manifest");
    let base = random_base();
    let state_dir = dir.path().join("state");
    let mut up = Up::start(&[&manifest], &state_dir, base, &[]);
    up.wait_line("paymesh up: running", Duration::from_secs(60));
    let table = up.seen.join("\n");
    assert!(table.contains("control plane: not started (no pod has a sidecar)"), "{table}");
    let echo_row = up.seen.iter().find(|l| l.starts_with("echo-")).expect("an echo row").clone();
    let cells: Vec<&str> = echo_row.split_whitespace().collect();
    assert_eq!(&cells[1..], ["demo", &host(base, 3).to_string(), "-", "-"]);
    assert!(table.contains("dashboard: http://127.0.0.1:20001 (not yet)"), "{table}");

    // exec runs with the pod's environment.
    let out = paymesh()
        .args(["exec", "-n", "demo", "deploy/echo", "--state-dir"])
        .arg(&state_dir)
        .args(["--", "sh", "-c", "curl -s --max-time 5 http://$POD_IP:$PORT/echo"])
        .output()
        .expect("paymesh exec");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let echo: serde_json::Value = serde_json::from_slice(&out.stdout).expect("echo JSON");
    let state = up.state();
    assert_eq!(echo["pod"], state["pods"][0]["name"]);
    assert_eq!(echo["namespace"], "demo");
    let status = paymesh()
        .args(["exec", "--state-dir"])
        .arg(&state_dir)
        .args(["deploy/echo", "--", "sh", "-c", "exit 7"])
        .status()
        .expect("exec exit 7");
    assert_eq!(status.code(), Some(7));

    // logs shows the app's output.
    let logs = paymesh()
        .args(["logs", "-n", "demo", "deploy/echo", "--state-dir"])
        .arg(&state_dir)
        .output()
        .expect("logs");
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout).lines().next(),
        Some(format!("paymesh-echo listening on {}:9090", host(base, 3)).as_str())
    );

    // The crasher is restarted, and the restart is counted and logged.
    let crasher = eventually("the crasher restarted", Duration::from_secs(20), || {
        let state = up.state();
        let pod = state["pods"].as_array()?.iter().find(|p| p["deployment"] == "crasher")?.clone();
        (pod["app"]["restarts"].as_u64()? >= 1).then_some(pod)
    });
    let log =
        std::fs::read_to_string(crasher["app"]["log"].as_str().expect("log path")).expect("crasher log");
    assert!(log.contains("exited (exit status: 1); restart #1 in 1s"), "{log}");

    let mut pids = up.pids();
    pids.extend(eventually("every app has a pid", Duration::from_secs(10), || {
        let pids = up.pids();
        (pids.len() == 4).then_some(pids)
    }));
    let status = up.interrupt(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived paymesh up");
    }
    assert!(!state_dir.join("run/state.json").exists(), "state.json is removed");
}

#[test]
fn exec_and_logs_on_an_unknown_pod_list_the_pods() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("run")).expect("run dir");
    let state = serde_json::json!({
        "supervisorPid": null, "stateDir": dir.path(), "control": null, "ingressUrl": null,
        "pods": [{"name": "web-abc-12345", "namespace": "demo", "deployment": "web", "kind": "workload",
                  "ip": "127.0.0.9", "serviceAccount": "default", "labels": {}, "ports": [80],
                  "env": {"POD_IP": "127.0.0.9"}, "app": null, "proxy": null}]
    });
    std::fs::write(dir.path().join("run/state.json"), state.to_string()).expect("state");
    let out = paymesh()
        .args(["exec", "--state-dir"])
        .arg(dir.path())
        .args(["nope", "--", "true"])
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "error: nope: no such pod; pods: demo/web-abc-12345\n");
    let out = paymesh()
        .args(["exec", "-n", "other", "--state-dir"])
        .arg(dir.path())
        .args(["deploy/web", "--", "true"])
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: deploy/web: no such pod in namespace other; pods: demo/web-abc-12345\n"
    );
    let out = paymesh()
        .args(["exec", "--state-dir"])
        .arg(dir.path())
        .args(["web-abc-12345", "--", "sh", "-c", "echo $POD_IP"])
        .output()
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "127.0.0.9\n");
    let out = paymesh()
        .args(["exec", "--state-dir"])
        .arg(dir.path())
        .args(["web-abc-12345", "--", "/nonexistent/program"])
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(127));

    let empty = tempfile::tempdir().expect("tempdir");
    let out = paymesh().args(["logs", "--state-dir"]).arg(empty.path()).arg("ghost").output().expect("logs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: ghost: no such pod"), "{out:?}");
}

#[test]
fn a_bad_manifest_names_file_and_line_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("bad.yaml");
    std::fs::write(&manifest, format!("{NAMESPACE_PLAIN}apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: many\n"))
        .expect("write");
    let out = paymesh()
        .args(["up", "-f"])
        .arg(&manifest)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("up");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("error: {}:11:", manifest.display())), "{stderr}");
    assert!(stderr.contains("spec.replicas"), "{stderr}");
    assert!(stderr.ends_with("paymesh up: 1 manifest error(s); nothing started\n"), "{stderr}");
}

#[test]
fn an_occupied_address_fails_fast_naming_it() {
    ensure_bins();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("demo.yaml");
    std::fs::write(&manifest, format!("{NAMESPACE_PLAIN}{}", echo_deployment("echo", "demo", 1, 9090, &[])))
        .expect("write");
    let base = random_base();
    let _squatter = TcpListener::bind((host(base, 3), 9090)).expect("occupy the pod's port");
    let state_dir = dir.path().join("state");
    let out = paymesh()
        .args(["up", "--ip-base", &base.to_string(), "-f"])
        .arg(&manifest)
        .arg("--state-dir")
        .arg(&state_dir)
        .output()
        .expect("up");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("error: {}:9090 (pod demo/echo-", host(base, 3))), "{stderr}");
    assert!(stderr.contains("app port) is not free"), "{stderr}");
    assert!(!state_dir.join("run/state.json").exists());
}
