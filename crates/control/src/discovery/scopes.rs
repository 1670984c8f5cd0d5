//! The shared outbound parts of the current config version, one per sidecar scope in use.
//!
//! When a config change wakes every stream, the first stream of each scope compiles and
//! encodes its [`Outbound`] on the blocking pool; the others of that scope wait for it and
//! only splice their own parts in. A newer version replaces the whole set, so the previous
//! version's parts are freed as soon as no stream is still encoding with them. A stream still
//! working on an older version (a proxy connecting just as a change lands) compiles its own.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

use crate::compile::scope::{Outbound, ScopeKey, label_keys};
use crate::config_store::{Accepted, Version};
use crate::registry::Workload;

/// One scope's outbound part, compiled at most once.
pub type Slot = Arc<OnceCell<Arc<Outbound>>>;

/// The outbound parts of one version.
#[derive(Debug)]
struct Generation {
    version: Version,
    /// The labels that tell scopes apart at this version.
    keys: BTreeSet<String>,
    outbound: HashMap<ScopeKey, Slot>,
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
            });
        }
        let Some(generation) = current.as_mut() else { return Slot::default() };
        let key = ScopeKey::of(proxy, &generation.keys);
        Arc::clone(generation.outbound.entry(key).or_default())
    }
}
