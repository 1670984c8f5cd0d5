//! The guide's check on the repository's real `k8s/`: `paymesh up -f k8s` (ingress on the test's
//! own address), `paymesh exec -n payments deploy/payment-service -- curl -s
//! account-service:8083/health` through the sidecars, and one payment through the ingress.

#![cfg(unix)]

#[path = "support/up.rs"]
mod support;

#[path = "support/mesh.rs"]
mod mesh;

use mesh::*;
use support::*;

/// POSTs the test's one payment (tenant acme, `Idempotency-Key: order-1`) to `url` through the
/// gateway's host, with `extra` curl options first.
fn pay(extra: &[&str], url: &str) -> (Option<i32>, String, String) {
    let mut args = extra.to_vec();
    args.extend([
        "-XPOST",
        url,
        "-H",
        "Host: payments.example.com",
        "-H",
        "x-tenant-id: acme",
        "-H",
        "Idempotency-Key: order-1",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"from_account": "alice", "to_account": "bob", "amount_minor": 2500, "currency": "EUR"}"#,
    ]);
    curl(&args)
}

fn exec_in_payment_service(state_dir: &std::path::Path, curl_args: &[&str]) -> (Option<i32>, String, String) {
    let mut args =
        vec!["exec", "-n", "payments", "deploy/payment-service", "--", "curl", "-s", "--max-time", "10"];
    args.extend_from_slice(curl_args);
    run_paymesh(&args, state_dir)
}

#[test]
fn the_guides_check_and_a_payment_through_the_ingress_on_the_real_k8s() {
    let (_dir, state_dir, base, up) = start_k8s_mesh();
    let synced = up.seen.iter().filter(|l| l.contains(" SYNCED ")).count();
    assert_eq!(synced, 12, "11 payments pods and the gateway: {:?}", up.seen);
    let ingress = format!("{}:8080", host(base, 1));
    assert!(up.seen.contains(&format!("ingress: http://{ingress}")), "{:?}", up.seen);

    // The guide's command, verbatim.
    let (code, out, err) = exec_in_payment_service(&state_dir, &["account-service:8083/health"]);
    assert_eq!(code, Some(0), "{err}");
    let health: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(health, serde_json::json!({"status": "ok", "service": "account-service"}));

    // Accounts, created from inside the mesh.
    for body in [
        r#"{"id": "alice", "currency": "EUR", "opening_balance_minor": 100000}"#,
        r#"{"id": "bob", "currency": "EUR"}"#,
    ] {
        let (code, out, err) = exec_in_payment_service(
            &state_dir,
            &[
                "-w",
                "\n%{http_code}",
                "-XPOST",
                "account-service:8083/v1/accounts",
                "-H",
                "x-tenant-id: acme",
                "-H",
                "content-type: application/json",
                "-d",
                body,
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        assert!(out.ends_with("\n201"), "creating {body}: {out}");
    }

    // One payment through the ingress gateway.
    let (code, out, err) = pay(&["-w", "\n%{http_code}"], &format!("http://{ingress}/v1/payments"));
    assert_eq!(code, Some(0), "{err}");
    let (body, status) = out.rsplit_once('\n').expect("status line");
    assert!(status == "201" || status == "202", "payment answered {status}: {body}");
    let payment: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(payment["amount_minor"], 2500, "{payment}");
    assert!(payment["status"] == "completed" || payment["status"] == "processing", "{payment}");
    println!("payment through the ingress: {status} {payment}");

    // The same payment (same Idempotency-Key) over HTTPS: the supervisor made a self-signed
    // certificate for the Gateway's credentialName, and the answer is the payment already made.
    let https = format!("{}:8443", host(base, 1));
    let (code, out, err) = pay(&["-k"], &format!("https://{https}/v1/payments"));
    assert_eq!(code, Some(0), "{err}");
    let again: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(again["id"], payment["id"], "the idempotent replay over HTTPS: {again}");
    assert!(state_dir.join("credentials/payments-tls/tls.key").is_file());

    // The services' SQLite files live in the Deployment's directory under the state dir, not in
    // the directory `paymesh up` was started from.
    assert!(state_dir.join("data/payments/account-service/account-service.db").is_file());
    assert!(!std::env::current_dir().expect("cwd").join("account-service.db").exists());
}
