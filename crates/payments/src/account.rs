//! account-service (port 8083): accounts and balances in a double-entry ledger, and the
//! transfer steps the saga drives.
//!
//! ```text
//! POST /v1/accounts                 {id?, currency, opening_balance_minor?}  (x-tenant-id)  → 201 account
//! GET  /v1/accounts/{id}                                                              → account
//! POST /v1/accounts/{id}/close      (x-tenant-id; the balance must be 0)              → account
//! POST /v1/transfers/{id}/reserve   {tenant_id, from_account, to_account, amount_minor, currency}
//! POST /v1/transfers/{id}/credit    (same body)                                      → transfer
//! POST /v1/transfers/{id}/commit    (same body)
//! POST /v1/transfers/{id}/release   (same body; compensation)
//! GET  /v1/transfers/{id}                                                             → transfer + journal
//! GET  /v1/ledger/check                                                               → invariants
//! ```
//!
//! The rules live in [`ledger`] and [`engine`], the SQL in [`store`], group commit in
//! [`batcher`]; this file maps HTTP to them.

pub mod batcher;
pub mod engine;
pub mod ledger;
pub mod store;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use self::batcher::Batcher;
use self::engine::Op;
use self::ledger::{Step, TransferSpec};
use self::store::{Store, StoreError};
use crate::db::{Db, DbConfig};
use crate::error::{ApiError, ApiJson};
use crate::money::{AccountId, Amount, Currency, TransferId};
use crate::propagation::{TENANT_ID, require_tenant};
use crate::server::{self, ListenConfig, Readiness, Service, Shutdown};

/// The service's default port.
pub const DEFAULT_PORT: u16 = 8083;
/// The embedded default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://account-service.db?mode=rwc";

/// account-service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenConfig,
    /// Where the ledger is stored (default `sqlite://account-service.db?mode=rwc`).
    #[command(flatten)]
    pub db: DbConfig,
}

/// Opens the ledger and serves until shutdown.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let db = Db::connect(&config.db, DEFAULT_DATABASE_URL, store::SCHEMA).await?;
    let store = Store::new(db.clone());
    let readiness = Readiness::with_check(move || {
        let db = db.clone();
        async move { db.ping().await }
    });
    let service = Service { name: "account-service", router: router(store), readiness };
    server::serve(service, config.listen.addr(DEFAULT_PORT)?, shutdown, config.listen.shutdown_grace).await
}

#[derive(Debug, Clone)]
struct App {
    store: Store,
    batcher: Batcher,
}

/// The service's routes (and the group-commit writer behind them).
pub fn router(store: Store) -> Router {
    let app = App { batcher: Batcher::spawn(store.clone()), store };
    Router::new()
        .route("/v1/accounts", post(create_account))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/accounts/{id}/close", post(close_account))
        .route("/v1/transfers/{id}", get(get_transfer))
        .route("/v1/transfers/{id}/{step}", post(transfer_step))
        .route("/v1/ledger/check", get(check))
        .with_state(app)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Ledger(e) => e.to_api(),
            StoreError::Db(e) => e.into(),
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "ledger unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ledger_unavailable",
                    "the ledger could not apply the step",
                )
            }
        }
    }
}

fn parse_id<T: std::str::FromStr<Err = crate::money::MoneyError>>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|e: crate::money::MoneyError| ApiError::bad_request("invalid_id", e.to_string()))
}

/// `POST /v1/accounts` body.
#[derive(Debug, Deserialize)]
struct NewAccount {
    id: Option<String>,
    currency: String,
    #[serde(default)]
    opening_balance_minor: i64,
}

async fn create_account(
    State(App { store, .. }): State<App>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = require_tenant(&headers)?;
    let id: AccountId = match body.id {
        Some(id) => parse_id(&id)?,
        None => parse_id(&uuid::Uuid::new_v4().to_string())?,
    };
    let currency: Currency = body
        .currency
        .parse()
        .map_err(|e: crate::money::MoneyError| ApiError::unprocessable("invalid_currency", e.to_string()))?;
    let opening = match body.opening_balance_minor {
        0 => None,
        n => Some(Amount::new(n).map_err(|_| {
            ApiError::unprocessable("invalid_amount", "opening_balance_minor must be zero or positive")
        })?),
    };
    let account = store.create_account(&tenant, &id, currency, opening).await?;
    Ok((StatusCode::CREATED, Json(account)))
}

async fn get_account(
    State(App { store, .. }): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let account = store.account(&id).await?;
    // With a tenant header, another tenant's account does not exist.
    let visible =
        |a: &store::Account| headers.get(TENANT_ID).is_none_or(|t| t.as_bytes() == a.tenant_id.as_bytes());
    match account.filter(visible) {
        Some(a) => Ok(Json(a)),
        None => Err(ApiError::not_found("account_not_found", format!("account {id} not found"))),
    }
}

async fn close_account(
    State(App { store, .. }): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = require_tenant(&headers)?;
    Ok(Json(store.close_account(&tenant, &parse_id(&id)?).await?))
}

async fn transfer_step(
    State(App { batcher, .. }): State<App>,
    Path((id, step)): Path<(String, String)>,
    ApiJson(spec): ApiJson<TransferSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let step = match step.as_str() {
        "reserve" => Step::Reserve,
        "credit" => Step::Credit,
        "commit" => Step::Commit,
        "release" => Step::Release,
        _ => return Err(ApiError::not_found("not_found", "no such transfer step")),
    };
    let id: TransferId = parse_id(&id)?;
    let transfer = batcher.apply(Op { id: id.clone(), step, spec }).await?;
    tracing::debug!(transfer = %id, step = step.as_str(), state = transfer.state.as_str(), "step");
    Ok(Json(transfer))
}

async fn get_transfer(
    State(App { store, .. }): State<App>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match store.transfer(&id).await? {
        Some((transfer, entries)) => Ok(Json(serde_json::json!({"transfer": transfer, "entries": entries}))),
        None => Err(ApiError::not_found("transfer_not_found", format!("transfer {id} not found"))),
    }
}

async fn check(State(App { store, .. }): State<App>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(store.check().await?))
}
