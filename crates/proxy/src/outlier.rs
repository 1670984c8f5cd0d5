//! Per-endpoint state a proxy keeps about its upstreams: the requests it has in flight to each
//! (least-request balancing reads them) and outlier detection (Envoy's consecutive-error
//! ejection, configured by a DestinationRule's `outlierDetection`).
//!
//! Each attempt's outcome is recorded against its endpoint: a 5xx answer counts towards
//! `consecutive5xxErrors`, a 502/503/504 also towards `consecutiveGatewayErrors`; a local failure
//! (connect failure, reset, timeout) counts as a 503 unless `splitExternalLocalOriginErrors`, then
//! towards `consecutiveLocalOriginFailures` alone; any other answer resets the counts it is not
//! part of. Reaching a threshold ejects the endpoint for `baseEjectionTime` × the number of times
//! it was ejected (capped at 300 s), unless that would put more than `maxEjectionPercent` of the
//! cluster's endpoints out at once. The multiplier falls by one per `interval` the endpoint stays
//! in. An ejected endpoint returns when its time is up, read lazily when endpoints are picked
//! (Envoy returns it at its next interval tick).
//!
//! Everything is an atomic on the endpoint's state, shared by every index that has the endpoint
//! (via the [`Store`](crate::store::Store)), so counts and ejections survive config pushes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use paymesh_api::model::{MAX_EJECTION_MS, OutlierDetection};

/// Milliseconds since the first call: the clock of ejections.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Ejection deadlines are compared with `> now`, so the clock starts at 1, never 0 ("in").
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
}

/// What one attempt to an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Answered(u16),
    /// No answer: the connection failed, was reset, or the attempt timed out.
    LocalFailure,
}

/// What this proxy knows of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointState {
    active: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Ejected while `now_ms() < ejected_until`.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl EndpointState {
    /// Requests in flight to the endpoint.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(Arc::clone(self))
    }

    /// Whether the endpoint is out at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Records `outcome` under `policy`; returns whether it crossed a threshold (the caller
    /// then asks [`EndpointState::eject`]).
    pub fn record(&self, policy: &OutlierDetection, outcome: Outcome) -> bool {
        let (five_xx, gateway, local) = match outcome {
            Outcome::Answered(status) => {
                self.consecutive_local.store(0, Ordering::Relaxed);
                (status >= 500, matches!(status, 502..=504), false)
            }
            Outcome::LocalFailure if policy.split_external_local_origin_errors => (false, false, true),
            Outcome::LocalFailure => (true, true, false),
        };
        let count = |counter: &AtomicU32, hit: bool, threshold: Option<u32>| {
            if !hit {
                counter.store(0, Ordering::Relaxed);
                return false;
            }
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            threshold.is_some_and(|t| n >= t)
        };
        let by_5xx = count(&self.consecutive_5xx, five_xx, policy.consecutive_5xx);
        let by_gateway = count(&self.consecutive_gateway, gateway, policy.consecutive_gateway_errors);
        let by_local =
            local && count(&self.consecutive_local, true, policy.consecutive_local_origin_failures);
        by_5xx || by_gateway || by_local
    }

    /// Ejects the endpoint at `now` when `allowed` (the cluster's ejection cap has room) and it
    /// is not out already; returns whether it did. Counts restart either way.
    pub fn eject(&self, policy: &OutlierDetection, now: u64, allowed: bool) -> bool {
        for counter in [&self.consecutive_5xx, &self.consecutive_gateway, &self.consecutive_local] {
            counter.store(0, Ordering::Relaxed);
        }
        let previous = self.ejected_until.load(Ordering::Relaxed);
        if !allowed || previous > now {
            return false;
        }
        // One step less severe per interval spent in since the last ejection ended.
        let healthy_intervals = if previous == 0 { 0 } else { (now - previous) / policy.interval_ms.max(1) };
        let before = u64::from(self.ejections.load(Ordering::Relaxed)).saturating_sub(healthy_intervals);
        let ejections = before + 1;
        let cap = MAX_EJECTION_MS.max(policy.base_ejection_ms);
        let until = now.saturating_add(policy.base_ejection_ms.saturating_mul(ejections).min(cap));
        if self.ejected_until.compare_exchange(previous, until, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return false;
        }
        self.ejections.store(u32::try_from(ejections).unwrap_or(u32::MAX), Ordering::Relaxed);
        true
    }
}

/// A request in flight to an endpoint; counted until dropped.
#[derive(Debug)]
pub struct ActiveRequest(Arc<EndpointState>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether ejecting one more of `total` endpoints, `ejected` of them out already, stays within
/// `max_percent`.
pub fn ejection_allowed(total: usize, ejected: usize, max_percent: u32) -> bool {
    (ejected + 1) * 100 <= total * max_percent as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(3),
            consecutive_gateway_errors: None,
            consecutive_local_origin_failures: None,
            split_external_local_origin_errors: false,
            interval_ms: 1000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 50,
            min_health_percent: 0,
        }
    }

    #[test]
    fn consecutive_5xx_cross_the_threshold_and_a_success_resets_the_count() {
        let (state, policy) = (EndpointState::default(), policy());
        assert!(!state.record(&policy, Outcome::Answered(500)));
        assert!(!state.record(&policy, Outcome::LocalFailure), "a local failure is a 503 when not split");
        assert!(!state.record(&policy, Outcome::Answered(200)));
        assert!(!state.record(&policy, Outcome::Answered(503)));
        assert!(!state.record(&policy, Outcome::Answered(502)));
        assert!(state.record(&policy, Outcome::Answered(504)));
    }

    #[test]
    fn split_local_failures_count_on_their_own() {
        let policy = OutlierDetection {
            split_external_local_origin_errors: true,
            consecutive_local_origin_failures: Some(2),
            ..policy()
        };
        let state = EndpointState::default();
        assert!(!state.record(&policy, Outcome::LocalFailure));
        assert!(state.record(&policy, Outcome::LocalFailure));
        assert_eq!(state.consecutive_5xx.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn ejections_grow_with_their_count_capped_and_shrink_with_healthy_intervals() {
        let (state, policy) = (EndpointState::default(), policy());
        assert!(state.eject(&policy, 1, true));
        assert!(state.is_ejected(30_000) && !state.is_ejected(30_001));
        assert!(!state.eject(&policy, 100, true), "already out");
        assert!(state.eject(&policy, 30_001, true));
        assert!(state.is_ejected(90_000), "second ejection lasts twice as long");
        let later = 90_001 + 10 * 1000;
        assert!(state.eject(&policy, later, true));
        assert!(!state.is_ejected(later + 30_000), "ten healthy intervals reset the multiplier");
        assert!(!state.eject(&policy, u64::MAX / 4, false), "refused by the cap");
    }

    #[test]
    fn the_cap_keeps_a_single_endpoint_and_half_of_two_in() {
        assert!(!ejection_allowed(1, 0, 50));
        assert!(ejection_allowed(2, 0, 50));
        assert!(!ejection_allowed(2, 1, 50));
        assert!(ejection_allowed(3, 0, 50) && !ejection_allowed(3, 1, 50));
        assert!(ejection_allowed(1, 0, 100));
    }

    #[test]
    fn active_requests_are_counted_while_their_guard_lives() {
        let state = Arc::new(EndpointState::default());
        let (a, b) = (state.begin(), state.begin());
        assert_eq!(state.active(), 2);
        drop((a, b));
        assert_eq!(state.active(), 0);
    }
}
