//! `virtualservice.RetryTimeoutAnalyzer` (paymesh's; Istio has none): an HTTP rule whose
//! tries cannot all fit in its `timeout` (PM0001, at `retries.perTryTimeout`).
//!
//! Istio's `retries.attempts` is the number of retries, so a request gets `attempts + 1` tries
//! (the first call, then each retry), and `perTryTimeout` bounds each of them; the route's
//! `timeout` bounds them all together. When tries time out one after another, only as many as
//! fit in the timeout run to their `perTryTimeout`: the next one is cut short and any after it
//! never start. Istio accepts this (it documents that the timeout limits the retries); the
//! message says which retries cannot run in full. The back-off between tries (25 ms and up) is
//! left out, which only makes later tries start later, so what the message says stays true.
//!
//! A rule's own `timeout` and `retries` are compared; a delegate rule that inherits one of the
//! two from its root rule is not.

use std::time::Duration as StdDuration;

use super::virtual_services;
use crate::analyze::{Analyzer, Context, Message, Report, messages};
use crate::networking::virtual_service::HttpRoute;
use crate::path::FieldPath;
use crate::types::Duration;

/// `virtualservice.RetryTimeoutAnalyzer`.
pub struct RetryTimeoutAnalyzer;

impl Analyzer for RetryTimeoutAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.RetryTimeoutAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        for (vs, spec) in virtual_services(ctx.store) {
            for (i, rule) in spec.http.iter().enumerate() {
                if let Some(message) = check(rule) {
                    let at = FieldPath::root().key("spec").key("http").index(i);
                    report.add(vs, Some(&at.key("retries").key("perTryTimeout")), message);
                }
            }
        }
    }
}

/// PM0001 when `rule`'s tries, each run to its `perTryTimeout`, outlast its `timeout`.
/// Values validation rejects (no retries, zero durations) draw nothing here.
fn check(rule: &HttpRoute) -> Option<Message> {
    let timeout = rule.timeout?.as_std();
    let retries = rule.retries.as_ref()?;
    let per_try = retries.per_try_timeout?.as_std();
    let attempts = u32::try_from(retries.attempts).ok().filter(|a| *a > 0)?;
    if timeout.is_zero() || per_try.is_zero() {
        return None;
    }
    // `attempts` came from an i32, so this cannot overflow; a total beyond `Duration`'s range
    // (centuries per try) is not worth a message.
    let tries = attempts + 1;
    let total = per_try.checked_mul(tries)?;
    if total <= timeout {
        return None;
    }
    // Fewer than `tries`, since all of them do not fit.
    let whole = u32::try_from(timeout.as_nanos() / per_try.as_nanos()).ok()?;
    let left = timeout - per_try * whole;
    let mut consequence = Vec::new();
    // Try `whole + 1`, which is retry `whole` (try 1 is the first call), starts with `left` to
    // go: with nothing left, it is the first retry that never starts.
    let mut first_never = whole;
    if !left.is_zero() {
        let cut = if whole == 0 { "the first call".to_owned() } else { format!("retry {whole}") };
        consequence.push(format!("{cut} gets at most {}", show(left)));
        first_never += 1;
    }
    match first_never.cmp(&attempts) {
        std::cmp::Ordering::Less => {
            consequence.push(format!("retries {first_never} to {attempts} never start"));
        }
        std::cmp::Ordering::Equal => consequence.push(format!("retry {attempts} never starts")),
        std::cmp::Ordering::Greater => {}
    }
    let retries = if attempts == 1 { "1 retry".to_owned() } else { format!("{attempts} retries") };
    Some(messages::retries_exceed_route_timeout(
        i64::from(tries),
        retries,
        show(per_try),
        show(total),
        show(timeout),
        consequence.join(" and "),
    ))
}

/// A duration as YAML writes it (`1m30s`, `500ms`).
fn show(duration: StdDuration) -> Duration {
    Duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::kube::testing::resources;
    use crate::analyze::{MeshConfig, output, run};
    use crate::store::Store;

    /// istioctl's log lines for one VirtualService whose only rule has `fields`.
    fn log(fields: &str) -> String {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: prod
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews}}
{fields}"
        );
        let (store, _) = Store::new(resources(&yaml));
        let mesh = MeshConfig::default();
        let ctx = Context { store: &store, mesh: &mesh, istio_namespace: "istio-system" };
        output::log(&run(&ctx, &[&RetryTimeoutAnalyzer]))
    }

    /// The message text for a rule with `timeout` and `retries` (YAML flow).
    fn text(timeout: &str, retries: &str) -> String {
        let found = log(&format!("    timeout: {timeout}\n    retries: {retries}\n"));
        let prefix = "Warning [PM0001] (VirtualService prod/reviews test.yaml:12) ";
        match found.strip_prefix(prefix) {
            Some(text) => text.trim_end().to_owned(),
            None => found,
        }
    }

    #[test]
    fn the_last_retry_of_the_payments_routes_never_starts() {
        // k8s/istio/virtual-services.yaml's payment-service rules.
        assert_eq!(
            text("10s", "{attempts: 2, perTryTimeout: 5s, retryOn: connect-failure}"),
            "3 tries (the first call and 2 retries) of up to 5s each take up to 15s, more than the route \
             timeout of 10s: when tries time out, retry 2 never starts."
        );
    }

    #[test]
    fn a_retry_that_starts_late_is_cut_short() {
        assert_eq!(
            text("5s", "{attempts: 2, perTryTimeout: 2s}"),
            "3 tries (the first call and 2 retries) of up to 2s each take up to 6s, more than the route \
             timeout of 5s: when tries time out, retry 2 gets at most 1s."
        );
        assert_eq!(
            text("5s", "{attempts: 4, perTryTimeout: 2s}"),
            "5 tries (the first call and 4 retries) of up to 2s each take up to 10s, more than the route \
             timeout of 5s: when tries time out, retry 2 gets at most 1s and retries 3 to 4 never start."
        );
        assert_eq!(
            text("1500ms", "{attempts: 1, perTryTimeout: 2s}"),
            "2 tries (the first call and 1 retry) of up to 2s each take up to 4s, more than the route \
             timeout of 1500ms: when tries time out, the first call gets at most 1500ms and retry 1 never \
             starts."
        );
    }

    #[test]
    fn hostile_numbers_are_counted_not_overflowed() {
        assert!(
            text("1s", "{attempts: 2147483647, perTryTimeout: 1ms}")
                .ends_with("retries 1000 to 2147483647 never start."),
            "every try is reported"
        );
        assert_eq!(text("1s", "{attempts: 2147483647, perTryTimeout: 2562047788015215h}"), "");
    }

    #[test]
    fn tries_that_fit_draw_nothing() {
        assert_eq!(text("10s", "{attempts: 1, perTryTimeout: 5s}"), "");
        assert_eq!(text("5s", "{attempts: 2, perTryTimeout: 1500ms}"), "");
        assert_eq!(log("    timeout: 1s\n    retries: {attempts: 3}\n"), "", "perTryTimeout is the timeout");
        assert_eq!(log("    retries: {attempts: 3, perTryTimeout: 1s}\n"), "", "no route timeout");
        assert_eq!(text("1s", "{attempts: 0, perTryTimeout: 2s}"), "", "no retries: validation's business");
    }
}
