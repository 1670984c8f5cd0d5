//! The ledger's storage: accounts with cached balances, transfers with their state, and the
//! append-only double-entry journal, in one database (SQLite or PostgreSQL).
//!
//! Transfer steps are applied in batches ([`Store::run_batch`], fed by the group-commit
//! writer in [`super::batcher`]): one write transaction ([`Db::begin_write`]) loads the rows
//! the batch touches (transfers, then accounts, each in id order and locked), lets the pure
//! [`engine`] apply the steps in order, and writes the result back in a few set-based
//! statements (multi-row `INSERT`, `UPDATE ... FROM (VALUES ...)`). The schema's
//! `CHECK (balance_minor >= 0)` is the last guard behind the engine's checked arithmetic, and
//! journal leg ids are unique per transfer and step, so a leg can exist once. Clearing and
//! external accounts are not rows: their balances are sums of the journal, so no row is shared
//! by every transfer.

use std::collections::BTreeSet;

use serde::Serialize;
use sqlx::{Any, Transaction};

use super::engine::{self, AccountRow, Op, Snapshot, Transfer, Writes};
use super::ledger::{self, LedgerError, TransferSpec, TransferState};
use crate::db::{Db, Dialect, Params, now_ms};
use crate::money::{AccountId, Amount, Currency, TenantId};

/// The schema (idempotent; the same text on SQLite and PostgreSQL).
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS accounts (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        currency TEXT NOT NULL,
        balance_minor BIGINT NOT NULL CHECK (balance_minor >= 0),
        status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS transfers (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        from_account TEXT NOT NULL,
        to_account TEXT NOT NULL,
        amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
        currency TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('reserved', 'credited', 'committed', 'released')),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries (
        id TEXT PRIMARY KEY,
        transfer_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        amount_minor BIGINT NOT NULL,
        currency TEXT NOT NULL,
        created_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS entries_by_account ON entries (account_id)",
    "CREATE INDEX IF NOT EXISTS entries_by_transfer ON entries (transfer_id)",
];

/// A failed store operation: a ledger rule, or the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A ledger rule refused the operation.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The batch holding this step failed in the database (the step did not apply).
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
}

/// A customer account.
#[derive(Debug, Clone, Serialize)]
pub struct Account {
    /// Account id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Currency of the balance.
    pub currency: String,
    /// Balance in minor units (never negative).
    pub balance_minor: i64,
    /// `open` or `closed`.
    pub status: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

/// One journal leg.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// `transfer/step/leg`.
    pub id: String,
    /// Account (customer, `clearing:CUR` or `external:CUR`).
    pub account_id: String,
    /// Signed minor units.
    pub amount_minor: i64,
}

/// Totals of one currency.
#[derive(Debug, Clone, Serialize)]
pub struct CurrencyTotals {
    /// The currency.
    pub currency: String,
    /// Sum of customer balances.
    pub customer_minor: i64,
    /// Money reserved and not yet credited or released.
    pub clearing_minor: i64,
    /// The negative of all opening balances.
    pub external_minor: i64,
    /// Sum of all journal legs (0 when every posting balances).
    pub journal_minor: i64,
}

/// The ledger's self-check.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerCheck {
    /// True when the journal balances, cached balances equal the journal, and customer +
    /// clearing + external is zero in every currency.
    pub balanced: bool,
    /// Totals per currency.
    pub currencies: Vec<CurrencyTotals>,
    /// Accounts whose cached balance differs from their journal (first 100).
    pub mismatched_accounts: Vec<String>,
    /// Transfers reserved or credited but not final.
    pub open_transfers: i64,
}

type TransferRow = (String, String, String, i64, String, String);

/// The ledger store.
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

    /// Opens an account, posting its opening balance against `external:CUR`.
    pub async fn create_account(
        &self,
        tenant: &TenantId,
        id: &AccountId,
        currency: Currency,
        opening: Option<Amount>,
    ) -> Result<Account, StoreError> {
        let now = now_ms();
        let balance = opening.map_or(0, Amount::minor);
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, tenant_id, currency, balance_minor, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'open', $5, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(currency.as_str())
        .bind(balance)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(LedgerError::AccountExists(id.to_string()).into());
        }
        if balance > 0 {
            let legs = [
                (format!("open/{id}/external"), ledger::external(currency), -balance),
                (format!("open/{id}/account"), id.to_string(), balance),
            ];
            insert_legs(&mut tx, &format!("open/{id}"), currency, &legs, now).await?;
        }
        tx.commit().await?;
        Ok(Account {
            id: id.to_string(),
            tenant_id: tenant.to_string(),
            currency: currency.to_string(),
            balance_minor: balance,
            status: "open".to_owned(),
            created_at: now,
        })
    }

    /// One account, if it exists.
    pub async fn account(&self, id: &str) -> Result<Option<Account>, sqlx::Error> {
        let row: Option<(String, String, String, i64, String, i64)> = sqlx::query_as(
            "SELECT id, tenant_id, currency, balance_minor, status, created_at FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|(id, tenant_id, currency, balance_minor, status, created_at)| Account {
            id,
            tenant_id,
            currency,
            balance_minor,
            status,
            created_at,
        }))
    }

    /// Closes an empty account of `tenant`; credits to it fail from then on.
    pub async fn close_account(&self, tenant: &TenantId, id: &AccountId) -> Result<Account, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let sql =
            format!("SELECT tenant_id, balance_minor FROM accounts WHERE id = $1{}", self.db.for_update());
        let row: Option<(String, i64)> =
            sqlx::query_as(&sql).bind(id.as_str()).fetch_optional(&mut *tx).await?;
        match row {
            Some((t, _)) if t != tenant.as_str() => {
                return Err(LedgerError::AccountNotFound(id.to_string()).into());
            }
            None => return Err(LedgerError::AccountNotFound(id.to_string()).into()),
            Some((_, balance)) if balance != 0 => {
                return Err(LedgerError::AccountNotEmpty(id.to_string()).into());
            }
            Some(_) => {}
        }
        sqlx::query("UPDATE accounts SET status = 'closed', updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.account(id.as_str()).await?.ok_or_else(|| LedgerError::AccountNotFound(id.to_string()).into())
    }

    /// Applies a batch of steps in one transaction; each step's answer in order. An `Err` means
    /// the transaction failed and no step applied.
    pub async fn run_batch(&self, ops: &[Op]) -> Result<Vec<Result<Transfer, LedgerError>>, sqlx::Error> {
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        let ids: BTreeSet<&str> = ops.iter().map(|op| op.id.as_str()).collect();
        let accounts: BTreeSet<&str> =
            ops.iter().flat_map(|op| [op.spec.from_account.as_str(), op.spec.to_account.as_str()]).collect();
        let mut snapshot = Snapshot::default();

        let sql = format!(
            "SELECT id, tenant_id, from_account, to_account, amount_minor, currency, state FROM transfers
             WHERE id IN ({}) ORDER BY id{}",
            Params::new(self.db.dialect()).list(ids.len()),
            self.db.for_update()
        );
        let mut query = sqlx::query_as::<_, (String, String, String, String, i64, String, String)>(&sql);
        for id in &ids {
            query = query.bind(*id);
        }
        for (id, tenant, from, to, amount, currency, state) in query.fetch_all(&mut *tx).await? {
            let transfer = parse_transfer((tenant, from, to, amount, currency, state))?;
            snapshot.transfers.insert(id, transfer);
        }

        let sql = format!(
            "SELECT id, tenant_id, currency, balance_minor, status FROM accounts WHERE id IN ({}) ORDER BY id{}",
            Params::new(self.db.dialect()).list(accounts.len()),
            self.db.for_update()
        );
        let mut query = sqlx::query_as::<_, (String, String, String, i64, String)>(&sql);
        for id in &accounts {
            query = query.bind(*id);
        }
        for (id, tenant_id, currency, balance_minor, status) in query.fetch_all(&mut *tx).await? {
            snapshot.accounts.insert(id, AccountRow { tenant_id, currency, balance_minor, status });
        }

        let (results, writes) = engine::apply_batch(&mut snapshot, ops);
        if !writes.is_empty() {
            write(&mut tx, self.db.dialect(), &writes, now).await?;
            tx.commit().await?;
        }
        Ok(results)
    }

    /// A transfer and its journal legs.
    pub async fn transfer(&self, id: &str) -> Result<Option<(Transfer, Vec<Entry>)>, StoreError> {
        let row: Option<TransferRow> = sqlx::query_as(
            "SELECT tenant_id, from_account, to_account, amount_minor, currency, state FROM transfers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some((spec, state)) = row.map(parse_transfer).transpose()? else { return Ok(None) };
        let entries: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT id, account_id, amount_minor FROM entries WHERE transfer_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        let entries = entries
            .into_iter()
            .map(|(id, account_id, amount_minor)| Entry { id, account_id, amount_minor })
            .collect();
        Ok(Some((Transfer { id: id.to_owned(), spec, state }, entries)))
    }

    /// Checks the ledger's invariants on one consistent snapshot.
    pub async fn check(&self) -> Result<LedgerCheck, sqlx::Error> {
        let begin = match self.db.dialect() {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        let mut tx = self.db.pool().begin_with(begin).await?;
        let customers: Vec<(String, i64)> = sqlx::query_as(
            "SELECT currency, CAST(SUM(balance_minor) AS BIGINT) FROM accounts GROUP BY currency",
        )
        .fetch_all(&mut *tx)
        .await?;
        let journal: Vec<(String, i64)> = sqlx::query_as(
            "SELECT currency, CAST(SUM(amount_minor) AS BIGINT) FROM entries GROUP BY currency",
        )
        .fetch_all(&mut *tx)
        .await?;
        let system: Vec<(String, i64)> = sqlx::query_as(
            "SELECT account_id, CAST(SUM(amount_minor) AS BIGINT) FROM entries
             WHERE account_id LIKE 'clearing:%' OR account_id LIKE 'external:%' GROUP BY account_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mismatched: Vec<(String,)> = sqlx::query_as(
            "SELECT a.id FROM accounts a
             LEFT JOIN (SELECT account_id, CAST(SUM(amount_minor) AS BIGINT) AS s FROM entries GROUP BY account_id) e
               ON e.account_id = a.id
             WHERE a.balance_minor <> COALESCE(e.s, 0) ORDER BY a.id LIMIT 100",
        )
        .fetch_all(&mut *tx)
        .await?;
        let (open_transfers,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM transfers WHERE state IN ('reserved', 'credited')")
                .fetch_one(&mut *tx)
                .await?;
        tx.rollback().await?;

        let mut currencies: Vec<String> = customers.iter().chain(&journal).map(|(c, _)| c.clone()).collect();
        currencies.sort();
        currencies.dedup();
        let lookup =
            |rows: &[(String, i64)], key: &str| rows.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v);
        let currencies: Vec<CurrencyTotals> = currencies
            .into_iter()
            .map(|c| CurrencyTotals {
                customer_minor: lookup(&customers, &c),
                clearing_minor: lookup(&system, &format!("clearing:{c}")),
                external_minor: lookup(&system, &format!("external:{c}")),
                journal_minor: lookup(&journal, &c),
                currency: c,
            })
            .collect();
        let balanced = mismatched.is_empty()
            && currencies.iter().all(|t| {
                t.journal_minor == 0
                    && i128::from(t.customer_minor)
                        + i128::from(t.clearing_minor)
                        + i128::from(t.external_minor)
                        == 0
            });
        Ok(LedgerCheck {
            balanced,
            currencies,
            mismatched_accounts: mismatched.into_iter().map(|(id,)| id).collect(),
            open_transfers,
        })
    }
}

fn parse_transfer(
    (tenant, from, to, amount, currency, state): TransferRow,
) -> Result<(TransferSpec, TransferState), sqlx::Error> {
    let corrupt = |what: &str| sqlx::Error::Decode(format!("stored transfer has an invalid {what}").into());
    let spec = TransferSpec {
        tenant_id: tenant.parse().map_err(|_| corrupt("tenant"))?,
        from_account: from.parse().map_err(|_| corrupt("source account"))?,
        to_account: to.parse().map_err(|_| corrupt("destination account"))?,
        amount_minor: Amount::new(amount).map_err(|_| corrupt("amount"))?,
        currency: currency.parse().map_err(|_| corrupt("currency"))?,
    };
    let state = TransferState::parse(&state).ok_or_else(|| corrupt("state"))?;
    Ok((spec, state))
}

async fn insert_legs(
    tx: &mut Transaction<'static, Any>,
    transfer_id: &str,
    currency: Currency,
    legs: &[(String, String, i64)],
    now: i64,
) -> Result<(), sqlx::Error> {
    for (id, account, amount) in legs {
        sqlx::query(
            "INSERT INTO entries (id, transfer_id, account_id, amount_minor, currency, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_str())
        .bind(transfer_id)
        .bind(account.as_str())
        .bind(*amount)
        .bind(currency.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Writes a batch's changes with one statement per kind of change (values bound in textual order).
async fn write(
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
    writes: &Writes,
    now: i64,
) -> Result<(), sqlx::Error> {
    if !writes.new_transfers.is_empty() {
        let sql = format!(
            "INSERT INTO transfers
               (id, tenant_id, from_account, to_account, amount_minor, currency, state, created_at, updated_at)
             VALUES {}",
            Params::new(dialect).rows(writes.new_transfers.len(), 9)
        );
        let mut query = sqlx::query(&sql);
        for (id, spec, state) in &writes.new_transfers {
            query = query
                .bind(id.as_str())
                .bind(spec.tenant_id.as_str())
                .bind(spec.from_account.as_str())
                .bind(spec.to_account.as_str())
                .bind(spec.amount_minor.minor())
                .bind(spec.currency.as_str())
                .bind(state.as_str())
                .bind(now)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    if !writes.states.is_empty() {
        let mut params = Params::new(dialect);
        let sql = format!(
            "UPDATE transfers SET state = v.column2, updated_at = {} FROM (VALUES {}) AS v WHERE transfers.id = v.column1",
            params.one(),
            params.rows(writes.states.len(), 2)
        );
        let mut query = sqlx::query(&sql).bind(now);
        for (id, state) in &writes.states {
            query = query.bind(id.as_str()).bind(state.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    if !writes.balances.is_empty() {
        let mut params = Params::new(dialect);
        let sql = format!(
            "UPDATE accounts SET balance_minor = v.column2, updated_at = {} FROM (VALUES {}) AS v
             WHERE accounts.id = v.column1",
            params.one(),
            params.rows(writes.balances.len(), 2)
        );
        let mut query = sqlx::query(&sql).bind(now);
        for (id, balance) in &writes.balances {
            query = query.bind(id.as_str()).bind(*balance);
        }
        query.execute(&mut **tx).await?;
    }
    if !writes.entries.is_empty() {
        let sql = format!(
            "INSERT INTO entries (id, transfer_id, account_id, amount_minor, currency, created_at) VALUES {}",
            Params::new(dialect).rows(writes.entries.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for (id, transfer, account, amount, currency) in &writes.entries {
            query = query
                .bind(id.as_str())
                .bind(transfer.as_str())
                .bind(account.as_str())
                .bind(*amount)
                .bind(currency.as_str())
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
