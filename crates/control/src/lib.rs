//! paymesh's control plane (`paymesh-control`, istiod's role in Istio).
//!
//! Today it holds the mesh certificate authority, [`ca`]: the root (self-signed or Istio's
//! plug-in CA files), bootstrap tokens, CSR signing, and Istio's CA gRPC API with a client for
//! proxies. The control plane will grow beside it, one module per concern: the service
//! registry (workloads and endpoints from Kubernetes manifests or the API server), the config
//! store and compiler (Istio resources into per-proxy snapshots), the push server proxies
//! subscribe to, the telemetry store, and the dashboard API.

pub mod ca;
