//! Delta snapshots: what changed between two [`ProxyConfig`]s, by name, as pure data.
//!
//! A [`ConfigDelta`] carries, for each named collection (listeners, route configs, clusters,
//! endpoints), the items to upsert — whole, each [`Placed`] at its index in the new list — and
//! the names to remove; `node` and `mesh` only when they changed. The control plane computes it
//! ([`ConfigDelta::between`], or [`plan`] over already-encoded items), the proxy applies it to
//! the config it runs ([`ConfigDelta::apply`]) and gets exactly the config a full snapshot would
//! carry, in the same order: the items a delta leaves alone keep their relative order (an item
//! that moved against them is sent again), and every upserted item lands at its index.
//!
//! Why: at a thousand services a full config is megabytes, and one Service change touches a
//! handful of clusters; sending and decoding only those is what keeps a push under a second.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    Cluster, ClusterEndpoints, CodecError, Listener, MeshSettings, Node, ProxyConfig, RouteConfig,
};

/// An item of a named collection.
pub trait Named {
    /// The collection, in messages (`cluster`).
    const KIND: &'static str;
    /// The item's name, unique in its collection.
    fn name(&self) -> &str;
}

impl Named for Listener {
    const KIND: &'static str = "listener";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for RouteConfig {
    const KIND: &'static str = "route config";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for Cluster {
    const KIND: &'static str = "cluster";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for ClusterEndpoints {
    const KIND: &'static str = "endpoints";
    fn name(&self) -> &str {
        &self.cluster
    }
}

/// The change from a base config to the config of `version` (`Snapshot.delta_json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDelta {
    /// The version the delta leads to.
    pub version: String,
    /// The new node, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// The new mesh settings, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshSettings>,
    /// Listener changes.
    #[serde(default, skip_serializing_if = "CollectionDelta::is_empty")]
    pub listeners: CollectionDelta<Listener>,
    /// Route config changes.
    #[serde(default, skip_serializing_if = "CollectionDelta::is_empty")]
    pub routes: CollectionDelta<RouteConfig>,
    /// Cluster changes.
    #[serde(default, skip_serializing_if = "CollectionDelta::is_empty")]
    pub clusters: CollectionDelta<Cluster>,
    /// Endpoint changes (by cluster name).
    #[serde(default, skip_serializing_if = "CollectionDelta::is_empty")]
    pub endpoints: CollectionDelta<ClusterEndpoints>,
}

/// The change of one named collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionDelta<T> {
    /// Items new, changed or moved, whole, in increasing index order.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<Placed<T>>,
    /// Names of items gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl<T> Default for CollectionDelta<T> {
    fn default() -> Self {
        CollectionDelta { upsert: Vec::new(), remove: Vec::new() }
    }
}

/// An upserted item and its index in the collection after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed<T> {
    /// The index.
    pub at: u32,
    /// The item.
    pub item: T,
}

/// Why a delta could not be computed or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// A config has two items of one name: no delta by name can describe it.
    #[error("two {kind}s are named {name:?}")]
    DuplicateInConfig {
        /// The collection.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The delta removes a name the base does not have.
    #[error("delta removes unknown {kind} {name:?}")]
    UnknownRemove {
        /// The collection.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The delta names an item twice (twice upserted, twice removed, or both).
    #[error("delta names {kind} {name:?} twice")]
    DuplicateInDelta {
        /// The collection.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// An upserted item's index is out of order or past the end of the new list.
    #[error("delta places {kind} {name:?} at index {at}, out of order or past the end of {len} items")]
    Placement {
        /// The collection.
        kind: &'static str,
        /// The item.
        name: String,
        /// Its index.
        at: u32,
        /// Items in the new list.
        len: usize,
    },
}

/// Which items of a collection a delta carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Indexes into the new list of the items to upsert, increasing.
    pub upsert: Vec<usize>,
    /// Indexes into the old list of the items to remove, increasing.
    pub remove: Vec<usize>,
}

impl Plan {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// The plan from `old` to `new`, each a list of (name, value) in collection order, items equal
/// when their values are. An item stays untouched only when it is equal and keeps its order
/// against the other untouched items; every other item of `new` is upserted.
pub fn plan<V: PartialEq>(
    kind: &'static str,
    old: &[(&str, V)],
    new: &[(&str, V)],
) -> Result<Plan, DeltaError> {
    let mut old_at = HashMap::with_capacity(old.len());
    for (i, (name, _)) in old.iter().enumerate() {
        if old_at.insert(*name, i).is_some() {
            return Err(DeltaError::DuplicateInConfig { kind, name: (*name).to_owned() });
        }
    }
    let mut seen = HashSet::with_capacity(new.len());
    let mut upsert = Vec::new();
    let mut last_kept = None;
    for (i, (name, value)) in new.iter().enumerate() {
        if !seen.insert(*name) {
            return Err(DeltaError::DuplicateInConfig { kind, name: (*name).to_owned() });
        }
        match old_at.get(name) {
            Some(&j) if old[j].1 == *value && last_kept.is_none_or(|k| j > k) => last_kept = Some(j),
            _ => upsert.push(i),
        }
    }
    let remove =
        old.iter().enumerate().filter(|(_, (name, _))| !seen.contains(name)).map(|(j, _)| j).collect();
    Ok(Plan { upsert, remove })
}

impl<T: Named + Clone + PartialEq> CollectionDelta<T> {
    /// The change from `old` to `new`.
    pub fn between(old: &[T], new: &[T]) -> Result<Self, DeltaError> {
        let plan = plan(T::KIND, &named_items(old), &named_items(new))?;
        Ok(CollectionDelta {
            upsert: plan
                .upsert
                .iter()
                .map(|&i| Placed { at: u32::try_from(i).unwrap_or(u32::MAX), item: new[i].clone() })
                .collect(),
            remove: plan.remove.iter().map(|&j| old[j].name().to_owned()).collect(),
        })
    }
}

/// `items` as (name, item) pairs, for [`plan`].
fn named_items<T: Named>(items: &[T]) -> Vec<(&str, &T)> {
    items.iter().map(|item| (item.name(), item)).collect()
}

impl<T: Named + Clone> CollectionDelta<T> {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }

    /// `current` with this change applied; an error, and nothing changed, when the delta does
    /// not fit `current`.
    pub fn apply(self, current: &[T]) -> Result<Vec<T>, DeltaError> {
        let kind = T::KIND;
        let present: HashSet<&str> = current.iter().map(Named::name).collect();
        let mut named = HashSet::with_capacity(self.remove.len() + self.upsert.len());
        for name in &self.remove {
            if !present.contains(name.as_str()) {
                return Err(DeltaError::UnknownRemove { kind, name: name.clone() });
            }
            if !named.insert(name.as_str()) {
                return Err(DeltaError::DuplicateInDelta { kind, name: name.clone() });
            }
        }
        for placed in &self.upsert {
            if !named.insert(placed.item.name()) {
                return Err(DeltaError::DuplicateInDelta { kind, name: placed.item.name().to_owned() });
            }
        }
        let survivors: Vec<&T> = current.iter().filter(|item| !named.contains(item.name())).collect();
        let len = survivors.len() + self.upsert.len();
        let mut next = 0usize;
        for placed in &self.upsert {
            let at = usize::try_from(placed.at).unwrap_or(usize::MAX);
            if at < next || at >= len {
                return Err(DeltaError::Placement {
                    kind,
                    name: placed.item.name().to_owned(),
                    at: placed.at,
                    len,
                });
            }
            next = at + 1;
        }
        drop(named);
        let mut result = Vec::with_capacity(len);
        let mut survivors = survivors.into_iter().cloned();
        for placed in self.upsert {
            let at = usize::try_from(placed.at).unwrap_or(usize::MAX);
            // Enough survivors to reach `at`: the indexes were checked to be increasing and
            // below `len`.
            result.extend(survivors.by_ref().take(at.saturating_sub(result.len())));
            result.push(placed.item);
        }
        result.extend(survivors);
        Ok(result)
    }
}

impl ConfigDelta {
    /// The change from `old` to `new` (`new`'s version).
    pub fn between(old: &ProxyConfig, new: &ProxyConfig) -> Result<Self, DeltaError> {
        Ok(ConfigDelta {
            version: new.version.clone(),
            node: (old.node != new.node).then(|| new.node.clone()),
            mesh: (old.mesh != new.mesh).then(|| new.mesh.clone()),
            listeners: CollectionDelta::between(&old.listeners, &new.listeners)?,
            routes: CollectionDelta::between(&old.routes, &new.routes)?,
            clusters: CollectionDelta::between(&old.clusters, &new.clusters)?,
            endpoints: CollectionDelta::between(&old.endpoints, &new.endpoints)?,
        })
    }

    /// Nothing changed but the version.
    pub fn is_empty(&self) -> bool {
        self.node.is_none()
            && self.mesh.is_none()
            && self.listeners.is_empty()
            && self.routes.is_empty()
            && self.clusters.is_empty()
            && self.endpoints.is_empty()
    }

    /// `base` with this change applied: the config of [`ConfigDelta::version`].
    pub fn apply(self, base: &ProxyConfig) -> Result<ProxyConfig, DeltaError> {
        Ok(ProxyConfig {
            version: self.version,
            node: self.node.unwrap_or_else(|| base.node.clone()),
            mesh: self.mesh.unwrap_or_else(|| base.mesh.clone()),
            listeners: self.listeners.apply(&base.listeners)?,
            routes: self.routes.apply(&base.routes)?,
            clusters: self.clusters.apply(&base.clusters)?,
            endpoints: self.endpoints.apply(&base.endpoints)?,
        })
    }

    /// The wire form (`Snapshot.delta_json`).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}
