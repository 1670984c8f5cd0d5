//! The compiler: Istio resources and the registry into one [`ProxyConfig`] per proxy.
//!
//! [`compile`] is a pure function of the accepted config and the proxy: the push server calls
//! it for every connected proxy on each accepted change and sends the result only when it
//! differs from what that proxy has ([`content_digest`]). Sidecars and gateways have their own
//! module; [`cluster`] builds upstreams for both, [`routes`] turns VirtualService rules into
//! routes, [`peer_authn`] resolves inbound mTLS, [`naming`] holds Istio's names, and
//! [`unsupported`] lists what the model cannot express yet, for `/debug/configz`. The push
//! server builds sidecar snapshots through [`scope`]: the outbound part compiled and encoded
//! once per scope, the same bytes as [`compile`] then [`ProxyConfig::encode`].

pub mod cluster;
pub mod cluster_policy;
pub mod gateway;
pub mod naming;
pub mod peer_authn;
pub mod route_policy;
pub mod routes;
pub mod scope;
pub mod sidecar;
pub mod unsupported;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use paymesh_api::model::{
    Cluster, ClusterEndpoints, Listener, MeshSettings, Node, ProxyConfig, ProxyKind, RouteConfig,
};
use paymesh_config::Store;

use crate::registry::{Registry, Workload};

/// Control-plane settings the compiler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Workload certificate lifetime, seconds.
    pub cert_ttl_secs: u64,
    /// Local mode: a Gateway server port P listens on P + offset.
    pub gateway_port_offset: u16,
    /// Where a Gateway's `credentialName` files live (`<dir>/<name>/tls.crt`).
    pub credentials_dir: PathBuf,
    /// Istio's root namespace (mesh-wide policy).
    pub root_namespace: String,
}

/// Everything one compilation reads.
pub struct Inputs<'a> {
    /// The resources.
    pub store: &'a Store,
    /// Services and pods.
    pub registry: &'a Registry,
    /// Control-plane settings.
    pub settings: &'a Settings,
    /// The proxy's workload.
    pub proxy: &'a Workload,
}

impl Inputs<'_> {
    /// Istio's root namespace.
    pub fn root_namespace(&self) -> &str {
        &self.settings.root_namespace
    }
}

/// The parts a sidecar or gateway compilation produces.
pub struct Compiled {
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Route configs.
    pub routes: Vec<RouteConfig>,
    /// Clusters, sorted by name.
    pub clusters: Vec<Cluster>,
    /// Their endpoints, in the same order.
    pub endpoints: Vec<ClusterEndpoints>,
}

/// Why no config could be compiled for a proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The pod is in no pods file.
    #[error("pod {namespace}/{pod} is not in the registry")]
    UnknownPod {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
    },
    /// The pod has no IP yet.
    #[error("pod {namespace}/{pod} has no status.podIP")]
    NoIp {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
    },
    /// The compiled config did not encode as JSON.
    #[error("config of pod {namespace}/{pod} did not encode: {reason}")]
    Encode {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// The encoder's error.
        reason: String,
    },
}

/// The workload of pod `namespace/pod` and its IP: a proxy config needs both.
fn proxy_workload<'a>(
    registry: &'a Registry,
    namespace: &str,
    pod: &str,
) -> Result<(&'a Workload, IpAddr), CompileError> {
    let unknown = || CompileError::UnknownPod { namespace: namespace.to_owned(), pod: pod.to_owned() };
    let proxy = registry.workload(namespace, pod).ok_or_else(unknown)?;
    let ip = proxy
        .ip
        .ok_or_else(|| CompileError::NoIp { namespace: namespace.to_owned(), pod: pod.to_owned() })?;
    Ok((proxy, ip))
}

/// The config of the proxy of pod `namespace/pod`, as `kind`, at `version`.
pub fn compile(
    store: &Store,
    registry: &Registry,
    settings: &Settings,
    namespace: &str,
    pod: &str,
    kind: ProxyKind,
    version: impl std::fmt::Display,
) -> Result<ProxyConfig, CompileError> {
    let (proxy, ip) = proxy_workload(registry, namespace, pod)?;
    let inputs = Inputs { store, registry, settings, proxy };
    let Compiled { listeners, routes, clusters, endpoints } = match kind {
        ProxyKind::Sidecar => sidecar::compile(&inputs, ip),
        ProxyKind::Gateway => gateway::compile(&inputs, ip),
    };
    Ok(ProxyConfig {
        version: version.to_string(),
        node: Node {
            pod: pod.to_owned(),
            namespace: namespace.to_owned(),
            ip,
            kind,
            identity: proxy.identity.clone(),
        },
        mesh: MeshSettings {
            trust_domain: settings.trust_domain.clone(),
            cert_ttl_secs: settings.cert_ttl_secs,
        },
        listeners,
        routes,
        clusters: clusters.into_iter().map(Arc::new).collect(),
        endpoints: endpoints.into_iter().map(Arc::new).collect(),
    })
}

/// A digest of everything in `config` but its version: a stream keeps this instead of the last
/// config it sent (which costs megabytes per proxy in a large mesh) to tell whether a new
/// version changes anything for its proxy.
pub fn content_digest(config: &ProxyConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&config.node, &config.mesh, &config.listeners, &config.routes, &config.clusters, &config.endpoints)
        .hash(&mut hasher);
    hasher.finish()
}
