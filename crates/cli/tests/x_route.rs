//! `paymesh x route` on the repository's `k8s/`, offline: the guide's routes as the table and
//! JSON show them (gateway tenant routing to the premium subset, a sidecar's default route for a
//! service without a VirtualService), and bad input — an unknown caller, a request no route takes,
//! a config that does not load, a malformed header — each with its exit status and message.

#![cfg(unix)]

use std::process::Output;

#[path = "support/up.rs"]
mod support;

use support::{ensure_bins, paymesh};

fn x_route(args: &[&str]) -> Output {
    ensure_bins();
    let k8s = paymesh_test_util::workspace_root().join("k8s");
    let mut all = vec!["x", "route", "-f"];
    let k8s = k8s.display().to_string();
    all.push(&k8s);
    all.extend_from_slice(args);
    paymesh().args(&all).output().expect("runs paymesh x route")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_premium_tenant_through_the_gateway_reaches_the_premium_subset() {
    let out = x_route(&[
        "-n",
        "istio-system",
        "--from",
        "deploy/istio-ingressgateway",
        "-X",
        "POST",
        "-H",
        "x-tenant-id: tenant-gold",
        "-o",
        "json",
        "http://payments.example.com/v1/payments",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let routes = trace["routes"].as_array().expect("routes");
    let taken = routes.last().expect("a route took it");
    assert_eq!(taken["name"], "premium-tenants", "{trace}");
    assert!(taken["refused"].is_null());
    for earlier in &routes[..routes.len() - 1] {
        assert!(!earlier["refused"].as_array().expect("why not").is_empty(), "{earlier}");
    }
    let destinations = trace["outcome"]["destinations"].as_array().expect("destinations");
    assert_eq!(destinations.len(), 1);
    assert_eq!(destinations[0]["cluster"]["subset"], "premium");
    assert_eq!(destinations[0]["endpoints"].as_array().expect("endpoints").len(), 2, "two premium pods");
    assert_eq!(trace["outcome"]["policy"]["timeoutMs"], 10_000);
}

#[test]
fn the_table_names_the_route_the_policies_and_the_endpoints() {
    let out = x_route(&[
        "-n",
        "payments",
        "--from",
        "deploy/payment-service",
        "-X",
        "POST",
        "http://account-service:8083/v1/transfers",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for expected in [
        "reads",
        "no match: method",
        "writes",
        "MATCHED",
        "timeout 5000ms; retries 2 on connect-failure,refused-stream, 2000ms per try; fault none",
        "outbound|8083||account-service.payments.svc.cluster.local",
        "lb LEAST_REQUEST; mTLS ISTIO_MUTUAL; pool: connections 100, pending 50, requests 200, retries 3, connect 2000ms",
    ] {
        assert!(table.contains(expected), "`{expected}` not in\n{table}");
    }
}

#[test]
fn bad_input_gets_a_clear_message_and_its_exit_status() {
    let unknown = x_route(&["-n", "payments", "--from", "deploy/nope", "http://account-service:8083/"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("deploy/nope: no such pod"), "{}", text(&unknown.stderr));

    let nowhere = x_route(&["-n", "payments", "--from", "deploy/payment-service", "http://nowhere:9999/"]);
    assert_eq!(nowhere.status.code(), Some(1), "the proxy would answer 404 NR");
    assert!(
        text(&nowhere.stdout).contains("404 NR: no route table for port 9999"),
        "{}",
        text(&nowhere.stdout)
    );

    let header =
        x_route(&["-n", "payments", "--from", "deploy/payment-service", "-H", "no colon", "http://a:1/"]);
    assert_eq!(header.status.code(), Some(1));
    assert!(text(&header.stderr).contains("no colon: a header is `Name: value`"), "{}", text(&header.stderr));

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("broken.yaml"), "kind: [unclosed\n").expect("write");
    ensure_bins();
    let broken = paymesh()
        .args(["x", "route", "-f", &dir.path().display().to_string(), "--from", "deploy/a", "http://a:1/"])
        .output()
        .expect("runs");
    assert_eq!(broken.status.code(), Some(2), "{}", text(&broken.stderr));
    assert!(text(&broken.stderr).contains("broken.yaml:1"), "{}", text(&broken.stderr));
}
