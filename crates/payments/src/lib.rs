//! The Payments Engine reference services: the real, small workload the mesh carries.
//!
//! One binary, `payments`, runs one service per subcommand. Every service is plain HTTP/1.1
//! (TLS is the mesh's job), reads its configuration from the environment, and runs alone
//! without any mesh: service URLs default to the Kubernetes service names and are reached
//! through `HTTP_PROXY` (the sidecar) when it is set.
//!
//! ```text
//!  client ──POST /v1/payments──▶ payment-service (8081)
//!                                 │ 1. POST /v1/validate ──▶ validation-service (8082)
//!                                 │ 2. POST /v1/sagas ─────▶ saga-service (8084) ── saga state in SQLite/Postgres
//!                                 │                            │ reserve  ─▶ account-service (8083)
//!                                 │                            │ credit   ─▶   double-entry ledger in
//!                                 │                            │ commit   ─▶   SQLite (WAL) or Postgres
//!                                 │                            └ release  ─▶   (compensation)
//!  ◀── 201 payment {status} ──────┘
//! ```
//!
//! Money safety is layered: amounts are positive `i64` minor units with checked arithmetic
//! ([`money`]); the ledger's transfer state machine makes every step idempotent by transfer
//! id and refuses the moves that would apply money twice (`credit` after `release`,
//! `release` after `credit`) ([`account::ledger`]), applied by a pure engine that is tested
//! without a database ([`account::engine`]) inside one locked write transaction per batch of
//! steps ([`account::batcher`], group commit); the saga persists its state after every step,
//! so a restart resumes or compensates it ([`saga`]); and the payment id is derived from
//! `(tenant, Idempotency-Key)`, so a retried request names the same saga ([`payment`]).
//!
//! Modules:
//! - [`payment`], [`validation`], [`account`], [`saga`]: one per service, each with a
//!   `Config` (clap, from env), a `router()` and a `run()`.
//! - [`load`]: the open-loop load generator and its money check.
//! - shared pieces: [`server`] (listen, health/readiness, request logs, graceful shutdown),
//!   [`client`] (outbound HTTP through the proxy, with timeouts and error classes),
//!   [`propagation`] (trace and tenant headers), [`error`] (JSON `{code, message}` errors),
//!   [`db`] (SQLite/Postgres pool, one code path), [`money`] (amounts, currencies, ids).

pub mod account;
pub mod client;
pub mod db;
pub mod error;
pub mod load;
pub mod money;
pub mod payment;
pub mod propagation;
pub mod saga;
pub mod server;
pub mod validation;
