//! When a route's retry policy allows another attempt, and how long to wait before it, as
//! Envoy's router decides (`retry_on` of the route, converted by the control plane from
//! Istio's `retries`).
//!
//! | what the attempt came to              | retried under                                    |
//! |---------------------------------------|--------------------------------------------------|
//! | connect failure                       | connect-failure, reset, 5xx, gateway-error       |
//! | `REFUSED_STREAM`                      | refused-stream, reset, 5xx, gateway-error        |
//! | reset after the request was sent      | reset, 5xx, gateway-error                        |
//! | per-try timeout                       | reset, 5xx, gateway-error                        |
//! | never written (pooled connection shut)| any policy with attempts left                    |
//! | answer 5xx / 502–504 / 409 / listed   | 5xx / gateway-error / retriable-4xx / status codes|
//! | gRPC status 1, 4, 8, 13, 14           | cancelled, deadline-exceeded, resource-exhausted, internal, unavailable |

use std::time::Duration;

use http::{HeaderValue, Response};
use paymesh_api::model::{RetryOn, RetryPolicy};

use crate::http::{ENVOY_OVERLOADED, GRPC_STATUS};
use crate::transport::UpstreamError;

/// The first retry's backoff bound (Envoy's `base_interval`); each retry doubles it.
const BASE_BACKOFF: Duration = Duration::from_millis(25);

/// The largest backoff bound (Envoy's default: ten times the base).
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// How many times the inbound side resends a request a pooled connection to the app gave back
/// unwritten (the app closed it between requests): Istio's default `attempts`.
pub const UNSENT_RESENDS: u32 = 2;

/// What an attempt came to, as far as retrying is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The upstream answered.
    Answered(&'a Response<crate::http::Body>),
    /// The attempt failed.
    Failed(&'a UpstreamError),
    /// The per-try timeout ran out before the response head.
    TimedOut,
}

/// Whether `policy` retries `outcome` (attempts left are the caller's business).
pub fn retries(policy: &RetryPolicy, outcome: Outcome<'_>) -> bool {
    let any = |conditions: &[RetryOn]| conditions.iter().any(|c| policy.on(*c));
    let no_answer = [RetryOn::Reset, RetryOn::FiveXx, RetryOn::GatewayError];
    match outcome {
        Outcome::Failed(UpstreamError::Unsent { .. }) => true,
        Outcome::Failed(UpstreamError::Connect { .. }) => {
            policy.on(RetryOn::ConnectFailure) || any(&no_answer)
        }
        Outcome::Failed(UpstreamError::RefusedStream { .. }) => {
            policy.on(RetryOn::RefusedStream) || any(&no_answer)
        }
        Outcome::Failed(UpstreamError::Reset { .. }) | Outcome::TimedOut => any(&no_answer),
        Outcome::Answered(response) => answer_retried(policy, response),
    }
}

fn answer_retried<B>(policy: &RetryPolicy, response: &Response<B>) -> bool {
    // An upstream's own circuit breaker answered: more attempts would only add load (Envoy).
    if response.headers().contains_key(ENVOY_OVERLOADED) {
        return false;
    }
    let status = response.status().as_u16();
    if (policy.on(RetryOn::FiveXx) && status >= 500)
        || (policy.on(RetryOn::GatewayError) && matches!(status, 502..=504))
        || (policy.on(RetryOn::Retriable4xx) && status == 409)
        || (policy.on(RetryOn::RetriableStatusCodes) && policy.retriable_status_codes.contains(&status))
    {
        return true;
    }
    let Some(grpc) = response.headers().get(GRPC_STATUS).and_then(grpc_status) else { return false };
    policy.retry_on.iter().any(|condition| condition.grpc_status() == Some(grpc))
}

fn grpc_status(value: &HeaderValue) -> Option<u32> {
    std::str::from_utf8(value.as_bytes()).ok()?.parse().ok()
}

/// Whether a request under `policy` must keep its body for another attempt: some condition
/// can retry a request that was (or may have been) written. Connect failures and unsent
/// requests give the request back untouched.
pub fn needs_replay(policy: &RetryPolicy) -> bool {
    policy.attempts > 0 && policy.retry_on.iter().any(|condition| *condition != RetryOn::ConnectFailure)
}

/// The pause before retry `attempt` (1-based): uniform in `[0, min(25 ms × 2^(attempt-1),
/// 250 ms))`, Envoy's fully jittered exponential backoff.
pub fn backoff(attempt: u32) -> Duration {
    let bound = BASE_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..millis.max(1)))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::http::empty;

    fn answer(status: u16, grpc: Option<&'static str>) -> Response<crate::http::Body> {
        let mut response = Response::new(empty());
        *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
        if let Some(grpc) = grpc {
            response.headers_mut().insert(GRPC_STATUS, HeaderValue::from_static(grpc));
        }
        response
    }

    fn policy(retry_on: &[RetryOn], codes: &[u16]) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: retry_on.to_vec(),
            retriable_status_codes: codes.to_vec(),
        }
    }

    #[test]
    fn answers_are_retried_by_their_conditions() {
        let five = policy(&[RetryOn::FiveXx], &[]);
        assert!(retries(&five, Outcome::Answered(&answer(500, None))));
        assert!(!retries(&five, Outcome::Answered(&answer(409, None))));
        let gateway = policy(&[RetryOn::GatewayError], &[]);
        assert!(retries(&gateway, Outcome::Answered(&answer(504, None))));
        assert!(!retries(&gateway, Outcome::Answered(&answer(500, None))));
        let istio = RetryPolicy::default();
        assert!(retries(&istio, Outcome::Answered(&answer(503, None))), "Istio's default retries 503");
        assert!(!retries(&istio, Outcome::Answered(&answer(500, None))));
        assert!(retries(&istio, Outcome::Answered(&answer(200, Some("14")))));
        assert!(!retries(&istio, Outcome::Answered(&answer(200, Some("13")))));
        assert!(retries(&policy(&[RetryOn::Retriable4xx], &[]), Outcome::Answered(&answer(409, None))));
        let mut overloaded = answer(503, None);
        overloaded.headers_mut().insert(ENVOY_OVERLOADED, HeaderValue::from_static("true"));
        assert!(!retries(&istio, Outcome::Answered(&overloaded)), "never retried, as in Envoy");
    }

    #[test]
    fn failures_are_retried_as_envoy_does() {
        let endpoint: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let cause = String::new();
        let connect = UpstreamError::Connect { endpoint, cause: cause.clone() };
        let reset = UpstreamError::Reset { endpoint, cause: cause.clone() };
        let writes = policy(&[RetryOn::ConnectFailure, RetryOn::RefusedStream], &[]);
        assert!(retries(&writes, Outcome::Failed(&connect)));
        assert!(!retries(&writes, Outcome::Failed(&reset)), "a payment that may have arrived is not resent");
        assert!(!retries(&writes, Outcome::TimedOut));
        let reads = policy(&[RetryOn::FiveXx, RetryOn::Reset], &[]);
        assert!(retries(&reads, Outcome::Failed(&reset)) && retries(&reads, Outcome::TimedOut));
        assert!(retries(&reads, Outcome::Failed(&connect)), "5xx includes connect failures");
        assert!(!needs_replay(&policy(&[RetryOn::ConnectFailure], &[])));
        assert!(needs_replay(&writes), "a refused stream consumed the request");
        assert!(!needs_replay(&RetryPolicy::none()));
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_bound_capped_at_250ms() {
        for (attempt, bound) in [(1, 25), (2, 50), (3, 100), (4, 200), (5, 250), (40, 250)] {
            for _ in 0..200 {
                assert!(backoff(attempt) < Duration::from_millis(bound), "attempt {attempt}");
            }
        }
    }
}
