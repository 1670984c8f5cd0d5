//! The load generator's side of the API: it opens its own accounts, generates payments
//! between them, sends them, classifies the answers, and reads balances back.
//!
//! Accounts are named `load-<run>-<tenant>-<n>`, so a run only ever touches money it opened
//! and the money check cannot be confused by other traffic. Two modes: `payments` drives the
//! whole stack through payment-service; `transfers` drives the account-service's transfer
//! steps directly (reserve, credit, commit; release when a step is refused), which is how the
//! ledger's own throughput is measured.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::report::Outcome;
use crate::client::join;

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `POST /v1/payments` on payment-service (the full stack).
    Payments,
    /// reserve + credit + commit on account-service (the ledger alone).
    Transfers,
}

/// One planned payment.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Idempotency key (payments) or transfer id (transfers).
    pub key: String,
    /// Tenant.
    pub tenant: String,
    /// Debited account.
    pub from: String,
    /// Credited account.
    pub to: String,
    /// Amount in minor units.
    pub amount: i64,
}

/// The accounts and endpoints of a run.
#[derive(Debug)]
pub struct Workload {
    http: reqwest::Client,
    mode: Mode,
    target: String,
    account_url: String,
    currency: String,
    run_id: String,
    accounts: Vec<(String, Vec<String>)>,
    max_amount: i64,
}

/// How a workload is set up.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Request mode.
    pub mode: Mode,
    /// payment-service (payments) or account-service (transfers) base URL.
    pub target: String,
    /// account-service base URL (accounts and balances).
    pub account_url: String,
    /// Tenants.
    pub tenants: Vec<String>,
    /// Accounts per tenant.
    pub accounts: usize,
    /// Opening balance of each account.
    pub opening_balance: i64,
    /// Largest payment amount.
    pub max_amount: i64,
    /// Currency of every account and payment.
    pub currency: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Proxy for every request (`HTTP_PROXY`).
    pub proxy: Option<String>,
}

impl Workload {
    /// Opens `accounts` accounts per tenant, each with the opening balance.
    pub async fn setup(setup: &Setup) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().no_proxy().timeout(setup.timeout).tcp_nodelay(true);
        if let Some(proxy) = setup.proxy.as_deref().filter(|p| !p.is_empty()) {
            builder = builder.proxy(reqwest::Proxy::http(proxy).with_context(|| format!("proxy {proxy:?}"))?);
        }
        let http = builder.build().context("HTTP client")?;
        let run_id = format!("{:08x}", fastrand::u32(..));
        let mut accounts = Vec::new();
        for tenant in &setup.tenants {
            let mut ids = Vec::new();
            for n in 0..setup.accounts {
                let id = format!("load-{run_id}-{tenant}-{n}");
                let body = json!({"id": id, "currency": setup.currency, "opening_balance_minor": setup.opening_balance});
                let response = http
                    .post(join(&setup.account_url, "/v1/accounts"))
                    .header("x-tenant-id", tenant)
                    .json(&body)
                    .send()
                    .await
                    .with_context(|| format!("create account {id} at {}", setup.account_url))?;
                if response.status() != reqwest::StatusCode::CREATED {
                    let status = response.status();
                    anyhow::bail!(
                        "create account {id}: {status}: {}",
                        response.text().await.unwrap_or_default()
                    );
                }
                ids.push(id);
            }
            accounts.push((tenant.clone(), ids));
        }
        Ok(Self {
            http,
            mode: setup.mode,
            target: setup.target.clone(),
            account_url: setup.account_url.clone(),
            currency: setup.currency.clone(),
            run_id,
            accounts,
            max_amount: setup.max_amount.max(1),
        })
    }

    /// The run's id (part of every key and account name).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Request number `i`: a random tenant, two different random accounts of it, a random amount.
    pub fn plan(&self, i: u64, rng: &mut fastrand::Rng) -> Plan {
        let (tenant, ids) = &self.accounts[rng.usize(..self.accounts.len())];
        let from = rng.usize(..ids.len());
        let to = (from + 1 + rng.usize(..ids.len() - 1)) % ids.len();
        Plan {
            key: format!("load-{}-{i}", self.run_id),
            tenant: tenant.clone(),
            from: ids[from].clone(),
            to: ids[to].clone(),
            amount: rng.i64(1..=self.max_amount),
        }
    }

    /// Sends one planned request (idempotent: sending it again never moves money twice).
    /// Returns the status label for the stats and the outcome.
    pub async fn execute(&self, plan: &Plan) -> (String, Outcome) {
        match self.mode {
            Mode::Payments => self.payment(plan).await,
            Mode::Transfers => self.transfer(plan).await,
        }
    }

    async fn payment(&self, plan: &Plan) -> (String, Outcome) {
        let body = json!({
            "from_account": plan.from, "to_account": plan.to,
            "amount_minor": plan.amount, "currency": self.currency,
        });
        let request = self
            .http
            .post(join(&self.target, "/v1/payments"))
            .header("x-tenant-id", &plan.tenant)
            .header("idempotency-key", &plan.key)
            .json(&body);
        match send(request).await {
            Err(label) => (label.clone(), Outcome::Unknown(label)),
            Ok((status, body)) => {
                let code = body["code"].as_str().unwrap_or_default().to_owned();
                let outcome = match status {
                    201 => Outcome::Completed,
                    202 => Outcome::Unknown("processing".to_owned()),
                    408 | 429 => Outcome::Unknown(code),
                    400..=499 => Outcome::Failed(code),
                    _ => Outcome::Unknown(code),
                };
                (status.to_string(), outcome)
            }
        }
    }

    async fn transfer(&self, plan: &Plan) -> (String, Outcome) {
        let spec = json!({
            "tenant_id": plan.tenant, "from_account": plan.from, "to_account": plan.to,
            "amount_minor": plan.amount, "currency": self.currency,
        });
        let step = |name: &str| {
            let url = join(&self.target, &format!("/v1/transfers/{}/{name}", plan.key));
            send(self.http.post(url).json(&spec))
        };
        for name in ["reserve", "credit", "commit"] {
            match step(name).await {
                Err(label) => return (label.clone(), Outcome::Unknown(label)),
                Ok((200, _)) => {}
                // A refused reserve or credit is compensated like the saga does it.
                Ok((status, body)) if (400..500).contains(&status) && name != "commit" => {
                    let code = body["code"].as_str().unwrap_or_default().to_owned();
                    return match step("release").await {
                        Ok((200, _)) => (status.to_string(), Outcome::Failed(code)),
                        Ok((_, _)) | Err(_) => (status.to_string(), Outcome::Unknown(code)),
                    };
                }
                Ok((status, body)) => {
                    return (
                        status.to_string(),
                        Outcome::Unknown(body["code"].as_str().unwrap_or_default().to_owned()),
                    );
                }
            }
        }
        ("200".to_owned(), Outcome::Completed)
    }

    /// Every account's balance, read from the account-service.
    pub async fn balances(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for (tenant, ids) in &self.accounts {
            for id in ids {
                let request = self
                    .http
                    .get(join(&self.account_url, &format!("/v1/accounts/{id}")))
                    .header("x-tenant-id", tenant);
                let (status, body) =
                    send(request).await.map_err(|e| anyhow::anyhow!("read balance of {id}: {e}"))?;
                let balance = body["balance_minor"].as_i64().filter(|_| status == 200);
                out.insert(
                    id.clone(),
                    balance.with_context(|| format!("read balance of {id}: {status} {body}"))?,
                );
            }
        }
        Ok(out)
    }

    /// The ledger's own invariant check.
    pub async fn ledger_balanced(&self) -> anyhow::Result<bool> {
        let (status, body) = send(self.http.get(join(&self.account_url, "/v1/ledger/check")))
            .await
            .map_err(|e| anyhow::anyhow!("ledger check: {e}"))?;
        anyhow::ensure!(status == 200, "ledger check: {status} {body}");
        Ok(body["balanced"].as_bool().unwrap_or(false))
    }
}

/// Sends a request; `Ok((status, json body or null))`, or `Err(label)` without an answer.
async fn send(request: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(Value::Null);
            Ok((status, body))
        }
        Err(e) if e.is_timeout() => Err("timeout".to_owned()),
        Err(e) if e.is_connect() => Err("connect_error".to_owned()),
        Err(_) => Err("error".to_owned()),
    }
}
