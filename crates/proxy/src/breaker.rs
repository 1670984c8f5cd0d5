//! The circuit breaker of one cluster, per client proxy: a DestinationRule's `connectionPool`
//! limits, as Envoy enforces them. Over a limit the answer is immediate — 503 with flag `UO` and
//! `x-envoy-overloaded: true` — instead of a queue that grows behind a slow service.
//!
//! - `http2MaxRequests`: requests in flight to the cluster.
//! - `maxConnections`: for a cluster spoken to in HTTP/1.1, requests in flight, since each holds a
//!   connection for its duration (connections are pooled per peer and shared between clusters, so
//!   the limit is on what this cluster uses of them); an HTTP/2 cluster multiplexes one connection
//!   per peer and is bounded by `http2MaxRequests` alone.
//! - `http1MaxPendingRequests`: requests waiting for one of those connections; past it, overflow.
//! - `maxRetries`: retries in flight to the cluster; past it a failed attempt is not retried.
//!
//! Admission is a few atomic operations (a semaphore permit, a counter); a cluster without limits
//! has no breaker at all. The permits live in the request's context until its response body ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use paymesh_api::model::ConnectionPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one cluster and what is in use of them.
#[derive(Debug)]
pub struct Breaker {
    requests: Option<Counter>,
    connections: Option<Arc<Semaphore>>,
    max_pending: u32,
    pending: AtomicU32,
    retries: Option<Counter>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// `http2MaxRequests` requests are in flight.
    Requests,
    /// Every connection is busy and `http1MaxPendingRequests` requests wait already.
    Pending,
}

impl Overflow {
    /// The limit reached, in the words of the DestinationRule.
    pub fn limit(self) -> &'static str {
        match self {
            Overflow::Requests => "http2MaxRequests",
            Overflow::Pending => "maxConnections and http1MaxPendingRequests",
        }
    }
}

/// An admitted request: its slots are given back when this drops.
#[derive(Debug)]
pub struct Admission {
    _request: Option<Slot>,
    _connection: Option<OwnedSemaphorePermit>,
}

impl Breaker {
    /// The breaker of a cluster with `pool`'s limits (`http1`: requests hold a connection each);
    /// `None` when it sets none.
    pub fn new(pool: &ConnectionPool, http1: bool) -> Option<Self> {
        let connections = pool.max_connections.filter(|_| http1);
        let breaker = Breaker {
            requests: pool.max_requests.map(Counter::new),
            connections: connections.map(|n| Arc::new(Semaphore::new(n as usize))),
            max_pending: pool.max_pending_requests.unwrap_or(u32::MAX),
            pending: AtomicU32::new(0),
            retries: pool.max_retries.map(Counter::new),
        };
        let limits = breaker.requests.is_some() || breaker.connections.is_some() || breaker.retries.is_some();
        limits.then_some(breaker)
    }

    /// Admits a request, waiting for a connection when one may be waited for.
    pub async fn admit(&self) -> Result<Admission, Overflow> {
        let request = match &self.requests {
            Some(counter) => Some(counter.take().ok_or(Overflow::Requests)?),
            None => None,
        };
        let connection = match &self.connections {
            None => None,
            Some(semaphore) => match Arc::clone(semaphore).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => Some(self.wait(semaphore).await?),
            },
        };
        Ok(Admission { _request: request, _connection: connection })
    }

    /// Waits for a connection as one of the pending requests, if there is room among them. The
    /// place among the pending is given back however the wait ends (a timeout or a client that
    /// goes away drops it midway).
    async fn wait(&self, semaphore: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, Overflow> {
        let pending = Pending::join(&self.pending, self.max_pending).ok_or(Overflow::Pending)?;
        let permit = Arc::clone(semaphore).acquire_owned().await;
        drop(pending);
        // The semaphore is never closed.
        permit.map_err(|_| Overflow::Pending)
    }

    /// A slot for one retry, when `maxRetries` leaves room.
    pub fn retry(&self) -> Option<Option<Slot>> {
        match &self.retries {
            None => Some(None),
            Some(counter) => counter.take().map(Some),
        }
    }
}

/// A place among the requests waiting for a connection, left on drop.
struct Pending<'a>(&'a AtomicU32);

impl<'a> Pending<'a> {
    /// A place, when fewer than `max` wait.
    fn join(count: &'a AtomicU32, max: u32) -> Option<Self> {
        if count.fetch_add(1, Ordering::Relaxed) >= max {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Pending(count))
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A bounded count of things in flight.
#[derive(Debug)]
struct Counter {
    max: u32,
    used: Arc<AtomicU32>,
}

impl Counter {
    fn new(max: u32) -> Self {
        Counter { max, used: Arc::new(AtomicU32::new(0)) }
    }

    fn take(&self) -> Option<Slot> {
        let used = self.used.fetch_add(1, Ordering::Relaxed);
        if used >= self.max {
            self.used.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(Arc::clone(&self.used)))
    }
}

/// One unit of a [`Counter`], given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pool(max_connections: u32, max_pending: u32) -> ConnectionPool {
        ConnectionPool {
            max_connections: Some(max_connections),
            max_pending_requests: Some(max_pending),
            ..ConnectionPool::default()
        }
    }

    #[test]
    fn no_limits_no_breaker() {
        assert!(Breaker::new(&ConnectionPool::default(), true).is_none());
        assert!(Breaker::new(&pool(1, 1), false).is_none(), "maxConnections does not bound HTTP/2 requests");
    }

    #[tokio::test]
    async fn one_connection_one_pending_then_overflow_and_recovery() {
        let breaker = Arc::new(Breaker::new(&pool(1, 1), true).expect("limits"));
        let first = breaker.admit().await.expect("the connection");
        let waiting = tokio::spawn({
            let breaker = Arc::clone(&breaker);
            async move { breaker.admit().await.map(drop) }
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            while breaker.pending.load(Ordering::Relaxed) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the second request waits");
        assert_eq!(breaker.admit().await.err(), Some(Overflow::Pending));
        drop(first);
        waiting.await.expect("joins").expect("admitted once the connection is free");
        assert!(breaker.admit().await.is_ok(), "recovered");
    }

    #[tokio::test]
    async fn a_pending_request_given_up_leaves_its_place() {
        let breaker = Breaker::new(&pool(1, 1), true).expect("limits");
        let _held = breaker.admit().await.expect("the connection");
        let gave_up = tokio::time::timeout(Duration::from_millis(20), breaker.admit()).await;
        assert!(gave_up.is_err(), "it waited and was cancelled");
        assert_eq!(breaker.pending.load(Ordering::Relaxed), 0);
        let again = tokio::time::timeout(Duration::from_millis(20), breaker.admit()).await;
        assert!(again.is_err(), "a new request may wait again rather than overflow");
    }

    #[tokio::test]
    async fn requests_and_retries_are_counted_and_given_back() {
        let limits =
            ConnectionPool { max_requests: Some(2), max_retries: Some(1), ..ConnectionPool::default() };
        let breaker = Breaker::new(&limits, false).expect("limits");
        let (a, b) = (breaker.admit().await.expect("a"), breaker.admit().await.expect("b"));
        assert_eq!(breaker.admit().await.err(), Some(Overflow::Requests));
        drop(a);
        assert!(breaker.admit().await.is_ok());
        let retry = breaker.retry().expect("a retry slot");
        assert!(breaker.retry().is_none(), "maxRetries: 1");
        drop((retry, b));
        assert!(breaker.retry().is_some());
    }
}
