//! PeerAuthentication resolution: the mTLS mode of one workload port, and the policy that
//! decided it, exactly as Istio composes it (`ComposePeerAuthentication`).
//!
//! Candidates: mesh-wide policies (root namespace, no selector), namespace-wide ones (the
//! workload's namespace, no selector) and workload ones (the workload's namespace, a selector
//! matching its labels; a selector in the root namespace is ignored). Of each scope the oldest
//! wins (paymesh: the first in load order, files carry no creation time). Then, from the top,
//! each scope's mode replaces its parent's unless it is UNSET; a workload policy's
//! `portLevelMtls` entry for the *container* port replaces that (UNSET inherits). Nothing set
//! anywhere: PERMISSIVE, the mesh default. Pure and offline: `paymesh tls-check` calls it too.

use std::collections::BTreeMap;

use paymesh_api::model::MtlsMode;
use paymesh_config::Store;
use paymesh_config::resource::{Resource, Spec};
use paymesh_config::security::peer_authentication::{MtlsMode as ConfigMode, PortKey};

/// What the policy decided for a port, and who decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthnDecision {
    /// The resolved mode.
    pub mode: MtlsMode,
    /// `namespace/name` of the deciding PeerAuthentication, or `mesh default`.
    pub policy: String,
}

/// The name given when no policy sets a mode.
pub const MESH_DEFAULT: &str = "mesh default";

/// The mode of `port` (a container port) of a workload in `namespace` with `labels`.
pub fn resolve(
    store: &Store,
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port: u16,
) -> PeerAuthnDecision {
    let mut mesh = None;
    let mut namespace_wide = None;
    let mut workload = None;
    for (resource, policy) in store.typed("PeerAuthentication", Spec::peer_authentication) {
        let selector = policy.selector.as_ref().filter(|s| !s.match_labels.is_empty());
        let ns = resource.namespace();
        match selector {
            None if ns == root_namespace => {
                mesh.get_or_insert((resource, policy));
            }
            None if ns == namespace => {
                namespace_wide.get_or_insert((resource, policy));
            }
            Some(selector) if ns == namespace && ns != root_namespace && selector.matches(labels) => {
                workload.get_or_insert((resource, policy));
            }
            _ => {}
        }
    }
    let mut decision = PeerAuthnDecision { mode: MtlsMode::Permissive, policy: MESH_DEFAULT.to_owned() };
    for (resource, policy) in [mesh, namespace_wide, workload].into_iter().flatten() {
        apply(&mut decision, resource, policy.mtls.map(|m| m.mode));
    }
    if let Some((resource, policy)) = workload {
        let port_mode =
            policy.port_level_mtls.as_ref().and_then(|ports| ports.get(&PortKey(i64::from(port))));
        apply(&mut decision, resource, port_mode.map(|m| m.mode));
    }
    decision
}

fn apply(decision: &mut PeerAuthnDecision, resource: &Resource, mode: Option<ConfigMode>) {
    let mode = match mode {
        None | Some(ConfigMode::Unset) => return,
        Some(ConfigMode::Strict) => MtlsMode::Strict,
        Some(ConfigMode::Permissive) => MtlsMode::Permissive,
        Some(ConfigMode::Disable) => MtlsMode::Disable,
    };
    *decision =
        PeerAuthnDecision { mode, policy: format!("{}/{}", resource.namespace(), resource.meta.name) };
}

/// Istio's name of a mode (`STRICT`).
pub fn mode_name(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Disable => "DISABLE",
    }
}
