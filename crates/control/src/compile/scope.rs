//! Sidecar configs built from a part shared by every proxy of a scope.
//!
//! What a sidecar sees of the mesh (its outbound routes, clusters and endpoints, the bulk of
//! its config) depends on the proxy only through its namespace and a few of its labels: those
//! a `Sidecar` resource's `workloadSelector` or a VirtualService match's `sourceLabels` reads.
//! [`ScopeKey`] is exactly that; proxies with equal keys get equal [`Outbound`]s, so it is
//! compiled and JSON-encoded once per scope and version, and each proxy's snapshot is spliced
//! from it and the proxy's own parts (node, listeners with its inbound chains) by
//! [`encode_sidecar`]: the bytes are those [`paymesh_api::ProxyConfig::encode`] writes for the whole config.
//!
//! Deltas are built the same way: [`OutboundDelta::between`] two encoded outbound parts (the
//! proxy's base and the new version's) once per scope and pair of versions, by name, two items
//! equal when their encodings are (the encoding is deterministic and decodes back to the item);
//! [`SidecarHead::delta`] adds the proxy's own node and listeners and splices the bytes that
//! [`paymesh_api::ConfigDelta::encode`] writes.

mod part;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use paymesh_api::delta::{CollectionDelta, DeltaError};
use paymesh_api::model::{Listener, MeshSettings, Node, ProxyKind, TcpRoute};
use paymesh_config::Store;
use paymesh_config::resource::Spec;
use serde::Serialize;

use self::part::Part;
use super::{CompileError, Inputs, Settings, proxy_workload, sidecar};
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
    /// Tells this part from every other compiled in this process (deltas are shared by pair).
    id: u64,
    /// `virtualOutbound`'s TCP routes (they sit in a per-proxy listener).
    tcp: Vec<TcpRoute>,
    /// The route configs, clusters and endpoints, encoded.
    routes: Part,
    clusters: Part,
    endpoints: Part,
    /// A digest of the content.
    digest: u64,
}

/// Ids of [`Outbound`]s.
static OUTBOUND_IDS: AtomicU64 = AtomicU64::new(0);

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
            id: OUTBOUND_IDS.fetch_add(1, Ordering::Relaxed),
            routes: Part::encode_routes(&routes).map_err(encode_error)?,
            clusters: Part::encode(&clusters).map_err(encode_error)?,
            endpoints: Part::encode(&endpoints).map_err(encode_error)?,
            tcp,
            digest: hasher.finish(),
        })
    }

    /// Which part this is, among every part compiled in this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A digest of the content: equal digests, equal parts.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Bytes held.
    pub fn encoded_len(&self) -> usize {
        self.routes.json.len() + self.clusters.json.len() + self.endpoints.json.len()
    }
}

/// Why no delta could be made: the proxy gets a full snapshot instead.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    /// A name is not unique in one of the two configs.
    #[error(transparent)]
    Delta(#[from] DeltaError),
    /// A part did not encode.
    #[error("delta did not encode: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The outbound part of a delta between two [`Outbound`]s: each collection's
/// [`CollectionDelta`] as JSON, `None` when it did not change.
#[derive(Debug)]
pub struct OutboundDelta {
    routes: Option<Vec<u8>>,
    /// The `RouteVirtualHosts` list.
    virtual_hosts: Option<Vec<u8>>,
    clusters: Option<Vec<u8>>,
    endpoints: Option<Vec<u8>>,
}

impl OutboundDelta {
    /// What changed from `base` to `new`; an error when a name is not unique in either.
    pub fn between(base: &Outbound, new: &Outbound) -> Result<Self, SpliceError> {
        use paymesh_api::model::{Cluster, ClusterEndpoints};
        let part::RoutesDelta { routes, virtual_hosts } = new.routes.routes_delta_from(&base.routes)?;
        Ok(OutboundDelta {
            routes,
            virtual_hosts,
            clusters: new.clusters.delta_from::<Cluster>(&base.clusters)?,
            endpoints: new.endpoints.delta_from::<ClusterEndpoints>(&base.endpoints)?,
        })
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.encoded_len() == 0
    }

    /// Bytes held.
    pub fn encoded_len(&self) -> usize {
        [&self.routes, &self.virtual_hosts, &self.clusters, &self.endpoints]
            .iter()
            .filter_map(|p| p.as_ref())
            .map(Vec::len)
            .sum()
    }
}

/// One proxy's snapshot, ready to send.
#[derive(Debug)]
pub struct Encoded {
    /// The config version.
    pub version: String,
    /// [`paymesh_api::ProxyConfig::encode`] of the config.
    pub json: Vec<u8>,
    /// A digest of the content, the version left out: equal digests, nothing to push.
    pub digest: u64,
}

/// The per-proxy fields of a sidecar's [`paymesh_api::ProxyConfig`]: everything but its scope's part.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SidecarHead {
    /// The proxy.
    pub node: Node,
    /// Mesh settings.
    pub mesh: MeshSettings,
    /// Its listeners (the outbound one carries the scope's TCP routes).
    pub listeners: Vec<Listener>,
}

impl SidecarHead {
    /// The head of pod `namespace/pod`, whose scope's part is `outbound`.
    pub fn compile(
        store: &Store,
        registry: &Registry,
        settings: &Settings,
        namespace: &str,
        pod: &str,
        outbound: &Outbound,
    ) -> Result<Self, CompileError> {
        let (proxy, ip) = proxy_workload(registry, namespace, pod)?;
        let inputs = Inputs { store, registry, settings, proxy };
        Ok(SidecarHead {
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
        })
    }

    /// A digest of the whole config's content, the version left out.
    pub fn digest(&self, outbound: &Outbound) -> u64 {
        let mut hasher = DefaultHasher::new();
        (&self.node, &self.mesh, &self.listeners, outbound.digest).hash(&mut hasher);
        hasher.finish()
    }

    /// The whole config at `version`, encoded: the bytes of [`paymesh_api::ProxyConfig::encode`].
    pub fn encode(&self, version: &str, outbound: &Outbound) -> Result<Vec<u8>, serde_json::Error> {
        let head = Head { version, node: &self.node, mesh: &self.mesh, listeners: &self.listeners };
        let mut json = serde_json::to_vec(&head)?;
        // `head` is written as `{...}`: reopen it and append the shared arrays, in the field
        // order of ProxyConfig.
        json.pop();
        json.reserve(outbound.encoded_len() + 64);
        for (name, part) in [
            ("routes", &outbound.routes),
            ("clusters", &outbound.clusters),
            ("endpoints", &outbound.endpoints),
        ] {
            splice_field(&mut json, name, &part.json);
        }
        json.push(b'}');
        Ok(json)
    }

    /// The delta from `base` (this proxy's head at the version it runs) to `self` at `version`,
    /// its scope's part of it `outbound`: the bytes of [`paymesh_api::ConfigDelta::encode`]; `None` when
    /// nothing changed.
    pub fn delta(
        &self,
        version: &str,
        base: &SidecarHead,
        outbound: &OutboundDelta,
    ) -> Result<Option<Vec<u8>>, SpliceError> {
        let head = DeltaHead {
            version,
            node: (base.node != self.node).then_some(&self.node),
            mesh: (base.mesh != self.mesh).then_some(&self.mesh),
            listeners: CollectionDelta::between(&base.listeners, &self.listeners)?,
        };
        if head.node.is_none() && head.mesh.is_none() && head.listeners.is_empty() && outbound.is_empty() {
            return Ok(None);
        }
        let mut json = serde_json::to_vec(&head)?;
        json.pop();
        json.reserve(outbound.encoded_len() + 64);
        for (name, part) in [
            ("routes", &outbound.routes),
            ("virtualHosts", &outbound.virtual_hosts),
            ("clusters", &outbound.clusters),
            ("endpoints", &outbound.endpoints),
        ] {
            if let Some(part) = part {
                splice_field(&mut json, name, part);
            }
        }
        json.push(b'}');
        Ok(Some(json))
    }
}

/// Appends `,"name":value` to an open JSON object.
fn splice_field(json: &mut Vec<u8>, name: &str, value: &[u8]) {
    json.extend_from_slice(b",\"");
    json.extend_from_slice(name.as_bytes());
    json.extend_from_slice(b"\":");
    json.extend_from_slice(value);
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
    let head = SidecarHead::compile(store, registry, settings, namespace, pod, outbound)?;
    let version = version.to_string();
    let json = head.encode(&version, outbound).map_err(|e| CompileError::Encode {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Encoded { version, json, digest: head.digest(outbound) })
}

/// The per-proxy fields of [`paymesh_api::ProxyConfig`], in its field order and with its names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    version: &'a str,
    node: &'a Node,
    mesh: &'a MeshSettings,
    listeners: &'a [Listener],
}

/// The per-proxy fields of [`ConfigDelta`], in its field order and with its names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeltaHead<'a> {
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a Node>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh: Option<&'a MeshSettings>,
    #[serde(skip_serializing_if = "CollectionDelta::is_empty")]
    listeners: CollectionDelta<Listener>,
}
