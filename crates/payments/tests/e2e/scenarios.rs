//! The money scenarios: a payment through all four services, compensation, a saga-service
//! killed mid-flight, 1,000 concurrent payments from one account, idempotency. Each runs on
//! both backends (see `main.rs`).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::proxy::Fault;
use crate::support::{Backend, Options, ServiceProcess, Stack, assert_error, get_json};

fn step_names(saga: &Value) -> Vec<(String, String)> {
    saga["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or("").to_owned(),
                        s["status"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pair(step: &str, status: &str) -> (String, String) {
    (step.to_owned(), status.to_owned())
}

/// The ledger balances and nothing is left reserved.
async fn assert_ledger_settled(stack: &Stack) {
    let check = stack.ledger_check().await;
    assert_eq!(check["balanced"], true, "{check}");
    assert_eq!(check["open_transfers"], 0, "{check}");
    for currency in check["currencies"].as_array().expect("currencies") {
        assert_eq!(currency["clearing_minor"], 0, "{check}");
    }
}

pub async fn payment_moves_balances_exactly(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    for service in [&stack.account, &stack.validation, &stack.saga, &stack.payment] {
        let health = get_json(&stack.http, &format!("{}/health", service.url())).await;
        assert_eq!(health, json!({"status": "ok", "service": service.name}));
        assert_eq!(get_json(&stack.http, &format!("{}/ready", service.url())).await["status"], "ready");
    }
    stack.open_account("acme", "alice", "EUR", 10_000).await;
    stack.open_account("acme", "bob", "EUR", 0).await;

    let (status, payment) = stack.pay("acme", "k-1", "alice", "bob", 2_500).await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["status"], "completed");
    assert_eq!(payment["amount_minor"], 2_500);
    assert_eq!(payment["version"], "v1");
    assert!(payment.get("fee_quote").is_none(), "v1 quotes no fee: {payment}");
    assert_eq!(stack.balance("alice").await, 7_500);
    assert_eq!(stack.balance("bob").await, 2_500);

    let id = payment["id"].as_str().expect("payment id");
    let url = format!("{}/v1/payments/{id}", stack.payment.url());
    let fetched: Value = stack
        .http
        .get(&url)
        .header("x-tenant-id", "acme")
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(fetched["status"], "completed");
    assert_eq!(fetched["id"], id);
    let saga = stack.saga(id).await;
    assert_eq!(saga["state"], "committed");
    assert_eq!(step_names(&saga), [pair("reserve", "done"), pair("credit", "done"), pair("commit", "done")]);
    let transfer = get_json(&stack.http, &format!("{}/v1/transfers/{id}", stack.account.url())).await;
    assert_eq!(transfer["transfer"]["state"], "committed");
    assert_eq!(transfer["entries"].as_array().map(Vec::len), Some(4), "two postings of two legs: {transfer}");
    assert_ledger_settled(&stack).await;

    // A v2 replica of the payment-service differs visibly: version and a fee quote.
    let v2 = ServiceProcess::start(
        "payment-service",
        vec![
            ("VALIDATION_SERVICE_URL".into(), stack.validation.url()),
            ("SAGA_SERVICE_URL".into(), stack.saga.url()),
            ("SERVICE_VERSION".into(), "v2".into()),
        ],
        stack.dir.path(),
    );
    let body =
        json!({"from_account": "alice", "to_account": "bob", "amount_minor": 2_500, "currency": "EUR"});
    let response = stack
        .http
        .post(format!("{}/v1/payments", v2.url()))
        .header("x-tenant-id", "acme")
        .header("idempotency-key", "k-2")
        .json(&body)
        .send()
        .await
        .expect("v2 answers");
    assert_eq!(response.status(), StatusCode::CREATED);
    let payment: Value = response.json().await.expect("json");
    assert_eq!(payment["version"], "v2");
    assert_eq!(payment["fee_quote"], json!({"amount_minor": 7, "currency": "EUR", "basis_points": 25}));
    assert_eq!(stack.balance("alice").await, 5_000);
    assert_eq!(stack.balance("bob").await, 5_000);
}

pub async fn failed_credit_is_compensated(backend: Backend) {
    let options =
        Options { proxy: true, saga_env: vec![("STEP_ATTEMPTS", "2".into())], ..Options::default() };
    let stack = Stack::start(backend, options).await;
    let proxy = stack.proxy.as_ref().expect("proxy");
    stack.open_account("acme", "alice", "EUR", 10_000).await;
    stack.open_account("acme", "bob", "EUR", 0).await;
    stack.open_account("acme", "shut", "EUR", 0).await;
    stack.close_account("acme", "shut").await;

    // Unknown destination: reserved, credit refused, released.
    let got = stack.pay("acme", "k-ghost", "alice", "ghost", 1_000).await;
    assert_error(&got, 422, "account_not_found");
    assert_eq!(got.1["payment"]["status"], "failed");
    let saga = stack.saga(got.1["payment"]["id"].as_str().expect("id")).await;
    assert_eq!(saga["state"], "compensated");
    assert_eq!(
        step_names(&saga),
        [pair("reserve", "done"), pair("credit", "failed"), pair("release", "done")]
    );
    assert_eq!(stack.balance("alice").await, 10_000);

    // Closed destination.
    assert_error(&stack.pay("acme", "k-shut", "alice", "shut", 1_000).await, 422, "account_closed");
    assert_eq!(stack.balance("alice").await, 10_000);

    // Injected failure: every credit call answers 503; after its attempts the saga compensates.
    proxy.set_fault("/credit", Fault::Status(503));
    let got = stack.pay("acme", "k-503", "alice", "bob", 1_000).await;
    assert_error(&got, 422, "step_unconfirmed");
    let saga = stack.saga(got.1["payment"]["id"].as_str().expect("id")).await;
    assert_eq!(saga["state"], "compensated");
    let credit =
        saga["steps"].as_array().and_then(|s| s.iter().find(|s| s["step"] == "credit")).expect("credit step");
    assert_eq!(credit["attempts"], 2, "{saga}");
    assert_eq!(stack.balance("alice").await, 10_000);
    assert_eq!(stack.balance("bob").await, 0);

    // The credit lands but its answer is lost: compensation finds it credited and commits.
    proxy.set_fault("/credit", Fault::ForwardThenStatus(503));
    let (status, body) = stack.pay("acme", "k-lost", "alice", "bob", 1_000).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let saga = stack.saga(body["id"].as_str().expect("id")).await;
    assert_eq!(saga["state"], "committed");
    assert_eq!(
        step_names(&saga),
        [
            pair("reserve", "done"),
            pair("credit", "failed"),
            pair("release", "failed"),
            pair("commit", "done")
        ]
    );
    assert_eq!((stack.balance("alice").await, stack.balance("bob").await), (9_000, 1_000));

    proxy.clear_faults();
    let (status, body) = stack.pay("acme", "k-ok", "alice", "bob", 1_000).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((stack.balance("alice").await, stack.balance("bob").await), (8_000, 2_000));
    assert_ledger_settled(&stack).await;
}

/// Re-sends a payment with the same key until its outcome is final (201 or 422).
async fn settle(stack: &Stack, key: &str, to: &str, amount: i64) -> (StatusCode, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = stack.pay("acme", key, "alice", to, amount).await;
        if got.0 == StatusCode::CREATED
            || got.0 == StatusCode::UNPROCESSABLE_ENTITY
            || Instant::now() > deadline
        {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn saga_killed_mid_flight_ends_every_saga(backend: Backend) {
    let mut stack = Stack::start(backend, Options { proxy: true, ..Options::default() }).await;
    stack.open_account("acme", "alice", "EUR", 100_000).await;
    stack.open_account("acme", "bob", "EUR", 0).await;
    stack.open_account("acme", "shut", "EUR", 0).await;
    stack.close_account("acme", "shut").await;
    // Credits hang in the network for a while: sagas pile up between reserve and credit.
    stack.proxy.as_ref().expect("proxy").set_fault("/credit", Fault::Delay(Duration::from_secs(3)));

    let payments: Vec<(String, &str)> =
        (0..20).map(|i| (format!("k-{i}"), if i % 5 == 4 { "shut" } else { "bob" })).collect();
    let mut in_flight = tokio::task::JoinSet::new();
    for (key, to) in payments.clone() {
        let (http, url) = (stack.http.clone(), stack.payment.url());
        in_flight.spawn(async move {
            let body =
                json!({"from_account": "alice", "to_account": to, "amount_minor": 1_000, "currency": "EUR"});
            let response = http
                .post(format!("{url}/v1/payments"))
                .header("x-tenant-id", "acme")
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await;
            response.map(|r| r.status()).ok()
        });
    }
    // Wait until at least half the payments are reserved and waiting for their credit (in
    // clearing), then kill the saga-service.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let check = stack.ledger_check().await;
        if check["currencies"][0]["clearing_minor"].as_i64().is_some_and(|c| c >= 10_000) {
            break;
        }
        assert!(Instant::now() < deadline, "sagas never reserved: {check}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.restart_saga_after_kill();
    stack.proxy.as_ref().expect("proxy").clear_faults();
    let mut first_answers = Vec::new();
    while let Some(answer) = in_flight.join_next().await {
        first_answers.push(answer.expect("task"));
    }
    assert!(
        first_answers
            .iter()
            .any(|s| *s != Some(StatusCode::CREATED) && *s != Some(StatusCode::UNPROCESSABLE_ENTITY)),
        "the kill should have cut some payments short: {first_answers:?}"
    );

    // The restarted saga-service finishes every saga it recorded by itself (nobody calls it
    // meanwhile). A payment killed before its saga was recorded moved no money; the re-sends
    // below start it.
    let tenant = "acme".parse().expect("tenant");
    let deadline = Instant::now() + Duration::from_secs(60);
    for (key, _) in &payments {
        let id = paymesh_payments::payment::payment_id(&tenant, key).to_string();
        loop {
            let Some(state) = stack.saga_state(&id).await else { break };
            if state == "committed" || state == "compensated" {
                break;
            }
            assert!(Instant::now() < deadline, "saga {id} still {state} after restart");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let mut completed = 0;
    for (key, to) in &payments {
        let got = settle(&stack, key, to, 1_000).await;
        match *to {
            "bob" => assert_eq!(got.0, StatusCode::CREATED, "{key}: {}", got.1),
            _ => assert_error(&got, 422, "account_closed"),
        }
        let id = got.1["id"].as_str().or(got.1["payment"]["id"].as_str()).expect("payment id").to_owned();
        let state = stack.saga(&id).await["state"].clone();
        assert!(state == "committed" || state == "compensated", "saga {id} ended {state}");
        completed += i64::from(got.0 == StatusCode::CREATED);
    }
    assert_eq!(completed, 16);
    assert_eq!(stack.balance("alice").await, 100_000 - 16_000);
    assert_eq!(stack.balance("bob").await, 16_000);
    assert_eq!(stack.balance("shut").await, 0);
    assert_ledger_settled(&stack).await;
}

pub async fn concurrent_payments_never_overdraw(backend: Backend) {
    let options = Options { saga_env: vec![("OUTBOUND_TIMEOUT", "60s".into())], ..Options::default() };
    let stack = Stack::start(backend, options).await;
    stack.open_account("acme", "alice", "EUR", 100_000).await;
    for d in 0..10 {
        stack.open_account("acme", &format!("dest-{d}"), "EUR", 0).await;
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1_000 {
        let (http, url) = (stack.http.clone(), stack.payment.url());
        tasks.spawn(async move {
            let body = json!({"from_account": "alice", "to_account": format!("dest-{}", i % 10),
                              "amount_minor": 1_000, "currency": "EUR"});
            let response = http
                .post(format!("{url}/v1/payments"))
                .header("x-tenant-id", "acme")
                .header("idempotency-key", format!("burst-{i}"))
                .json(&body)
                .send()
                .await
                .expect("payment-service answers");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (i, status, body["code"].as_str().unwrap_or("").to_owned())
        });
    }
    let mut outcomes: BTreeMap<(u16, String), u32> = BTreeMap::new();
    let all = async {
        while let Some(result) = tasks.join_next().await {
            let (i, mut status, mut code) = result.expect("task");
            // A slow machine may answer 202 (still processing): ask again with the same key.
            if status != 201 && status != 422 {
                let got = settle(&stack, &format!("burst-{i}"), &format!("dest-{}", i % 10), 1_000).await;
                (status, code) = (got.0.as_u16(), got.1["code"].as_str().unwrap_or("").to_owned());
            }
            *outcomes.entry((status, code)).or_default() += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(240), all).await.expect("1,000 payments within 240 s");
    eprintln!("1,000 concurrent payments in {:?}: {outcomes:?}", started.elapsed());
    assert_eq!(
        outcomes,
        BTreeMap::from([((201, String::new()), 100), ((422, "insufficient_funds".to_owned()), 900)])
    );
    assert_eq!(stack.balance("alice").await, 0);
    let mut total = 0;
    for d in 0..10 {
        total += stack.balance(&format!("dest-{d}")).await;
    }
    assert_eq!(total, 100_000);
    assert_ledger_settled(&stack).await;
}

pub async fn same_idempotency_key_is_one_payment(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    stack.open_account("acme", "alice", "EUR", 10_000).await;
    stack.open_account("acme", "bob", "EUR", 0).await;

    let first = stack.pay("acme", "k-1", "alice", "bob", 500).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    let response = stack
        .http
        .post(format!("{}/v1/payments", stack.payment.url()))
        .header("x-tenant-id", "acme")
        .header("idempotency-key", "k-1")
        .json(&json!({"from_account": "alice", "to_account": "bob", "amount_minor": 500, "currency": "EUR"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    let replay: Value = response.json().await.expect("json");
    assert_eq!(replay["id"], first.1["id"]);
    assert_eq!(stack.balance("alice").await, 9_500);

    // 20 concurrent requests with one key: one payment.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (http, url) = (stack.http.clone(), stack.payment.url());
        tasks.spawn(async move {
            let body =
                json!({"from_account": "alice", "to_account": "bob", "amount_minor": 700, "currency": "EUR"});
            let response = http
                .post(format!("{url}/v1/payments"))
                .header("x-tenant-id", "acme")
                .header("idempotency-key", "k-2")
                .json(&body)
                .send()
                .await
                .expect("answer");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json")["id"].as_str().unwrap_or("").to_owned())
        });
    }
    let mut ids = HashSet::new();
    while let Some(result) = tasks.join_next().await {
        let (status, id) = result.expect("task");
        assert_eq!(status, StatusCode::CREATED);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "one payment id for one key: {ids:?}");
    assert_eq!(stack.balance("alice").await, 10_000 - 500 - 700);
    assert_eq!(stack.balance("bob").await, 1_200);

    // The same key for a different payment is refused; another tenant's key is its own.
    assert_error(&stack.pay("acme", "k-1", "alice", "bob", 501).await, 422, "idempotency_key_reused");
    let other = stack.pay("globex", "k-1", "alice", "bob", 500).await;
    assert_error(&other, 422, "account_not_found");
    assert_ne!(other.1["payment"]["id"], first.1["id"]);
    assert_eq!(stack.balance("alice").await, 8_800);
    assert_ledger_settled(&stack).await;
}
