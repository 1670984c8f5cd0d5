//! `Gateway`: a load balancer at the edge of the mesh (the ingress or egress gateway
//! workloads it selects) — which ports it opens, for which hosts, with which TLS.
//!
//! [`ServerTlsSettings`] is shared with the Sidecar's ingress listeners.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::rules::{self, Protocol, UNIX_ADDRESS_PREFIX, push};
use super::{NamespacedHost, Placement, host};
use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::types::is_dns1123_label;
use crate::validate::Validate;

/// The spec of a Gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Labels of the gateway workloads (pods) this configuration applies to.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

/// One listener of the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Server {
    /// Required; `None` only in an invalid document.
    pub port: Option<Port>,
    /// Address to bind to (an IP, or `unix://` path); empty means all addresses.
    #[serde(default)]
    pub bind: String,
    /// Hosts served, as `namespace/host` (or a bare host for any namespace).
    #[serde(default)]
    pub hosts: Vec<NamespacedHost>,
    pub tls: Option<ServerTlsSettings>,
    #[serde(default)]
    pub default_endpoint: String,
    #[serde(default)]
    pub name: String,
}

/// A gateway port: number, protocol and a name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    /// Deprecated; has no effect on Gateways.
    #[serde(default)]
    pub target_port: u32,
}

/// TLS on a server: terminate (SIMPLE, MUTUAL, ...), pass through, or redirect to HTTPS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTlsSettings {
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub mode: ServerTlsMode,
    #[serde(default)]
    pub server_certificate: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub ca_certificates: String,
    #[serde(default)]
    pub ca_crl: String,
    /// A Secret holding the key and certificates.
    #[serde(default)]
    pub credential_name: String,
    #[serde(default)]
    pub credential_names: Vec<String>,
    #[serde(default)]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default)]
    pub ca_cert_credential_name: String,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: TlsProtocol,
    #[serde(default)]
    pub max_protocol_version: TlsProtocol,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub ecdh_curves: Vec<String>,
    pub insecure_skip_verify: Option<bool>,
}

/// A certificate and key pair (one of up to two, e.g. RSA and ECDSA).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsCertificate {
    #[serde(default)]
    pub server_certificate: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub ca_certificates: String,
}

/// How a server treats TLS connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward the TLS connection as is, routed by SNI.
    #[default]
    Passthrough,
    /// Terminate TLS with the server's certificate.
    Simple,
    /// Terminate TLS and require a client certificate.
    Mutual,
    /// Pass through, routing by the mesh's `outbound_.PORT_._.HOST` SNI names.
    AutoPassthrough,
    /// Terminate with the mesh's workload certificates.
    IstioMutual,
    /// Like `Mutual`, but a client certificate is optional.
    OptionalMutual,
}

/// A TLS protocol version bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum TlsProtocol {
    #[default]
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSV1_0")]
    V1_0,
    #[serde(rename = "TLSV1_1")]
    V1_1,
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// Most certificates (`credentialNames`, `tlsCertificates`) a server may carry.
const MAX_SERVER_CERTIFICATES: usize = 2;

impl Validate for Gateway {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.servers.is_empty() {
            push(errors, &at.key("servers"), "gateway must have at least one server");
        }
        let mut port_names = HashSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let at = at.key("servers").index(i);
            server.validate(&at, errors);
            if let Some(port) = server.port.as_ref().filter(|p| !port_names.insert(p.name.as_str())) {
                push(
                    errors,
                    &at.key("port").key("name"),
                    format!("port names in servers must be unique: duplicate name {}", port.name),
                );
            }
        }
    }
}

impl Placement for Gateway {
    fn validate_placement(
        &self,
        name: &str,
        _namespace: &str,
        _at: &FieldPath,
        errors: &mut Vec<FieldError>,
    ) {
        if !is_dns1123_label(name) {
            push(
                errors,
                &FieldPath::root().key("metadata").key("name"),
                format!("invalid gateway name: {name:?}"),
            );
        }
    }
}

impl Validate for Server {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.hosts.is_empty() {
            push(errors, &at.key("hosts"), "server config must contain at least one host");
        }
        for (i, h) in self.hosts.iter().enumerate() {
            for problem in host::namespaced_host_problems(h, true) {
                push(errors, &at.key("hosts").index(i), problem);
            }
        }
        let Some(port) = &self.port else {
            push(errors, &at.key("port"), "port is required");
            return;
        };
        let before = errors.len();
        self.check_port(port, &at.key("port"), errors);
        let port_ok = errors.len() == before;
        self.check_bind(port, at, errors);
        if let Some(tls) = &self.tls {
            check_server_tls(tls, &at.key("tls"), errors);
        }
        let protocol = Protocol::parse(&port.protocol).filter(|_| port_ok);
        match (protocol, &self.tls) {
            (Some(p), None) if p.is_tls() => {
                push(errors, &at.key("tls"), "server must have TLS settings for HTTPS/TLS protocols");
            }
            (Some(p), Some(tls)) if !p.is_tls() => {
                let passthrough =
                    matches!(tls.mode, ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough);
                let files = [&tls.ca_certificates, &tls.private_key, &tls.server_certificate];
                if !p.is_http() {
                    push(errors, &at.key("tls"), "server cannot have TLS settings for non HTTPS/TLS ports");
                } else if !passthrough || files.iter().any(|f| !f.is_empty()) {
                    // Only `httpsRedirect` makes sense on a plain HTTP port.
                    push(errors, &at.key("tls"), "server cannot have TLS settings for plain text HTTP ports");
                }
            }
            _ => {}
        }
    }
}

impl Server {
    /// `validateServerPort`.
    fn check_port(&self, port: &Port, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if Protocol::parse(&port.protocol).is_none() {
            push(
                errors,
                &at.key("protocol"),
                format!(
                    "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                    port.protocol
                ),
            );
        }
        if port.number > 0 || !self.bind.starts_with(UNIX_ADDRESS_PREFIX) {
            rules::check_port(port.number, &at.key("number"), errors);
        }
        if port.target_port > 0 {
            push(errors, &at.key("targetPort"), "targetPort has no impact on Gateways");
        }
        if port.name.is_empty() {
            push(
                errors,
                &at.key("name"),
                format!("port name must be set: number:{} protocol:{:?}", port.number, port.protocol),
            );
        }
    }

    /// `validateServerBind`.
    fn check_bind(&self, port: &Port, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let at = at.key("bind");
        if let Some(path) = self.bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
            rules::check_unix_address(path, &at, errors);
            if port.number != 0 {
                push(
                    errors,
                    &at,
                    format!("port number must be 0 for unix domain socket: number:{}", port.number),
                );
            }
        } else if !self.bind.is_empty() {
            rules::check_ip(&self.bind, &at, errors);
        }
    }
}

/// Server TLS settings (`validateTLSOptions`): what each mode requires and forbids.
pub fn check_server_tls(tls: &ServerTlsSettings, at: &FieldPath, errors: &mut Vec<FieldError>) {
    for (field, count) in
        [("credentialNames", tls.credential_names.len()), ("tlsCertificates", tls.tls_certificates.len())]
    {
        if count > MAX_SERVER_CERTIFICATES {
            push(errors, &at.key(field), format!("must have at most {MAX_SERVER_CERTIFICATES} items"));
        }
    }
    if tls.mode == ServerTlsMode::IstioMutual {
        let forbidden = [
            (!tls.server_certificate.is_empty(), "serverCertificate", "server certificate"),
            (!tls.private_key.is_empty(), "privateKey", "private key"),
            (!tls.ca_certificates.is_empty(), "caCertificates", "CA bundle"),
            (!tls.tls_certificates.is_empty(), "tlsCertificates", "tlsCertificates"),
            (!tls.credential_name.is_empty(), "credentialName", "credentialName"),
            (!tls.credential_names.is_empty(), "credentialNames", "credentialNames"),
        ];
        for (_, field, what) in forbidden.into_iter().filter(|(set, ..)| *set) {
            push(errors, &at.key(field), format!("ISTIO_MUTUAL TLS cannot have associated {what}"));
        }
        return;
    }
    let sources = [
        !tls.server_certificate.is_empty() && !tls.private_key.is_empty(),
        !tls.credential_name.is_empty(),
        !tls.credential_names.is_empty(),
        !tls.tls_certificates.is_empty(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        push(
            errors,
            at,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
    }
    let terminating =
        matches!(tls.mode, ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
    if terminating && (!tls.credential_name.is_empty() || !tls.credential_names.is_empty()) {
        // The credentials come from a Secret; nothing else is required.
        return;
    }
    if terminating {
        let prefix = if tls.mode == ServerTlsMode::Simple { "SIMPLE TLS" } else { "MUTUAL TLS" };
        if tls.mode != ServerTlsMode::Simple && tls.ca_certificates.is_empty() {
            push(errors, &at.key("caCertificates"), format!("{prefix} requires a client CA bundle"));
        }
        let pairs: Vec<(&str, &str, FieldPath)> = if tls.tls_certificates.is_empty() {
            vec![(&tls.server_certificate, &tls.private_key, at.clone())]
        } else {
            tls.tls_certificates
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        c.server_certificate.as_str(),
                        c.private_key.as_str(),
                        at.key("tlsCertificates").index(i),
                    )
                })
                .collect()
        };
        for (certificate, key, at) in pairs {
            if certificate.is_empty() {
                push(errors, &at.key("serverCertificate"), format!("{prefix} requires a server certificate"));
            }
            if key.is_empty() {
                push(errors, &at.key("privateKey"), format!("{prefix} requires a private key"));
            }
        }
    }
    if !tls.ca_crl.is_empty() {
        if !tls.credential_name.is_empty() {
            push(
                errors,
                &at.key("caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        }
        if tls.mode == ServerTlsMode::Simple {
            push(errors, &at.key("caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}
