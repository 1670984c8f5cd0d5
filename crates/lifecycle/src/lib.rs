//! How paymesh's long-running processes retry and stop, in one place for the proxy
//! (`paymesh-proxy`) and the local supervisor (`paymesh up`):
//!
//! - [`Backoff`]: the pause between attempts, doubling from a first pause up to a cap (the proxy
//!   reconnecting to its control plane and retrying the CA; the supervisor restarting a process
//!   that exited).
//! - [`drain`]: one [`Trigger`](drain::Trigger) tells any number of
//!   [`Shutdown`](drain::Shutdown) waiters to stop (the proxy's listeners and control runtime;
//!   the supervisor's task per process).
//! - [`limits`]: the open-file limit raised to the hard limit at start.
//! - [`signal`]: SIGINT and SIGTERM as one stream; in both binaries the first asks for a graceful
//!   stop and a second for an immediate one.
//!
//! Readiness is not here, on purpose: the proxy's is a set of drop guards behind its
//! `/healthz/ready`, the supervisor's is an HTTP poll of that endpoint with a deadline, so what
//! they share is the endpoint (`paymesh_api::ports::PROXY_READINESS`), not code. The same goes
//! for what happens after the shutdown signal: the proxy waits for its connections, the
//! supervisor for its child before SIGKILL; only the signal is common.

pub mod backoff;
pub mod drain;
pub mod limits;
pub mod signal;

pub use backoff::Backoff;
