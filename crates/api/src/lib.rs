//! The contract between paymesh's proxies and its control plane.
//!
//! - [`model`]: the compiled, proxy-facing config ([`model::ProxyConfig`]) as pure data.
//! - [`delta`]: what changed between two configs ([`delta::ConfigDelta`]), by name, and how a
//!   proxy applies it to the config it runs.
//! - [`pb`]: the gRPC protocol (`paymesh.discovery.v1.MeshDiscovery/Subscribe`): a proxy says
//!   who it is, receives versioned snapshots, and ACKs or NACKs each one.
//! - [`ca`]: Istio's CA protocol (`istio.v1.auth.IstioCertificateService/CreateCertificate`),
//!   the bootstrap token a proxy's first request carries, and the client proxies use.
//! - [`ports`]: the well-known ports, Istio's numbers, so tools and habits carry over.
//!
//! This is the one place where wire types meet the model; both ends depend on it and on
//! nothing of each other.

pub mod ca;
pub mod delta;
pub mod model;

/// Largest `Snapshot.config_json` or `Snapshot.delta_json` a proxy accepts, in bytes; a larger
/// one is NACKed.
pub const MAX_CONFIG_BYTES: usize = 16 << 20;

/// Largest discovery message a proxy reads: a snapshot at [`MAX_CONFIG_BYTES`] and its other
/// fields. A larger message breaks the stream instead of being NACKed.
pub const MAX_SNAPSHOT_MESSAGE_BYTES: usize = MAX_CONFIG_BYTES + (64 << 10);

/// The discovery protocol, generated from `proto/paymesh/discovery/v1/discovery.proto`.
#[allow(unused_qualifications, clippy::all)]
pub mod pb {
    tonic::include_proto!("paymesh.discovery.v1");
}

/// Well-known ports (Istio's conventions).
pub mod ports {
    /// Proxy admin: `/config_dump`, `/healthz`.
    pub const PROXY_ADMIN: u16 = 15000;
    /// Proxy outbound: locally the app's HTTP proxy.
    pub const PROXY_OUTBOUND: u16 = 15001;
    /// Proxy inbound: mutual TLS from other proxies.
    pub const PROXY_INBOUND: u16 = 15006;
    /// Proxy readiness: `/healthz/ready`.
    pub const PROXY_READINESS: u16 = 15021;
    /// Proxy metrics: `/stats/prometheus`.
    pub const PROXY_METRICS: u16 = 15090;
    /// Control plane gRPC over TLS: the CA and config discovery.
    pub const CONTROL_GRPC_TLS: u16 = 15012;
    /// Control plane HTTP: metrics and `/debug/*` (proxy status).
    pub const CONTROL_MONITORING: u16 = 15014;
    /// Ingress gateway locally.
    pub const GATEWAY_HTTP: u16 = 8080;
    /// Dashboard.
    pub const DASHBOARD: u16 = 20001;
}

pub use delta::ConfigDelta;
pub use model::{CodecError, ProxyConfig};
