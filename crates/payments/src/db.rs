//! Storage for the stateful services (account, saga): one code path over SQLite and
//! PostgreSQL, chosen by `DATABASE_URL`.
//!
//! Queries are plain runtime SQL through sqlx's `Any` driver (no compile-time database
//! macros), written in the common subset of both dialects: `$n` placeholders, `TEXT` and
//! `BIGINT` columns, `ON CONFLICT`, `RETURNING`. The one place the dialects differ is how a
//! write transaction takes its locks, and [`Db::begin_write`] / [`Db::for_update`] hide it:
//! SQLite takes the database write lock up front (`BEGIN IMMEDIATE`, so a read-then-write
//! transaction can never fail to upgrade), PostgreSQL locks the rows it read (`SELECT ... FOR UPDATE`).

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::error::ErrorKind;
use sqlx::{Any, AnyPool, Executor as _, Transaction};

/// Database settings (clap args, read from the environment). `Debug` hides the URL's
/// credentials.
#[derive(Clone, clap::Args)]
pub struct DbConfig {
    /// `sqlite://FILE?mode=rwc` (embedded default) or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Pool size; default 1 for SQLite (one writer at a time anyway, and no busy-waiting
    /// between the pool's own connections) and 16 for PostgreSQL.
    #[arg(long, env = "DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// SQLite `synchronous` pragma: NORMAL survives a process crash (WAL), FULL also a power loss.
    #[arg(long, env = "SQLITE_SYNCHRONOUS", default_value = "NORMAL", value_parser = ["OFF", "NORMAL", "FULL", "EXTRA"])]
    pub sqlite_synchronous: String,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("database_url", &self.database_url.as_deref().map(redact_credentials))
            .field("db_max_connections", &self.db_max_connections)
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .finish()
    }
}

/// `scheme://user:secret@host/db` → `scheme://...@host/db`: URLs are logged and echoed in
/// errors, passwords must not be.
fn redact_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://...{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// Which database the pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite in WAL mode.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The dialect a URL names.
    pub fn of(url: &str) -> Result<Self, sqlx::Error> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(sqlx::Error::Configuration(
                format!("DATABASE_URL must be sqlite: or postgres:, got {:?}", redact_credentials(url))
                    .into(),
            ))
        }
    }
}

/// A connection pool and its dialect.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

impl Db {
    /// Connects (creating a SQLite file when missing) and runs `schema`, a list of idempotent
    /// `CREATE ... IF NOT EXISTS` statements.
    pub async fn connect(config: &DbConfig, default_url: &str, schema: &[&str]) -> Result<Self, sqlx::Error> {
        install_default_drivers();
        let url = config.database_url.as_deref().filter(|u| !u.is_empty()).unwrap_or(default_url);
        let dialect = Dialect::of(url)?;
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let max = match (dialect, config.db_max_connections) {
            // Every connection to an in-memory SQLite database is a database of its own.
            (Dialect::Sqlite, _) if memory => 1,
            (_, Some(n)) => n.max(1),
            (Dialect::Sqlite, None) => 1,
            (Dialect::Postgres, None) => 16,
        };
        let synchronous = config.sqlite_synchronous.clone();
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                let pragmas = [
                    "PRAGMA journal_mode = WAL".to_owned(),
                    format!("PRAGMA synchronous = {synchronous}"),
                    "PRAGMA busy_timeout = 5000".to_owned(),
                ];
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        for pragma in &pragmas {
                            conn.execute(pragma.as_str()).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let db = Self { pool, dialect };
        for statement in schema {
            db.pool.execute(*statement).await?;
        }
        tracing::info!(dialect = ?dialect, max_connections = max, "database ready");
        Ok(db)
    }

    /// The pool, for reads and single-statement writes.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a transaction that will write: SQLite takes the write lock now
    /// (`BEGIN IMMEDIATE`); PostgreSQL starts a READ COMMITTED transaction whose reads of rows
    /// it will change use [`Db::for_update`].
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
    }

    /// The row-lock suffix for a `SELECT` inside [`Db::begin_write`] (empty on SQLite, whose
    /// transaction already holds the database write lock).
    pub fn for_update(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Readiness: the database answers a trivial query within two seconds.
    pub async fn ping(&self) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("database: {e}")),
            Err(_) => Err("database: no answer within 2s".to_owned()),
        }
    }
}

/// Placeholders for statements built at run time with many parameters, handed out in textual
/// order (bind the values in the same order).
///
/// PostgreSQL gets `$1, $2, ...`; SQLite gets anonymous `?`, because it resolves every named or
/// numbered parameter with a linear search over those already seen, which makes a statement
/// with thousands of them quadratic to prepare and to bind.
#[derive(Debug)]
pub struct Params {
    dialect: Dialect,
    count: usize,
}

impl Params {
    /// Placeholders for one statement.
    pub fn new(dialect: Dialect) -> Self {
        Self { dialect, count: 0 }
    }

    /// One more placeholder.
    pub fn one(&mut self) -> String {
        self.count += 1;
        match self.dialect {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres => format!("${}", self.count),
        }
    }

    /// `n` placeholders separated by commas.
    pub fn list(&mut self, n: usize) -> String {
        (0..n).map(|_| self.one()).collect::<Vec<_>>().join(", ")
    }

    /// `rows` parenthesised groups of `width` placeholders, separated by commas.
    pub fn rows(&mut self, rows: usize, width: usize) -> String {
        (0..rows).map(|_| format!("({})", self.list(width))).collect::<Vec<_>>().join(", ")
    }
}

/// True when `e` is a unique-constraint violation (a duplicate key).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.kind() == ErrorKind::UniqueViolation)
}

/// Milliseconds since the Unix epoch, for `created_at` / `updated_at` columns.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_debug_output_or_errors() {
        let config = DbConfig {
            database_url: Some("postgres://pay:s3cret@db:5432/ledger".into()),
            db_max_connections: None,
            sqlite_synchronous: "NORMAL".into(),
        };
        let printed = format!("{config:?}");
        assert!(
            printed.contains("postgres://...@db:5432/ledger") && !printed.contains("s3cret"),
            "{printed}"
        );
        let error = Dialect::of("postgress://pay:s3cret@db/ledger").expect_err("unknown scheme").to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn params_follow_the_dialect() {
        let mut pg = Params::new(Dialect::Postgres);
        assert_eq!(pg.one(), "$1");
        assert_eq!(pg.rows(2, 2), "($2, $3), ($4, $5)");
        assert_eq!(pg.list(2), "$6, $7");
        let mut lite = Params::new(Dialect::Sqlite);
        assert_eq!(lite.rows(2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn dialect_from_url() {
        assert_eq!(Dialect::of("sqlite://a.db?mode=rwc").expect("valid in test"), Dialect::Sqlite);
        assert_eq!(Dialect::of("postgres://u@h/db").expect("valid in test"), Dialect::Postgres);
        assert_eq!(Dialect::of("postgresql://u@h/db").expect("valid in test"), Dialect::Postgres);
        assert!(Dialect::of("mysql://x").is_err());
    }
}
