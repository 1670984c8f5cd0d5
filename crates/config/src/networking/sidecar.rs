//! `Sidecar`: narrows what a workload's proxy sees and accepts — inbound listeners
//! (`ingress`), the services it may reach (`egress` hosts as `namespace/host`), and what
//! happens to traffic for unknown destinations (`outboundTrafficPolicy`).

use std::collections::HashSet;

use serde::Deserialize;

use super::destination_rule::ConnectionPoolSettings;
use super::gateway::{ServerTlsMode, ServerTlsSettings, check_server_tls};
use super::rules::{self, Protocol, UNIX_ADDRESS_PREFIX, push};
use super::{Destination, NamespacedHost, Placement, WorkloadSelector, host};
use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::validate::Validate;

/// The spec of a Sidecar.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sidecar {
    /// The workloads it applies to; none means every workload of the namespace without a
    /// more specific Sidecar.
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub ingress: Vec<IngressListener>,
    #[serde(default)]
    pub egress: Vec<EgressListener>,
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// An inbound listener: a port of the workload and where to forward its traffic.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressListener {
    /// Required; `None` only in an invalid document.
    pub port: Option<SidecarPort>,
    #[serde(default)]
    pub bind: String,
    #[serde(default)]
    pub capture_mode: CaptureMode,
    /// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT` or `unix://path`.
    #[serde(default)]
    pub default_endpoint: String,
    pub tls: Option<ServerTlsSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener: the hosts reachable on a port (or on every port).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressListener {
    /// None for the catch-all listener, which must come last.
    pub port: Option<SidecarPort>,
    #[serde(default)]
    pub bind: String,
    #[serde(default)]
    pub capture_mode: CaptureMode,
    #[serde(default)]
    pub hosts: Vec<NamespacedHost>,
}

/// A listener port; number 0 with a `unix://` bind is a Unix domain socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarPort {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    /// Deprecated; has no effect on Sidecars.
    #[serde(default)]
    pub target_port: u32,
}

/// How traffic reaches the listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// The workload's default capture mode.
    #[default]
    Default,
    /// Traffic is redirected to the listener.
    Iptables,
    /// The application addresses the listener itself.
    None,
}

/// What happens to traffic for destinations the registry does not know.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
    /// Send unknown traffic through this proxy (ALLOW_ANY only).
    pub egress_proxy: Option<Destination>,
}

/// Whether traffic to unknown destinations is blocked or passed through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Only services in the registry are reachable.
    #[default]
    RegistryOnly,
    /// Unknown destinations are reached directly (or through the egress proxy).
    AllowAny,
}

impl Validate for Sidecar {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Some(selector) = &self.workload_selector {
            selector.validate(&at.key("workloadSelector"), errors);
        }
        if self.egress.is_empty()
            && self.ingress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            return push(errors, at, "sidecar: empty configuration provided");
        }
        let mut ports = HashSet::new();
        for (i, listener) in self.ingress.iter().enumerate() {
            let at = at.key("ingress").index(i);
            listener.validate(&at, errors);
            let Some(port) = &listener.port else {
                continue;
            };
            if !ports.insert(port.number) {
                push(
                    errors,
                    &at.key("port").key("number"),
                    "sidecar: ports on IP bound listeners must be unique",
                );
            }
        }
        if let Some(pool) = &self.inbound_connection_pool {
            pool.validate(&at.key("inboundConnectionPool"), errors);
        }
        self.check_egress(at, errors);
        if let Some(policy) = &self.outbound_traffic_policy {
            policy.validate(&at.key("outboundTrafficPolicy"), errors);
        }
    }
}

impl Placement for Sidecar {
    fn validate_placement(
        &self,
        _name: &str,
        _namespace: &str,
        _at: &FieldPath,
        _errors: &mut Vec<FieldError>,
    ) {
    }
}

impl Sidecar {
    fn check_egress(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let mut ports = HashSet::new();
        let mut sockets = HashSet::new();
        let mut catch_all_seen = false;
        for (i, listener) in self.egress.iter().enumerate() {
            let at = at.key("egress").index(i);
            match &listener.port {
                None if catch_all_seen => {
                    push(errors, &at, "sidecar: egress can have only one listener with empty port");
                    continue;
                }
                None if i + 1 == self.egress.len() => catch_all_seen = true,
                None => push(
                    errors,
                    &at,
                    "sidecar: the egress listener with empty port should be the last listener in the list",
                ),
                Some(port) => {
                    check_egress_port(port, listener, &at, errors);
                    let unique = if port.number == 0 {
                        sockets.insert(listener.bind.as_str())
                    } else {
                        ports.insert(port.number)
                    };
                    if !unique {
                        let message = if port.number == 0 {
                            "sidecar: unix domain socket values for listeners must be unique"
                        } else {
                            "sidecar: ports on IP bound listeners must be unique"
                        };
                        push(errors, &at.key("port"), message);
                    }
                }
            }
            if listener.hosts.is_empty() {
                push(errors, &at.key("hosts"), "sidecar: egress listener must contain at least one host");
            }
            for (j, h) in listener.hosts.iter().enumerate() {
                for problem in host::namespaced_host_problems(h, false) {
                    push(errors, &at.key("hosts").index(j), problem);
                }
            }
        }
    }
}

/// `validateSidecarEgressPortBindAndCaptureMode`.
fn check_egress_port(
    port: &SidecarPort,
    listener: &EgressListener,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let port_at = at.key("port");
    if port.target_port > 0 {
        push(errors, &port_at.key("targetPort"), "targetPort has no impact on Sidecars");
    }
    if !port.name.is_empty() {
        rules::check_port_name(&port.name, &port_at.key("name"), errors);
    }
    rules::check_protocol(&port.protocol, &port_at.key("protocol"), errors);
    if port.number == 0 {
        match listener.bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
            None => push(
                errors,
                &at.key("bind"),
                "sidecar: ports with 0 value must have a unix domain socket bind address",
            ),
            Some(path) => rules::check_unix_address(path, &at.key("bind"), errors),
        }
        if !matches!(listener.capture_mode, CaptureMode::Default | CaptureMode::None) {
            push(
                errors,
                &at.key("captureMode"),
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
            );
        }
    } else {
        rules::check_port(port.number, &port_at.key("number"), errors);
        if !listener.bind.is_empty() {
            rules::check_ip(&listener.bind, &at.key("bind"), errors);
        }
    }
}

impl Validate for IngressListener {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let port_at = at.key("port");
        let Some(port) = &self.port else {
            return push(errors, &port_at, "sidecar: port is required for ingress listeners");
        };
        if port.target_port > 0 {
            push(errors, &port_at.key("targetPort"), "targetPort has no impact on Sidecars");
        }
        if !port.name.is_empty() {
            rules::check_port_name(&port.name, &port_at.key("name"), errors);
        }
        rules::check_protocol(&port.protocol, &port_at.key("protocol"), errors);
        rules::check_port(port.number, &port_at.key("number"), errors);
        if !self.bind.is_empty() {
            rules::check_ip(&self.bind, &at.key("bind"), errors);
        }
        if !self.default_endpoint.is_empty() {
            check_default_endpoint(&self.default_endpoint, &at.key("defaultEndpoint"), errors);
        }
        if let Some(tls) = &self.tls {
            check_ingress_tls(tls, port, &at.key("tls"), errors);
        }
        if let Some(pool) = &self.connection_pool {
            pool.validate(&at.key("connectionPool"), errors);
        }
    }
}

/// TLS on an inbound listener: what a Gateway server allows, minus what sidecars do not support.
fn check_ingress_tls(
    tls: &ServerTlsSettings,
    port: &SidecarPort,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let unsupported = [
        (
            !tls.subject_alt_names.is_empty(),
            "subjectAltNames",
            "sidecar: subjectAltNames is not supported in ingress tls",
        ),
        (tls.https_redirect, "httpsRedirect", "sidecar: httpsRedirect is not supported"),
        (
            !tls.credential_name.is_empty(),
            "credentialName",
            "sidecar: credentialName is not currently supported",
        ),
        (
            !tls.credential_names.is_empty(),
            "credentialNames",
            "sidecar: credentialNames is not currently supported",
        ),
        (
            !tls.tls_certificates.is_empty(),
            "tlsCertificates",
            "sidecar: tls_certificates is not currently supported",
        ),
    ];
    for (_, field, message) in unsupported.into_iter().filter(|(set, ..)| *set) {
        push(errors, &at.key(field), message);
    }
    let mode = match tls.mode {
        ServerTlsMode::IstioMutual => Some("ISTIO_MUTUAL"),
        ServerTlsMode::AutoPassthrough => Some("AUTO_PASSTHROUGH"),
        _ => None,
    };
    if let Some(mode) = mode {
        push(
            errors,
            &at.key("mode"),
            format!("configuration is invalid: cannot set mode to {mode} in sidecar ingress tls"),
        );
    }
    if !Protocol::parse(&port.protocol).is_some_and(Protocol::is_tls) {
        push(errors, at, "server cannot have TLS settings for non HTTPS/TLS ports");
    }
    check_server_tls(tls, at, errors);
}

/// Where inbound traffic is forwarded: a loopback or wildcard address with a port, or a
/// Unix socket.
fn check_default_endpoint(endpoint: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if let Some(path) = endpoint.strip_prefix(UNIX_ADDRESS_PREFIX) {
        return rules::check_unix_address(path, at, errors);
    }
    let (address, port) = match split_host_port(endpoint) {
        Ok(parts) => parts,
        Err(e) => return push(errors, at, e),
    };
    if !matches!(address, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        push(
            errors,
            at,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        );
    }
    match port.parse::<u32>() {
        Ok(number) => rules::check_port(number, at, errors),
        Err(e) => push(errors, at, format!("sidecar: defaultEndpoint port ({port}) is not a number: {e}")),
    }
}

/// `host:port` or `[ipv6]:port`, as Go's `net.SplitHostPort`.
fn split_host_port(text: &str) -> Result<(&str, &str), String> {
    let missing = || format!("address {text}: missing port in address");
    if let Some(rest) = text.strip_prefix('[') {
        let (address, tail) =
            rest.split_once(']').ok_or_else(|| format!("address {text}: missing ']' in address"))?;
        let port = tail.strip_prefix(':').ok_or_else(missing)?;
        return Ok((address, port));
    }
    let (address, port) = text.rsplit_once(':').ok_or_else(missing)?;
    if address.contains(':') {
        return Err(format!("address {text}: too many colons in address"));
    }
    Ok((address, port))
}

impl Validate for OutboundTrafficPolicy {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let Some(proxy) = &self.egress_proxy else {
            return;
        };
        let at = at.key("egressProxy");
        if self.mode != OutboundMode::AllowAny {
            return push(
                errors,
                &at,
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            );
        }
        if let Err(e) = host::validate_fqdn(proxy.host.as_str()) {
            push(errors, &at.key("host"), e);
        }
        if proxy.port.is_none() {
            return push(errors, &at.key("port"), "sidecar: egress_proxy port must be non-nil");
        }
        proxy.validate(&at, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_splits_like_go() {
        assert_eq!(split_host_port("127.0.0.1:8080"), Ok(("127.0.0.1", "8080")));
        assert_eq!(split_host_port(":8080"), Ok(("", "8080")));
        assert_eq!(split_host_port("[::1]:80"), Ok(("::1", "80")));
        assert_eq!(
            split_host_port("127.0.0.1"),
            Err("address 127.0.0.1: missing port in address".to_owned())
        );
        assert_eq!(split_host_port("::1:80"), Err("address ::1:80: too many colons in address".to_owned()));
    }
}
