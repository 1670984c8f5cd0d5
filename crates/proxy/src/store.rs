//! Runtime state that outlives config pushes: connection pools, per-cluster state (the
//! round-robin cursor, the circuit breaker's counts) and per-endpoint state (requests in flight,
//! outlier detection's counts and ejections).
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

use std::net::SocketAddr;

use paymesh_api::model::ConnectionPool;

use crate::breaker::Breaker;
use crate::outlier::EndpointState;
use crate::transport::pool::Pools;
use crate::weak_map::shared;

/// The state of one cluster, shared by every index that has the cluster with the same limits.
#[derive(Debug, Default)]
pub struct ClusterState {
    cursor: AtomicUsize,
    /// The circuit breaker, when the cluster has limits.
    pub breaker: Option<Breaker>,
    /// Held while an ejection is decided, so two endpoints crossing their thresholds at once
    /// cannot both pass the `maxEjectionPercent` check (a rare path: contention is nil).
    pub ejecting: std::sync::Mutex<()>,
}

impl ClusterState {
    /// The round-robin turn of the next request: increases by one per call.
    pub fn next_turn(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }
}

/// A cluster's state is kept while its name and limits stay; new limits start new counts.
type ClusterKey = (String, ConnectionPool, bool);

/// The state kept across pushes.
pub struct Store {
    pools: Pools,
    clusters: HashMap<ClusterKey, Weak<ClusterState>>,
    endpoints: HashMap<(String, SocketAddr), Weak<EndpointState>>,
}

impl Store {
    /// A store dialing through `pools`.
    pub fn new(pools: Pools) -> Self {
        Store { pools, clusters: HashMap::new(), endpoints: HashMap::new() }
    }

    /// The connection pools.
    pub fn pools(&mut self) -> &mut Pools {
        &mut self.pools
    }

    /// The state of cluster `name` with `limits` (`http1`: its requests hold a connection each):
    /// the one an index still holds, else a fresh one.
    pub fn cluster(&mut self, name: &str, limits: &ConnectionPool, http1: bool) -> Arc<ClusterState> {
        let key = (name.to_owned(), limits.clone(), http1);
        let Ok(state) = shared::<_, _, Infallible>(&mut self.clusters, key, || {
            Ok(ClusterState { breaker: Breaker::new(limits, http1), ..ClusterState::default() })
        });
        state
    }

    /// The state of the endpoint at `address` in cluster `cluster`.
    pub fn endpoint(&mut self, cluster: &str, address: SocketAddr) -> Arc<EndpointState> {
        let Ok(state) =
            shared::<_, _, Infallible>(&mut self.endpoints, (cluster.to_owned(), address), || {
                Ok(EndpointState::default())
            });
        state
    }

    /// Forgets state (and pools) no index uses any more.
    pub fn prune(&mut self) {
        self.clusters.retain(|_, state| state.strong_count() > 0);
        self.endpoints.retain(|_, state| state.strong_count() > 0);
        self.pools.prune();
    }
}
