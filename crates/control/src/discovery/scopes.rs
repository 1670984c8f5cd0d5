//! The shared outbound parts of the current config version, one per sidecar scope in use, and
//! the shared outbound parts of the deltas towards them.
//!
//! When a config change wakes every stream, the first stream of each scope compiles and
//! encodes its [`Outbound`] on the blocking pool; the others of that scope wait for it and
//! only splice their own parts in. Likewise the first stream whose proxy runs a given part
//! computes the [`OutboundDelta`] from it to the new one, and the other streams with the same
//! pair reuse it. A newer version replaces the whole set, so the previous version's parts and
//! deltas are freed as soon as no stream still holds them (a stream holds only the part its
//! proxy last ACKed). A stream still working on an older version (a proxy connecting just as a
//! change lands) compiles its own.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

use crate::compile::scope::{Outbound, OutboundDelta, ScopeKey, label_keys};
use crate::config_store::{Accepted, Version};
use crate::registry::Workload;

/// One scope's outbound part, compiled at most once.
pub type Slot = Arc<OnceCell<Arc<Outbound>>>;

/// The outbound part of one delta, computed at most once.
pub type DeltaSlot = Arc<OnceCell<Arc<OutboundDelta>>>;

/// The outbound parts of one version.
#[derive(Debug)]
struct Generation {
    version: Version,
    /// The labels that tell scopes apart at this version.
    keys: BTreeSet<String>,
    outbound: HashMap<ScopeKey, Slot>,
    /// Deltas towards this version's parts, by (base part id, new part id).
    deltas: HashMap<(u64, u64), DeltaSlot>,
}

/// The outbound parts of the newest version asked for.
#[derive(Debug, Default)]
pub struct Scopes {
    current: Mutex<Option<Generation>>,
}

impl Scopes {
    /// The slot of `proxy`'s scope at `accepted`'s version: shared with every other proxy of
    /// that scope, or a private one when a newer version is already being served.
    pub fn slot(&self, accepted: &Accepted, proxy: &Workload) -> Slot {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = current.as_ref().is_some_and(|g| g.version > accepted.version);
        if stale {
            return Slot::default();
        }
        if current.as_ref().is_none_or(|g| g.version < accepted.version) {
            *current = Some(Generation {
                version: accepted.version,
                keys: label_keys(&accepted.store),
                outbound: HashMap::new(),
                deltas: HashMap::new(),
            });
        }
        let Some(generation) = current.as_mut() else { return Slot::default() };
        let key = ScopeKey::of(proxy, &generation.keys);
        Arc::clone(generation.outbound.entry(key).or_default())
    }

    /// The slot of the delta from part `base` to part `new` (compiled at `version`): shared
    /// while `version` is the current one, private otherwise.
    pub fn delta_slot(&self, version: Version, base: u64, new: u64) -> DeltaSlot {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match current.as_mut().filter(|g| g.version == version) {
            Some(generation) => Arc::clone(generation.deltas.entry((base, new)).or_default()),
            None => DeltaSlot::default(),
        }
    }
}
