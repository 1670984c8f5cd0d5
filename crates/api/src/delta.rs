//! Delta snapshots: what changed between two [`ProxyConfig`]s, by name, as pure data.
//!
//! A [`ConfigDelta`] carries, for each named collection (listeners, route configs, clusters,
//! endpoints), the items to upsert — whole, each [`Placed`] at its index in the new list — and
//! the names to remove; `node` and `mesh` only when they changed. A route config that stays
//! where it was but changed is not sent whole: its virtual hosts are a collection of their own
//! ([`RouteVirtualHosts`]), since one route config per port holds a virtual host for every
//! service on that port, and a new Service adds one. The control plane computes it
//! ([`ConfigDelta::between`], or [`plan`] over already-encoded items), the proxy applies it to
//! the config it runs ([`ConfigDelta::apply`]) and gets exactly the config a full snapshot would
//! carry, in the same order: the items a delta leaves alone keep their relative order (an item
//! that moved against them is sent again), and every upserted item lands at its index.
//!
//! Why: at a thousand services a full config is megabytes, and one Service change touches a
//! handful of clusters; sending and decoding only those is what keeps a push under a second.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{
    Cluster, ClusterEndpoints, CodecError, Listener, MeshSettings, Node, ProxyConfig, RouteConfig,
    VirtualHost,
};

/// An item of a named collection.
pub trait Named {
    /// The collection, in messages (`cluster`).
    const KIND: &'static str;
    /// The item's name, unique in its collection.
    fn name(&self) -> &str;
}

/// Shared items (the large collections are `Arc`s, so applying a delta copies pointers).
impl<T: Named> Named for Arc<T> {
    const KIND: &'static str = T::KIND;
    fn name(&self) -> &str {
        T::name(self)
    }
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

impl Named for VirtualHost {
    const KIND: &'static str = "virtual host";
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
    /// Virtual host changes inside route configs the delta does not upsert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<RouteVirtualHosts>,
    /// Cluster changes.
    #[serde(default, skip_serializing_if = "CollectionDelta::is_empty")]
    pub clusters: CollectionDelta<Arc<Cluster>>,
    /// Endpoint changes (by cluster name).
    #[serde(default, skip_serializing_if = "CollectionDelta::is_empty")]
    pub endpoints: CollectionDelta<Arc<ClusterEndpoints>>,
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

/// The virtual host changes of one route config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteVirtualHosts {
    /// The route config's name.
    pub route: String,
    /// Its virtual hosts' changes.
    pub virtual_hosts: CollectionDelta<Arc<VirtualHost>>,
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
    /// The delta changes the virtual hosts of a route config the base does not have (or that
    /// the same delta upserts whole).
    #[error("delta changes virtual hosts of unknown route config {name:?}")]
    UnknownRoute {
        /// The route config.
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

/// `items` as (name, ()) pairs: for [`plan`], every item equal to the one of its name, so only
/// new and moved items are upserted.
fn names_only<T: Named>(items: &[T]) -> Vec<(&str, ())> {
    items.iter().map(|item| (item.name(), ())).collect()
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

/// The route configs' change from `old` to `new`: new and moved route configs whole, and the
/// virtual host changes of the others (whole too when their virtual host names repeat).
fn routes_between(
    old: &[RouteConfig],
    new: &[RouteConfig],
) -> Result<(CollectionDelta<RouteConfig>, Vec<RouteVirtualHosts>), DeltaError> {
    let kept = plan(RouteConfig::KIND, &names_only(old), &names_only(new))?;
    let old_by_name: HashMap<&str, &RouteConfig> = old.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut upsert = kept.upsert.clone();
    let mut virtual_hosts = Vec::new();
    let mut placed = kept.upsert.iter().peekable();
    for (i, route) in new.iter().enumerate() {
        if placed.next_if_eq(&&i).is_some() {
            continue;
        }
        let Some(before) = old_by_name.get(route.name.as_str()).filter(|before| **before != route) else {
            continue;
        };
        match CollectionDelta::between(&before.virtual_hosts, &route.virtual_hosts) {
            Ok(delta) => {
                virtual_hosts.push(RouteVirtualHosts { route: route.name.clone(), virtual_hosts: delta })
            }
            Err(_) => upsert.push(i),
        }
    }
    upsert.sort_unstable();
    let routes = CollectionDelta {
        upsert: upsert
            .into_iter()
            .map(|i| Placed { at: u32::try_from(i).unwrap_or(u32::MAX), item: new[i].clone() })
            .collect(),
        remove: kept.remove.iter().map(|&j| old[j].name.clone()).collect(),
    };
    Ok((routes, virtual_hosts))
}

/// `base`'s route configs with `routes` applied, then each of `virtual_hosts`.
fn apply_routes(
    routes: CollectionDelta<RouteConfig>,
    virtual_hosts: Vec<RouteVirtualHosts>,
    base: &[RouteConfig],
) -> Result<Vec<RouteConfig>, DeltaError> {
    let upserted: HashSet<String> = routes.upsert.iter().map(|p| p.item.name.clone()).collect();
    let mut result = routes.apply(base)?;
    let mut patched = HashSet::with_capacity(virtual_hosts.len());
    for patch in virtual_hosts {
        if !patched.insert(patch.route.clone()) {
            return Err(DeltaError::DuplicateInDelta { kind: RouteConfig::KIND, name: patch.route });
        }
        let route = result
            .iter_mut()
            .find(|r| r.name == patch.route)
            .filter(|r| !upserted.contains(&r.name))
            .ok_or_else(|| DeltaError::UnknownRoute { name: patch.route.clone() })?;
        route.virtual_hosts = patch.virtual_hosts.apply(&route.virtual_hosts)?;
    }
    Ok(result)
}

impl ConfigDelta {
    /// The change from `old` to `new` (`new`'s version).
    pub fn between(old: &ProxyConfig, new: &ProxyConfig) -> Result<Self, DeltaError> {
        let (routes, virtual_hosts) = routes_between(&old.routes, &new.routes)?;
        Ok(ConfigDelta {
            version: new.version.clone(),
            node: (old.node != new.node).then(|| new.node.clone()),
            mesh: (old.mesh != new.mesh).then(|| new.mesh.clone()),
            listeners: CollectionDelta::between(&old.listeners, &new.listeners)?,
            routes,
            virtual_hosts,
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
            && self.virtual_hosts.is_empty()
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
            routes: apply_routes(self.routes, self.virtual_hosts, &base.routes)?,
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
