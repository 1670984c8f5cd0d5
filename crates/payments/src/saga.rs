//! saga-service (port 8084): runs each payment as a saga over the account-service (reserve on
//! the source, credit the destination, commit) and compensates (release) when it fails.
//!
//! ```text
//! POST /v1/sagas       {id, tenant_id, from_account, to_account, amount_minor, currency}
//!   → 201 saga (new) / 200 saga (same id, same transfer) / 409 saga_conflict (same id, other transfer)
//! GET  /v1/sagas/{id}  → saga with its steps
//! ```
//!
//! `POST` waits up to `SAGA_WAIT` for the saga to finish and answers with its state then
//! (final, or still running). The saga runs in its own task, so a caller that gives up does
//! not stop it. State lives in [`store`]; [`orchestrator`] drives it. On start, and every
//! `RECOVERY_INTERVAL`, every open saga is driven again from its stored state: a
//! saga-service killed mid-saga resumes or compensates all of them when it comes back.

pub mod orchestrator;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use self::orchestrator::{Orchestrator, Settings};
use self::store::{Created, Failure, Saga, StepRecord, Store};
use crate::account::ledger::TransferSpec;
use crate::client::{Client, ClientConfig};
use crate::db::{Db, DbConfig, now_ms};
use crate::error::{ApiError, ApiJson};
use crate::money::TransferId;
use crate::propagation::{Propagation, TENANT_ID};
use crate::server::{self, ListenConfig, Readiness, Service, Shutdown};

/// The service's default port.
pub const DEFAULT_PORT: u16 = 8084;
/// The embedded default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://saga-service.db?mode=rwc";

/// saga-service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenConfig,
    /// Where saga state is stored (default `sqlite://saga-service.db?mode=rwc`).
    #[command(flatten)]
    pub db: DbConfig,
    /// Outbound calls.
    #[command(flatten)]
    pub client: ClientConfig,
    /// account-service base URL.
    #[arg(long, env = "ACCOUNT_SERVICE_URL", default_value = "http://account-service:8083")]
    pub account_service_url: String,
    /// How long `POST /v1/sagas` waits for the saga to finish before answering with its
    /// current state; keep it below the callers' timeout (the payment-service's is 5s).
    #[arg(long, env = "SAGA_WAIT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub saga_wait: Duration,
    /// How often open sagas that nobody drives are picked up again.
    #[arg(long, env = "RECOVERY_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub recovery_interval: Duration,
    /// Calls per step before its outcome counts as unknown.
    #[arg(long, env = "STEP_ATTEMPTS", default_value_t = 3)]
    pub step_attempts: u32,
    /// Pause before the first retry of a step (doubles each retry).
    #[arg(long, env = "RETRY_BACKOFF", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Created; nothing reserved yet.
    Started,
    /// The amount is reserved on the source.
    Reserved,
    /// The amount reached the destination.
    Credited,
    /// Final: the payment is complete.
    Committed,
    /// A step failed; the reservation is being released.
    Compensating,
    /// Final: the payment failed and no money moved.
    Compensated,
}

impl SagaState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Reserved => "reserved",
            Self::Credited => "credited",
            Self::Committed => "committed",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Started,
            Self::Reserved,
            Self::Credited,
            Self::Committed,
            Self::Compensating,
            Self::Compensated,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    /// True for `committed` and `compensated`.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Committed | Self::Compensated)
    }
}

/// `POST /v1/sagas` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewSaga {
    /// Saga id (the payment id; also the transfer id at the ledger).
    pub id: TransferId,
    /// What to move.
    #[serde(flatten)]
    pub spec: TransferSpec,
}

/// A saga as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SagaView {
    /// Saga id.
    pub id: String,
    /// What it moves.
    #[serde(flatten)]
    pub spec: TransferSpec,
    /// Where it is.
    pub state: SagaState,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// Steps attempted.
    pub steps: Vec<StepRecord>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

#[derive(Clone)]
struct App {
    orchestrator: Arc<Orchestrator>,
    wait: Duration,
}

/// Opens the saga store, resumes open sagas, and serves until shutdown.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let db = Db::connect(&config.db, DEFAULT_DATABASE_URL, store::SCHEMA).await?;
    let settings = Settings {
        account_url: config.account_service_url.clone(),
        step_attempts: config.step_attempts,
        retry_backoff: config.retry_backoff,
    };
    let orchestrator =
        Orchestrator::new(Store::new(db.clone()), Client::new(&config.client)?, settings, shutdown.clone());
    tokio::spawn(recover(Arc::clone(&orchestrator), config.recovery_interval, shutdown.clone()));
    let readiness = Readiness::with_check(move || {
        let db = db.clone();
        async move { db.ping().await }
    });
    let app = App { orchestrator: Arc::clone(&orchestrator), wait: config.saga_wait };
    let service = Service { name: "saga-service", router: router(app), readiness };
    let grace = config.listen.shutdown_grace;
    server::serve(service, config.listen.addr(DEFAULT_PORT)?, shutdown, grace).await?;
    // Drivers stop between steps once shutdown is requested; let the current steps finish.
    let deadline = Instant::now() + grace;
    while orchestrator.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(unfinished = orchestrator.running(), "saga drivers stopped; open sagas resume on restart");
    Ok(())
}

fn router(app: App) -> Router {
    Router::new().route("/v1/sagas", post(create)).route("/v1/sagas/{id}", get(show)).with_state(app)
}

/// Drives every open saga: all of them at start, then those idle for `interval`.
async fn recover(orchestrator: Arc<Orchestrator>, interval: Duration, shutdown: Shutdown) {
    let mut before = i64::MAX;
    loop {
        match orchestrator.store().open(before, 1000).await {
            Ok(open) => {
                let mut resumed = 0;
                for saga in open {
                    if let Some(claim) = orchestrator.claim(saga.id.as_str()) {
                        resumed += 1;
                        tokio::spawn(Arc::clone(&orchestrator).drive(saga, claim));
                    }
                }
                if resumed > 0 {
                    tracing::info!(resumed, "resuming open sagas");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list open sagas"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.requested() => return,
        }
        before = now_ms() - i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
    }
}

async fn create(
    State(app): State<App>,
    ctx: Propagation,
    ApiJson(body): ApiJson<NewSaga>,
) -> Result<Response, ApiError> {
    let store = app.orchestrator.store();
    let (status, saga) = match store.create(&body.id, &body.spec, &ctx).await? {
        Created::New(saga) => (StatusCode::CREATED, saga),
        Created::Existing(saga) if saga.spec != body.spec => {
            return Err(ApiError::conflict(
                "saga_conflict",
                format!("saga {} exists for a different transfer", body.id),
            ));
        }
        Created::Existing(saga) => (StatusCode::OK, saga),
    };
    let saga = settle(&app, saga).await?;
    Ok((status, Json(view(store, saga).await?)).into_response())
}

/// Drives the saga (unless it is final or already driven here) and waits for a final state,
/// at most `app.wait`.
async fn settle(app: &App, saga: Saga) -> Result<Saga, ApiError> {
    if saga.state.is_final() {
        return Ok(saga);
    }
    let deadline = Instant::now() + app.wait;
    let id = saga.id.to_string();
    if let Some(claim) = app.orchestrator.claim(&id) {
        let task = tokio::spawn(Arc::clone(&app.orchestrator).drive(saga, claim));
        if let Ok(Ok(saga)) = tokio::time::timeout_at(deadline, task).await {
            if saga.state.is_final() {
                return Ok(saga);
            }
        }
    }
    loop {
        let saga =
            app.orchestrator.store().load(&id).await?.ok_or_else(|| ApiError::internal("saga vanished"))?;
        if saga.state.is_final() || Instant::now() >= deadline {
            return Ok(saga);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn view(store: &Store, saga: Saga) -> Result<SagaView, ApiError> {
    let steps = store.steps(saga.id.as_str()).await?;
    Ok(SagaView {
        id: saga.id.to_string(),
        spec: saga.spec,
        state: saga.state,
        failure: saga.failure,
        steps,
        created_at: saga.created_at,
        updated_at: saga.updated_at,
    })
}

async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SagaView>, ApiError> {
    let store = app.orchestrator.store();
    let saga = store.load(&id).await?;
    // With a tenant header, another tenant's saga does not exist.
    let visible = |s: &Saga| {
        headers.get(TENANT_ID).is_none_or(|t| t.as_bytes() == s.spec.tenant_id.as_str().as_bytes())
    };
    match saga.filter(visible) {
        Some(saga) => Ok(Json(view(store, saga).await?)),
        None => Err(ApiError::not_found("saga_not_found", format!("saga {id} not found"))),
    }
}
