//! Gateway rules: one invalid spec per rule, with Istio's message at its path.

use super::{check, check_named, decode_error};

const GW: &str = "Gateway";

/// A gateway with one server on `port`, serving `hosts`, with optional `tls`.
fn server(port: &str, hosts: &str, tls: &str) -> String {
    format!("{{selector: {{istio: ingressgateway}}, servers: [{{port: {port}, hosts: {hosts}{tls}}}]}}")
}

const HTTP: &str = "{number: 80, name: http, protocol: HTTP}";
const HTTPS: &str = "{number: 443, name: https, protocol: HTTPS}";

#[test]
fn valid_specs_pass() {
    check(GW, &server(HTTP, "['*']", ""), &[]);
    check(
        GW,
        &server(HTTP, "[ns/a.example.com, './*.example.com', 10.0.0.1]", ", tls: {httpsRedirect: true}"),
        &[],
    );
    check(GW, &server(HTTPS, "['*']", ", tls: {mode: SIMPLE, credentialName: cert}"), &[]);
    check(
        GW,
        &server(
            HTTPS,
            "['*']",
            ", tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}",
        ),
        &[],
    );
    check(
        GW,
        &server(
            "{number: 15443, name: tls, protocol: TLS}",
            "['*.local']",
            ", tls: {mode: AUTO_PASSTHROUGH}",
        ),
        &[],
    );
}

#[test]
fn name_servers_and_hosts() {
    check_named(
        GW,
        "my.gw",
        &server(HTTP, "['*']", ""),
        &[("metadata.name", r#"invalid gateway name: "my.gw""#)],
    );
    check(
        GW,
        "{selector: {istio: ingressgateway}}",
        &[("spec.servers", "gateway must have at least one server")],
    );
    check(
        GW,
        &server(HTTP, "[]", ""),
        &[("spec.servers[0].hosts", "server config must contain at least one host")],
    );
    check(
        GW,
        &server(HTTP, "[bad_ns/a.com]", ""),
        &[("spec.servers[0].hosts[0]", r#"invalid namespace value "bad_ns" in gateway"#)],
    );
    check(
        GW,
        &server(HTTP, "[reviews]", ""),
        &[("spec.servers[0].hosts[0]", "short names (non FQDN) are not allowed")],
    );
    check(
        GW,
        &server(HTTP, "['foo*.com']", ""),
        &[
            ("spec.servers[0].hosts[0]", r#"domain name "foo*.com" invalid (label "foo*" invalid)"#),
            ("spec.servers[0].hosts[0]", r#"partial wildcard "foo*.com" not allowed"#),
        ],
    );
    check(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}}]}",
        &[("spec.servers[0].hosts", "server config must contain at least one host")],
    );
    check(GW, "{servers: [{hosts: ['*']}]}", &[("spec.servers[0].port", "port is required")]);
}

#[test]
fn ports() {
    check(
        GW,
        &server("{number: 21, name: ftp, protocol: FTP}", "['*']", ""),
        &[(
            "spec.servers[0].port.protocol",
            r#"invalid protocol "FTP", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP"#,
        )],
    );
    check(
        GW,
        &server("{number: 70000, name: http, protocol: HTTP}", "['*']", ""),
        &[("spec.servers[0].port.number", "port number 70000 must be in the range 1..65535")],
    );
    check(
        GW,
        &server("{number: 80, name: http, protocol: HTTP, targetPort: 8080}", "['*']", ""),
        &[("spec.servers[0].port.targetPort", "targetPort has no impact on Gateways")],
    );
    check(
        GW,
        &server("{number: 80, name: '', protocol: HTTP}", "['*']", ""),
        &[("spec.servers[0].port.name", r#"port name must be set: number:80 protocol:"HTTP""#)],
    );
    check(
        GW,
        "{servers: [{port: {number: 80, name: p, protocol: HTTP}, hosts: ['*']}, {port: {number: 81, name: p, protocol: HTTP}, hosts: ['*']}]}",
        &[("spec.servers[1].port.name", "port names in servers must be unique: duplicate name p")],
    );
    check(
        GW,
        &format!("{{servers: [{{port: {HTTP}, hosts: ['*'], bind: not-an-ip}}]}}"),
        &[("spec.servers[0].bind", "not-an-ip is not a valid IP")],
    );
}

#[test]
fn tls_matches_protocol() {
    check(
        GW,
        &server(HTTPS, "['*']", ""),
        &[("spec.servers[0].tls", "server must have TLS settings for HTTPS/TLS protocols")],
    );
    check(
        GW,
        &server(HTTP, "['*']", ", tls: {mode: SIMPLE, credentialName: cert}"),
        &[("spec.servers[0].tls", "server cannot have TLS settings for plain text HTTP ports")],
    );
    check(
        GW,
        &server("{number: 31400, name: tcp, protocol: TCP}", "['*']", ", tls: {httpsRedirect: true}"),
        &[("spec.servers[0].tls", "server cannot have TLS settings for non HTTPS/TLS ports")],
    );
}

#[test]
fn tls_modes() {
    let tls = |settings: &str| server(HTTPS, "['*']", &format!(", tls: {settings}"));
    check(
        GW,
        &tls("{mode: SIMPLE}"),
        &[
            ("spec.servers[0].tls.privateKey", "SIMPLE TLS requires a private key"),
            ("spec.servers[0].tls.serverCertificate", "SIMPLE TLS requires a server certificate"),
        ],
    );
    check(
        GW,
        &tls("{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}"),
        &[("spec.servers[0].tls.caCertificates", "MUTUAL TLS requires a client CA bundle")],
    );
    check(
        GW,
        &tls("{mode: ISTIO_MUTUAL, credentialName: cert}"),
        &[("spec.servers[0].tls.credentialName", "ISTIO_MUTUAL TLS cannot have associated credentialName")],
    );
    check(
        GW,
        &tls("{mode: SIMPLE, credentialName: cert, serverCertificate: /c.pem, privateKey: /k.pem}"),
        &[(
            "spec.servers[0].tls",
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        )],
    );
    check(
        GW,
        &tls("{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, caCrl: /crl.pem}"),
        &[("spec.servers[0].tls.caCrl", "CRL is not supported with SIMPLE TLS")],
    );
    check(
        GW,
        &tls(
            "{mode: SIMPLE, tlsCertificates: [{serverCertificate: /rsa.pem, privateKey: /rsa.key}, {serverCertificate: /ec.pem}]}",
        ),
        &[("spec.servers[0].tls.tlsCertificates[1].privateKey", "SIMPLE TLS requires a private key")],
    );
    check(
        GW,
        &tls("{mode: SIMPLE, credentialNames: [a, b, c]}"),
        &[("spec.servers[0].tls.credentialNames", "must have at most 2 items")],
    );
    assert!(
        decode_error(GW, &tls("{mode: STRICT}"))
            .contains("spec.servers[0].tls.mode: unknown variant `STRICT`")
    );
}
