//! paymesh's data plane (`paymesh-proxy`, Envoy's role): one binary, sidecar or ingress gateway.
//!
//! Startup lives in [`app::build`]: it binds every socket first, then spawns two runtimes. The
//! control runtime (one thread) runs [`identity`] (certificates from the CA, renewed at
//! half-life), [`discovery`] (config snapshots from the control plane, indexed once into an
//! [`index::Index`] and swapped in atomically) and the [`admin`] and readiness servers. The data
//! runtime runs the listeners: [`outbound`] (the app's HTTP proxy), [`inbound`] (mutual TLS from
//! other proxies) and [`gateway`] (Istio `Gateway` servers), all forwarding through the shared
//! [`upstream`] code over pooled connections. A request reads the current index without a lock;
//! nothing on the data path waits for the control plane. Every request leaves one Envoy-style
//! line in the [`access`] log, with its response flag.

pub mod access;
pub mod admin;
pub mod app;
pub mod backoff;
pub mod discovery;
pub mod drain;
pub mod error;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod index;
pub mod outbound;
pub mod readiness;
pub mod upstream;

pub use app::{App, AppError, Bound, Config, Mode};
