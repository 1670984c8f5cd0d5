//! DestinationRule rules: one invalid spec per rule, with Istio's message at its path.

use super::{check, decode_error};

const DR: &str = "DestinationRule";

/// A rule for host `a` with the given traffic policy.
fn policy(traffic_policy: &str) -> String {
    format!("{{host: a, trafficPolicy: {traffic_policy}}}")
}

#[test]
fn valid_specs_pass() {
    check(DR, "{host: reviews.prod.svc.cluster.local, subsets: [{name: v1, labels: {version: v1}}]}", &[]);
    check(
        DR,
        &policy(
            "{loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}, maglev: {tableSize: 65537}}}}",
        ),
        &[],
    );
    check(
        DR,
        &policy(
            "{connectionPool: {tcp: {maxConnections: 100, idleTimeout: 0s}, http: {http2MaxRequests: 1000}}}",
        ),
        &[],
    );
    check(
        DR,
        &policy(
            "{outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100}}",
        ),
        &[],
    );
    check(
        DR,
        &policy(
            "{loadBalancer: {simple: LEAST_REQUEST, localityLbSetting: {distribute: [{from: us-west/*, to: {us-west/*: 80, us-east/*: 20}}]}}}",
        ),
        &[],
    );
    check(DR, &policy("{tls: {mode: SIMPLE, credentialName: client-credential, sni: my.example.com}}"), &[]);
}

#[test]
fn host_and_subsets() {
    check(DR, "{host: ''}", &[("spec.host", "empty domain name not allowed")]);
    check(
        DR,
        "{host: a, subsets: [{name: V1_x}]}",
        &[("spec.subsets[0].name", "subset name is invalid: V1_x")],
    );
    check(
        DR,
        "{host: a, subsets: [{name: v1}, {name: v1}]}",
        &[("spec.subsets[1].name", "duplicate subset names: v1")],
    );
    check(
        DR,
        "{host: a, subsets: [{name: v1, labels: {'bad key': x}}]}",
        &[("spec.subsets[0].labels", r#"invalid tag key: "bad key""#)],
    );
    check(
        DR,
        "{host: a, subsets: [{name: v1, trafficPolicy: {}}]}",
        &[("spec.subsets[0].trafficPolicy", "traffic policy must have at least one field")],
    );
    check(
        DR,
        "{subsets: [{labels: {version: v1}}]}",
        &[
            ("spec.host", "empty domain name not allowed"),
            ("spec.subsets[0].name", "subset name cannot be empty"),
        ],
    );
}

#[test]
fn connection_pool() {
    check(DR, &policy("{}"), &[("spec.trafficPolicy", "traffic policy must have at least one field")]);
    check(
        DR,
        &policy("{connectionPool: {}}"),
        &[("spec.trafficPolicy.connectionPool", "connection pool must have at least one field")],
    );
    check(
        DR,
        &policy("{connectionPool: {http: {http1MaxPendingRequests: -1, maxRetries: -2}}}"),
        &[
            (
                "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
                "http1 max pending requests must be non-negative",
            ),
            ("spec.trafficPolicy.connectionPool.http.maxRetries", "max retries must be non-negative"),
        ],
    );
    check(
        DR,
        &policy("{connectionPool: {tcp: {maxConnections: -1, connectTimeout: 0s}}}"),
        &[
            ("spec.trafficPolicy.connectionPool.tcp.connectTimeout", "duration must be greater than 1ms"),
            ("spec.trafficPolicy.connectionPool.tcp.maxConnections", "max connections must be non-negative"),
        ],
    );
    check(
        DR,
        &policy("{connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}"),
        &[(
            "spec.trafficPolicy.connectionPool.http.useClientProtocol",
            "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
        )],
    );
    assert!(
        decode_error(DR, &policy("{connectionPool: {http: {h2UpgradePolicy: SOMETIMES}}}"))
            .contains("spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: unknown variant `SOMETIMES`")
    );
}

#[test]
fn outlier_detection() {
    check(
        DR,
        &policy("{outlierDetection: {consecutiveLocalOriginFailures: 5}}"),
        &[(
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        )],
    );
    check(
        DR,
        &policy("{outlierDetection: {interval: 0s, baseEjectionTime: 1.5ms}}"),
        &[
            (
                "spec.trafficPolicy.outlierDetection.baseEjectionTime",
                "only durations to ms precision are supported",
            ),
            ("spec.trafficPolicy.outlierDetection.interval", "duration must be greater than 1ms"),
        ],
    );
    check(
        DR,
        &policy("{outlierDetection: {maxEjectionPercent: 150, minHealthPercent: -1}}"),
        &[
            (
                "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                "percentage 150 is not in range 0..100",
            ),
            ("spec.trafficPolicy.outlierDetection.minHealthPercent", "percentage -1 is not in range 0..100"),
        ],
    );
    check(
        DR,
        &policy("{outlierDetection: {outlierDetectionHttpErrorCodes: [503, 600]}}"),
        &[(
            "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]",
            "HTTP status 600 is not in range 100-599",
        )],
    );
}

#[test]
fn load_balancer() {
    let lb = |settings: &str| policy(&format!("{{loadBalancer: {settings}}}"));
    check(
        DR,
        &lb("{consistentHash: {httpCookie: {name: ''}}}"),
        &[("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "name required for HttpCookie")],
    );
    check(
        DR,
        &lb("{consistentHash: {useSourceIp: true, maglev: {tableSize: 4}}}"),
        &[(
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            "tableSize must be a prime number for maglev",
        )],
    );
    check(
        DR,
        &lb("{consistentHash: {useSourceIp: true, maglev: {tableSize: 5000012}}}"),
        &[
            (
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
                "tableSize must be a prime number for maglev",
            ),
            (
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
                "tableSize must be less than 5000011 for maglev",
            ),
        ],
    );
    check(
        DR,
        &lb(
            "{consistentHash: {httpHeaderName: x-user, minimumRingSize: 1024, ringHash: {minimumRingSize: 2048}}}",
        ),
        &[(
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "only one of MinimumRingSize or Maglev/Ringhash can be specified",
        )],
    );
    assert!(decode_error(DR, &lb("{consistentHash: {httpHeaderName: a, useSourceIp: true}}")).ends_with(
        "spec.trafficPolicy.loadBalancer.consistentHash: only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName may be set, found httpHeaderName and useSourceIp"
    ));
    assert!(decode_error(DR, &lb("{consistentHash: {useSourceIp: true, ringHash: {}, maglev: {}}}")).ends_with(
        "spec.trafficPolicy.loadBalancer.consistentHash: only one of ringHash, maglev may be set, found ringHash and maglev"
    ));
}

#[test]
fn warmup() {
    let warmup = |w: &str| policy(&format!("{{loadBalancer: {{warmup: {w}}}}}"));
    check(
        DR,
        &warmup("{duration: 0s}"),
        &[("spec.trafficPolicy.loadBalancer.warmup.duration", "duration must be greater than 1ms")],
    );
    check(
        DR,
        &warmup("{duration: 60s, minimumPercent: 150}"),
        &[(
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
            "minimumPercent value should be less than or equal to 100",
        )],
    );
    check(
        DR,
        &warmup("{duration: 60s, aggression: 0.5}"),
        &[(
            "spec.trafficPolicy.loadBalancer.warmup.aggression",
            "aggression should be greater than or equal to 1",
        )],
    );
    check(
        DR,
        &warmup("{minimumPercent: 5}"),
        &[("spec.trafficPolicy.loadBalancer.warmup.duration", "duration is required")],
    );
}

#[test]
fn locality() {
    let locality = |l: &str| policy(&format!("{{loadBalancer: {{localityLbSetting: {l}}}}}"));
    check(
        DR,
        &locality("{distribute: [{from: a/*, to: {b/*: 100}}], failover: [{from: a, to: b}]}"),
        &[(
            "spec.trafficPolicy.loadBalancer.localityLbSetting",
            "can not simultaneously specify 'distribute' and 'failover'",
        )],
    );
    check(
        DR,
        &locality("{distribute: [{from: a/*, to: {b/*: 60, c/*: 30}}]}"),
        &[(
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
            "total locality weight 90 != 100",
        )],
    );
    check(
        DR,
        &locality("{failover: [{from: us-east, to: us-east}]}"),
        &[(
            "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
            "locality lb failover settings must specify different regions",
        )],
    );
}

#[test]
fn client_tls() {
    check(
        DR,
        &policy("{tls: {mode: MUTUAL}}"),
        &[
            ("spec.trafficPolicy.tls.clientCertificate", "client certificate required for mutual tls"),
            ("spec.trafficPolicy.tls.privateKey", "private key required for mutual tls"),
        ],
    );
    check(
        DR,
        &policy("{tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}}"),
        &[(
            "spec.trafficPolicy.tls.credentialName",
            "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
        )],
    );
    check(
        DR,
        &policy("{tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}}"),
        &[(
            "spec.trafficPolicy.tls.insecureSkipVerify",
            "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
        )],
    );
}

#[test]
fn port_level_settings_tunnel_and_proxy_protocol() {
    check(
        DR,
        &policy("{portLevelSettings: [{tls: {mode: ISTIO_MUTUAL}}]}"),
        &[("spec.trafficPolicy.portLevelSettings[0]", "portTrafficPolicy must have valid port")],
    );
    check(
        DR,
        &policy("{portLevelSettings: [{port: {number: 80}}]}"),
        &[("spec.trafficPolicy.portLevelSettings[0]", "port traffic policy must have at least one field")],
    );
    check(
        DR,
        &policy("{portLevelSettings: [{port: {number: 0}, loadBalancer: {simple: RANDOM}}]}"),
        &[(
            "spec.trafficPolicy.portLevelSettings[0].port.number",
            "port number 0 must be in the range 1..65535",
        )],
    );
    check(
        DR,
        &policy("{tunnel: {targetHost: a.com, targetPort: 443}, proxyProtocol: {version: V2}}"),
        &[("spec.trafficPolicy", "tunnel and proxyProtocol must not be set together")],
    );
    check(
        DR,
        &policy("{tunnel: {protocol: GET, targetHost: a.com, targetPort: 0}}"),
        &[
            ("spec.trafficPolicy.tunnel.protocol", r#"tunnel protocol must be "CONNECT" or "POST""#),
            (
                "spec.trafficPolicy.tunnel.targetPort",
                "tunnel target port is invalid: port number 0 must be in the range 1..65535",
            ),
        ],
    );
}

#[test]
fn selector_and_export_to() {
    check(
        DR,
        "{host: a, workloadSelector: {matchLabels: {app: '*'}}}",
        &[("spec.workloadSelector.matchLabels.app", r#"wildcard is not supported in selector: "app=*""#)],
    );
    check(
        DR,
        "{host: a, workloadSelector: {matchLabels: {app: a}}, exportTo: [other]}",
        &[(
            "spec.exportTo",
            "destination rule with workload selector cannot have exportTo beyond current namespace",
        )],
    );
    check(
        DR,
        "{host: a, exportTo: ['~']}",
        &[("spec.exportTo[0]", "exportTo ~ (none) is not allowed for Istio configuration objects")],
    );
}
