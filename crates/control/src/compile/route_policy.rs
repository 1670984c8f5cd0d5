//! A VirtualService rule's `timeout`, `retries` and `fault` into a model [`RoutePolicy`], as
//! Istio translates them for Envoy.
//!
//! - `timeout`: unset or `0s` is no limit (Istio's default).
//! - `retries`: unset is Istio's default policy ([`RetryPolicy::default`]); `attempts: 0` turns
//!   retrying off; otherwise the default with `attempts`, `perTryTimeout` and `retryOn` replaced.
//!   Numbers in `retryOn` are status codes and imply `retriable-status-codes` (Istio's
//!   `parseRetryOn`); condition names paymesh does not implement are dropped here and listed by
//!   [`super::unsupported`] ([`unknown_retry_on`]).
//! - `fault`: a fixed delay and an HTTP or gRPC abort, each on its own percentage (unset: none, as
//!   Istio documents). `exponentialDelay` and `http2Error` are not implemented: left out here,
//!   listed by `unsupported`.

use paymesh_api::model::{
    AbortError, Fault, FaultAbort, FaultDelay, PER_MILLION, RetryOn, RetryPolicy, RoutePolicy,
};
use paymesh_config::networking::virtual_service::{
    self, DelayKind, HttpFaultInjection, HttpRetry, HttpRoute,
};
use paymesh_config::types::{Duration, Percent};

/// The policies of `rule`.
pub fn route_policy(rule: &HttpRoute) -> RoutePolicy {
    RoutePolicy {
        timeout_ms: rule.timeout.map(millis).filter(|ms| *ms > 0),
        retries: retries(rule.retries.as_ref()),
        fault: rule.fault.as_ref().and_then(fault),
    }
}

/// Istio's `ConvertPolicy`.
fn retries(retry: Option<&HttpRetry>) -> RetryPolicy {
    let Some(retry) = retry else { return RetryPolicy::default() };
    let Ok(attempts @ 1..) = u32::try_from(retry.attempts) else { return RetryPolicy::none() };
    let mut policy = RetryPolicy { attempts, ..RetryPolicy::default() };
    if !retry.retry_on.trim().is_empty() {
        let (conditions, codes) = parse_retry_on(&retry.retry_on);
        policy.retry_on = conditions;
        if !codes.is_empty() {
            policy.retriable_status_codes = codes;
            if !policy.on(RetryOn::RetriableStatusCodes) {
                policy.retry_on.push(RetryOn::RetriableStatusCodes);
            }
        }
    }
    policy.per_try_timeout_ms = retry.per_try_timeout.map(millis).filter(|ms| *ms > 0);
    policy
}

/// The known conditions and the status codes of a `retryOn` list.
fn parse_retry_on(list: &str) -> (Vec<RetryOn>, Vec<u16>) {
    let (mut conditions, mut codes) = (Vec::new(), Vec::new());
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Ok(code @ 100..=599) = part.parse::<u16>() {
            codes.push(code);
        } else if let Some(condition) = RetryOn::parse(part)
            && !conditions.contains(&condition)
        {
            conditions.push(condition);
        }
    }
    (conditions, codes)
}

/// The parts of a `retryOn` list paymesh does not act on (for `unsupported`).
pub fn unknown_retry_on(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty() && RetryOn::parse(part).is_none() && part.parse::<u16>().is_err())
        .collect()
}

fn fault(fault: &HttpFaultInjection) -> Option<Fault> {
    let delay = fault.delay.as_ref().and_then(|delay| match delay.kind {
        Some(DelayKind::Fixed(duration)) => Some(FaultDelay {
            fixed_ms: millis(duration),
            per_million: match delay.percentage {
                Some(percent) => per_million(percent),
                None => u32::try_from(delay.percent.clamp(0, 100)).unwrap_or(0) * (PER_MILLION / 100),
            },
        }),
        Some(DelayKind::Exponential(_)) | None => None,
    });
    let abort = fault.abort.as_ref().and_then(|abort| {
        let error = match abort.error.as_ref()? {
            virtual_service::AbortError::HttpStatus(status) => {
                AbortError::HttpStatus(u16::try_from(*status).ok()?)
            }
            virtual_service::AbortError::GrpcStatus(name) => {
                AbortError::GrpcStatus(virtual_service::grpc_status_code(name)?)
            }
            virtual_service::AbortError::Http2Error(_) => return None,
        };
        Some(FaultAbort { error, per_million: abort.percentage.map_or(0, per_million) })
    });
    (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
}

/// A percentage in parts per million, within 0–100 %.
pub fn per_million(percent: Percent) -> u32 {
    let scaled = (percent.value * f64::from(PER_MILLION / 100)).round();
    if scaled.is_nan() { 0 } else { scaled.clamp(0.0, f64::from(PER_MILLION)) as u32 }
}

/// A duration in whole milliseconds.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_std().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(attempts: i32, retry_on: &str) -> HttpRetry {
        HttpRetry { attempts, retry_on: retry_on.to_owned(), ..HttpRetry::default() }
    }

    #[test]
    fn no_retries_field_is_istios_default_policy_and_zero_attempts_turn_it_off() {
        assert_eq!(retries(None), RetryPolicy::default());
        assert_eq!(retries(None).retriable_status_codes, [503]);
        assert_eq!(retries(Some(&retry(0, "5xx"))), RetryPolicy::none());
        assert_eq!(retries(Some(&retry(-1, ""))).attempts, 0);
    }

    #[test]
    fn retry_on_replaces_the_conditions_and_numbers_are_status_codes() {
        let policy = retries(Some(&retry(3, "5xx, reset,connect-failure")));
        assert_eq!(policy.attempts, 3);
        assert_eq!(policy.retry_on, [RetryOn::FiveXx, RetryOn::Reset, RetryOn::ConnectFailure]);
        let coded = retries(Some(&retry(1, "gateway-error,409,425")));
        assert_eq!(coded.retry_on, [RetryOn::GatewayError, RetryOn::RetriableStatusCodes]);
        assert_eq!(coded.retriable_status_codes, [409, 425]);
        let kept = retries(Some(&retry(2, "")));
        assert_eq!(kept.retry_on, RetryPolicy::default().retry_on, "an empty retryOn keeps the default's");
        assert_eq!(
            unknown_retry_on("5xx,envoy-ratelimited, 503 ,retriable-headers"),
            ["envoy-ratelimited", "retriable-headers"]
        );
    }

    #[test]
    fn percentages_become_parts_per_million_within_bounds() {
        for (value, expected) in
            [(10.0, 100_000), (0.0001, 1), (5.5, 55_000), (100.0, 1_000_000), (250.0, 1_000_000), (-3.0, 0)]
        {
            assert_eq!(per_million(Percent { value }), expected, "{value}");
        }
    }

    #[test]
    fn grpc_aborts_carry_the_status_code() {
        let fault = HttpFaultInjection {
            delay: None,
            abort: Some(virtual_service::Abort {
                error: Some(virtual_service::AbortError::GrpcStatus("UNAVAILABLE".to_owned())),
                percentage: Some(Percent { value: 5.0 }),
            }),
        };
        let abort = super::fault(&fault).and_then(|f| f.abort).expect("an abort");
        assert_eq!((abort.error, abort.per_million), (AbortError::GrpcStatus(14), 50_000));
    }
}
