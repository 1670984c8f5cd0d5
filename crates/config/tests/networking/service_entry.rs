//! ServiceEntry rules: one invalid spec per rule, with Istio's message at its path.

use super::{check, decode_error};

const SE: &str = "ServiceEntry";

#[test]
fn valid_specs_pass() {
    check(
        SE,
        "{hosts: [api.example.com], ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS, location: MESH_EXTERNAL}",
        &[],
    );
    check(
        SE,
        "{hosts: [db.internal], addresses: [10.1.0.0/16], ports: [{number: 5432, name: tcp-pg, protocol: TCP}], resolution: STATIC, endpoints: [{address: 10.1.2.3}, {address: 10.1.2.4, ports: {tcp-pg: 6432}}]}",
        &[],
    );
    check(
        SE,
        "{hosts: ['*.example.com'], ports: [{number: 80, name: http, protocol: HTTP}], resolution: NONE, exportTo: ['~']}",
        &[],
    );
    check(
        SE,
        "{hosts: [vm.local], workloadSelector: {labels: {app: vm}}, ports: [{number: 80, name: http}], resolution: STATIC}",
        &[],
    );
}

#[test]
fn hosts_and_addresses() {
    check(SE, "{hosts: []}", &[("spec.hosts", "service entry must have at least one host")]);
    check(SE, "{hosts: ['*']}", &[("spec.hosts[0]", "invalid host *")]);
    check(
        SE,
        "{hosts: [a.com], addresses: [1.2.3.4/33]}",
        &[("spec.addresses[0]", "1.2.3.4/33 is not a valid CIDR block")],
    );
    check(
        SE,
        "{hosts: [a.com], addresses: [10.0.0.0/8], resolution: DNS}",
        &[("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types")],
    );
    check(
        SE,
        "{hosts: ['*.example.com'], resolution: DNS}",
        &[("spec.hosts[0]", "hosts must be FQDN if no endpoints are provided for resolution mode DNS")],
    );
    check(
        SE,
        "{hosts: [a.com, b.com], ports: [{number: 3306, name: mysql, protocol: MYSQL}], resolution: DNS}",
        &[("spec.ports", "multiple hosts provided with non-HTTP, non-TLS ports")],
    );
    check(SE, "{resolution: DNS}", &[("spec.hosts", "service entry must have at least one host")]);
    assert!(
        decode_error(SE, "{hosts: [a.com], resolution: DNS_LOOKUP}")
            .contains("spec.resolution: unknown variant `DNS_LOOKUP`")
    );
}

#[test]
fn ports() {
    check(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http}, {number: 80, name: http}]}",
        &[
            ("spec.ports[1].name", r#"service entry port name "http" already defined"#),
            ("spec.ports[1].number", "service entry port 80 already defined"),
        ],
    );
    check(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: HTTP_1}]}",
        &[("spec.ports[0].name", "invalid port name: HTTP_1")],
    );
    check(
        SE,
        "{hosts: [a.com], ports: [{number: 21, name: ftp, protocol: FTP}]}",
        &[("spec.ports[0].protocol", "unsupported protocol: FTP")],
    );
    check(
        SE,
        "{hosts: [a.com], ports: [{number: 99999, name: a, targetPort: 70000}]}",
        &[
            ("spec.ports[0].number", "port number 99999 must be in the range 1..65535"),
            ("spec.ports[0].targetPort", "port number 70000 must be in the range 1..65535"),
        ],
    );
}

#[test]
fn endpoints_by_resolution() {
    check(
        SE,
        "{hosts: [a.com], endpoints: [{address: 1.2.3.4}]}",
        &[("spec.endpoints", "no endpoints should be provided for resolution type none")],
    );
    check(
        SE,
        "{hosts: [a.com], resolution: STATIC, workloadSelector: {labels: {app: a}}, endpoints: [{address: 1.2.3.4}]}",
        &[("spec", "only one of WorkloadSelector or Endpoints is allowed in Service Entry")],
    );
    check(
        SE,
        "{hosts: [a.com], resolution: STATIC, endpoints: [{address: example.com}]}",
        &[("spec.endpoints[0].address", r#"endpoint address "example.com" is not a valid IP address"#)],
    );
    check(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http}], resolution: STATIC, endpoints: [{address: 1.2.3.4, ports: {grpc: 8080}}]}",
        &[("spec.endpoints[0].ports.grpc", "endpoint port 8080 is not defined by the service entry")],
    );
    check(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http}], resolution: STATIC, endpoints: [{address: 'unix:///sock', ports: {http: 80}}]}",
        &[("spec.endpoints[0].ports", "unix endpoint unix:///sock must not include ports")],
    );
    check(
        SE,
        "{hosts: [a.com], resolution: STATIC, endpoints: [{address: 'unix://relative'}]}",
        &[
            ("spec.endpoints[0].address", "exactly 1 service port required for unix endpoints"),
            ("spec.endpoints[0].address", "relative is not an absolute path to a file"),
        ],
    );
    check(
        SE,
        "{hosts: [a.com], resolution: DNS_ROUND_ROBIN, endpoints: [{address: a.example.com}, {address: b.example.com}]}",
        &[("spec.endpoints", "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN")],
    );
    check(
        SE,
        "{hosts: [a.com], resolution: DNS, endpoints: [{address: not_a_host}]}",
        &[(
            "spec.endpoints[0].address",
            r#"endpoint address "not_a_host" is not a valid FQDN or an IP address"#,
        )],
    );
}

#[test]
fn selector_and_export_to() {
    check(
        SE,
        "{hosts: [a.com], workloadSelector: {labels: {app: '*'}}}",
        &[("spec.workloadSelector.labels.app", r#"wildcard is not supported in selector: "app=*""#)],
    );
    check(
        SE,
        "{hosts: [a.com], exportTo: ['~', a]}",
        &[("spec.exportTo", "cannot export service entry to no one (~) and someone")],
    );
}
