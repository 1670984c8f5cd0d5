//! The repository's own mesh configuration (`k8s/`: the Payments Engine's Namespace, Services,
//! Deployments and Istio resources) passes `paymesh analyze`: exit status 0 and no message at
//! Error level. It runs the real binary from the workspace root, as a user would.
//!
//! The Gateway in `k8s/istio/gateway.yaml` selects `istio: ingressgateway`, a workload the
//! files do not contain: it is the ingress gateway paymesh (and Istio) runs, which analyze
//! adds as a built-in resource. Turning ingress off in the mesh config removes it, and the
//! same files then draw IST0101, which shows the check below can fail.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn analyze(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paymesh"))
        .current_dir(paymesh_test_util::workspace_root())
        .args(["analyze", "-f", "k8s/", "-o", "json"])
        .args(extra)
        .output()
        .expect("paymesh runs")
}

/// `(level, code, origin)` of every message printed.
fn messages(output: &Output) -> Vec<(String, String, String)> {
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let text = |m: &Value, key: &str| m.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    json.as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| (text(m, "level"), text(m, "code"), text(m, "origin")))
        .collect()
}

#[test]
fn the_payments_config_has_no_errors() {
    let output = analyze(&[]);
    let found = messages(&output);
    let errors: Vec<_> = found.iter().filter(|(level, _, _)| level == "Error").collect();
    assert!(errors.is_empty(), "errors: {errors:?}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn without_the_builtin_gateway_its_selector_matches_nothing() {
    let dir = std::env::temp_dir().join(format!("paymesh-payments-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, "ingressControllerMode: \"OFF\"\n").expect("mesh config written");
    let output = analyze(&["--meshConfigFile", path(&mesh)]);
    std::fs::remove_dir_all(&dir).expect("temporary directory removed");
    let found = messages(&output);
    assert!(
        found.contains(&("Error".into(), "IST0101".into(), "Gateway payments/payments-gateway".into())),
        "{found:?}"
    );
    assert_eq!(output.status.code(), Some(79));
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}
