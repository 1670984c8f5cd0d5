//! paymesh's control plane (`paymesh-control`, istiod's role in Istio).
//!
//! Data flows one way: [`config_store`] watches the config and pods files, validates each
//! change with `paymesh analyze`'s analyzers and publishes accepted versions; [`registry`]
//! turns Services and Pods into endpoints and identities; [`compile`] makes one
//! `ProxyConfig` per proxy; [`discovery`] pushes it to subscribed proxies over the same TLS
//! port as the [`ca`], served by [`grpc`]; [`monitoring`] answers `/ready`, `/metrics` and
//! `/debug/*`. [`app`] binds everything, then spawns it, in one readable order.

pub mod app;
pub mod ca;
pub mod compile;
pub mod config_store;
pub mod discovery;
pub mod grpc;
pub mod monitoring;
pub mod pods_file;
pub mod registry;
