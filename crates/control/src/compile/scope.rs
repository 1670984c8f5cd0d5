//! Sidecar configs built from a part shared by every proxy of a scope.
//!
//! What a sidecar sees of the mesh (its outbound routes, clusters and endpoints, the bulk of
//! its config) depends on the proxy only through its namespace and a few of its labels: those
//! a `Sidecar` resource's `workloadSelector` or a VirtualService match's `sourceLabels` reads.
//! [`ScopeKey`] is exactly that; proxies with equal keys get equal [`Outbound`]s, so it is
//! compiled and JSON-encoded once per scope and version, and each proxy's snapshot is spliced
//! from it and the proxy's own parts (node, listeners with its inbound chains) by
//! [`encode_sidecar`]: the bytes are those [`ProxyConfig::encode`] writes for the whole config.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use paymesh_api::model::{MeshSettings, Node, ProxyConfig, ProxyKind, TcpRoute};
use paymesh_config::Store;
use paymesh_config::resource::Spec;
use serde::Serialize;

use super::{CompileError, Inputs, Settings, content_digest, proxy_workload, sidecar};
use crate::registry::{Registry, Workload};

/// Label keys that can change what a sidecar sees: those of every Sidecar resource's
/// `workloadSelector` and of every VirtualService match's `sourceLabels`.
pub fn label_keys(store: &Store) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (_, sidecar) in store.typed("Sidecar", Spec::sidecar) {
        keys.extend(sidecar.workload_selector.iter().flat_map(|s| s.labels.keys().cloned()));
    }
    for (_, vs) in store.typed("VirtualService", Spec::virtual_service) {
        let http = vs.http.iter().flat_map(|r| &r.matches).map(|m| &m.source_labels);
        let tls = vs.tls.iter().flat_map(|r| &r.matches).map(|m| &m.source_labels);
        let tcp = vs.tcp.iter().flat_map(|r| &r.matches).map(|m| &m.source_labels);
        keys.extend(http.chain(tls).chain(tcp).flat_map(|labels| labels.keys().cloned()));
    }
    keys
}

/// Which proxies share an [`Outbound`]: the namespace, and the values (or absence) of the
/// proxy's labels among [`label_keys`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey {
    namespace: String,
    labels: BTreeMap<String, Option<String>>,
}

impl ScopeKey {
    /// The scope of `proxy` when `keys` are the labels that matter.
    pub fn of(proxy: &Workload, keys: &BTreeSet<String>) -> Self {
        ScopeKey {
            namespace: proxy.namespace.clone(),
            labels: keys.iter().map(|k| (k.clone(), proxy.labels.get(k).cloned())).collect(),
        }
    }
}

/// The shared part of the sidecar configs of one scope, encoded.
#[derive(Debug)]
pub struct Outbound {
    /// `virtualOutbound`'s TCP routes (they sit in a per-proxy listener).
    tcp: Vec<TcpRoute>,
    /// JSON arrays of the route configs, clusters and endpoints.
    routes: Vec<u8>,
    clusters: Vec<u8>,
    endpoints: Vec<u8>,
    /// A digest of the content.
    digest: u64,
}

impl Outbound {
    /// Compiles and encodes what the sidecar of `inputs.proxy` sees; valid for every proxy of
    /// its [`ScopeKey`].
    pub fn compile(inputs: &Inputs<'_>) -> Result<Self, CompileError> {
        let sidecar::Outbound { tcp, routes, clusters, endpoints } = sidecar::outbound(inputs);
        let mut hasher = DefaultHasher::new();
        (&tcp, &routes, &clusters, &endpoints).hash(&mut hasher);
        let encode_error = |e: serde_json::Error| CompileError::Encode {
            namespace: inputs.proxy.namespace.clone(),
            pod: inputs.proxy.name.clone(),
            reason: e.to_string(),
        };
        Ok(Outbound {
            routes: serde_json::to_vec(&routes).map_err(encode_error)?,
            clusters: serde_json::to_vec(&clusters).map_err(encode_error)?,
            endpoints: serde_json::to_vec(&endpoints).map_err(encode_error)?,
            tcp,
            digest: hasher.finish(),
        })
    }

    /// Bytes held.
    pub fn encoded_len(&self) -> usize {
        self.routes.len() + self.clusters.len() + self.endpoints.len()
    }
}

/// One proxy's snapshot, ready to send.
#[derive(Debug)]
pub struct Encoded {
    /// The config version.
    pub version: String,
    /// [`ProxyConfig::encode`] of the config.
    pub json: Vec<u8>,
    /// A digest of the content, the version left out: equal digests, nothing to push.
    pub digest: u64,
}

impl Encoded {
    /// `config` encoded whole (gateways, and anything not built from a scope).
    pub fn whole(config: &ProxyConfig) -> Result<Self, CompileError> {
        let json = config.encode().map_err(|e| CompileError::Encode {
            namespace: config.node.namespace.clone(),
            pod: config.node.pod.clone(),
            reason: e.to_string(),
        })?;
        Ok(Encoded { version: config.version.clone(), json, digest: content_digest(config) })
    }
}

/// The sidecar config of pod `namespace/pod` at `version`, its outbound part taken from
/// `outbound` (compiled for the pod's [`ScopeKey`]).
pub fn encode_sidecar(
    store: &Store,
    registry: &Registry,
    settings: &Settings,
    namespace: &str,
    pod: &str,
    version: impl std::fmt::Display,
    outbound: &Outbound,
) -> Result<Encoded, CompileError> {
    let (proxy, ip) = proxy_workload(registry, namespace, pod)?;
    let inputs = Inputs { store, registry, settings, proxy };
    let head = Head {
        version: version.to_string(),
        node: Node {
            pod: pod.to_owned(),
            namespace: namespace.to_owned(),
            ip,
            kind: ProxyKind::Sidecar,
            identity: proxy.identity.clone(),
        },
        mesh: MeshSettings {
            trust_domain: settings.trust_domain.clone(),
            cert_ttl_secs: settings.cert_ttl_secs,
        },
        listeners: sidecar::listeners(&inputs, ip, outbound.tcp.clone()),
    };
    let mut hasher = DefaultHasher::new();
    (&head.node, &head.mesh, &head.listeners, outbound.digest).hash(&mut hasher);
    let encode_error = |e: serde_json::Error| CompileError::Encode {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        reason: e.to_string(),
    };
    let mut json = serde_json::to_vec(&head).map_err(encode_error)?;
    // `head` is written as `{...}`: reopen it and append the shared arrays, in the field order
    // of ProxyConfig.
    json.pop();
    json.reserve(outbound.encoded_len() + 64);
    for (name, part) in
        [("routes", &outbound.routes), ("clusters", &outbound.clusters), ("endpoints", &outbound.endpoints)]
    {
        json.extend_from_slice(b",\"");
        json.extend_from_slice(name.as_bytes());
        json.extend_from_slice(b"\":");
        json.extend_from_slice(part);
    }
    json.push(b'}');
    Ok(Encoded { version: head.version, json, digest: hasher.finish() })
}

/// The per-proxy fields of [`ProxyConfig`], in its field order and with its names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    version: String,
    node: Node,
    mesh: MeshSettings,
    listeners: Vec<paymesh_api::model::Listener>,
}
