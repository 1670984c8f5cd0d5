//! Bad input: every malformed or refused request gets a 4xx with a JSON `{code, message}`,
//! and no balance moves.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, Options, SMALL_TENANT_LIMIT, Stack, assert_error};

fn payment(from: &str, to: &str, amount: Value, currency: &str) -> Value {
    json!({"from_account": from, "to_account": to, "amount_minor": amount, "currency": currency})
}

/// Sends a raw body with a content type; returns status and JSON body.
async fn raw(
    stack: &Stack,
    url: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: String,
) -> (StatusCode, Value) {
    let mut request = stack.http.post(url).header("content-type", content_type).body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("answer");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn bad_requests_get_json_reasons_and_move_no_money(backend: Backend) {
    let stack = Stack::start(backend, Options::default()).await;
    stack.open_account("acme", "alice", "EUR", 10_000).await;
    stack.open_account("acme", "bob", "EUR", 0).await;
    stack.open_account("acme", "dollar", "USD", 0).await;
    stack.open_account("small", "s1", "EUR", 10_000).await;
    stack.open_account("small", "s2", "EUR", 0).await;
    let url = format!("{}/v1/payments", stack.payment.url());
    let acme = [("x-tenant-id", "acme"), ("idempotency-key", "bad-1")];

    // Syntax and shape.
    assert_error(
        &raw(&stack, &url, &acme, "application/json", "{not json".into()).await,
        400,
        "invalid_json",
    );
    assert_error(&raw(&stack, &url, &acme, "application/json", "{}".into()).await, 422, "invalid_body");
    assert_error(&raw(&stack, &url, &acme, "text/plain", "{}".into()).await, 415, "unsupported_media_type");
    let missing = json!({"from_account": "alice", "to_account": "bob", "currency": "EUR"});
    assert_error(&stack.post_payment("acme", "bad-2", &missing).await, 422, "invalid_body");
    for amount in [json!("100"), json!(1.5), json!(9_223_372_036_854_775_808_u64), json!(null)] {
        let got = stack.post_payment("acme", "bad-3", &payment("alice", "bob", amount.clone(), "EUR")).await;
        assert_error(&got, 422, "invalid_body");
    }
    let huge = format!(
        r#"{{"from_account": "{}", "to_account": "bob", "amount_minor": 1, "currency": "EUR"}}"#,
        "a".repeat(1 << 20)
    );
    assert_error(&raw(&stack, &url, &acme, "application/json", huge).await, 413, "body_too_large");

    // Headers.
    let body = payment("alice", "bob", json!(100), "EUR").to_string();
    let no_tenant = [("idempotency-key", "bad-4")];
    assert_error(
        &raw(&stack, &url, &no_tenant, "application/json", body.clone()).await,
        400,
        "missing_tenant",
    );
    let no_key = [("x-tenant-id", "acme")];
    assert_error(&raw(&stack, &url, &no_key, "application/json", body).await, 400, "missing_idempotency_key");

    // Rules (validation-service): every broken rule is listed.
    let rules = |got: &(StatusCode, Value)| -> Vec<String> {
        got.1["violations"]
            .as_array()
            .map(|v| v.iter().map(|v| v["rule"].as_str().unwrap_or("").to_owned()).collect())
            .unwrap_or_default()
    };
    for amount in [0, -1, i64::MIN] {
        let got = stack.post_payment("acme", "bad-5", &payment("alice", "bob", json!(amount), "EUR")).await;
        assert_error(&got, 422, "validation_failed");
        assert_eq!(rules(&got), ["amount_positive"], "{}", got.1);
    }
    for currency in ["EURO", "XXX", "eur", ""] {
        let got = stack.post_payment("acme", "bad-6", &payment("alice", "bob", json!(100), currency)).await;
        assert_error(&got, 422, "validation_failed");
        assert_eq!(rules(&got), ["currency"], "{}", got.1);
    }
    let got = stack.post_payment("acme", "bad-7", &payment("alice", "alice", json!(-5), "ABC")).await;
    assert_eq!(rules(&got), ["currency", "amount_positive", "accounts_differ"], "{}", got.1);
    let got = stack.post_payment("acme", "bad-8", &payment("alice", "blocked-1", json!(100), "EUR")).await;
    assert_eq!(rules(&got), ["blocked_account"], "{}", got.1);
    let over = payment("s1", "s2", json!(SMALL_TENANT_LIMIT + 1), "EUR");
    let got = stack.post_payment("small", "bad-9", &over).await;
    assert_error(&got, 422, "validation_failed");
    assert_eq!(rules(&got), ["tenant_limit"], "{}", got.1);
    let got = stack.post_payment("acme", "bad-10", &payment("alice", "bob", json!(i64::MAX), "EUR")).await;
    assert_eq!(rules(&got), ["tenant_limit"], "the default limit caps i64::MAX: {}", got.1);

    // Refused by the ledger (after validation).
    assert_error(&stack.pay("acme", "bad-11", "ghost", "bob", 100).await, 422, "account_not_found");
    assert_error(&stack.pay("acme", "bad-12", "alice", "ghost", 100).await, 422, "account_not_found");
    assert_error(&stack.pay("acme", "bad-13", "alice", "dollar", 100).await, 422, "currency_mismatch");
    assert_error(&stack.pay("acme", "bad-14", "bob", "alice", 100).await, 422, "insufficient_funds");
    assert_error(&stack.pay("acme", "bad-15", "s1", "s2", 100).await, 422, "account_not_found");

    // Unknown payments.
    let missing = stack
        .http
        .get(format!("{url}/00000000-0000-0000-0000-000000000000"))
        .header("x-tenant-id", "acme")
        .send()
        .await
        .expect("answer");
    let got = (missing.status(), missing.json().await.unwrap_or(Value::Null));
    assert_error(&got, 404, "payment_not_found");

    // The account-service refuses bad transfers and accounts itself, too.
    let account = stack.account.url();
    let spec = |amount: Value| {
        json!({"tenant_id": "acme", "from_account": "alice", "to_account": "bob", "amount_minor": amount, "currency": "EUR"})
            .to_string()
    };
    let reserve = format!("{account}/v1/transfers/t-bad/reserve");
    for amount in [json!(0), json!(-1), json!(9_223_372_036_854_775_808_u64)] {
        assert_error(
            &raw(&stack, &reserve, &[], "application/json", spec(amount)).await,
            422,
            "invalid_body",
        );
    }
    assert_error(
        &raw(
            &stack,
            &format!("{account}/v1/transfers/t-bad/credit"),
            &[],
            "application/json",
            spec(json!(1)),
        )
        .await,
        404,
        "transfer_not_found",
    );
    let accounts = format!("{account}/v1/accounts");
    let open = |body: Value| {
        raw(&stack, &accounts, &[("x-tenant-id", "acme")], "application/json", body.to_string())
    };
    assert_error(
        &open(json!({"id": "neg", "currency": "EUR", "opening_balance_minor": -1})).await,
        422,
        "invalid_amount",
    );
    assert_error(&open(json!({"id": "cur", "currency": "EURO"})).await, 422, "invalid_currency");
    assert_error(&open(json!({"id": "alice", "currency": "EUR"})).await, 409, "account_exists");
    assert_error(&open(json!({"id": "a b", "currency": "EUR"})).await, 400, "invalid_id");

    // Nothing moved.
    assert_eq!(stack.balance("alice").await, 10_000);
    assert_eq!(stack.balance("bob").await, 0);
    assert_eq!(stack.balance("dollar").await, 0);
    assert_eq!(stack.balance("s1").await, 10_000);
    assert_eq!(stack.balance("s2").await, 0);
    let check = stack.ledger_check().await;
    assert_eq!(check["balanced"], true, "{check}");
    assert_eq!(check["open_transfers"], 0, "{check}");
}
