//! How the proxy paces its retries against the control plane (discovery reconnects, CA
//! requests): [`Backoff::default`], 100 ms doubling to 5 s, reset after a success, so a
//! restarted control plane is found again within seconds without a busy loop while it is gone.
//! The type is paymesh-lifecycle's, shared with `paymesh up`'s restarts.

pub use paymesh_lifecycle::Backoff;
