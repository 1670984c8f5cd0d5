//! The fault stage: a route's `fault` applied by the calling proxy (the client's sidecar or the
//! gateway) after routing and before anything is sent, as Envoy's fault filter does — first the
//! delay, on its share of requests, then the abort, on its own share. An aborted request never
//! reaches an upstream, so it is never retried and never counts towards outlier detection.

use std::time::Duration;

use paymesh_api::model::{Fault, PER_MILLION};

use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::flags::ResponseFlag;

/// Applies `fault` to the request `ctx` records: waits out a delay drawn for it, and fails with
/// the abort drawn for it.
pub async fn inject(fault: &Fault, ctx: &mut RequestContext) -> Result<(), ProxyError> {
    if let Some(delay) = &fault.delay
        && drawn(delay.per_million)
    {
        ctx.flag(ResponseFlag::DelayInjected);
        tokio::time::sleep(Duration::from_millis(delay.fixed_ms)).await;
    }
    match &fault.abort {
        Some(abort) if drawn(abort.per_million) => Err(ProxyError::FaultAbort { error: abort.error }),
        _ => Ok(()),
    }
}

/// Whether this request falls in a share of `per_million`.
fn drawn(per_million: u32) -> bool {
    per_million > 0 && fastrand::u32(0..PER_MILLION) < per_million
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_drawn_in_proportion() {
        assert!(!drawn(0));
        assert!(drawn(PER_MILLION));
        let hits = (0..20_000).filter(|_| drawn(100_000)).count();
        // 10 % of 20,000: mean 2,000, standard deviation 42; six of them either side.
        assert!((1750..=2250).contains(&hits), "{hits}");
    }
}
