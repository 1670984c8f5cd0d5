//! Drives sagas: calls the account-service step by step, persists every outcome, and decides
//! between moving forward and compensating.
//!
//! ```text
//! started ──reserve ok──▶ reserved ──credit ok──▶ credited ──commit ok──▶ committed
//!    │ refused / no answer      │ refused / no answer     ▲
//!    ▼                          ▼                         │ release refused: already credited
//! compensating ◀────────────────┘                         │ (the credit did land: go forward)
//!    │ release ok ───────────────────────────────────────────────────────▶ compensated
//! ```
//!
//! Safety comes from the ledger: every step is idempotent by transfer id, and the ledger
//! refuses `credit` after `release` and `release` after `credit`. So when a step does not
//! answer, compensating is always safe (a reserve that never happened is tombstoned; a credit
//! that did happen turns compensation back into commit), and after a restart every open saga
//! is simply driven again from its stored state. A step that cannot progress now (the
//! account-service is down) leaves the saga where it is; the recovery loop picks it up again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::SagaState;
use super::store::{Attempt, Failure, Saga, Store};
use crate::account::ledger::Step;
use crate::client::{CallError, Client, join};
use crate::server::Shutdown;

/// How a saga is driven.
#[derive(Debug, Clone)]
pub struct Settings {
    /// account-service base URL.
    pub account_url: String,
    /// Calls per step before its outcome counts as unknown.
    pub step_attempts: u32,
    /// Pause before the first retry (doubles each time).
    pub retry_backoff: Duration,
}

/// The saga driver, shared by the request handlers and the recovery loop.
pub struct Orchestrator {
    store: Store,
    client: Client,
    settings: Settings,
    shutdown: Shutdown,
    running: Mutex<HashSet<String>>,
}

/// Holds a saga id in the running set; removes it on drop.
pub struct Claim {
    orchestrator: Arc<Orchestrator>,
    id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.orchestrator.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

/// The result of one step call.
enum Outcome {
    Ok,
    /// The account-service answered and refused; the step cannot apply.
    Refused {
        code: String,
        message: String,
    },
    /// No usable answer after every attempt; the outcome is unknown.
    Unknown(String),
}

impl Orchestrator {
    /// A driver.
    pub fn new(store: Store, client: Client, settings: Settings, shutdown: Shutdown) -> Arc<Self> {
        Arc::new(Self { store, client, settings, shutdown, running: Mutex::new(HashSet::new()) })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sagas being driven by this process.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Claims a saga for this process; `None` when it is already being driven here.
    pub fn claim(self: &Arc<Self>, id: &str) -> Option<Claim> {
        let fresh = self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_owned());
        fresh.then(|| Claim { orchestrator: Arc::clone(self), id: id.to_owned() })
    }

    /// Drives a claimed saga until it is final, cannot progress now, or shutdown starts.
    /// Returns the saga as last stored.
    pub async fn drive(self: Arc<Self>, mut saga: Saga, claim: Claim) -> Saga {
        while !saga.state.is_final() && !self.shutdown.is_requested() {
            match self.step(&saga).await {
                Ok(Some(next)) => saga = next,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(saga = %saga.id, error = %e, "saga store failed; will retry");
                    break;
                }
            }
        }
        drop(claim);
        saga
    }

    /// Runs the next step of a saga and stores the outcome. `Some(saga)` with the new state to
    /// continue, `None` when the saga cannot progress now.
    async fn step(&self, saga: &Saga) -> Result<Option<Saga>, sqlx::Error> {
        let step = match saga.state {
            SagaState::Started => Step::Reserve,
            SagaState::Reserved => Step::Credit,
            SagaState::Credited => Step::Commit,
            SagaState::Compensating => Step::Release,
            SagaState::Committed | SagaState::Compensated => return Ok(None),
        };
        let (outcome, calls) = self.call(saga, step).await;
        let error = match &outcome {
            Outcome::Ok => None,
            Outcome::Refused { code, message } => Some(format!("{code}: {message}")),
            Outcome::Unknown(e) => Some(e.clone()),
        };
        let attempt = Attempt { step, calls, error };
        let next = match (step, outcome) {
            (_, Outcome::Ok) => match step {
                Step::Reserve => Some((SagaState::Reserved, None)),
                Step::Credit => Some((SagaState::Credited, None)),
                Step::Commit => Some((SagaState::Committed, None)),
                Step::Release => Some((SagaState::Compensated, saga.failure.clone())),
            },
            // Forward steps that fail or stay unanswered are compensated: release is safe in
            // every case (see the module doc).
            (Step::Reserve | Step::Credit, Outcome::Refused { code, message }) => {
                Some((SagaState::Compensating, Some(Failure { code, message })))
            }
            (Step::Reserve | Step::Credit, Outcome::Unknown(e)) => Some((
                SagaState::Compensating,
                Some(Failure {
                    code: "step_unconfirmed".to_owned(),
                    message: format!("{} got no answer: {e}", step.as_str()),
                }),
            )),
            // The credit did land: the money is at the destination, so finish the transfer.
            (Step::Release, Outcome::Refused { code, .. }) if code == "transfer_already_credited" => {
                Some((SagaState::Credited, None))
            }
            // Commit and release only ever move forward; retry them later.
            (Step::Commit | Step::Release, Outcome::Refused { .. } | Outcome::Unknown(_)) => None,
        };
        match next {
            Some((state, failure)) => {
                if self.store.advance(saga, &attempt, state, failure.as_ref()).await? {
                    tracing::info!(saga = %saga.id, step = step.as_str(), from = saga.state.as_str(), to = state.as_str(), "saga advanced");
                    Ok(Some(Saga { state, failure, updated_at: crate::db::now_ms(), ..saga.clone() }))
                } else {
                    // Someone else moved it: continue from what is stored.
                    Ok(self.store.load(saga.id.as_str()).await?)
                }
            }
            None => {
                tracing::warn!(saga = %saga.id, step = step.as_str(), error = ?attempt.error, "step cannot progress now");
                self.store.note(saga, &attempt).await?;
                Ok(None)
            }
        }
    }

    /// Calls one step, retrying answers that are not definitive.
    async fn call(&self, saga: &Saga, step: Step) -> (Outcome, i64) {
        let url = join(&self.settings.account_url, &format!("/v1/transfers/{}/{}", saga.id, step.as_str()));
        let ctx = saga.context.clone().with_tenant(saga.spec.tenant_id.as_str());
        let mut backoff = self.settings.retry_backoff;
        let mut calls = 0;
        loop {
            calls += 1;
            let result: Result<crate::client::Reply<serde_json::Value>, CallError> =
                self.client.post(&url, &ctx, &saga.spec).await;
            match result {
                Ok(_) => return (Outcome::Ok, calls),
                Err(e) if e.is_definitive() => {
                    let (code, message) = match e {
                        CallError::Status { code, message, .. } => (code, message),
                        other => ("refused".to_owned(), other.to_string()),
                    };
                    return (Outcome::Refused { code, message }, calls);
                }
                Err(e)
                    if calls >= i64::from(self.settings.step_attempts.max(1))
                        || self.shutdown.is_requested() =>
                {
                    return (Outcome::Unknown(e.to_string()), calls);
                }
                Err(e) => {
                    tracing::debug!(saga = %saga.id, step = step.as_str(), error = %e, "retrying step");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }
}
