//! Runtime state that outlives config pushes: connection pools, and per-cluster state (today the
//! load balancer's cursor; circuit-breaker counts, outlier statistics and token buckets join it
//! as those features land).
//!
//! An [`Index`](crate::index::Index) is rebuilt on every push, but it does not own this state:
//! the build asks the store for each cluster's state by name and holds it by handle (`Arc`),
//! as it holds pools. The store remembers handles weakly, so a push that keeps a cluster gets
//! the same state back (a round-robin rotation carries on, a count keeps counting) and a push
//! that drops it lets the state go once the last index and request using it are gone. The
//! store belongs to the discovery task; requests never touch it, only the handles.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crate::transport::pool::Pools;
use crate::weak_map::shared;

/// The state of one cluster, shared by every index that has the cluster.
#[derive(Debug, Default)]
pub struct ClusterState {
    cursor: AtomicUsize,
}

impl ClusterState {
    /// The round-robin turn of the next request: increases by one per call.
    pub fn next_turn(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }
}

/// The state kept across pushes.
pub struct Store {
    pools: Pools,
    clusters: HashMap<String, Weak<ClusterState>>,
}

impl Store {
    /// A store dialing through `pools`.
    pub fn new(pools: Pools) -> Self {
        Store { pools, clusters: HashMap::new() }
    }

    /// The connection pools.
    pub fn pools(&mut self) -> &mut Pools {
        &mut self.pools
    }

    /// The state of cluster `name`: the one an index still holds, else a fresh one.
    pub fn cluster(&mut self, name: &str) -> Arc<ClusterState> {
        let Ok(state) =
            shared::<_, _, Infallible>(&mut self.clusters, name.to_owned(), || Ok(ClusterState::default()));
        state
    }

    /// Forgets state (and pools) no index uses any more.
    pub fn prune(&mut self) {
        self.clusters.retain(|_, state| state.strong_count() > 0);
        self.pools.prune();
    }
}
