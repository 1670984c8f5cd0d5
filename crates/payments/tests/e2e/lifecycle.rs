//! Process-level behaviour on SQLite: graceful shutdown, header propagation through
//! `HTTP_PROXY` by service name, and the load generator's report and money check.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::json;

use crate::proxy::Fault;
use crate::support::{Backend, Options, Stack};

/// The headers a caller sends and every hop must forward unchanged.
const CONTEXT: [(&str, &str); 10] = [
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("tracestate", "congo=t61rcWkgMzE"),
    ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
    ("x-b3-sampled", "1"),
    ("x-b3-flags", "0"),
    ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"),
    ("x-request-id", "req-propagation-1"),
    ("x-tenant-id", "acme"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_headers_reach_every_hop_through_http_proxy() {
    let stack = Stack::start(Backend::Sqlite, Options { proxy: true, ..Options::default() }).await;
    stack.open_account("acme", "alice", "EUR", 1_000).await;
    stack.open_account("acme", "bob", "EUR", 0).await;
    let mut request = stack
        .http
        .post(format!("{}/v1/payments", stack.payment.url()))
        .header("idempotency-key", "k-trace")
        .json(&json!({"from_account": "alice", "to_account": "bob", "amount_minor": 100, "currency": "EUR"}));
    for (name, value) in CONTEXT {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("answer");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], "req-propagation-1");
    let id = response.json::<serde_json::Value>().await.expect("json")["id"].as_str().expect("id").to_owned();

    let seen = stack.proxy.as_ref().expect("proxy").seen();
    let expected = [
        "http://validation-service:8082/v1/validate".to_owned(),
        "http://saga-service:8084/v1/sagas".to_owned(),
        format!("http://account-service:8083/v1/transfers/{id}/reserve"),
        format!("http://account-service:8083/v1/transfers/{id}/credit"),
        format!("http://account-service:8083/v1/transfers/{id}/commit"),
    ];
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, expected, "absolute-form requests by service name, in order");
    for hop in &seen {
        for (name, value) in CONTEXT {
            assert_eq!(
                hop.headers.get(name).map(|v| v.as_bytes()),
                Some(value.as_bytes()),
                "{name} on {}",
                hop.uri
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let mut stack = Stack::start(Backend::Sqlite, Options { proxy: true, ..Options::default() }).await;
    stack.open_account("acme", "alice", "EUR", 1_000).await;
    stack.open_account("acme", "bob", "EUR", 0).await;
    // The saga call takes two seconds: the payment is in flight when SIGTERM arrives.
    stack.proxy.as_ref().expect("proxy").set_fault("/v1/sagas", Fault::Delay(Duration::from_secs(2)));
    let (http, url) = (stack.http.clone(), stack.payment.url());
    let in_flight = tokio::spawn(async move {
        http.post(format!("{url}/v1/payments"))
            .header("x-tenant-id", "acme")
            .header("idempotency-key", "k-drain")
            .json(&json!({"from_account": "alice", "to_account": "bob", "amount_minor": 100, "currency": "EUR"}))
            .send()
            .await
            .map(|r| r.status())
    });
    // SIGTERM once the payment is inside the payment-service, waiting on the saga call.
    let proxy = stack.proxy.as_ref().expect("proxy");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !proxy.seen().iter().any(|s| s.uri.ends_with("/v1/sagas")) {
        assert!(std::time::Instant::now() < deadline, "the payment never reached the saga call");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = Pid::from_raw(i32::try_from(stack.payment.pid()).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    let status = in_flight.await.expect("task").expect("the in-flight payment is answered");
    assert_eq!(status, StatusCode::CREATED);
    let exit = tokio::task::block_in_place(|| stack.payment.wait_exit(Duration::from_secs(10)));
    assert!(exit.is_some_and(|s| s.success()), "payment-service exits 0 after SIGTERM: {exit:?}");
    let refused = stack.http.get(format!("{}/health", stack.payment.url())).send().await;
    assert!(refused.is_err(), "no longer listening");
    assert_eq!(stack.balance("bob").await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_reports_latencies_and_checks_money() {
    let stack = Stack::start(Backend::Sqlite, Options::default()).await;
    let args = [
        "load",
        "--target",
        &stack.payment.url(),
        "--account-url",
        &stack.account.url(),
        "--rate",
        "40",
        "--duration",
        "2s",
        "--tenants",
        "acme,globex",
        "--accounts",
        "4",
        "--opening-balance",
        "5000",
        "--max-amount",
        "3000",
    ]
    .map(str::to_owned);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_payments"))
            .args(args)
            .env_remove("HTTP_PROXY")
            .output()
    })
    .await
    .expect("task")
    .expect("run payments load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "load failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("requests:  80 sent at 40/s, 80 finished, 0 dropped"), "{stdout}");
    assert!(stdout.contains("201: "), "{stdout}");
    for quantile in ["p50", "p90", "p99", "max"] {
        assert!(stdout.contains(quantile), "{stdout}");
    }
    assert!(stdout.contains("conserved yes"), "{stdout}");
    assert!(stdout.contains("every accepted payment applied exactly once: yes"), "{stdout}");
    assert!(stdout.contains("ledger balanced: yes"), "{stdout}");
}
