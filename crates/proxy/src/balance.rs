//! The endpoint choice stage: which endpoint of a cluster an attempt goes to, by the cluster's
//! load-balancing policy, among the endpoints outlier detection has not ejected and, for a retry,
//! preferring one not tried yet (Istio's `previous_hosts` retry predicate).
//!
//! - `ROUND_ROBIN`: the cluster's rotation (kept across config pushes).
//! - `LEAST_REQUEST` (Istio's default): two endpoints at random, the one with fewer requests in
//!   flight from this proxy (Envoy's power of two choices).
//! - `RANDOM`: uniformly at random.
//! - `PASSTHROUGH`: locally there is no original destination to pass through to; treated as
//!   round robin (docs/compat.md).
//! - `consistentHash`: the key (header, cookie, source IP, query parameter) hashed onto a ketama
//!   ring or a Maglev table built once per config; an ejected or tried endpoint hands its keys to
//!   the next on the ring (ring hash), or to a rehash (Maglev), so only its share moves. A request
//!   without the key is balanced at random, as Envoy does.
//!
//! When every endpoint is ejected the cluster has no healthy upstream (503 `UH`), unless
//! `minHealthPercent` puts the cluster in panic first: below that share of healthy endpoints,
//! ejections are ignored.

mod hash;

use std::net::IpAddr;

use http::HeaderMap;
use paymesh_api::model::{Endpoint, LbPolicy, OutlierDetection};

pub use hash::HashTable;

use crate::outlier::{EndpointState, now_ms};

/// What a consistent hash may read of a request.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The query string.
    pub query: Option<&'a str>,
    /// The downstream client's address.
    pub source: IpAddr,
    /// The value of a hash cookie this proxy is about to set (the request had none).
    pub generated_cookie: Option<&'a str>,
}

/// The endpoints already tried by a request (the first 64 by position).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tried(u64);

impl Tried {
    /// Adds the endpoint at `index`.
    pub fn insert(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }

    fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
}

/// One cluster's balancer, built with its index.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    outlier: Option<OutlierDetection>,
}

#[derive(Debug)]
enum Policy {
    RoundRobin,
    LeastRequest,
    Random,
    Hash(HashTable),
}

/// The endpoints a balancer chooses among: their states, in the cluster's order.
pub trait Endpoints {
    /// How many there are.
    fn count(&self) -> usize;
    /// The state of the endpoint at `index`.
    fn state(&self, index: usize) -> &EndpointState;
}

impl Balancer {
    /// The balancer of a cluster with `endpoints` under `lb` and `outlier`.
    pub fn new(lb: &LbPolicy, outlier: Option<&OutlierDetection>, endpoints: &[Endpoint]) -> Self {
        let policy = match lb {
            LbPolicy::RoundRobin | LbPolicy::Passthrough => Policy::RoundRobin,
            LbPolicy::LeastRequest => Policy::LeastRequest,
            LbPolicy::Random => Policy::Random,
            LbPolicy::ConsistentHash(spec) => Policy::Hash(HashTable::new(spec, endpoints)),
        };
        Balancer { policy, outlier: outlier.cloned() }
    }

    /// The hash cookie's name, path and lifetime, when the balancer generates one.
    pub fn cookie_to_generate(&self) -> Option<(&str, &str, u64)> {
        match &self.policy {
            Policy::Hash(table) => table.cookie_to_generate(),
            _ => None,
        }
    }

    /// The cluster's outlier detection, if any.
    pub fn outlier(&self) -> Option<&OutlierDetection> {
        self.outlier.as_ref()
    }

    /// The endpoint for the next attempt: `turn` is the cluster's next round-robin turn (read only
    /// by round robin), `input` the request (read only by a hash). `None`: no healthy endpoint.
    pub fn pick(
        &self,
        endpoints: &impl Endpoints,
        turn: impl FnOnce() -> usize,
        input: &HashInput<'_>,
        tried: Tried,
    ) -> Option<usize> {
        let n = endpoints.count();
        if n == 0 {
            return None;
        }
        let usable = Usable::of(endpoints, self.outlier.as_ref(), tried)?;
        let start = match &self.policy {
            Policy::RoundRobin => turn() % n,
            Policy::Random => fastrand::usize(0..n),
            Policy::LeastRequest => {
                let a = usable.next_from(endpoints, fastrand::usize(0..n))?;
                let b = usable.next_from(endpoints, fastrand::usize(0..n))?;
                return Some(if endpoints.state(b).active() < endpoints.state(a).active() { b } else { a });
            }
            Policy::Hash(table) => match table.key_hash(input) {
                Some(hash) => return table.lookup(hash, |i| usable.allows(endpoints, i)),
                None => fastrand::usize(0..n),
            },
        };
        usable.next_from(endpoints, start)
    }
}

/// Which endpoints an attempt may go to.
struct Usable {
    /// Ejections are read at this time; `None`: ignored (no outlier detection, or panic).
    now: Option<u64>,
    tried: Tried,
    /// Whether an endpoint not tried yet is usable (else tried ones are allowed again).
    untried_left: bool,
}

impl Usable {
    /// `None` when every endpoint is ejected and the cluster is not in panic.
    fn of(endpoints: &impl Endpoints, outlier: Option<&OutlierDetection>, tried: Tried) -> Option<Self> {
        let n = endpoints.count();
        let now = outlier.and_then(|policy| {
            let now = now_ms();
            let healthy = (0..n).filter(|i| !endpoints.state(*i).is_ejected(now)).count();
            let panic = healthy * 100 < n * policy.min_health_percent as usize;
            (!panic).then_some(now)
        });
        let healthy = |i: usize| now.is_none_or(|now| !endpoints.state(i).is_ejected(now));
        if !(0..n).any(healthy) {
            return None;
        }
        let untried_left = (0..n).any(|i| healthy(i) && !tried.contains(i));
        Some(Usable { now, tried, untried_left })
    }

    fn allows(&self, endpoints: &impl Endpoints, index: usize) -> bool {
        self.now.is_none_or(|now| !endpoints.state(index).is_ejected(now))
            && !(self.untried_left && self.tried.contains(index))
    }

    /// The first usable endpoint at or after `start`, wrapping around.
    fn next_from(&self, endpoints: &impl Endpoints, start: usize) -> Option<usize> {
        let n = endpoints.count();
        (0..n).map(|k| (start + k) % n).find(|i| self.allows(endpoints, *i))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    struct States(Vec<Arc<EndpointState>>);

    impl Endpoints for States {
        fn count(&self) -> usize {
            self.0.len()
        }

        fn state(&self, index: usize) -> &EndpointState {
            &self.0[index]
        }
    }

    fn states(n: usize) -> States {
        States((0..n).map(|_| Arc::new(EndpointState::default())).collect())
    }

    fn input(headers: &HeaderMap) -> HashInput<'_> {
        HashInput { headers, query: None, source: IpAddr::from([127, 0, 0, 1]), generated_cookie: None }
    }

    #[test]
    fn round_robin_turns_and_a_retry_prefers_an_endpoint_not_tried() {
        let (endpoints, headers) = (states(3), HeaderMap::new());
        let balancer = Balancer::new(&LbPolicy::RoundRobin, None, &[]);
        let picks: Vec<_> = (0..4)
            .map(|turn| balancer.pick(&endpoints, || turn, &input(&headers), Tried::default()))
            .collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0)]);
        let mut tried = Tried::default();
        tried.insert(1);
        assert_eq!(balancer.pick(&endpoints, || 1, &input(&headers), tried), Some(2));
        tried.insert(0);
        tried.insert(2);
        assert!(balancer.pick(&endpoints, || 1, &input(&headers), tried).is_some(), "all tried: any again");
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let (endpoints, headers) = (states(2), HeaderMap::new());
        let busy: Vec<_> = (0..5).map(|_| endpoints.0[0].begin()).collect();
        let balancer = Balancer::new(&LbPolicy::LeastRequest, None, &[]);
        let to_idle = (0..200)
            .filter(|_| balancer.pick(&endpoints, || 0, &input(&headers), Tried::default()) == Some(1))
            .count();
        // Two draws pick the busy one twice a quarter of the time.
        assert!(to_idle > 120, "{to_idle} of 200 to the idle endpoint");
        drop(busy);
    }
}
