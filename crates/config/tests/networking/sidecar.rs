//! Sidecar rules: one invalid spec per rule, with Istio's message at its path.

use super::{check, decode_error};

const SC: &str = "Sidecar";

#[test]
fn valid_specs_pass() {
    check(SC, "{egress: [{hosts: ['./*', istio-system/*]}]}", &[]);
    check(SC, "{outboundTrafficPolicy: {mode: REGISTRY_ONLY}}", &[]);
    check(
        SC,
        "{workloadSelector: {labels: {app: ratings}}, ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: '127.0.0.1:8080'}], egress: [{port: {number: 9080, protocol: HTTP, name: egresshttp}, hosts: [prod-us1/*]}, {hosts: ['istio-system/*']}]}",
        &[],
    );
    check(
        SC,
        "{egress: [{port: {number: 0, name: uds}, bind: 'unix:///var/run/a.sock', hosts: ['*/*']}]}",
        &[],
    );
    check(
        SC,
        "{outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress.example.com, port: {number: 3128}}}}",
        &[],
    );
}

#[test]
fn egress() {
    check(SC, "{}", &[("spec", "sidecar: empty configuration provided")]);
    check(
        SC,
        "{egress: [{hosts: [a.com]}]}",
        &[("spec.egress[0].hosts[0]", "host must be of form namespace/dnsName")],
    );
    check(
        SC,
        "{egress: [{hosts: [Bad_NS/a.com]}]}",
        &[("spec.egress[0].hosts[0]", r#"invalid namespace value "Bad_NS" in sidecar"#)],
    );
    check(
        SC,
        "{egress: [{hosts: [ns/reviews]}]}",
        &[("spec.egress[0].hosts[0]", "short names (non FQDN) are not allowed")],
    );
    check(
        SC,
        "{egress: [{hosts: []}]}",
        &[("spec.egress[0].hosts", "sidecar: egress listener must contain at least one host")],
    );
    check(
        SC,
        "{egress: [{hosts: ['*/*']}, {port: {number: 80}, hosts: ['*/*']}]}",
        &[(
            "spec.egress[0]",
            "sidecar: the egress listener with empty port should be the last listener in the list",
        )],
    );
    check(
        SC,
        "{egress: [{port: {number: 80}, hosts: ['*/*']}, {port: {number: 80}, hosts: ['./*']}]}",
        &[("spec.egress[1].port", "sidecar: ports on IP bound listeners must be unique")],
    );
    check(
        SC,
        "{egress: [{port: {number: 0}, hosts: ['*/*']}]}",
        &[("spec.egress[0].bind", "sidecar: ports with 0 value must have a unix domain socket bind address")],
    );
    check(
        SC,
        "{egress: [{port: {number: 0}, bind: 'unix:///a.sock', captureMode: IPTABLES, hosts: ['*/*']}]}",
        &[(
            "spec.egress[0].captureMode",
            "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
        )],
    );
    check(
        SC,
        "{egress: [{port: {number: 80, protocol: FTP}, bind: nope, hosts: ['*/*']}]}",
        &[
            ("spec.egress[0].bind", "nope is not a valid IP"),
            ("spec.egress[0].port.protocol", "unsupported protocol: FTP"),
        ],
    );
    check(
        SC,
        "{egress: [{port: {number: 80}}]}",
        &[("spec.egress[0].hosts", "sidecar: egress listener must contain at least one host")],
    );
    assert!(
        decode_error(SC, "{egress: [{hosts: ['*/*'], captureMode: SOMETIMES}]}")
            .contains("spec.egress[0].captureMode: unknown variant `SOMETIMES`")
    );
}

#[test]
fn ingress() {
    let ingress = |listener: &str| format!("{{ingress: [{listener}]}}");
    check(
        SC,
        &ingress("{port: {number: 9080, protocol: HTTP}, defaultEndpoint: '10.0.0.1:8080'}"),
        &[(
            "spec.ingress[0].defaultEndpoint",
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        )],
    );
    check(
        SC,
        &ingress("{port: {number: 9080, protocol: HTTP}, defaultEndpoint: '127.0.0.1:abc'}"),
        &[(
            "spec.ingress[0].defaultEndpoint",
            "sidecar: defaultEndpoint port (abc) is not a number: invalid digit found in string",
        )],
    );
    check(
        SC,
        &ingress("{port: {number: 70000, protocol: HTTP}}"),
        &[("spec.ingress[0].port.number", "port number 70000 must be in the range 1..65535")],
    );
    check(
        SC,
        "{ingress: [{port: {number: 80}}, {port: {number: 80}}]}",
        &[("spec.ingress[1].port.number", "sidecar: ports on IP bound listeners must be unique")],
    );
    check(
        SC,
        &ingress("{port: {number: 9080, protocol: HTTP}, tls: {mode: SIMPLE, credentialName: c}}"),
        &[
            ("spec.ingress[0].tls", "server cannot have TLS settings for non HTTPS/TLS ports"),
            ("spec.ingress[0].tls.credentialName", "sidecar: credentialName is not currently supported"),
        ],
    );
    check(
        SC,
        &ingress("{port: {number: 9443, protocol: HTTPS}, tls: {mode: ISTIO_MUTUAL}}"),
        &[(
            "spec.ingress[0].tls.mode",
            "configuration is invalid: cannot set mode to ISTIO_MUTUAL in sidecar ingress tls",
        )],
    );
    check(
        SC,
        &ingress("{port: {number: 9080}, connectionPool: {}}"),
        &[("spec.ingress[0].connectionPool", "connection pool must have at least one field")],
    );
    check(
        SC,
        "{ingress: [{defaultEndpoint: '127.0.0.1:80'}]}",
        &[("spec.ingress[0].port", "sidecar: port is required for ingress listeners")],
    );
}

#[test]
fn outbound_policy_and_selector() {
    check(
        SC,
        "{outboundTrafficPolicy: {egressProxy: {host: egress.example.com, port: {number: 3128}}}}",
        &[(
            "spec.outboundTrafficPolicy.egressProxy",
            "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
        )],
    );
    check(
        SC,
        "{outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress.example.com}}}",
        &[("spec.outboundTrafficPolicy.egressProxy.port", "sidecar: egress_proxy port must be non-nil")],
    );
    check(
        SC,
        "{workloadSelector: {labels: {app: '*'}}, egress: [{hosts: ['*/*']}]}",
        &[("spec.workloadSelector.labels.app", r#"wildcard is not supported in selector: "app=*""#)],
    );
    check(
        SC,
        "{inboundConnectionPool: {}}",
        &[("spec.inboundConnectionPool", "connection pool must have at least one field")],
    );
}
