//! paymesh's data plane (`paymesh-proxy`, Envoy's role): one binary, sidecar or ingress gateway.
//!
//! Startup lives in [`app::build`]: it binds every socket first, then spawns two runtimes. The
//! control runtime (one thread) runs [`identity`] (certificates from the CA, renewed at
//! half-life), [`discovery`] (config snapshots from the control plane, indexed once into an
//! [`index::Index`] and swapped in atomically) and the [`admin`] and readiness servers. The data
//! runtime runs the listeners: [`outbound`] (the app's HTTP proxy), [`inbound`] (mutual TLS from
//! other proxies) and [`gateway`] (Istio `Gateway` servers). Every request gets a [`context`]
//! record; outbound and gateway requests go through [`route`] then the [`forward`] stack
//! (retry, endpoint choice) to the [`transport`] over pooled connections, inbound ones through
//! peer authentication to the app. A request reads the current index without a lock; state
//! that outlives a config push lives in the [`store`]; nothing on the data path waits for the
//! control plane. Every request leaves one Istio-format line in the [`access`] log, with its
//! response [`flags`].

pub mod access;
pub mod admin;
pub mod app;
pub mod backoff;
pub mod balance;
pub mod breaker;
pub mod context;
pub mod discovery;
pub mod drain;
pub mod edge;
pub mod error;
pub mod fault;
pub mod flags;
pub mod forward;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod index;
pub mod mirror;
pub mod outbound;
pub mod outlier;
pub mod readiness;
pub mod replay;
pub mod retry;
pub mod route;
pub mod serve;
pub mod simulate;
pub mod store;
pub mod transport;
pub mod tunnel;
pub mod weak_map;

pub use app::{App, AppError, Bound, Config, Mode};
