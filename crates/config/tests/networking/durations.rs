//! Durations where Istio requires a positive one, and oneOfs with two alternatives: a negative
//! duration does not decode (a load error at its field), one under 1 ms breaks the webhook's
//! `ValidateDuration`, each at its path and line. Where zero means something (a TCP idle
//! timeout of `0s` turns it off, a cookie TTL of `0s` makes a session cookie; Istio bounds
//! neither) it stays valid: `destination_rule::valid_specs_pass`.

use super::{check, decode_error, load_text};

const VS: &str = "VirtualService";
const DR: &str = "DestinationRule";

/// A VirtualService route with `extra` fields.
fn route(extra: &str) -> String {
    format!("{{hosts: [a.com], http: [{{route: [{{destination: {{host: a}}}}]{extra}}}]}}")
}

/// A DestinationRule for host `a` with the given traffic policy.
fn policy(traffic_policy: &str) -> String {
    format!("{{host: a, trafficPolicy: {traffic_policy}}}")
}

/// The message of a negative duration at `path`.
fn negative(path: &str) -> String {
    format!("{path}: invalid duration \"-1s\": negative (expected e.g. \"500ms\", \"1s\", \"1m30s\", \"1h\")")
}

#[test]
fn negative_durations_do_not_load() {
    let cases = [
        (VS, route(", timeout: -1s"), "spec.http[0].timeout"),
        (VS, route(", retries: {attempts: 2, perTryTimeout: -1s}"), "spec.http[0].retries.perTryTimeout"),
        (VS, route(", fault: {delay: {fixedDelay: -1s}}"), "spec.http[0].fault.delay.fixedDelay"),
        (
            DR,
            policy("{connectionPool: {tcp: {connectTimeout: -1s}}}"),
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        ),
        (
            DR,
            policy("{connectionPool: {tcp: {idleTimeout: -1s}}}"),
            "spec.trafficPolicy.connectionPool.tcp.idleTimeout",
        ),
        (
            DR,
            policy("{connectionPool: {http: {idleTimeout: -1s}}}"),
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
        ),
        (DR, policy("{outlierDetection: {interval: -1s}}"), "spec.trafficPolicy.outlierDetection.interval"),
        (
            DR,
            policy("{outlierDetection: {baseEjectionTime: -1s}}"),
            "spec.trafficPolicy.outlierDetection.baseEjectionTime",
        ),
        (
            DR,
            policy("{loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: -1s}}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl",
        ),
    ];
    for (kind, spec, path) in cases {
        let error = decode_error(kind, &spec);
        assert!(error.ends_with(&negative(path)), "{kind} {spec}: {error}");
    }
}

#[test]
fn durations_under_a_millisecond_are_invalid_where_istio_requires_one() {
    let too_short = "duration must be greater than 1ms";
    check(VS, &route(", timeout: 0s"), &[("spec.http[0].timeout", too_short)]);
    check(
        VS,
        &route(", retries: {attempts: 2, perTryTimeout: 0s}"),
        &[("spec.http[0].retries.perTryTimeout", too_short)],
    );
    check(
        VS,
        &route(", fault: {delay: {fixedDelay: 0s, percentage: {value: 5}}}"),
        &[("spec.http[0].fault.delay.fixedDelay", too_short)],
    );
    check(
        DR,
        &policy("{connectionPool: {tcp: {connectTimeout: 0s}}}"),
        &[("spec.trafficPolicy.connectionPool.tcp.connectTimeout", too_short)],
    );
    check(
        DR,
        &policy("{connectionPool: {http: {idleTimeout: 0s}}}"),
        &[("spec.trafficPolicy.connectionPool.http.idleTimeout", too_short)],
    );
    check(
        DR,
        &policy("{outlierDetection: {interval: 0s, baseEjectionTime: 0s}}"),
        &[
            ("spec.trafficPolicy.outlierDetection.baseEjectionTime", too_short),
            ("spec.trafficPolicy.outlierDetection.interval", too_short),
        ],
    );
}

#[test]
fn a_negative_duration_is_reported_at_its_line() {
    let loaded = load_text(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: prod
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 5
      baseEjectionTime: -30s
",
    );
    assert_eq!(
        loaded.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "t.yaml:11: DestinationRule prod/reviews: spec.trafficPolicy.outlierDetection.baseEjectionTime: invalid duration \"-30s\": negative (expected e.g. \"500ms\", \"1s\", \"1m30s\", \"1h\")"
        ]
    );
}

#[test]
fn two_hash_keys_are_reported_at_their_line() {
    let loaded = load_text(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: sessions
  namespace: prod
spec:
  host: sessions
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        useSourceIp: true
",
    );
    assert_eq!(
        loaded.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "t.yaml:10: DestinationRule prod/sessions: spec.trafficPolicy.loadBalancer.consistentHash: only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName may be set, found httpHeaderName and useSourceIp"
        ]
    );
}
