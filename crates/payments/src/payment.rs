//! payment-service (port 8081): the public API of the Payments Engine.
//!
//! ```text
//! POST /v1/payments   (x-tenant-id, Idempotency-Key)  {from_account, to_account, amount_minor, currency}
//!   → 201 payment {status: completed}        the money moved
//!   → 202 payment {status: processing}       still running: GET it later
//!   → 422 {code, message, payment}           failed and compensated (e.g. insufficient_funds)
//!   → 422 {code: validation_failed, violations}, 4xx {code, message} for bad requests
//! GET  /v1/payments/{id}  (x-tenant-id)       → payment
//! ```
//!
//! Flow: validation-service first (nothing is recorded for an invalid payment), then the
//! saga-service. The payment id is a UUIDv5 of `(tenant, Idempotency-Key)`, so a retried or
//! concurrent duplicate names the same saga, and the saga-service's unique id makes it one
//! payment; the payment's state *is* its saga's state, so this service stores nothing.
//! `SERVICE_VERSION` v2 adds a fee quote to every payment (visible canary differences).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::account::ledger::TransferSpec;
use crate::client::{CallError, Client, ClientConfig, join};
use crate::error::{ApiError, ApiJson};
use crate::money::{Amount, MoneyError, TenantId};
use crate::propagation::{Propagation, require_tenant};
use crate::saga::store::Failure;
use crate::saga::{NewSaga, SagaState, SagaView};
use crate::server::{self, ListenConfig, Readiness, Service, Shutdown};
use crate::validation::Verdict;
use crate::validation::rules::PaymentCheck;

/// The service's default port.
pub const DEFAULT_PORT: u16 = 8081;
/// The idempotency header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on answers that replay an earlier request with the same key.
pub const REPLAYED: &str = "idempotent-replayed";

/// Namespace of payment ids (UUIDv5 of `tenant \n key`).
const PAYMENT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5d1e_0c3a_8f4b_4c6e_9a1b_7e2f_3d4c_5b6a);

/// Which build of the API this replica presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// Baseline.
    V1,
    /// Canary: reports a fee quote.
    V2,
}

/// payment-service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenConfig,
    /// Outbound calls.
    #[command(flatten)]
    pub client: ClientConfig,
    /// validation-service base URL.
    #[arg(long, env = "VALIDATION_SERVICE_URL", default_value = "http://validation-service:8082")]
    pub validation_service_url: String,
    /// saga-service base URL.
    #[arg(long, env = "SAGA_SERVICE_URL", default_value = "http://saga-service:8084")]
    pub saga_service_url: String,
    /// API version (from the pod's `version` label).
    #[arg(long, env = "SERVICE_VERSION", value_enum, default_value = "v1", ignore_case = true)]
    pub service_version: Version,
    /// Fee quoted by v2, in basis points of the amount (rounded up).
    #[arg(long, env = "FEE_BASIS_POINTS", default_value_t = 25, value_parser = clap::value_parser!(u16).range(0..=10_000))]
    pub fee_basis_points: u16,
}

/// `POST /v1/payments` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// Debited account.
    pub from_account: String,
    /// Credited account.
    pub to_account: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// A payment's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Still running.
    Processing,
    /// The money moved.
    Completed,
    /// It failed; no money moved.
    Failed,
}

/// A fee quote (v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeQuote {
    /// Fee in minor units.
    pub amount_minor: i64,
    /// Currency of the fee.
    pub currency: String,
    /// Rate in basis points.
    pub basis_points: u16,
}

/// A payment as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    /// Payment id.
    pub id: String,
    /// What it moves.
    #[serde(flatten)]
    pub spec: TransferSpec,
    /// Where it is.
    pub status: PaymentStatus,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The API version that answered.
    pub version: Version,
    /// v2 only: the fee this payment would carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_quote: Option<FeeQuote>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

#[derive(Debug, Clone)]
struct App {
    client: Client,
    validation_url: String,
    saga_url: String,
    version: Version,
    fee_basis_points: u16,
}

/// Serves until shutdown.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let app = App {
        client: Client::new(&config.client)?,
        validation_url: config.validation_service_url.clone(),
        saga_url: config.saga_service_url.clone(),
        version: config.service_version,
        fee_basis_points: config.fee_basis_points,
    };
    tracing::info!(version = ?app.version, validation = %app.validation_url, saga = %app.saga_url, "payment-service");
    let service = Service { name: "payment-service", router: router(app), readiness: Readiness::always() };
    server::serve(service, config.listen.addr(DEFAULT_PORT)?, shutdown, config.listen.shutdown_grace).await
}

fn router(app: App) -> Router {
    Router::new().route("/v1/payments", post(create)).route("/v1/payments/{id}", get(show)).with_state(app)
}

/// The payment id of a tenant's idempotency key.
pub fn payment_id(tenant: &TenantId, key: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&PAYMENT_NAMESPACE, format!("{tenant}\n{key}").as_bytes())
}

fn idempotency_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    let key = headers.get(IDEMPOTENCY_KEY).ok_or_else(|| {
        ApiError::bad_request("missing_idempotency_key", "the Idempotency-Key header is required")
    })?;
    key.to_str().ok().filter(|k| (1..=255).contains(&k.len())).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
    })
}

async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    ctx: Propagation,
    ApiJson(request): ApiJson<PaymentRequest>,
) -> Result<Response, ApiError> {
    let tenant = require_tenant(&headers)?;
    let key = idempotency_key(&headers)?;
    let check = PaymentCheck {
        from_account: request.from_account,
        to_account: request.to_account,
        amount_minor: request.amount_minor,
        currency: request.currency,
    };
    let url = join(&app.validation_url, "/v1/validate");
    let verdict: Verdict =
        app.client.post(&url, &ctx, &check).await.map_err(|e| e.into_api_error("validation-service"))?.body;
    if !verdict.valid {
        let message = verdict.violations.iter().map(|v| v.reason.as_str()).collect::<Vec<_>>().join("; ");
        return Err(
            ApiError::unprocessable("validation_failed", message).with("violations", &verdict.violations)
        );
    }
    let spec =
        spec(&tenant, check).map_err(|e| ApiError::unprocessable("validation_failed", e.to_string()))?;
    let id = payment_id(&tenant, key);
    let saga = NewSaga { id: id.to_string().parse().map_err(ApiError::internal)?, spec };
    let url = join(&app.saga_url, "/v1/sagas");
    let reply = app.client.post::<_, SagaView>(&url, &ctx, &saga).await.map_err(|e| match e {
        CallError::Status { status: StatusCode::CONFLICT, .. } => ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different payment",
        ),
        other => other.into_api_error("saga-service"),
    })?;
    let replayed = reply.status == StatusCode::OK;
    let payment = app.payment(reply.body);
    tracing::info!(payment = %payment.id, status = ?payment.status, replayed, "payment");
    let mut response = respond(payment);
    if replayed {
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn spec(tenant: &TenantId, check: PaymentCheck) -> Result<TransferSpec, MoneyError> {
    Ok(TransferSpec {
        tenant_id: tenant.clone(),
        from_account: check.from_account.parse()?,
        to_account: check.to_account.parse()?,
        amount_minor: Amount::new(check.amount_minor)?,
        currency: check.currency.parse()?,
    })
}

/// 201 completed, 202 processing, 422 `{code, message, payment}` failed.
fn respond(payment: Payment) -> Response {
    match (payment.status, payment.failure.clone()) {
        (PaymentStatus::Completed, _) => (StatusCode::CREATED, Json(payment)).into_response(),
        (PaymentStatus::Processing, _) => (StatusCode::ACCEPTED, Json(payment)).into_response(),
        (PaymentStatus::Failed, failure) => {
            let failure =
                failure.unwrap_or(Failure { code: "payment_failed".to_owned(), message: String::new() });
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, failure.code, failure.message)
                .with("payment", &payment)
                .into_response()
        }
    }
}

async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    ctx: Propagation,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    let tenant = require_tenant(&headers)?;
    if id.parse::<crate::money::TransferId>().is_err() {
        return Err(ApiError::not_found("payment_not_found", format!("payment {id} not found")));
    }
    let url = join(&app.saga_url, &format!("/v1/sagas/{id}"));
    let ctx = ctx.with_tenant(tenant.as_str());
    match app.client.get::<SagaView>(&url, &ctx).await {
        Ok(reply) => Ok(Json(app.payment(reply.body))),
        Err(CallError::Status { status: StatusCode::NOT_FOUND, .. }) => {
            Err(ApiError::not_found("payment_not_found", format!("payment {id} not found")))
        }
        Err(e) => Err(e.into_api_error("saga-service")),
    }
}

impl App {
    fn payment(&self, saga: SagaView) -> Payment {
        let status = match saga.state {
            SagaState::Committed => PaymentStatus::Completed,
            SagaState::Compensated => PaymentStatus::Failed,
            SagaState::Started | SagaState::Reserved | SagaState::Credited | SagaState::Compensating => {
                PaymentStatus::Processing
            }
        };
        let fee_quote = (self.version == Version::V2).then(|| FeeQuote {
            amount_minor: fee(saga.spec.amount_minor, self.fee_basis_points),
            currency: saga.spec.currency.to_string(),
            basis_points: self.fee_basis_points,
        });
        Payment {
            id: saga.id,
            spec: saga.spec,
            status,
            failure: if status == PaymentStatus::Failed { saga.failure } else { None },
            version: self.version,
            fee_quote,
            created_at: saga.created_at,
        }
    }
}

/// The fee of an amount at `bps` basis points, rounded up (exact integer arithmetic).
pub fn fee(amount: Amount, bps: u16) -> i64 {
    let fee = (i128::from(amount.minor()) * i128::from(bps) + 9_999) / 10_000;
    // bps <= 10_000, so the fee never exceeds the amount.
    i64::try_from(fee).unwrap_or(amount.minor())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_ids_are_per_tenant_and_key() {
        let acme: TenantId = "acme".parse().expect("valid in test");
        let globex: TenantId = "globex".parse().expect("valid in test");
        assert_eq!(payment_id(&acme, "k1"), payment_id(&acme, "k1"));
        assert_ne!(payment_id(&acme, "k1"), payment_id(&acme, "k2"));
        assert_ne!(payment_id(&acme, "k1"), payment_id(&globex, "k1"));
    }

    #[test]
    fn fees_round_up_and_never_overflow() {
        let a = |n| Amount::new(n).expect("valid in test");
        assert_eq!(fee(a(10_000), 25), 25);
        assert_eq!(fee(a(1), 25), 1);
        assert_eq!(fee(a(100), 0), 0);
        assert_eq!(fee(a(i64::MAX), 10_000), i64::MAX);
        assert_eq!(fee(a(i64::MAX), 25), 23_058_430_092_136_940);
    }
}
