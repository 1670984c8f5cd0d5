//! Saga persistence: one row per saga (what to move, where it is, why it failed, the trace
//! context) and one row per step attempted (status, attempts, last error).
//!
//! The saga row is written when the saga is created and after every step, in the same
//! transaction as the step's row; a state change is a compare-and-set on the previous state,
//! so two drivers (a late duplicate, a second replica) can never both move one saga.

use serde::{Deserialize, Serialize};

use super::SagaState;
use crate::account::ledger::{Step, TransferSpec};
use crate::db::{Db, is_unique_violation, now_ms};
use crate::money::{Amount, TransferId};
use crate::propagation::Propagation;

/// The schema (idempotent; the same text on SQLite and PostgreSQL).
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sagas (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        from_account TEXT NOT NULL,
        to_account TEXT NOT NULL,
        amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
        currency TEXT NOT NULL,
        state TEXT NOT NULL,
        failure_code TEXT,
        failure_message TEXT,
        context TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sagas_by_state ON sagas (state)",
    "CREATE TABLE IF NOT EXISTS saga_steps (
        saga_id TEXT NOT NULL,
        step TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        last_error TEXT,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (saga_id, step))",
];

/// Why a saga failed (the first definitive error, or the step that never answered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Stable code, e.g. `insufficient_funds`.
    pub code: String,
    /// Human-readable reason.
    pub message: String,
}

/// A saga as stored.
#[derive(Debug, Clone)]
pub struct Saga {
    /// Saga id (= transfer id = payment id).
    pub id: TransferId,
    /// What to move.
    pub spec: TransferSpec,
    /// Where it is.
    pub state: SagaState,
    /// Why it is compensating or compensated.
    pub failure: Option<Failure>,
    /// Trace and tenant headers of the request that created it.
    pub context: Propagation,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

/// One step's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// `reserve`, `credit`, `commit` or `release`.
    pub step: String,
    /// `done` or `failed` (the last attempt's outcome).
    pub status: String,
    /// Attempts so far (retries included).
    pub attempts: i64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

/// The outcome of one step attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The step.
    pub step: Step,
    /// How many calls the attempt made.
    pub calls: i64,
    /// `None` when it succeeded, else the error text.
    pub error: Option<String>,
}

/// What `create` found.
#[derive(Debug)]
pub enum Created {
    /// A new saga.
    New(Saga),
    /// The id existed: that saga.
    Existing(Saga),
}

type SagaRow =
    (String, String, String, String, i64, String, String, Option<String>, Option<String>, String, i64, i64);

const SAGA_COLUMNS: &str = "id, tenant_id, from_account, to_account, amount_minor, currency, state, \
                            failure_code, failure_message, context, created_at, updated_at";

/// The saga store.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Wraps a connected database whose schema includes [`SCHEMA`].
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database (readiness checks).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Creates a saga in state `started`, or returns the saga that already has this id.
    pub async fn create(
        &self,
        id: &TransferId,
        spec: &TransferSpec,
        context: &Propagation,
    ) -> Result<Created, sqlx::Error> {
        let now = now_ms();
        let context_json = serde_json::to_string(context).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let inserted = sqlx::query(
            "INSERT INTO sagas (id, tenant_id, from_account, to_account, amount_minor, currency, state, context,
                                created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(spec.tenant_id.as_str())
        .bind(spec.from_account.as_str())
        .bind(spec.to_account.as_str())
        .bind(spec.amount_minor.minor())
        .bind(spec.currency.as_str())
        .bind(SagaState::Started.as_str())
        .bind(context_json)
        .bind(now)
        .execute(self.db.pool())
        .await
        .map(|r| r.rows_affected() == 1)
        .or_else(|e| if is_unique_violation(&e) { Ok(false) } else { Err(e) })?;
        if inserted {
            return Ok(Created::New(Saga {
                id: id.clone(),
                spec: spec.clone(),
                state: SagaState::Started,
                failure: None,
                context: context.clone(),
                created_at: now,
                updated_at: now,
            }));
        }
        match self.load(id.as_str()).await? {
            Some(saga) => Ok(Created::Existing(saga)),
            None => Err(sqlx::Error::RowNotFound),
        }
    }

    /// One saga.
    pub async fn load(&self, id: &str) -> Result<Option<Saga>, sqlx::Error> {
        let sql = format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1");
        let row: Option<SagaRow> = sqlx::query_as(&sql).bind(id).fetch_optional(self.db.pool()).await?;
        row.map(parse).transpose()
    }

    /// The steps of one saga, in the order a saga runs them (reserve, credit, release, commit:
    /// commit follows release only when release found the transfer credited).
    pub async fn steps(&self, id: &str) -> Result<Vec<StepRecord>, sqlx::Error> {
        let rows: Vec<(String, String, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT step, status, attempts, last_error, updated_at FROM saga_steps WHERE saga_id = $1
             ORDER BY CASE step WHEN 'reserve' THEN 1 WHEN 'credit' THEN 2 WHEN 'release' THEN 3 ELSE 4 END",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(step, status, attempts, last_error, updated_at)| StepRecord {
                step,
                status,
                attempts,
                last_error,
                updated_at,
            })
            .collect())
    }

    /// Sagas not in a final state, oldest first, last changed before `before_ms`.
    pub async fn open(&self, before_ms: i64, limit: i64) -> Result<Vec<Saga>, sqlx::Error> {
        let sql = format!(
            "SELECT {SAGA_COLUMNS} FROM sagas WHERE state NOT IN ('committed', 'compensated') AND updated_at < $1
             ORDER BY updated_at LIMIT $2"
        );
        let rows: Vec<SagaRow> =
            sqlx::query_as(&sql).bind(before_ms).bind(limit).fetch_all(self.db.pool()).await?;
        rows.into_iter().map(parse).collect()
    }

    /// Records a step attempt and moves the saga from `from` to `to` (with `failure`), in one
    /// transaction. Returns false, changing nothing, when the saga is no longer in `from`.
    pub async fn advance(
        &self,
        saga: &Saga,
        attempt: &Attempt,
        to: SagaState,
        failure: Option<&Failure>,
    ) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE sagas SET state = $1, failure_code = $2, failure_message = $3, updated_at = $4
             WHERE id = $5 AND state = $6",
        )
        .bind(to.as_str())
        .bind(failure.map(|f| f.code.clone()))
        .bind(failure.map(|f| f.message.clone()))
        .bind(now)
        .bind(saga.id.as_str())
        .bind(saga.state.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !moved {
            return Ok(false);
        }
        let status = if attempt.error.is_none() { "done" } else { "failed" };
        sqlx::query(
            "INSERT INTO saga_steps (saga_id, step, status, attempts, last_error, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (saga_id, step) DO UPDATE SET
               status = excluded.status, attempts = saga_steps.attempts + excluded.attempts,
               last_error = COALESCE(excluded.last_error, saga_steps.last_error), updated_at = excluded.updated_at",
        )
        .bind(saga.id.as_str())
        .bind(attempt.step.as_str())
        .bind(status)
        .bind(attempt.calls)
        .bind(attempt.error.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a step attempt that did not change the saga's state (it will be retried).
    pub async fn note(&self, saga: &Saga, attempt: &Attempt) -> Result<(), sqlx::Error> {
        self.advance(saga, attempt, saga.state, saga.failure.as_ref()).await.map(|_| ())
    }
}

fn parse(row: SagaRow) -> Result<Saga, sqlx::Error> {
    let (id, tenant, from, to, amount, currency, state, code, message, context, created_at, updated_at) = row;
    let corrupt = |what: &str| sqlx::Error::Decode(format!("stored saga has an invalid {what}").into());
    let spec = TransferSpec {
        tenant_id: tenant.parse().map_err(|_| corrupt("tenant"))?,
        from_account: from.parse().map_err(|_| corrupt("source account"))?,
        to_account: to.parse().map_err(|_| corrupt("destination account"))?,
        amount_minor: Amount::new(amount).map_err(|_| corrupt("amount"))?,
        currency: currency.parse().map_err(|_| corrupt("currency"))?,
    };
    Ok(Saga {
        id: id.parse().map_err(|_| corrupt("id"))?,
        spec,
        state: SagaState::parse(&state).ok_or_else(|| corrupt("state"))?,
        failure: code.map(|code| Failure { code, message: message.unwrap_or_default() }),
        context: serde_json::from_str(&context).map_err(|_| corrupt("context"))?,
        created_at,
        updated_at,
    })
}
