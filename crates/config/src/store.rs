//! The set of resources an analysis or a control plane works on, indexed by kind.

use std::collections::HashMap;
use std::sync::Arc;

use crate::load::{LoadError, Problem};
use crate::resource::{Resource, Spec};

/// Resources by kind, each (kind, namespace, name) at most once.
///
/// Resources are held behind `Arc`s so a control plane can build a new store from a cache of
/// unchanged files (and the analysis store from the serving one) without copying them.
#[derive(Debug, Default)]
pub struct Store {
    resources: Vec<Arc<Resource>>,
    by_kind: HashMap<String, Vec<usize>>,
}

impl Store {
    /// Indexes `resources`; a repeated (kind, namespace, name) is reported and the first kept.
    pub fn new(resources: Vec<Resource>) -> (Self, Vec<LoadError>) {
        Self::from_shared(resources.into_iter().map(Arc::new).collect())
    }

    /// [`Store::new`] over resources shared with a cache or another store.
    pub fn from_shared(resources: Vec<Arc<Resource>>) -> (Self, Vec<LoadError>) {
        let mut store = Self::default();
        let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
        let mut duplicates = Vec::new();
        for resource in resources {
            let key = (resource.kind.clone(), resource.namespace().to_owned(), resource.meta.name.clone());
            if let Some(&first) = seen.get(&key) {
                duplicates.push(LoadError {
                    location: resource.origin.location.clone(),
                    resource: Some(resource.friendly_name()),
                    problem: Problem::Duplicate { first: store.resources[first].origin.location.clone() },
                });
                continue;
            }
            let index = store.resources.len();
            seen.insert(key, index);
            store.by_kind.entry(resource.kind.clone()).or_default().push(index);
            store.resources.push(resource);
        }
        (store, duplicates)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter().map(|r| &**r)
    }

    /// The resources as shared handles, in load order.
    pub fn shared(&self) -> &[Arc<Resource>] {
        &self.resources
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Every resource of `kind`, in load order.
    pub fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.by_kind.get(kind).into_iter().flatten().map(|&i| &*self.resources[i])
    }

    /// Every resource whose typed spec `pick` recognises, with that spec.
    pub fn typed<'a, T: 'a>(
        &'a self,
        kind: &str,
        pick: fn(&Spec) -> Option<&T>,
    ) -> impl Iterator<Item = (&'a Resource, &'a T)> + 'a {
        self.of_kind(kind).filter_map(move |r| pick(&r.spec).map(|t| (r, t)))
    }

    /// The resource of `kind` named `name` in `namespace`.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<&Resource> {
        self.of_kind(kind).find(|r| r.meta.name == name && r.namespace() == namespace)
    }
}
